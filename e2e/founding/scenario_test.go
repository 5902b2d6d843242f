package founding

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

// The world of a run. Passwords are throwaway values for throwaway servers.
const (
	monUser = "mon" // the agent's login: pg_monitor on PostgreSQL, stats_users on PgBouncer
	monPW   = "mon-founding-pw"
	appUser = "app"
	appPW   = "app-founding-pw"
	appDB   = "orders"

	leakyApp = "orders-api"       // the retry loop that loses conn1
	fixedApp = "orders-api-fixed" // the same loop, closing conn1 before the retry

	pgTarget      = "pg"
	bouncerTarget = "bouncer"
	agentJob      = "poolwatch"
	appPool       = "default" // the pool label of a JSON document with one pool

	// The application as the issue ran it: ThreadedConnectionPool(2, 10),
	// 6 worker threads.
	appMinConn = 2
	appMaxConn = 10
	appWorkers = 6

	alertUnaccounted = mixin.AlertPoolUnaccounted
	alertExhausted   = mixin.AlertPoolExhausted
	reasonAllInUse   = "all_in_use"

	// leakThreshold is the targets' leak_threshold, as in the issue.
	leakThreshold = 10 * time.Second
)

// route is how an application reaches PostgreSQL, and so which fault
// kills its connections and which target its seen_as names.
type route string

const (
	routeDirect      route = "direct"      // PostgreSQL; idle backends terminated
	routeSession     route = "session"     // PgBouncer, session mode; idle backends terminated
	routeTransaction route = "transaction" // PgBouncer, transaction mode; PgBouncer restarted
)

// PgBouncer's two databases, both in front of appDB: one per mode.
const (
	transactionDB = appDB
	sessionDB     = appDB + "_session"
)

// scenario is one run's settings. Every loop is bounded.
type scenario struct {
	// leaky and fixed are the routes of the two applications.
	leaky, fixed route
	// killEvery is the time between two pg_terminate_backend rounds on the
	// idle backends of the apps on the direct and session routes;
	// restartEvery the time between two PgBouncer restarts, when an app is
	// on the transaction route.
	killEvery, restartEvery time.Duration
	// minFaults and maxFaults bound how long the faults go on: at least
	// minFaults (the fixed app is watched under the faults that long), and
	// past it until the leaky app's pages both reached the webhook, at most
	// maxFaults.
	minFaults, maxFaults time.Duration
	// tail is how long the run goes on after the last fault, watching for
	// a page of the fixed app (longer than the short rules' for plus an
	// evaluation and Alertmanager's group_wait).
	tail time.Duration
}

// Fault intervals. Idle backends die every few seconds, as in the issue.
// PgBouncer restarts are 10 s apart: each one costs poolwatch one failed
// round of the pgbouncer target (its kept connection is dead), which leaves
// the cross-check out of that round and restarts the alert's for; at 3 s
// apart PoolUnaccountedConnections cannot fire while the restarts go on
// (measured; see the package doc).
const (
	killEvery    = 3 * time.Second
	restartEvery = 10 * time.Second
)

// sameRoute is the scenario on one route: both apps on r, under
// the same faults.
func sameRoute(r route) scenario {
	return scenario{leaky: r, fixed: r, killEvery: killEvery, restartEvery: restartEvery,
		minFaults: 30 * time.Second, maxFaults: 100 * time.Second, tail: 10 * time.Second}
}

// String names the scenario's routes.
func (sc scenario) String() string {
	if sc.leaky == sc.fixed {
		return string(sc.leaky)
	}
	return fmt.Sprintf("leaky %s, fixed %s", sc.leaky, sc.fixed)
}

// onRoute returns the applications whose route is one of rs.
func (sc scenario) onRoute(rs ...route) []string {
	var names []string
	for _, a := range []struct {
		name string
		r    route
	}{{leakyApp, sc.leaky}, {fixedApp, sc.fixed}} {
		if slices.Contains(rs, a.r) {
			names = append(names, a.name)
		}
	}
	return names
}

