package scrape

import (
	"strings"

	"github.com/poolwatch/poolwatch/config"
)

// PgCat's admin console (database "pgcat" or "pgbouncer"), read from
// postgresml/pgcat src/admin.rs at commit
// 3bcd36c9dff8e0e0fe3a818711bd7f6ab57e819a (no PgCat server, package or
// module can be had here: the mapping is tested on rows built from this
// source only, testdata/pgcat/).
//
//	SHOW POOLS (show_pools): database, user, pool_mode, cl_idle, cl_active,
//	  cl_waiting, cl_cancel_req, sv_active, sv_idle, sv_used, sv_tested,
//	  sv_login, maxwait, maxwait_us. One row per (pool, user), the counts
//	  summed over every shard and replica; maxwait is whole seconds and
//	  maxwait_us the microseconds beyond them, as in PgBouncer.
//	SHOW DATABASES (show_databases): name, host, port, database,
//	  force_user, pool_size, min_pool_size, reserve_pool, pool_mode,
//	  max_connections, current_connections, paused, disabled. One row per
//	  server address; name is Address::name() of src/config.rs,
//	  "<pool>_shard_<n>_primary" or "..._replica_<k>" (or "_mirror_<k>"),
//	  force_user the pool's user, pool_size that user's pool size (per
//	  address); min_pool_size, reserve_pool and paused are the constant "0",
//	  max_connections repeats pool_size.
//	SHOW VERSION (show_version): version = "PgCat <version>".
//	SHOW STATS (show_stats): instance, database, user, total_xact_count,
//	  total_query_count, total_received, total_sent, total_xact_time,
//	  total_query_time, total_wait_time, total_errors, avg_*. Not mapped:
//	  src/stats/address.rs (commit 4d75a9a593a4e5dabf19c6bf1dfc424dfe7cec52)
//	  stores 0 into every total_* after each stats period
//	  (update_averages), so they are per-period sums, not counters.
//	SHOW CLIENTS (show_clients): client_id, database, user,
//	  application_name, state, transaction_count, query_count,
//	  error_count, age_seconds. SHOW SERVERS (show_servers): server_id,
//	  database_name, user, address_id, application_name, state,
//	  transaction_count, query_count, bytes_sent, bytes_received,
//	  age_seconds. Not used: neither tells how long a client has been idle
//	  in a transaction, so leaks cannot be detected (their states are
//	  SHOW POOLS' cl_* and sv_* already).
var pgcatDialect = consoleDialect{
	kind:     config.KindPgCat,
	constant: map[string]bool{},
	parseVersion: func(answer string) string {
		v, ok := trimPrefixFold(strings.TrimSpace(answer), "PgCat ")
		if !ok {
			return ""
		}
		return strings.TrimSpace(v)
	},
	// The pool's ceiling is its user's pool_size on every address of the
	// pool: the sum over the SHOW DATABASES rows of the pool's addresses.
	ceiling: func(rows []consoleDBRow, database, user string) Optional {
		return sumCeiling(rows, func(r consoleDBRow) bool {
			return r.user == user && strings.HasPrefix(r.name, database+"_shard_")
		})
	},
}
