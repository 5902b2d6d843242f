package alerting

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

// Names, credentials and sizes of the run. Passwords are throwaway values
// for throwaway servers.
const (
	monUser = "mon" // the agent's login: pg_monitor on PostgreSQL, stats_users on PgBouncer
	monPW   = "mon-e2e-pw"
	appUser = "app"
	appPW   = "app-e2e-pw"
	appDB   = "appdb"

	// exhaustDB is the PgBouncer database whose pool the test exhausts:
	// pool_size 3, no reserve, min_pool_size 1.
	exhaustDB   = "appdb"
	exhaustPool = exhaustDB + "/" + appUser
	poolSize    = 3
	// leakDB is a second PgBouncer database (same server database) whose
	// pool gets one leaked client and must never count as exhausted.
	leakDB   = "leakdb"
	leakPool = leakDB + "/" + appUser
	// leakAppPool is the postgres target's application pool that matches
	// the leaked client's application_name.
	leakAppPool = "leaky"
	leakAppName = "leaky-1"

	// sessionDB is a session-mode PgBouncer database: filled to its size
	// with idle sessions and nobody waiting, it must reach nobody.
	sessionDB   = "sessiondb"
	sessionPool = sessionDB + "/" + appUser

	bouncerTarget = "bouncer" // its upstream is pgTarget
	pgTarget      = "pg"
	// victimTarget is a postgres target that the /probe job scrapes through
	// a TCP proxy in front of the agent: blackholing the proxy makes its
	// /probe scrape stop answering. Its leak_threshold is an hour, so that
	// it adds no view of the leak.
	victimTarget = "victim"
	// goneTarget is a PgBouncer target with nothing listening: it keeps
	// poolwatch_target_up at 0 and poolwatch_target_scrape_errors_total
	// counting, so PoolwatchTargetDown and the error panels have data.
	goneTarget = "gone"

	agentJob = "poolwatch"
	probeJob = "poolwatch-probe"

	// leakThreshold is the targets' leak_threshold.
	leakThreshold = 2 * time.Second
)

// env is the whole pipeline of one run.
type env struct {
	cfg     mixin.Config // the rules Prometheus loaded
	variant string
	pg      *testenv.Postgres
	pgb     *testenv.PgBouncer
	pw      *testenv.Poolwatch
	hook    *testenv.WebhookReceiver
	am      *testenv.Daemon
	prom    *testenv.Daemon
	api     testenv.PromAPI
	// probeProxy is the victim's way from Prometheus to the agent's /probe.
	probeProxy *testenv.Proxy
	// amOptions are the timings and receivers of the Alertmanager
	// configuration (mixin.ShortAlertmanager: the shipped routing).
	amOptions mixin.AlertmanagerOptions
}

// rulesConfig returns the mixin configuration whose rules Prometheus loads:
// mixin.Short(), or a copy broken on purpose when POOLWATCH_E2E_BREAK names
// a breakage (the test must then fail).
func rulesConfig(t *testing.T) (mixin.Config, string) {
	t.Helper()
	c := mixin.Short()
	b := os.Getenv("POOLWATCH_E2E_BREAK")
	switch b {
	case "":
		return c, "short"
	case "exhausted-ratio":
		c.ExhaustedRatio = 1.5 // in use can never reach 150% of max (reserve_pool is 0)
	case "exhausted-wait":
		c.ExhaustedWaitSeconds = 3600
	case "leak":
		c.LeakFor = time.Hour
	default:
		t.Fatalf("POOLWATCH_E2E_BREAK=%q: want exhausted-ratio, exhausted-wait or leak", b)
	}
	t.Logf("POOLWATCH_E2E_BREAK=%s: the rules are broken on purpose; this run must FAIL", b)
	return c, "short-broken-" + b
}