// seenAs is the server target an application on r is seen as.
func seenAs(r route) string {
	if r == routeDirect {
		return pgTarget
	}
	return bouncerTarget
}

// appStatus is the application's /status: the JSON document poolwatch
// reads, plus the keys it ignores that tell the test what happened.
type appStatus struct {
	MinConn          int      `json:"minconn"`
	MaxConn          int      `json:"maxconn"`
	InUse            int      `json:"in_use"`
	Idle             int      `json:"idle"`
	Timeouts         int      `json:"timeouts"` // "connection pool exhausted" errors
	FirstExhaustedAt *float64 `json:"first_exhausted_at"`
	FirstFullAt      *float64 `json:"first_full_at"`
	Lost             int      `json:"lost"` // connections the retry loop lost
	ConnectErrors    int      `json:"connect_errors"`
}

func unixTime(f *float64) time.Time {
	if f == nil {
		return time.Time{}
	}
	return time.UnixMilli(int64(math.Round(*f * 1000)))
}

// appRun is what one application did in a run, and what poolwatch,
// Prometheus and Alertmanager made of it.
type appRun struct {
	name, mode string
	route      route
	final      appStatus
	// firstExhausted is the application's first "connection pool
	// exhausted" error; firstFull the first time its pool counted every
	// slot in use. Zero: never.
	firstExhausted, firstFull time.Time
	// unaccountedFirst is the time of the first sample of
	// poolwatch_pool_unaccounted_connections >= 1 in Prometheus;
	// unaccountedMax the largest value. samples and gaps count its samples
	// and the holes of more than 1.5 s between two of them (rounds whose
	// server side failed leave the series out).
	unaccountedFirst time.Time
	unaccountedMax   float64
	samples, gaps    int
	// longestStreak is the longest time the series stayed >= 1 from one
	// sample to the next with no gap: what the alert's for must outlast.
	longestStreak time.Duration
	// serverDown counts the samples of poolwatch_target_up 0 of the
	// server target the app is seen as.
	serverDown int
	// serverMaxInUse is the most connections the server side ever showed
	// in use for this application (the postgres target's application pool
	// for orders-api; -1 when not measured).
	serverMaxInUse float64
	// pending is when each alert of the app's target first showed as
	// pending in Prometheus' ALERTS, by alertname[/reason].
	pending map[string]time.Time
	// fired is the first firing notification of each alert of the app's
	// target at the webhook, by alertname[/reason]. StartsAt is when
	// Prometheus fired it, Received when the webhook got it.
	fired map[string]launch.AlertEvent
}

// alertKey names an alert by alertname and, when set, reason.
func alertKey(labels map[string]string) string {
	if r := labels["reason"]; r != "" {
		return labels["alertname"] + "/" + r
	}
	return labels["alertname"]
}

// firedAt is when alert key fired (Prometheus' StartsAt); zero when it did
// not reach the webhook.
func (a *appRun) firedAt(key string) time.Time {
	if e, ok := a.fired[key]; ok {
		return e.StartsAt
	}
	return time.Time{}
}

// result is one run.
type result struct {
	sc             scenario
	ready          time.Time // everything up, the apps' traffic flowing
	faultsStart    time.Time
	faultsEnd, end time.Time
	kills          int           // pg_terminate_backend rounds
	killed         int           // backends they terminated
	restarts       int           // PgBouncer restarts
	downFor        time.Duration // the longest of them
	leaky, fixed   *appRun
	// otherPages are firing notifications of PoolUnaccountedConnections for
	// any other target (there must be none).
	otherPages []launch.AlertEvent
}

// env is the running pipeline of one run.
type env struct {
	sc     scenario
	pg     *testenv.Postgres
	pgb    *testenv.PgBouncer
	apps   map[string]*testenv.Daemon // by application name
	pw     *testenv.Poolwatch
	hook   *testenv.WebhookReceiver
	prom   *testenv.Daemon
	api    testenv.PromAPI
	client *http.Client
}

