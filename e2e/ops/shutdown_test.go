package ops_test

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// consoleClients counts PgBouncer console clients logged in as user.
func consoleClients(t *testing.T, pgb *testenv.PgBouncer, user string) int {
	t.Helper()
	n := 0
	for _, r := range pgb.Show(t, "SHOW CLIENTS").Records() {
		if r["user"] == user && r["database"] == "pgbouncer" {
			n++
		}
	}
	return n
}

type scrapeResult struct {
	code int
	body string
	err  error
}

// TestShutdown_SIGTERMFinishesTheScrapeInFlightAndClosesEveryPool sends
// SIGTERM while a scrape is in flight against a slow target: the scrape
// still gets its full answer, the agent exits 0 within a bound, and every
// connection it had (PostgreSQL backends, PgBouncer console clients) is
// closed.
func TestShutdown_SIGTERMFinishesTheScrapeInFlightAndClosesEveryPool(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		Users: map[string]string{"stats": statPassword}, StatsUsers: []string{"stats"},
		Databases: map[string]string{"appdb": "dbname=postgres"},
	})
	proxy := testenv.StartProxy(t, pg.Addr())
	slowDSN := monDSNVia(t, proxy, pg, "pw-slow")
	cfg := configOf(pgTarget("pg", pg, "pw-term", ""), fmt.Sprintf(`  - name: slow
    kind: postgres
    dsn: %s
  - name: bouncer
    kind: pgbouncer
    dsn: %s
`, slowDSN, pgb.DSN("stats", statPassword, "pgbouncer")))
	pw := testenv.StartPoolwatch(t, cfg)
	wantTargets(t, pw.Scrape(t), "pg", "slow", "bouncer")
	if n := pg.CountBackends(t, "pw-term") + pg.CountBackends(t, "pw-slow"); n < 2 {
		t.Fatalf("%d agent backends after a scrape, want at least 2", n)
	}
	if n := consoleClients(t, pgb, "stats"); n < 1 {
		t.Fatalf("%d agent console clients on PgBouncer after a scrape, want at least 1", n)
	}

	// A scrape that takes several round trips of 150 ms each way.
	proxy.SetLatency(150 * time.Millisecond)
	proxy.ResetCounts()
	res := make(chan scrapeResult, 1)
	go func() {
		code, body, err := request(http.DefaultClient, http.MethodGet, pw.URL+"/metrics")
		res <- scrapeResult{code, body, err}
	}()
	eventually(t, settle, "the slow target's round to start", func() (bool, string) {
		return proxy.StatementCount() > 0, fmt.Sprint(proxy.StatementCount())
	})
	start := time.Now()
	pw.Signal(t, syscall.SIGTERM)

	r := <-res
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("the scrape in flight at SIGTERM: status %d, err %v; want a full answer", r.code, r.err)
	}
	if up := testenv.ParseMetrics(t, r.body).Must(t, targetUp, "target", "slow"); up != 1 {
		t.Fatalf("the scrape in flight at SIGTERM: slow up %v, want 1 (the round was cut short)", up)
	}
	select {
	case <-pw.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent did not exit within 10 s of SIGTERM")
	}
	took := time.Since(start)
	if took > 5*time.Second {
		t.Errorf("exited %v after SIGTERM, want within 5 s: the round in flight needs about 1 s", took)
	}
	if err := pw.ExitErr(); err != nil {
		t.Fatalf("exit status after SIGTERM: %v, want 0", err)
	}
	t.Logf("exited %v after SIGTERM (scrape in flight with 150 ms latency)", took.Round(time.Millisecond))

	for _, app := range []string{"pw-term", "pw-slow"} {
		pg.WaitBackends(t, app, func(n int) bool { return n == 0 }, settle)
	}
	eventually(t, settle, "the agent's PgBouncer console clients to go", func() (bool, string) {
		n := consoleClients(t, pgb, "stats")
		return n == 0, fmt.Sprintf("%d left", n)
	})
	logs := pw.Logs()
	if !strings.Contains(logs, `msg="shutting down" signal=terminated`) || !strings.Contains(logs, "msg=stopped") {
		t.Errorf("the log does not show the shutdown")
	}
	if strings.Contains(logs, "incomplete") || strings.Contains(logs, "cancelled") {
		t.Errorf("an unhurried shutdown cut something short")
	}
	pw.StopAndCheck(t, monPassword, statPassword)
}

// TestShutdown_SIGTERMIsBoundedByTheShutdownTimeout sends SIGTERM while a
// scrape hangs on a blackholed target (which accepts connections and never
// answers): the agent gives up on it after --web.shutdown-timeout and still
// exits 0.
func TestShutdown_SIGTERMIsBoundedByTheShutdownTimeout(t *testing.T) {
	const shutdownTimeout = time.Second
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	proxy := testenv.StartProxy(t, pg.Addr())
	holeDSN := monDSNVia(t, proxy, pg, "pw-hole")
	cfg := configOf(pgTarget("pg", pg, "pw-term", ""), fmt.Sprintf(`  - name: hole
    kind: postgres
    dsn: %s
    scrape_timeout: 30s
    probe_pool: {connect_timeout: 20s}
`, holeDSN))
	pw := testenv.StartPoolwatch(t, cfg, "--web.shutdown-timeout="+shutdownTimeout.String())

	proxy.Blackhole(true)
	res := make(chan scrapeResult, 1)
	go func() {
		code, body, err := request(http.DefaultClient, http.MethodGet, pw.URL+"/metrics")
		res <- scrapeResult{code, body, err}
	}()
	eventually(t, settle, "the agent to dial the blackholed target", func() (bool, string) {
		return proxy.ActiveConns() > 0, fmt.Sprint(proxy.ActiveConns())
	})
	start := time.Now()
	pw.Signal(t, syscall.SIGTERM)
	select {
	case <-pw.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("the agent did not exit within 15 s of SIGTERM with --web.shutdown-timeout=%v", shutdownTimeout)
	}
	took := time.Since(start)
	if err := pw.ExitErr(); err != nil {
		t.Fatalf("exit status after SIGTERM: %v, want 0", err)
	}
	t.Logf("exited %v after SIGTERM with a scrape hanging on a blackholed target (--web.shutdown-timeout=%v)", took.Round(time.Millisecond), shutdownTimeout)
	// The HTTP shutdown waits up to the timeout and the pools are closed
	// under the same (by then expired) deadline; allow 1 s for the rest.
	if limit := shutdownTimeout + time.Second; took > limit {
		t.Errorf("exited %v after SIGTERM, want at most %v (--web.shutdown-timeout=%v)", took, limit, shutdownTimeout)
	}
	<-res // answered or cut off; either is fine
	if !strings.Contains(pw.Logs(), "graceful HTTP shutdown incomplete") {
		t.Errorf("the log does not say that the HTTP shutdown was cut short")
	}
	pg.WaitBackends(t, "pw-term", func(n int) bool { return n == 0 }, settle)
	pw.StopAndCheck(t, monPassword)
}