// startEnv starts PostgreSQL, PgBouncer, poolwatch, the webhook receiver,
// Alertmanager and Prometheus, and returns once Prometheus scrapes every
// job and has loaded the rules. Everything is stopped on cleanup, in the
// reverse order.
func startEnv(t *testing.T) *env {
	t.Helper()
	e := &env{}
	e.cfg, e.variant = rulesConfig(t)

	e.pg = testenv.StartPostgres(t, testenv.PostgresOptions{})
	e.pg.CreateRole(t, monUser, monPW, "LOGIN", "IN ROLE pg_monitor")
	e.pg.CreateRole(t, appUser, appPW, "LOGIN")
	e.pg.CreateDatabase(t, appDB)

	e.pgb = testenv.StartPgBouncer(t, e.pg, testenv.PgBouncerOptions{
		PoolMode:        "transaction",
		DefaultPoolSize: poolSize,
		ReservePoolSize: 0,
		Databases: map[string]string{
			exhaustDB: fmt.Sprintf("dbname=%s pool_size=%d reserve_pool=0 min_pool_size=1", appDB, poolSize),
			leakDB:    fmt.Sprintf("dbname=%s pool_size=%d reserve_pool=0", appDB, poolSize),
			sessionDB: fmt.Sprintf("dbname=%s pool_size=%d reserve_pool=0 pool_mode=session", appDB, poolSize),
		},
		Users:      map[string]string{monUser: monPW, appUser: appPW},
		StatsUsers: []string{monUser},
	})

	gonePort := testenv.FreePort(t) // nothing listens there
	agentCfg := fmt.Sprintf(`defaults:
  scrape_timeout: 2s
  leak_threshold: %s
targets:
  - name: %s
    kind: pgbouncer
    dsn: %s
    upstream: %s
  - name: %s
    kind: postgres
    dsn: %s
    application_pools:
      - name: %s
        application_name: "leaky*"
        min_connections: 1
        max_connections: 5
  - name: %s
    kind: pgbouncer
    dsn: postgres://%s@127.0.0.1:%d/pgbouncer?sslmode=disable
    scrape_timeout: 500ms
    probe_pool:
      acquire_retries: 0
  - name: %s
    kind: postgres
    dsn: %s
    leak_threshold: 1h
`, leakThreshold, bouncerTarget, e.pgb.DSN(monUser, monPW, "pgbouncer"), pgTarget,
		pgTarget, e.pg.DSN(monUser, monPW, "postgres"), leakAppPool,
		goneTarget, monUser, gonePort,
		victimTarget, e.pg.DSN(monUser, monPW, "postgres"))
	// Prometheus sends a 900ms scrape timeout; the agent's default offset of
	// 500ms would leave it 400ms for a round under the race detector.
	e.pw = testenv.StartPoolwatch(t, agentCfg, "--scrape.timeout-offset=200ms")

	e.probeProxy = testenv.StartProxy(t, e.pw.Addr)

	// The shipped routing, grouping and inhibition (alertmanager.yml.example
	// is rendered from the same mixin code), with both receivers pointed at
	// the webhook and the short timings.
	e.hook = testenv.StartWebhookReceiver(t)
	e.amOptions = mixin.ShortAlertmanager(e.hook.URL())
	amConfig, err := mixin.RenderAlertmanager(e.amOptions)
	if err != nil {
		t.Fatal(err)
	}
	e.am = testenv.StartAlertmanager(t, testenv.AlertmanagerOptions{
		Dir:    t.TempDir(),
		Config: string(amConfig),
	})
	e.prom = e.startPrometheus(t)
	e.api = testenv.PromAPI{URL: e.prom.URL}
	e.waitScraping(t)
	e.checkRulesLoaded(t)
	return e
}

func (e *env) startPrometheus(t *testing.T) *testenv.Daemon {
	t.Helper()
	dir := t.TempDir()
	var rules string
	var err error
	if e.variant == "short" {
		rules, err = mixin.WriteShortRules(dir)
	} else {
		rules, err = mixin.WriteRules(e.cfg, e.variant, dir)
	}
	if err != nil {
		t.Fatalf("generate the rules: %v", err)
	}
	if err := launch.CheckRules(t.Context(), rules); err != nil {
		t.Fatal(err)
	}
	// The agent job scrapes /metrics (simple mode: every target's series
	// too); the probe job scrapes each target through /probe, as in
	// prometheus.yml.example. Both feed the same rules: PoolSelector takes
	// both jobs.
	scrapes := fmt.Sprintf(`  - job_name: %s
    static_configs:
      - targets: ['%s']
  - job_name: %s
    metrics_path: /probe
    static_configs:
      - targets: [%s, %s, %s, %s]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: '%s'
      - source_labels: [__param_target]
        regex: %s
        target_label: __address__
        replacement: '%s'
`, agentJob, e.pw.Addr, probeJob, bouncerTarget, pgTarget, goneTarget, victimTarget, e.pw.Addr, victimTarget, e.probeProxy.Addr)
	return testenv.StartPrometheus(t, testenv.PrometheusOptions{
		Dir:    dir,
		Config: launch.PrometheusConfig([]string{rules}, e.am.Addr, scrapes),
	})
}