// startEnv starts PostgreSQL, PgBouncer, both applications, poolwatch,
// the webhook receiver, Alertmanager and Prometheus for sc's route, and
// returns once Prometheus has loaded the rules and scrapes both
// applications' cross-check. Everything stops on cleanup.
func startEnv(t *testing.T, sc scenario) *env {
	t.Helper()
	testenv.Require(t, "postgres", "pgbouncer", "prometheus", "alertmanager", "python")
	e := &env{sc: sc, apps: map[string]*testenv.Daemon{}, client: &http.Client{Timeout: 5 * time.Second}}
	e.pg = testenv.StartPostgres(t, testenv.PostgresOptions{})
	e.pg.CreateRole(t, monUser, monPW, "LOGIN", "IN ROLE pg_monitor")
	e.pg.CreateRole(t, appUser, appPW, "LOGIN")
	e.pg.CreateDatabase(t, appDB)

	// One database per mode; room for both apps' 20 clients in session
	// mode, where each holds a server connection.
	e.pgb = testenv.StartPgBouncer(t, e.pg, testenv.PgBouncerOptions{
		PoolMode:        "transaction",
		DefaultPoolSize: 30,
		Databases: map[string]string{
			transactionDB: "dbname=" + appDB,
			sessionDB:     "dbname=" + appDB + " pool_mode=session",
		},
		Users:      map[string]string{monUser: monPW, appUser: appPW},
		StatsUsers: []string{monUser},
	})

	dsn := map[route]string{
		routeDirect:      e.pg.DSN(appUser, appPW, appDB),
		routeSession:     e.pgb.RawDSN(appUser, appPW, sessionDB),
		routeTransaction: e.pgb.RawDSN(appUser, appPW, transactionDB),
	}
	routeOf := map[string]route{leakyApp: sc.leaky, fixedApp: sc.fixed}
	for name, mode := range map[string]string{leakyApp: "leaky", fixedApp: "fixed"} {
		e.apps[name] = testenv.StartApp(t, testenv.AppOptions{App: testenv.AppPsycopg2, DSN: dsn[routeOf[name]], ApplicationName: name,
			Args: []string{"--minconn", fmt.Sprint(appMinConn), "--maxconn", fmt.Sprint(appMaxConn),
				"--workers", fmt.Sprint(appWorkers), "--mode", mode}})
	}

	// As the README configures poolwatch: a postgres target with the
	// application's pool as the server sees it, a pgbouncer target, and the
	// application's own pool over HTTP, seen as what it connects to.
	cfg := fmt.Sprintf(`defaults:
  scrape_timeout: 2s
  leak_threshold: %s
targets:
  - name: %s
    kind: postgres
    dsn: %s
    application_pools:
      - {name: %s, application_name: %q, min_connections: %d, max_connections: %d}
  - name: %s
    kind: pgbouncer
    dsn: %s
`, leakThreshold, pgTarget, e.pg.DSN(monUser, monPW, "postgres"), leakyApp, leakyApp, appMinConn, appMaxConn,
		bouncerTarget, e.pgb.DSN(monUser, monPW, "pgbouncer"))
	for _, name := range []string{leakyApp, fixedApp} {
		cfg += fmt.Sprintf(`  - name: %s
    kind: application
    url: %s/status
    seen_as:
      - {target: %s, application_name: %q}
`, name, e.apps[name].URL, seenAs(routeOf[name]), name)
	}
	// Prometheus sends a 900ms scrape timeout; the default offset of 500ms
	// would leave 400ms for a round under the race detector.
	e.pw = testenv.StartPoolwatch(t, cfg, "--scrape.timeout-offset=200ms")

	e.hook = testenv.StartWebhookReceiver(t)
	am := testenv.StartAlertmanager(t, testenv.AlertmanagerOptions{
		Dir:    t.TempDir(),
		Config: launch.AlertmanagerConfig("webhook", e.hook.URL(), "alertname", "target", "pool", "reason"),
	})
	dir := t.TempDir()
	rules := rulesFile(t, dir)
	e.prom = testenv.StartPrometheus(t, testenv.PrometheusOptions{
		Dir: dir,
		Config: launch.PrometheusConfig([]string{rules}, am.Addr, fmt.Sprintf(`  - job_name: %s
    static_configs:
      - targets: ['%s']
`, agentJob, e.pw.Addr)),
	})
	e.api = testenv.PromAPI{URL: e.prom.URL, Client: e.client, Timeout: 10 * time.Second}
	e.checkRules(t)
	testenv.Eventually(t, 60*time.Second, 200*time.Millisecond, func() (bool, string) {
		v, err := e.api.Vector(t.Context(), fmt.Sprintf(`poolwatch_pool_unaccounted_connections{job=%q} == 0`, agentJob))
		return err == nil && len(v) == 2, fmt.Sprintf("Prometheus has %d of the 2 applications' cross-checks at 0 (%v)", len(v), err)
	})
	return e
}

