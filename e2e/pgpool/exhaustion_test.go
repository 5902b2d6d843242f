package pgpool

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

const (
	monUser  = "mon"
	monPW    = "mon-e2e-pw"
	appUser  = "app"
	appPW    = "app-e2e-pw"
	appDB    = "appdb"
	children = 4
	target   = "pgpool"
	job      = "poolwatch"
	// budget bounds each wait on Prometheus: the short rules need
	// for (5s) + scrape (1s) + evaluation (1s), the rest is slack for a
	// loaded 2-core machine under the race detector.
	budget = 60 * time.Second
)

func TestPgpool_EveryChildBusyPagesPoolExhaustedAndResolves(t *testing.T) {
	testenv.Require(t, "postgres", "pgpool", "prometheus")
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, monUser, monPW, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(t, appUser, appPW, "LOGIN")
	pg.CreateDatabase(t, appDB)
	pp := testenv.StartPgpool(t, []*testenv.Postgres{pg}, testenv.PgpoolOptions{
		NumInitChildren: children, MaxPool: 2,
		Users: map[string]string{monUser: monPW, appUser: appPW},
	})
	pw := testenv.StartPoolwatch(t, fmt.Sprintf(`defaults:
  scrape_timeout: 2s
targets:
  - name: %s
    kind: pgpool
    dsn: %s
`, target, pp.DSN(monUser, monPW, appDB)+"&application_name=poolwatch"), "--scrape.timeout-offset=200ms")

	dir := t.TempDir()
	rules, err := mixin.WriteShortRules(dir)
	if err != nil {
		t.Fatal(err)
	}
	prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{
		Dir: dir,
		Config: launch.PrometheusConfig([]string{rules}, "", fmt.Sprintf(`  - job_name: %s
    static_configs:
      - targets: ['%s']
`, job, pw.Addr)),
	})
	api := testenv.PromAPI{URL: prom.URL}
	sel := fmt.Sprintf(`{job=%q, target=%q, pool="children"}`, job, target)
	expect := func(what, expr string, want func([]testenv.Sample) bool) {
		t.Helper()
		testenv.Eventually(t, budget, 200*time.Millisecond, func() (bool, string) {
			s, err := api.Vector(t.Context(), expr)
			return err == nil && want(s), fmt.Sprintf("%s: %s = %v (%v)", what, expr, s, err)
		})
	}
	one := func(v float64) func([]testenv.Sample) bool {
		return func(s []testenv.Sample) bool { return len(s) == 1 && s[0].Value == v }
	}
	none := func(s []testenv.Sample) bool { return len(s) == 0 }
	expect("the agent's own child", "poolwatch_pool_in_use_connections"+sel, one(1))
	expect("the ceiling", "poolwatch_pool_max_connections"+sel, one(children))

	// Every child but the agent's runs a long query; one more client waits.
	ctx := context.Background()
	var sleepers []*pgx.Conn
	sleepDone := make(chan struct{}, children)
	// release cancels the sleeps, waits for each to return (a pgx.Conn is
	// not closed while a query runs on it), and closes the connections.
	release := func() {
		if len(sleepers) == 0 {
			return
		}
		pg.Exec(t, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'sleeper'")
		for range sleepers {
			<-sleepDone
		}
		for _, c := range sleepers {
			_ = c.Close(ctx)
		}
		sleepers = nil
	}
	t.Cleanup(release)
	for i := 0; i < children-1; i++ {
		c, err := pgx.Connect(ctx, pp.DSN(appUser, appPW, appDB)+"&application_name=sleeper")
		if err != nil {
			t.Fatal(err)
		}
		sleepers = append(sleepers, c)
		go func() {
			_, _ = c.Exec(ctx, "SELECT pg_sleep(120)")
			sleepDone <- struct{}{}
		}()
	}
	pg.WaitBackends(t, "sleeper", func(n int) bool { return n == children-1 }, 30*time.Second)
	blockedCtx, cancelBlocked := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelBlocked()
	blocked := make(chan *pgx.Conn, 1)
	go func() {
		c, err := pgx.Connect(blockedCtx, pp.DSN(appUser, appPW, appDB)+"&application_name=blocked")
		if err == nil {
			blocked <- c
		}
		close(blocked)
	}()

	exhausted := time.Now()
	expect("every child in use", "poolwatch_pool_in_use_connections"+sel, one(children))
	expect("the target stays up", fmt.Sprintf(`poolwatch_target_up{job=%q, target=%q}`, job, target), one(1))
	expect("PoolExhausted firing", fmt.Sprintf(`ALERTS{alertname=%q, alertstate="firing", job=%q, target=%q, pool="children"}`,
		mixin.AlertPoolExhausted, job, target), func(s []testenv.Sample) bool { return len(s) >= 1 })
	t.Logf("PoolExhausted fired %v after the children were exhausted", time.Since(exhausted).Round(time.Millisecond))
	select {
	case c, ok := <-blocked:
		if ok {
			_ = c.Close(ctx)
		}
		t.Fatal("the extra client got a child although every child was busy")
	default:
	}

	// Free the children: the blocked client connects, the alert resolves.
	release()
	c, ok := <-blocked
	if !ok {
		t.Fatal("the blocked client never got a child")
	}
	_ = c.Close(ctx)
	expect("PoolExhausted resolved", fmt.Sprintf(`ALERTS{alertname=%q, job=%q, target=%q, pool="children"}`,
		mixin.AlertPoolExhausted, job, target), none)
	expect("only the agent's child again", "poolwatch_pool_in_use_connections"+sel, one(1))
}