// waitScraping polls Prometheus until the agent job and the three probe
// targets have been scraped successfully.
func (e *env) waitScraping(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		agent, err1 := e.api.Query(t.Context(), fmt.Sprintf(`up{job=%q} == 1`, agentJob), time.Now())
		probes, err2 := e.api.Query(t.Context(), fmt.Sprintf(`up{job=%q} == 1`, probeJob), time.Now())
		return err1 == nil && err2 == nil && agent.Len() == 1 && probes.Len() == 4,
			fmt.Sprintf("Prometheus is not scraping poolwatch: agent job up: %d (%v), probe job up: %d of 4 (%v)", agent.Len(), err1, probes.Len(), err2)
	})
}

// checkRulesLoaded checks that Prometheus loaded exactly the generated
// groups and rules.
func (e *env) checkRulesLoaded(t *testing.T) {
	t.Helper()
	groups, err := e.api.Rules(t.Context())
	if err != nil {
		t.Fatalf("list rules: %v", err)
	}
	want := map[string]int{}
	for _, g := range mixin.Rules(e.cfg) {
		want[g.Name] = len(g.Rules)
	}
	got := map[string]int{}
	for _, g := range groups {
		got[g.Name] += len(g.Rules)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Prometheus loaded rule groups %v, the mixin generated %v", got, want)
	}
}

// checkRulesHealthy fails the test for any rule whose last evaluation
// failed (for example a many-to-many match on real series).
func (e *env) checkRulesHealthy(t *testing.T) {
	t.Helper()
	groups, err := e.api.Rules(t.Context())
	if err != nil {
		t.Fatalf("list rules: %v", err)
	}
	n := 0
	for _, g := range groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule %s in group %s: health %q, last error %q\n\t%s", r.Name, g.Name, r.Health, r.LastError, r.Query)
			}
		}
	}
	t.Logf("%d rules evaluated without error", n)
}

// diagnose shows what Prometheus sees of the pools and alerts, for failure
// messages.
func (e *env) diagnose() string {
	var b strings.Builder
	for _, q := range []string{
		`poolwatch_pool_in_use_connections{target!="gone"}`,
		`poolwatch_pool_max_connections{target="bouncer"}`,
		`poolwatch_pool_waiting_clients`,
		`poolwatch_pool_max_wait_seconds`,
		`poolwatch_pool_leaked_connections > 0`,
		mixin.RecordUtilization + ` > 0.5`,
		`ALERTS`,
	} {
		r, err := e.api.Query(context.Background(), q, time.Now())
		fmt.Fprintf(&b, "\t%s:", q)
		if err != nil {
			fmt.Fprintf(&b, " error %v\n", err)
			continue
		}
		if r.Len() == 0 {
			b.WriteString(" (empty)\n")
			continue
		}
		b.WriteString("\n")
		for i, s := range r.Samples {
			if i == 20 {
				fmt.Fprintf(&b, "\t\t... %d more\n", len(r.Samples)-i)
				break
			}
			fmt.Fprintf(&b, "\t\t%s %v\n", launch.LabelsString(s.Metric), s.Value)
		}
	}
	return b.String()
}

// summary lists the distinct (alertname, status, target, pool) of the
// alerts the webhook received so far, for failure messages.
func summary(hook *testenv.WebhookReceiver) string {
	seen := map[string]int{}
	for _, e := range hook.Events() {
		k := fmt.Sprintf("#%d %s %s target=%s pool=%s job=%s reason=%s", e.Notification, e.Labels["alertname"], e.Status,
			e.Labels["target"], e.Labels["pool"], e.Labels["job"], e.Labels["reason"])
		seen[k]++
	}
	if len(seen) == 0 {
		return "(no notification received)"
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(seen)) {
		fmt.Fprintf(&b, "\t%s (x%d)\n", k, seen[k])
	}
	return b.String()
}
