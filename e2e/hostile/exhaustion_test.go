package hostile_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

// connectN opens n plain connections to dsn, closed on cleanup.
func connectN(t *testing.T, dsn string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, n, err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
	}
}

// refusedReason returns the reason whose poolwatch_target_connection_refused
// series reads 1 for target, "" when none does.
func refusedReason(t *testing.T, m testenv.Metrics, target string) string {
	t.Helper()
	var reasons []string
	for _, s := range m["poolwatch_target_connection_refused"].GetMetric() {
		if testenv.HasLabels(s, "target", target) && s.GetGauge().GetValue() == 1 {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "reason" {
					reasons = append(reasons, lp.GetValue())
				}
			}
		}
	}
	if len(reasons) > 1 {
		t.Fatalf("target %s refused for several reasons at once: %v", target, reasons)
	}
	return strings.Join(reasons, "")
}

// poolExhaustedFiring is the query for a firing PoolExhausted alert of the
// postgres target's server pool, whatever the branch (reason) that fires.
const poolExhaustedFiring = `count(ALERTS{alertname="PoolExhausted",alertstate="firing",target="pg",pool="server"})`

// TestExhaustion_AFullServerThatRefusesTheAgentIsReportedAndKeepsPaging
// fills PostgreSQL's usable slots, lets PoolExhausted fire for the server
// pool, then kills the agent's backend and takes its slot (a superuser's
// session in a reserved slot: every slot the agent's role may use is
// taken). The agent cannot reconnect (SQLSTATE 53300):
// poolwatch_target_connection_refused reads 1 with reason reserved_slots
// from the first round that dials, no in-use count is made up, and
// PoolExhausted keeps firing for the server pool, with the mixin's short
// rules in a real Prometheus. A postgres target reached through a
// PgBouncer at max_client_conn reports pgbouncer_max_client_conn the same
// way. (Before the fix, `up` went 0, every server series disappeared and
// PoolExhausted resolved at the worst moment.)
func TestExhaustion_AFullServerThatRefusesTheAgentIsReportedAndKeepsPaging(t *testing.T) {
	const app = "pw-full"
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{MaxConnections: 10, SuperuserReserved: 3})
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(t, "app", appPassword, "LOGIN")

	// A second server behind a PgBouncer whose max_client_conn is taken.
	pg2 := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg2.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
	pgb := testenv.StartPgBouncer(t, pg2, testenv.PgBouncerOptions{
		Databases:     map[string]string{"appdb": "dbname=postgres"},
		Users:         map[string]string{"mon": monPassword},
		MaxClientConn: 3,
		// The agent's postgres targets send both as runtime parameters.
		Extra: map[string]string{"ignore_startup_parameters": "statement_timeout,lock_timeout"},
	})
	connectN(t, pgb.DSN("mon", monPassword, "appdb"), 3)

	// Prometheus' scrape timeout is 900ms, minus the 200ms offset: the
	// rounds must fit in 700ms, retries included.
	cfg := fmt.Sprintf(`defaults:
  scrape_timeout: 600ms
  probe_pool: {acquire_retries: 1, retry_backoff: 50ms}
targets:
  - name: pg
    kind: postgres
    dsn: %s&application_name=%s
  - name: via-bouncer
    kind: postgres
    dsn: %s
`, pg.DSN("mon", monPassword, "postgres"), app, pgb.DSN("mon", monPassword, "appdb"))
	pw := testenv.StartPoolwatch(t, cfg, "--scrape.timeout-offset=200ms")

	t.Run("pgbouncer_max_client_conn", func(t *testing.T) {
		m := pw.Scrape(t)
		if r := refusedReason(t, m, "via-bouncer"); r != "pgbouncer_max_client_conn" {
			t.Errorf("via-bouncer refused for %q, want pgbouncer_max_client_conn\n%s", r, pw.Logs())
		}
		if _, ok := m.Get(t, "poolwatch_pool_in_use_connections", "target", "via-bouncer", "pool", "server"); ok {
			t.Errorf("an in-use count for a target the agent could not reach")
		}
	})

	// Prometheus with the mixin's short rules, scraping the agent every
	// second.
	dir := t.TempDir()
	rules, err := mixin.WriteShortRules(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := launch.CheckRules(t.Context(), rules); err != nil {
		t.Fatal(err)
	}
	prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{
		Dir:    dir,
		Config: launch.PrometheusConfig([]string{rules}, "", fmt.Sprintf("  - job_name: poolwatch\n    static_configs:\n      - targets: ['%s']\n", pw.Addr)),
	})
	api := testenv.PromAPI{URL: prom.URL}

	// Full: 7 usable slots, the agent's and 6 of the application's.
	connectN(t, pg.DSN("app", appPassword, "postgres")+"&application_name=filler", 6)
	eventually(t, 60*time.Second, "PoolExhausted firing for the full server pool", func() (bool, string) {
		r, err := api.Query(t.Context(), poolExhaustedFiring, time.Now())
		return err == nil && r.Len() == 1, fmt.Sprintf("%v %v", r.Samples, err)
	})

	// The agent's backend is killed from a superuser session, which stays
	// and holds a reserved slot: what is left is reserved.
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres")+"&application_name=killer")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(ctx) }()
	var killed int
	if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND backend_type = 'client backend'`, app).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("killed %d agent backends (%v), want 1", killed, err)
	}
	kill := time.Now()

	t.Run("refused_within_one_scrape", func(t *testing.T) {
		// The dead connection is not handed out, even though it
		// succeeded within the last second: its socket shows the
		// termination (docs/connections.md). The first round dials, is
		// refused, and says so.
		reason := refusedReason(t, pw.Scrape(t), "pg")
		t.Logf("refused with reason %q on the first scrape after the kill (%v)", reason, time.Since(kill).Round(time.Millisecond))
		if reason != "reserved_slots" {
			t.Fatalf("refusal reason %q, want reserved_slots\n%s", reason, pw.Logs())
		}
		m := pw.Scrape(t)
		if up := m.Must(t, "poolwatch_target_up", "target", "pg"); up != 0 {
			t.Errorf("up %v while refused, want 0", up)
		}
		if _, ok := m.Get(t, "poolwatch_pool_in_use_connections", "target", "pg", "pool", "server"); ok {
			t.Errorf("an in-use count for a server the agent could not read")
		}
	})

	t.Run("pool_exhausted_keeps_firing", func(t *testing.T) {
		if !rulesUse(mixin.Rules(mixin.Short()), "poolwatch_target_connection_refused") {
			t.Fatal("the short rules have no PoolExhausted branch on poolwatch_target_connection_refused")
		}
		const window = 15 * time.Second // past the short TargetDown's 10s, and 3 PoolExhausted for: periods
		eventually(t, window+5*time.Second, "the window after the kill to pass", func() (bool, string) {
			return time.Since(kill) > window+time.Second, ""
		})
		r, err := api.QueryRange(t.Context(), poolExhaustedFiring, kill, kill.Add(window), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		if r.Len() == 1 {
			got = len(r.Samples[0].Values)
		}
		if want := int(window/time.Second) + 1; got != want {
			t.Errorf("PoolExhausted for the server pool was firing at %d of the %d evaluations after the agent was refused, want all", got, want)
		}
	})
	pw.StopAndCheck(t, monPassword, appPassword)
}

// rulesUse reports whether an alerting rule's expression names metric.
func rulesUse(groups []mixin.RuleGroup, metric string) bool {
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "PoolExhausted" && strings.Contains(r.Expr, metric) {
				return true
			}
		}
	}
	return false
}
