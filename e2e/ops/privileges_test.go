package ops_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	leaked = "poolwatch_pool_leaked_connections"
	inUse  = "poolwatch_pool_in_use_connections"
	open   = "poolwatch_pool_open_connections"
)

// TestPrivileges_LeastPrivilegedUsersSeeEverything runs the agent as a
// PostgreSQL role with only LOGIN and pg_monitor and as a PgBouncer user
// listed only in stats_users, and checks that they see another role's
// leaked transaction and PgBouncer's pools. It also pins down what a role
// without pg_monitor sees (docs/operations.md): nothing of other roles'
// backends, so every count is low and no leak is seen; and that a PgBouncer
// user in neither admin_users nor stats_users is refused (up 0).
func TestPrivileges_LeastPrivilegedUsersSeeEverything(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	pg.CreateRole(t, "nomon", monPassword, "LOGIN")
	pg.CreateRole(t, "readstats", monPassword, "LOGIN", "IN ROLE pg_read_all_stats")
	pg.CreateRole(t, "app", appPassword, "LOGIN")
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		Users:      map[string]string{"stats": statPassword, "app": appPassword},
		StatsUsers: []string{"stats"},
		Databases:  map[string]string{"appdb": "dbname=postgres"},
	})

	// The roles are what the docs say, and no more.
	if n := pg.QueryInt(t, `SELECT count(*) FROM pg_roles WHERE rolname IN ('mon', 'nomon', 'readstats')
		AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls OR NOT rolcanlogin)`); n != 0 {
		t.Fatalf("%d monitoring roles have more (or less) than LOGIN", n)
	}
	if n := pg.QueryInt(t, `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
		JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = 'mon' AND g.rolname <> 'pg_monitor'`); n != 0 {
		t.Fatalf("mon is a member of %d roles besides pg_monitor", n)
	}
	for _, row := range pgb.Show(t, "SHOW CONFIG").Records() {
		if row["key"] == "admin_users" && strings.Contains(row["value"], "stats") {
			t.Fatalf("stats is in admin_users (%q); it must only be in stats_users", row["value"])
		}
	}

	// Another role leaks a transaction, directly and through PgBouncer.
	direct := testenv.HoldTransactions(t, pg.DSN("app", appPassword, "postgres"), 1, "leaky-direct")
	viaBouncer := testenv.HoldTransactions(t, pgb.DSN("app", appPassword, "appdb"), 1, "leaky-bouncer")
	direct.WaitHeld(t, 1, settle)
	viaBouncer.WaitHeld(t, 1, settle)

	appPools := `    leak_threshold: 1s
    application_pools:
      - {name: leaky, application_name: "leaky-*"}
`
	cfg := fmt.Sprintf(`targets:
  - name: pg-monitor
    kind: postgres
    dsn: %s
%s  - name: pg-read-all-stats
    kind: postgres
    dsn: %s
%s  - name: pg-no-monitor
    kind: postgres
    dsn: %s
%s  - name: bouncer-stats
    kind: pgbouncer
    dsn: %s
    leak_threshold: 1s
  - name: bouncer-no-role
    kind: pgbouncer
    dsn: %s
`, pg.DSN("mon", monPassword, "postgres"), appPools,
		pg.DSN("readstats", monPassword, "postgres"), appPools,
		pg.DSN("nomon", monPassword, "postgres"), appPools,
		pgb.DSN("stats", statPassword, "pgbouncer"),
		pgb.DSN("app", appPassword, "pgbouncer"))
	pw := testenv.StartPoolwatch(t, cfg)

	// Leaks are reported once idle for more than 1 s (PgBouncer: on its
	// 1 s clock, so after up to 2 s).
	var m testenv.Metrics
	eventually(t, 15*time.Second, "both leaks seen by the least-privileged users", func() (bool, string) {
		m = pw.Scrape(t)
		pgLeaks, _ := m.Get(t, leaked, "target", "pg-monitor", "pool", "server")
		rsLeaks, _ := m.Get(t, leaked, "target", "pg-read-all-stats", "pool", "server")
		pgbLeaks, _ := m.Get(t, leaked, "target", "bouncer-stats", "pool", "appdb/app")
		return pgLeaks == 2 && rsLeaks == 2 && pgbLeaks == 1, fmt.Sprintf("pg-monitor server leaked %v, pg-read-all-stats %v, bouncer-stats appdb/app %v", pgLeaks, rsLeaks, pgbLeaks)
	})

	// Once more, so that every probe pool has its connection open (the first
	// round of each runs in parallel with the others).
	m = pw.Scrape(t)

	for _, tg := range []string{"pg-monitor", "pg-read-all-stats", "pg-no-monitor", "bouncer-stats"} {
		if up := m.Must(t, targetUp, "target", tg); up != 1 {
			t.Errorf("%s{target=%q} = %v, want 1", targetUp, tg, up)
		}
		for _, e := range m.Find("poolwatch_target_scrape_errors_total", "target", tg) {
			if v := e.GetCounter().GetValue(); v != 0 {
				t.Errorf("target %q: %v failed queries: %v", tg, v, e.GetLabel())
			}
		}
	}

	// pg_monitor, or just pg_read_all_stats (which pg_monitor includes):
	// the other role's two idle-in-transaction backends are in use and
	// leaked.
	for _, tg := range []string{"pg-monitor", "pg-read-all-stats"} {
		got := [3]float64{
			m.Must(t, open, "target", tg, "pool", "leaky"),
			m.Must(t, inUse, "target", tg, "pool", "leaky"),
			m.Must(t, leaked, "target", tg, "pool", "leaky"),
		}
		if got != [3]float64{2, 2, 2} {
			t.Errorf("%s pool leaky: open, in use, leaked = %v, want [2 2 2]", tg, got)
		}
	}

	// Without pg_monitor, PostgreSQL 15 hides backend_type, state and
	// query of other roles' backends (NULL): the query, which counts client
	// backends, does not see them at all. The agent stays up and reports
	// only its own backends: a silent undercount of slots, in use and
	// leaks, which is why the docs require pg_monitor.
	gotNo := [3]float64{
		m.Must(t, open, "target", "pg-no-monitor", "pool", "leaky"),
		m.Must(t, inUse, "target", "pg-no-monitor", "pool", "leaky"),
		m.Must(t, leaked, "target", "pg-no-monitor", "pool", "leaky"),
	}
	if gotNo != [3]float64{0, 0, 0} {
		t.Errorf("pg-no-monitor pool leaky: open, in use, leaked = %v, want [0 0 0] (other roles hidden without pg_monitor)", gotNo)
	}
	if v := m.Must(t, leaked, "target", "pg-no-monitor", "pool", "server"); v != 0 {
		t.Errorf("pg-no-monitor server leaked = %v, want 0 (other roles hidden without pg_monitor)", v)
	}
	noOpen := m.Must(t, open, "target", "pg-no-monitor", "pool", "server")
	monOpen := m.Must(t, open, "target", "pg-monitor", "pool", "server")
	if noOpen < 1 || noOpen > 2 {
		t.Errorf("pg-no-monitor server open = %v, want only its own 1-2 probe connections", noOpen)
	}
	if monOpen < noOpen+3 {
		t.Errorf("pg-monitor server open = %v, want at least pg-no-monitor's %v plus the two leaked and its own", monOpen, noOpen)
	}
	t.Logf("server slots in use: %v seen with pg_monitor, %v without", monOpen, noOpen)
	// The undercount is not silent: the agent names the missing grant once,
	// for that target only.
	const warning = "role cannot see other roles' connections, so every count is too low: grant it pg_monitor"
	if logs := pw.Logs(); strings.Count(logs, warning) != 1 || !strings.Contains(logs, "target=pg-no-monitor") {
		t.Errorf("want one warning %q for pg-no-monitor in the agent's log:\n%s", warning, logs)
	}
	for _, line := range strings.Split(pw.Logs(), "\n") {
		if strings.Contains(line, warning) && !strings.Contains(line, "target=pg-no-monitor") {
			t.Errorf("warning for a target that has pg_read_all_stats: %s", line)
		}
	}

	// stats_users: every pool of PgBouncer, its clients and its leak.
	if v := m.Must(t, inUse, "target", "bouncer-stats", "pool", "appdb/app"); v != 1 {
		t.Errorf("bouncer-stats appdb/app in use = %v, want 1", v)
	}
	if v := m.Must(t, "poolwatch_pool_max_connections", "target", "bouncer-stats", "pool", "clients"); v != 100 {
		t.Errorf("bouncer-stats clients max = %v, want 100 (max_client_conn from SHOW CONFIG)", v)
	}
	if _, ok := m.Get(t, "poolwatch_pgbouncer_transactions_total", "target", "bouncer-stats", "database", "appdb"); !ok {
		t.Errorf("bouncer-stats has no SHOW STATS series for appdb")
	}
	waitLog(t, pw, "target=bouncer-stats", `msg="leaked connection"`, "pool=appdb/app")

	// A console user in neither list is refused.
	if up := m.Must(t, targetUp, "target", "bouncer-no-role"); up != 0 {
		t.Errorf("%s{target=bouncer-no-role} = %v, want 0", targetUp, up)
	}
	waitLog(t, pw, "target=bouncer-no-role", `msg="target scrape failed"`, "not allowed")
	pw.StopAndCheck(t, monPassword, appPassword, statPassword)
}

// waitLog polls the agent's log until one line contains every one of
// parts. The log reaches the test through a pipe, a moment after the agent
// wrote it, possibly after the HTTP answer that followed it.
func waitLog(t *testing.T, pw *testenv.Poolwatch, parts ...string) {
	t.Helper()
	eventually(t, settle, fmt.Sprintf("a log line with %q", parts), func() (bool, string) {
		return logHas(pw.Logs(), parts...), "not yet"
	})
}

// logHas reports whether one line of logs contains every one of parts.
func logHas(logs string, parts ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
