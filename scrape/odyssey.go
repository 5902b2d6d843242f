package scrape

import (
	"regexp"
	"strings"

	"github.com/poolwatch/poolwatch/config"
)

// Odyssey's admin console (a route whose storage is "local", by convention
// database "console"), read from yandex/odyssey sources/console.c at commit
// 55dde485386fd2b877a4e0e7fb907625cca3595d, and from a later revision of
// the same file that the code search showed without its commit (it adds
// SHOW DATABASES, SHOW VERSION, the statement pool mode and SHOW STATS'
// total_parse_count columns; noted "later" below). No Odyssey server,
// package or module can be had here: the mapping is tested on rows built
// from this source only, testdata/odyssey/.
//
//	SHOW POOLS (od_console_show_pools): database, user, cl_active,
//	  cl_waiting, sv_active, sv_idle, sv_used, sv_tested, sv_login, maxwait,
//	  maxwait_us, pool_mode. cl_active and cl_waiting are the route's
//	  client_pool count_active and count_pending, sv_active and sv_idle its
//	  server_pool counts; sv_used, sv_tested, sv_login, maxwait and
//	  maxwait_us are the constant 0 (absent here).
//	SHOW DATABASES (later; od_console_show_databases): name, host, port,
//	  database, force_user, pool_size, reserve_pool, pool_mode,
//	  max_connections, current_connections, paused, disabled. One row per
//	  route: name is the route's database, force_user its user, pool_size
//	  the rule's pool size (0: unlimited), max_connections client_max;
//	  reserve_pool, paused and disabled are the constant 0.
//	SHOW VERSION (later): version = "<number>-<git>-<build>".
//	SHOW STATS (od_console_show_stats): database, total_xact_count,
//	  total_query_count, total_received, total_sent, total_xact_time,
//	  total_query_time, total_wait_time (the constant 0), avg_* (later:
//	  total_parse_count, total_parse_count_reuse). Not mapped: the times
//	  are in the units of machinarium's loop clock, which the source read
//	  does not pin down, and total_wait_time is a constant.
//	SHOW CLIENTS and SHOW SERVERS: type, user, database, state, addr,
//	  port, local_addr, local_port, connect_time, request_time, ptr, link,
//	  remote_pid, tls. Not used: connect_time and request_time are NULL and
//	  link and remote_pid empty, so a client idle in a transaction cannot be
//	  told apart: leaks are not detected.
//	SHOW LISTS: list, items; the health check (every version has it).
var odysseyDialect = consoleDialect{
	kind:                 config.KindOdyssey,
	constant:             map[string]bool{"sv_used": true, "sv_tested": true, "sv_login": true, "maxwait": true, "maxwait_us": true},
	databasesNeedVersion: true,
	parseVersion: func(answer string) string {
		m := odysseyVersionRE.FindStringSubmatch(strings.TrimSpace(answer))
		if m == nil {
			return ""
		}
		return m[1]
	},
	// The route's pool_size; 0 is unlimited.
	ceiling: func(rows []consoleDBRow, database, user string) Optional {
		return sumCeiling(rows, func(r consoleDBRow) bool { return r.name == database && r.user == user })
	},
}

// odysseyVersionRE matches Odyssey's SHOW VERSION: "1.3-f0c2e9a-release".
var odysseyVersionRE = regexp.MustCompile(`^(\d+\.\d+(?:\.\d+)?)-[0-9a-zA-Z]+-\S+$`)