// rulesFile writes the short variant of the shipped rules into dir, or
// returns POOLWATCH_FOUNDING_RULES, and checks it with promtool.
func rulesFile(t *testing.T, dir string) string {
	t.Helper()
	rules := os.Getenv("POOLWATCH_FOUNDING_RULES")
	if rules != "" {
		abs, err := filepath.Abs(rules)
		if err != nil {
			t.Fatal(err)
		}
		rules = abs
		t.Logf("POOLWATCH_FOUNDING_RULES: Prometheus evaluates %s", rules)
	} else {
		var err error
		if rules, err = mixin.WriteShortRules(dir); err != nil {
			t.Fatalf("generate the short rules: %v", err)
		}
	}
	if err := launch.CheckRules(t.Context(), rules); err != nil {
		t.Fatal(err)
	}
	return rules
}

// checkRules fails the test unless Prometheus loaded both alerts the run
// is about.
func (e *env) checkRules(t *testing.T) {
	t.Helper()
	groups, err := e.api.Rules(t.Context())
	if err != nil {
		t.Fatalf("list rules: %v", err)
	}
	have := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Type == "alerting" {
				have[r.Name] = true
			}
		}
	}
	for _, a := range []string{alertUnaccounted, alertExhausted} {
		if !have[a] {
			t.Fatalf("the rules Prometheus loaded have no alert %s (alerts: %v)", a, slices.Sorted(maps.Keys(have)))
		}
	}
}

// killIdle terminates the idle backends of the apps on the direct and
// session routes and returns how many.
func (e *env) killIdle(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n, err := e.pg.TerminateIdleBackends(ctx, e.sc.onRoute(routeDirect, routeSession)...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// restartPgBouncer stops PgBouncer (SIGTERM: every client is disconnected)
// and starts it again on the same port, and returns how long it took.
func (e *env) restartPgBouncer(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	e.pgb.Stop(t)
	e.pgb.Start(t)
	return time.Since(start)
}

// leakyPaged reports whether both of the leaky app's pages reached the
// webhook.
func (e *env) leakyPaged() bool {
	var unaccounted, exhausted bool
	for _, ev := range e.hook.Events() {
		if ev.Status != "firing" || ev.Labels["target"] != leakyApp {
			continue
		}
		switch alertKey(ev.Labels) {
		case alertUnaccounted:
			unaccounted = true
		case alertExhausted + "/" + reasonAllInUse:
			exhausted = true
		}
	}
	return unaccounted && exhausted
}

// run runs sc once and returns what happened. It fails the test only when
// the pipeline itself fails; the caller judges the result.
func run(t *testing.T, sc scenario) *result {
	t.Helper()
	e := startEnv(t, sc)
	r := &result{sc: sc, ready: time.Now()}

	// The faults, on their schedules, bounded in time (and so in count).
	kill := len(sc.onRoute(routeDirect, routeSession)) > 0
	restart := len(sc.onRoute(routeTransaction)) > 0
	r.faultsStart = time.Now()
	nextKill, nextRestart := r.faultsStart, r.faultsStart
	for {
		if now := time.Now(); kill && !now.Before(nextKill) {
			r.killed += e.killIdle(t)
			r.kills++
			nextKill = nextKill.Add(sc.killEvery)
		}
		if now := time.Now(); restart && !now.Before(nextRestart) {
			r.downFor = max(r.downFor, e.restartPgBouncer(t))
			r.restarts++
			nextRestart = nextRestart.Add(sc.restartEvery)
		}
		elapsed := time.Since(r.faultsStart)
		if elapsed >= sc.maxFaults || elapsed >= sc.minFaults && e.leakyPaged() {
			break
		}
		next := r.faultsStart.Add(sc.maxFaults)
		if kill {
			next = nextKill
		}
		if restart && (!kill || nextRestart.Before(next)) {
			next = nextRestart
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-t.Context().Done():
			timer.Stop()
			t.Fatal("interrupted")
		case <-timer.C:
		}
	}
	r.faultsEnd = time.Now()

	// The tail: a page of the fixed app, pending when the faults stopped,
	// would arrive now.
	e.hook.Await(time.Now().Add(sc.tail), func(ev testenv.AlertEvent) bool {
		return ev.Status == "firing" && ev.Labels["target"] == fixedApp
	})
	r.end = time.Now()

	r.leaky = e.collect(t, leakyApp, "leaky", r)
	r.fixed = e.collect(t, fixedApp, "fixed", r)
	for _, ev := range e.hook.Events() {
		if ev.Status == "firing" && ev.Labels["alertname"] == alertUnaccounted && ev.Labels["target"] != leakyApp && ev.Labels["target"] != fixedApp {
			r.otherPages = append(r.otherPages, ev)
		}
	}
	if bad := e.hook.Bad(); len(bad) > 0 {
		t.Errorf("the webhook got malformed notifications: %q", bad)
	}
	return r
}

// collect reads what app did (its /status) and what Prometheus and the
// webhook saw of it over the run.
func (e *env) collect(t *testing.T, name, mode string, r *result) *appRun {
	sc := r.sc
	t.Helper()
	a := &appRun{name: name, mode: mode, serverMaxInUse: -1, pending: map[string]time.Time{}, fired: map[string]launch.AlertEvent{}}
	a.final = e.status(t, name)
	a.firstExhausted, a.firstFull = unixTime(a.final.FirstExhaustedAt), unixTime(a.final.FirstFullAt)

	window := fmt.Sprintf("[%ds]", int(math.Ceil(time.Since(r.ready).Seconds()))+5)
	ctx := t.Context()
	res, err := e.api.Query(ctx, fmt.Sprintf(`poolwatch_pool_unaccounted_connections{job=%q,target=%q,pool=%q}`, agentJob, name, appPool)+window, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Samples {
		a.samples += len(s.Values)
		var streakStart time.Time
		for i, v := range s.Values {
			if v >= 1 && a.unaccountedFirst.IsZero() {
				a.unaccountedFirst = s.Times[i]
			}
			a.unaccountedMax = max(a.unaccountedMax, v)
			gap := i > 0 && s.Times[i].Sub(s.Times[i-1]) > 1500*time.Millisecond
			if gap {
				a.gaps++
			}
			switch {
			case v < 1:
				streakStart = time.Time{}
			case gap || streakStart.IsZero():
				streakStart = s.Times[i]
			default:
				a.longestStreak = max(a.longestStreak, s.Times[i].Sub(streakStart))
			}
		}
	}
	a.route = sc.leaky
	if name == fixedApp {
		a.route = sc.fixed
	}
	seen := seenAs(a.route)
	up := fmt.Sprintf(`poolwatch_target_up{job=%q,target=%q}%s`, agentJob, seen, window)
	down, err := e.api.Vector(ctx, fmt.Sprintf(`count_over_time(%s) - sum_over_time(%s)`, up, up))
	if err != nil {
		t.Fatal(err)
	}
	if len(down) == 1 {
		a.serverDown = int(down[0].Value)
	}
	res, err = e.api.Query(ctx, fmt.Sprintf(`ALERTS{alertstate="pending",target=%q}`, name)+window, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Samples {
		if k := alertKey(s.Metric); len(s.Times) > 0 {
			if at, ok := a.pending[k]; !ok || s.Times[0].Before(at) {
				a.pending[k] = s.Times[0]
			}
		}
	}
	if name == leakyApp {
		v, err := e.api.Vector(ctx, fmt.Sprintf(`max_over_time(poolwatch_pool_in_use_connections{job=%q,target=%q,pool=%q}%s)`, agentJob, pgTarget, leakyApp, window))
		if err != nil {
			t.Fatal(err)
		}
		if len(v) == 1 {
			a.serverMaxInUse = v[0].Value
		}
	}
	for _, ev := range e.hook.Events() {
		if ev.Status != "firing" || ev.Labels["target"] != name {
			continue
		}
		if _, ok := a.fired[alertKey(ev.Labels)]; !ok {
			a.fired[alertKey(ev.Labels)] = ev
		}
	}
	return a
}

// status reads the application's /status.
func (e *env) status(t *testing.T, name string) appStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.apps[name].URL+"/status", nil) //nolint:gosec // G704: the test's own application on loopback
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req) //nolint:gosec // G704: the test's own application on loopback
	if err != nil {
		t.Fatalf("%s /status: %v", name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s /status: %s %v: %s", name, resp.Status, err, body)
	}
	var st appStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("%s /status: %v: %s", name, err, body)
	}
	return st
}

// since formats t as seconds after base, or "-" for the zero time.
func since(base, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.1f", t.Sub(base).Seconds())
}

// describe is a run in a few lines, for logs and failures.
func (r *result) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: faults for %.1fs: %d pg_terminate_backend rounds every %v (%d backends), %d PgBouncer restarts every %v (longest %v); run %.1fs; times in seconds after the first fault\n",
		r.sc, r.faultsEnd.Sub(r.faultsStart).Seconds(), r.kills, r.sc.killEvery, r.killed, r.restarts, r.sc.restartEvery,
		r.downFor.Round(time.Millisecond), r.end.Sub(r.ready).Seconds())
	for _, a := range []*appRun{r.leaky, r.fixed} {
		if a == nil {
			continue
		}
		fmt.Fprintf(&b, "  %s (%s, %s): first exhausted %s, all slots in use %s, unaccounted>=1 %s (max %v, longest streak %.0fs, %d samples, %d gaps, server target down in %d), final in_use %d/%d lost %d timeouts %d connect_errors %d",
			a.name, a.mode, a.route, since(r.faultsStart, a.firstExhausted), since(r.faultsStart, a.firstFull), since(r.faultsStart, a.unaccountedFirst),
			a.unaccountedMax, a.longestStreak.Seconds(), a.samples, a.gaps, a.serverDown, a.final.InUse, a.final.MaxConn, a.final.Lost, a.final.Timeouts, a.final.ConnectErrors)
		if a.serverMaxInUse >= 0 {
			fmt.Fprintf(&b, ", server side in use at most %v", a.serverMaxInUse)
		}
		b.WriteString("\n")
		for _, k := range slices.Sorted(maps.Keys(a.pending)) {
			fmt.Fprintf(&b, "    pending  %-34s %s\n", k, since(r.faultsStart, a.pending[k]))
		}
		for _, k := range slices.Sorted(maps.Keys(a.fired)) {
			ev := a.fired[k]
			fmt.Fprintf(&b, "    fired    %-34s %s (at the webhook %s)\n", k, since(r.faultsStart, ev.StartsAt), since(r.faultsStart, ev.Received))
		}
	}
	return b.String()
}
