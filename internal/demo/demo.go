package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/mixin"
)

// The demo's world. Passwords are generated per run.
const (
	monUser = "mon" // poolwatch's login: pg_monitor on PostgreSQL, stats_users on PgBouncer
	appUser = "app" // the application's login

	shopDB       = "shop" // transaction pool of shopPoolSize, min_pool_size 1: the one that fills up and leaks
	shopPool     = shopDB + "/" + appUser
	shopPoolSize = 3
	reportsDB    = "reports" // session pool of 2, one report job in it

	bouncerTarget = "bouncer"
	pgTarget      = "pg"
	appPoolName   = "shop-web" // the postgres target's application pool
	webApp        = "shop-web" // application_name prefix of the web clients
	reportApp     = "reports-job"

	agentJob = "poolwatch" // the job name the shipped rules select

	alertExhausted = "PoolExhausted"
	alertLeak      = "PoolConnectionLeak"
)

// Phase limits: every wait of the script is bounded.
const (
	normalFor       = 15 * time.Second
	fillStepFor     = 5 * time.Second
	exhaustedBudget = 60 * time.Second
	holdAfterFire   = 6 * time.Second // lets the warnings of a full pool fire too
	leakBudget      = 75 * time.Second
	recoveryBudget  = 60 * time.Second
)

// demo is one run: its services, its load and what it saw.
type demo struct {
	o   options
	scr *screen

	dir              string
	started, readyAt time.Time
	monPW, appPW     string

	pg   *launch.Postgres
	pgb  *launch.PgBouncer
	pw   *launch.Daemon
	am   *launch.Daemon
	prom *launch.Daemon
	// started holds every service in the order it started; cleanup closes
	// them in reverse.
	services []io.Closer
	hook     *receiver
	api      launch.PromAPI
	// promUI is the base of Prometheus' web pages: prom's address, plus
	// "/classic" for Debian's build, which ships only the classic UI.
	promUI string

	cancel  context.CancelFunc // stops the load and the pollers
	bg      sync.WaitGroup     // the pollers
	shop    *traffic
	reports *traffic
	leaker  *leak
	// orders is the retry-loop scene's application (founding.go).
	orders *orders
	// before5 is what the receiver had seen of the alerts of phases 2 to 4
	// when phase 5 began: report judges those phases on it, whatever
	// phase 5's application then fires.
	before5 map[string]alertState

	// phaseAt is when each phase of the script began (index 1 to phases).
	phaseAt [phases + 1]time.Time
	// shotErr is why the screenshot asked for was not taken.
	shotErr error

	pids map[string]int // every server process started, for the final check
}

func newDemo(o options, w io.Writer) *demo {
	return &demo{o: o, scr: newScreen(w), pids: map[string]int{}}
}

// run starts everything, runs the script and reports. It returns ctx's
// error when interrupted, or an error saying what failed.
func (d *demo) run(ctx context.Context) error {
	d.started = time.Now()
	ctx, d.cancel = context.WithCancel(ctx)
	if err := d.preflight(); err != nil {
		return err
	}
	if err := d.startServices(ctx); err != nil {
		return err
	}
	d.showWhereToLook()
	d.startPollers(ctx)
	scriptErr := d.script(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	d.scr.freeze()
	resultErr := d.report()
	return errors.Join(scriptErr, resultErr)
}

// preflight checks the binaries and creates the directory.
func (d *demo) preflight() error {
	var missing []string
	if _, err := os.Stat(d.o.poolwatch); err != nil { //nolint:gosec // G703: the binary the user named
		missing = append(missing, fmt.Sprintf("poolwatch (%s; run make build)", d.o.poolwatch))
	}
	deps := []string{"postgres", "pgbouncer", "prometheus", "alertmanager", "python"}
	if d.o.screenshot != "" {
		deps = append(deps, "chromium")
	}
	for _, name := range deps {
		if dep, _ := launch.FindDependency(name); dep.Check() != nil {
			missing = append(missing, dep.Check().Error())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing programs (`make demo` installs them):\n\t%s", strings.Join(missing, "\n\t"))
	}
	// The directories of demos and tests that were killed outright: their
	// servers died with them (Pdeathsig), their directories did not.
	launch.SweepStale(os.TempDir())
	dir, err := launch.MkdirTemp("demo")
	if err != nil {
		return err
	}
	// 0711: when the demo runs as root, PostgreSQL and PgBouncer run as the
	// postgres user in launch's directories inside this one.
	if err := os.Chmod(dir, 0o711); err != nil { //nolint:gosec // traverse-only for others, see above
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	d.dir = dir
	// launch puts its server directories, and its initdb template, under
	// TMPDIR: this way everything the demo creates is in one directory.
	if err := os.Setenv("TMPDIR", dir); err != nil {
		return fmt.Errorf("set TMPDIR: %w", err)
	}
	if d.monPW, err = randomPassword(); err != nil {
		return err
	}
	if d.appPW, err = randomPassword(); err != nil {
		return err
	}
	return nil
}

func randomPassword() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// step prints "  what ... ok (detail, 1.2s)" around fn.
func (d *demo) step(what string, fn func() (string, error)) error {
	start := time.Now()
	detail, err := fn()
	if err != nil {
		d.scr.line("  %-28s FAILED", what)
		return fmt.Errorf("%s: %w", what, err)
	}
	d.scr.line("  %-28s ok  %s (%.1fs)", what, detail, time.Since(start).Seconds())
	return nil
}

func (d *demo) startServices(ctx context.Context) error {
	d.scr.line("poolwatch demo: everything runs on 127.0.0.1, in %s", d.dir)
	d.scr.line("Starting the services:")
	steps := []struct {
		what string
		fn   func() (string, error)
	}{
		{"PostgreSQL 15", d.startPostgres},
		{"PgBouncer", d.startPgBouncer},
		{"orders-api (Python app)", func() (string, error) { return d.startOrders(ctx) }},
		{"poolwatch", func() (string, error) { return d.startPoolwatch(ctx) }},
		{"Alertmanager + webhook", func() (string, error) { return d.startAlertmanager(ctx) }},
		{"Prometheus (short rules)", func() (string, error) { return d.startPrometheus(ctx) }},
		{"Prometheus scraping", func() (string, error) { return d.waitScraping(ctx) }},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.step(s.what, s.fn); err != nil {
			return err
		}
	}
	d.readyAt = time.Now()
	d.scr.line("Services ready %.1fs after start.", d.readyAt.Sub(d.started).Seconds())
	return nil
}

func (d *demo) startPostgres() (string, error) {
	pg, err := launch.StartPostgres(launch.PostgresOptions{MaxConnections: 50})
	if err != nil {
		return "", err
	}
	d.pg = pg
	d.launched("postgres", pg, pg.PostmasterPID())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.CreateRole(ctx, monUser, d.monPW, "LOGIN", "IN ROLE pg_monitor"); err != nil {
		return "", err
	}
	if err := pg.CreateRole(ctx, appUser, d.appPW, "LOGIN"); err != nil {
		return "", err
	}
	for _, db := range []string{shopDB, reportsDB} {
		if err := pg.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, appUser)); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%s, roles %s (pg_monitor) and %s, databases %s and %s", pg.Addr(), monUser, appUser, shopDB, reportsDB), nil
}

// subdir creates the directory name in the demo's directory, for one
// service's configuration, data and logs.
func (d *demo) subdir(name string) (string, error) {
	dir := filepath.Join(d.dir, name)
	if err := os.Mkdir(dir, 0o700); err != nil { //nolint:gosec // G703: inside the directory this run created
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	return dir, nil
}

// writePrivate writes a file only its owner can read (configurations and
// the password file).
func writePrivate(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil { //nolint:gosec // G703: inside the directory this run created
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// daemonProcess is how the demo runs poolwatch, Prometheus and
// Alertmanager: each in its own process group, so the terminal's Ctrl-C
// reaches only the demo, which stops them in order; 45 s to come up, 10 s
// between SIGTERM and SIGKILL.
func daemonProcess() launch.ProcessOptions {
	return launch.ProcessOptions{ReadyBudget: 45 * time.Second, StopGrace: 10 * time.Second, ProcessGroup: true}
}

// launched records a service the demo started, and its process (0: none).
func (d *demo) launched(name string, c io.Closer, pid int) {
	d.services = append(d.services, c)
	if pid != 0 {
		d.pids[name] = pid
	}
}

func (d *demo) startPgBouncer() (string, error) {
	pgb, err := launch.StartPgBouncer(d.pg, launch.PgBouncerOptions{
		PoolMode:      "transaction",
		MaxClientConn: 50,
		Databases: map[string]string{
			shopDB:    fmt.Sprintf("dbname=%s pool_size=%d min_pool_size=1 reserve_pool=0", shopDB, shopPoolSize),
			reportsDB: fmt.Sprintf("dbname=%s pool_size=2 reserve_pool=0 pool_mode=session", reportsDB),
		},
		Users:      map[string]string{monUser: d.monPW, appUser: d.appPW},
		StatsUsers: []string{monUser},
	})
	if err != nil {
		return "", err
	}
	d.pgb = pgb
	d.launched("pgbouncer", pgb, pgb.PID())
	return fmt.Sprintf("%s, pools %s (transaction, size %d, min 1) and %s/%s (session, size 2)",
		pgb.Addr(), shopPool, shopPoolSize, reportsDB, appUser), nil
}

// poolwatchConfig is the agent's configuration for the demo's two servers.
func (d *demo) poolwatchConfig() string {
	return fmt.Sprintf(`# Written by make demo (internal/demo). See config.yaml.example for every key.
defaults:
  scrape_timeout: 2s
  # Short, so the demo's leak is seen within seconds; the default is 5m.
  leak_threshold: %s
targets:
  - name: %s
    kind: pgbouncer
    dsn: %s
    password_file: mon.password
    # The server behind this PgBouncer: its leak alerts and the server's
    # are one incident.
    upstream: %s
  - name: %s
    kind: postgres
    dsn: %s
    password_file: mon.password
    application_pools:
      - name: %s
        application_name: "%s-*"
        max_connections: 10
      - name: %s
        application_name: %s
        max_connections: %d
`, d.o.leakThreshold, bouncerTarget, d.pgb.DSN(monUser, "", "pgbouncer"), pgTarget,
		pgTarget, d.pg.DSN(monUser, "", "postgres"), appPoolName, webApp, ordersApp, ordersApp, ordersMax) + d.ordersConfig()
}

func (d *demo) startPoolwatch(ctx context.Context) (string, error) {
	dir, err := d.subdir("poolwatch")
	if err != nil {
		return "", err
	}
	if err := writePrivate(filepath.Join(dir, "mon.password"), d.monPW+"\n"); err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "poolwatch.yml")
	if err := writePrivate(cfg, d.poolwatchConfig()); err != nil {
		return "", err
	}
	bin, err := filepath.Abs(d.o.poolwatch)
	if err != nil {
		return "", fmt.Errorf("poolwatch path: %w", err)
	}
	if out, err := exec.Command(bin, "check-config", "--config.file="+cfg).CombinedOutput(); err != nil { //nolint:gosec // the binary make build wrote
		return "", fmt.Errorf("poolwatch check-config: %w\n%s", err, out)
	}
	c, err := launch.StartDaemon(ctx, launch.DaemonOptions{
		Name: "poolwatch", Bin: bin, Dir: dir,
		Args: func(addr string) []string {
			// Prometheus sends a 900ms scrape timeout; the default offset of
			// 500ms would leave too little of it.
			// --web.enable-lifecycle: the demo prints the reload command.
			return []string{"--config.file=" + cfg, "--web.listen-address=" + addr, "--scrape.timeout-offset=200ms", "--web.enable-lifecycle"}
		},
		ProcessOptions: daemonProcess(),
	})
	if err != nil {
		return "", err
	}
	d.pw = c
	d.launched(c.Name, c, c.PID())
	return fmt.Sprintf("http://%s, targets %s and %s, leak_threshold %s", c.Addr, bouncerTarget, pgTarget, d.o.leakThreshold), nil
}

func (d *demo) startAlertmanager(ctx context.Context) (string, error) {
	d.hook = newReceiver(d.onPage)
	if err := d.hook.start(); err != nil {
		return "", err
	}
	d.launched("webhook", d.hook, 0)
	dir, err := d.subdir("alertmanager")
	if err != nil {
		return "", err
	}
	// The routing of alertmanager.yml.example (one page per incident), with
	// seconds-scale timings and both receivers pointed at the terminal.
	// Shorter still than the end-to-end test's, so that pages show at once:
	// a view of an incident that fires after the group's first notification
	// prints as an update of that incident, not as a new page.
	amOptions := mixin.ShortAlertmanager(d.hook.URL())
	amOptions.GroupWait, amOptions.GroupInterval = 2*time.Second, time.Second
	am, err := mixin.RenderAlertmanager(amOptions)
	if err != nil {
		return "", err
	}
	amConfig := string(am)
	c, err := launch.StartAlertmanager(ctx, launch.AlertmanagerOptions{
		Dir:            dir,
		Config:         amConfig,
		ProcessOptions: daemonProcess(),
	})
	if err != nil {
		return "", err
	}
	d.am = c
	d.launched(c.Name, c, c.PID())
	return fmt.Sprintf("http://%s, webhook %s", c.Addr, d.hook.URL()), nil
}

func (d *demo) startPrometheus(ctx context.Context) (string, error) {
	dir, err := d.subdir("prometheus")
	if err != nil {
		return "", err
	}
	rules, err := mixin.WriteShortRules(dir)
	if err != nil {
		return "", fmt.Errorf("generate the short rules: %w", err)
	}
	// promtool is optional here: Debian's prometheus package ships it.
	if err := launch.CheckRules(ctx, rules); err != nil && !errors.Is(err, launch.ErrNotInstalled) {
		return "", err
	}
	scrapes := fmt.Sprintf(`  - job_name: %s
    static_configs:
      - targets: ['%s']
`, agentJob, d.pw.Addr)
	c, err := launch.StartPrometheus(ctx, launch.PrometheusOptions{
		Dir: dir,
		Config: "# Written by make demo. prometheus.yml.example has production settings.\n" +
			launch.PrometheusConfig([]string{rules}, d.am.Addr, scrapes),
		ProcessOptions: daemonProcess(),
	})
	if err != nil {
		return "", err
	}
	d.prom = c
	d.launched(c.Name, c, c.PID())
	client := &http.Client{Timeout: 5 * time.Second}
	d.api = launch.PromAPI{URL: c.URL, Client: client, Timeout: 5 * time.Second}
	d.promUI = c.URL
	if getOK(ctx, client, c.URL+"/alerts") != nil && getOK(ctx, client, c.URL+"/classic/alerts") == nil {
		d.promUI = c.URL + "/classic"
	}
	return fmt.Sprintf("http://%s, scraping poolwatch every 1s, rules %s", c.Addr, filepath.Base(rules)), nil
}

// waitScraping waits until Prometheus has scraped the agent and loaded
// every rule the mixin generates.
func (d *demo) waitScraping(ctx context.Context) (string, error) {
	want := 0
	for _, g := range mixin.Rules(mixin.Short()) {
		want += len(g.Rules)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		up, err1 := d.api.Vector(ctx, fmt.Sprintf(`up{job=%q} == 1`, agentJob))
		pools, err2 := d.api.Vector(ctx, fmt.Sprintf(`poolwatch_pool_in_use_connections{job=%q}`, agentJob))
		groups, err3 := d.api.Rules(ctx)
		rules := 0
		for _, g := range groups {
			rules += len(g.Rules)
		}
		if err := errors.Join(err1, err2, err3); err != nil {
			last = err.Error()
		} else {
			if len(up) == 1 && len(pools) > 0 && rules == want {
				return fmt.Sprintf("%d pools, %d rules loaded", len(pools), rules), nil
			}
			last = fmt.Sprintf("agent up: %d, pools: %d, rules: %d of %d", len(up), len(pools), rules, want)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("no successful scrape of poolwatch by Prometheus within 30s: %s", last)
			}
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// showWhereToLook prints the addresses to open while the demo runs.
func (d *demo) showWhereToLook() {
	prom := d.prom.URL
	graph := d.promUI + "/graph?" + url.Values{
		"g0.expr":        {mixin.RecordUtilization},
		"g0.tab":         {"0"},
		"g0.range_input": {"5m"},
	}.Encode()
	dashboards, _ := filepath.Glob(filepath.Join(d.o.dashboards, "*.json"))
	sort.Strings(dashboards)
	d.scr.line("")
	d.scr.line("Where to look while it runs:")
	d.scr.line("  poolwatch targets    %s/", d.pw.URL)
	d.scr.line("  poolwatch metrics    %s/metrics", d.pw.URL)
	d.scr.line("  reload its config    curl -X POST %s/-/reload", d.pw.URL)
	d.scr.line("  Prometheus alerts    %s/alerts", d.promUI)
	d.scr.line("  pool utilization     %s", graph)
	d.scr.line("  Alertmanager         %s/#/alerts", d.am.URL)
	for i, db := range dashboards {
		label := ""
		if i == 0 {
			label = "Grafana dashboards"
		}
		d.scr.line("  %-20s %s", label, db)
	}
	if len(dashboards) > 0 {
		d.scr.line("                       (import them into Grafana with Prometheus %s as the data source)", prom)
	}
	d.scr.line("  configuration        %s", filepath.Join(d.dir, "poolwatch", "poolwatch.yml"))
	d.scr.line("  service logs         %s/{poolwatch,prometheus,alertmanager}/*.log", d.dir)
	d.scr.line("                       %s", d.pg.LogPath)
	d.scr.line("                       %s", d.pgb.LogPath)
	d.scr.line("Rules: the short variant from mixin/ (mixin.Short(): PoolExhausted after 5s at 100%% of max, PoolConnectionLeak after 5s past leak_threshold %s,", d.o.leakThreshold)
	d.scr.line("       PoolUnaccountedConnections after 5s of connections an application counts in use that the server does not see).")
	d.scr.line("Ctrl-C stops everything at any time.")
	d.scr.line("")
	d.scr.startClock()
}

// startPollers starts the live pool summary and the watch on poolwatch's
// log for the culprits of leaks.
func (d *demo) startPollers(ctx context.Context) {
	d.bg.Add(2)
	go func() {
		defer d.bg.Done()
		d.pollPools(ctx)
	}()
	go func() {
		defer d.bg.Done()
		d.followLeakLog(ctx)
	}()
}

// pollPools refreshes the pool summary every second.
func (d *demo) pollPools(ctx context.Context) {
	client := &http.Client{Timeout: 2 * time.Second}
	url := d.pw.URL + "/metrics"
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if pools, err := fetchPools(ctx, client, url); err == nil {
			lines := make([]string, 0, len(pools))
			for _, p := range pools {
				lines = append(lines, formatPool(p))
			}
			d.scr.pools(lines)
		} else if ctx.Err() == nil {
			d.scr.pools([]string{"(poolwatch /metrics: " + err.Error() + ")"})
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// onPage prints what Alertmanager delivered: one PAGE line per incident as
// it opens and as it closes, and an update line when an open incident
// changes (another view of it fires or resolves).
func (d *demo) onPage(p page) {
	text := p.String()
	switch p.Status {
	case "firing":
		code := "33"
		if p.Severity == "critical" {
			code = "31;1"
		}
		text = d.scr.colour(code, text)
	case "resolved":
		text = d.scr.colour("32", text)
	}
	if p.Update {
		d.scr.event("  +   %s", text)
		return
	}
	d.scr.event("PAGE  %s", text)
}

// phases is the number of phases of the script.
const phases = 5

// phase announces a step of the script.
func (d *demo) phase(n int, title, what string) {
	d.phaseAt[n] = time.Now()
	d.scr.event("%s", d.scr.colour("1", fmt.Sprintf("== %d/%d %s", n, phases, title)))
	d.scr.line("         %s", what)
}

// script drives the load. Every wait is bounded; a phase whose alert does
// not come in time moves on, and report says so.
func (d *demo) script(ctx context.Context) error {
	normalWeb := shape{query: 100 * time.Millisecond, pause: 400 * time.Millisecond}
	busyWeb := shape{query: time.Second}
	reportsJob := shape{query: 200 * time.Millisecond, pause: 2 * time.Second}
	shopDSN := d.pgb.DSN(appUser, d.appPW, shopDB)
	d.shop = newTraffic(shopDSN, webApp)
	d.reports = newTraffic(d.pgb.DSN(appUser, d.appPW, reportsDB), reportApp)

	d.phase(1, "normal traffic", fmt.Sprintf("2 web clients run short queries through pool %s (%d server connections); a report job holds a session in pool %s/%s.",
		shopPool, shopPoolSize, reportsDB, appUser))
	d.shop.set(ctx, 2, normalWeb)
	d.reports.set(ctx, 1, reportsJob)
	if !sleep(ctx, normalFor) {
		return ctx.Err()
	}
	d.scr.flushPools()

	d.phase(2, "pool shop fills up", fmt.Sprintf("3 clients run 1s queries: all %d server connections in use. Then 3 more: they queue for a connection.", shopPoolSize))
	d.shop.set(ctx, 3, busyWeb)
	if !sleep(ctx, fillStepFor) {
		return ctx.Err()
	}
	d.shop.set(ctx, 6, busyWeb)
	if !d.hook.wait(ctx, exhaustedBudget, func() bool { return d.hook.firedLocked(alertExhausted) }) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.scr.event("%s did not fire within %v", alertExhausted, exhaustedBudget)
	} else if d.o.screenshot != "" {
		d.screenshot(ctx)
	}
	d.scr.flushPools()
	if !sleep(ctx, holdAfterFire) {
		return ctx.Err()
	}

	d.phase(3, "a client leaks a connection", fmt.Sprintf("Traffic drops back to normal. Client %s-7 runs BEGIN and a SELECT, then goes quiet holding its server connection (leak_threshold %s).",
		webApp, d.o.leakThreshold))
	d.shop.set(ctx, 2, normalWeb)
	var err error
	d.leaker, err = startLeak(ctx, shopDSN, webApp+"-7")
	if err != nil {
		return err
	}
	// PostgreSQL's pools see the idle transaction a moment before PgBouncer's
	// console does (its request_time has 1s resolution): wait for the
	// PgBouncer pool's page, then a moment for the others.
	if !d.hook.wait(ctx, leakBudget, func() bool { return d.hook.firingLocked(alertLeak, bouncerTarget) }) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.scr.event("%s did not fire for target %s within %v", alertLeak, bouncerTarget, leakBudget)
	}
	if !sleep(ctx, 2*time.Second) {
		return ctx.Err()
	}
	d.scr.flushPools()

	d.phase(4, "recovery", fmt.Sprintf("%s-7 rolls back and disconnects; normal traffic goes on until every page has resolved.", webApp))
	if err := d.leaker.end(); err != nil {
		return err
	}
	done := func() bool {
		return d.hook.allResolvedLocked() && d.hook.firedAndResolvedLocked(alertExhausted) && d.hook.firedAndResolvedLocked(alertLeak)
	}
	if !d.hook.wait(ctx, recoveryBudget, done) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.scr.event("not every page resolved within %v", recoveryBudget)
	}
	if !sleep(ctx, 2*time.Second) { // one more summary with the pools at rest
		return ctx.Err()
	}
	d.scr.flushPools()
	d.before5 = map[string]alertState{alertExhausted: d.hook.state(alertExhausted), alertLeak: d.hook.state(alertLeak)}

	if err := d.ordersScene(ctx); err != nil {
		return err
	}
	d.scr.event("end of the script")
	return nil
}

// screenshot takes the picture of Prometheus' alerts page while
// PoolExhausted fires. A failure does not stop the script; report turns it
// into the demo's failure.
func (d *demo) screenshot(ctx context.Context) {
	page := d.promUI + "/alerts"
	d.scr.event("taking a screenshot of %s with headless Chromium ...", page)
	start := time.Now()
	if err := takeScreenshot(ctx, d.o.chromium, d.dir, page, d.o.screenshot); err != nil {
		d.shotErr = fmt.Errorf("screenshot: %w", err)
		d.scr.event("screenshot failed: %v", err)
		return
	}
	d.scr.event("screenshot written to %s (%.1fs)", d.o.screenshot, time.Since(start).Seconds())
}

// sleep waits d and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// report prints the timeline and returns an error unless both alerts fired
// and resolved.
func (d *demo) report() error {
	d.scr.line("")
	d.scr.line("Services were ready %.1fs after start. Pages, in seconds after that:", d.readyAt.Sub(d.started).Seconds())
	var missing []string
	// Each alert is caused when a phase begins and cured when the next one
	// does: PoolExhausted by phase 2 and 3, PoolConnectionLeak by 3 and 4.
	causes := []struct {
		name          string
		cause, cure   int
		causeS, cureS string
	}{
		{alertExhausted, 2, 3, "the pool filled", "the load dropped"},
		{alertLeak, 3, 4, "the leak began", "it ended"},
	}
	for _, c := range causes {
		st, ok := d.before5[c.name]
		if !ok {
			st = d.hook.state(c.name)
		}
		fired, resolved := "never", "never"
		if !st.Fired.IsZero() {
			fired = fmt.Sprintf("%5.1fs", st.Fired.Sub(d.readyAt).Seconds())
			if at := d.phaseAt[c.cause]; !at.IsZero() {
				fired += fmt.Sprintf(" (%4.1fs after %s)", st.Fired.Sub(at).Seconds(), c.causeS)
			}
		}
		if !st.Resolved.IsZero() && st.Firing == 0 {
			resolved = fmt.Sprintf("%5.1fs", st.Resolved.Sub(d.readyAt).Seconds())
			if at := d.phaseAt[c.cure]; !at.IsZero() {
				resolved += fmt.Sprintf(" (%4.1fs after %s)", st.Resolved.Sub(at).Seconds(), c.cureS)
			}
		}
		d.scr.line("  %-20s fired %-34s resolved %s", c.name, fired, resolved)
		if st.Fired.IsZero() || st.Resolved.IsZero() || st.Firing > 0 {
			missing = append(missing, c.name)
		}
	}
	ordersErr := d.ordersReport()
	for _, t := range []*traffic{d.shop, d.reports} {
		if n, last := t.failures(); n > 0 {
			d.scr.line("  %s clients: %d failed queries or connections (last: %s)", t.appName, n, last)
		}
	}
	if n := d.hook.badRequests(); n > 0 {
		d.scr.line("  the webhook got %d notifications it could not decode", n)
	}
	var err error
	if len(missing) > 0 {
		err = fmt.Errorf("did not see %s fire and resolve", strings.Join(missing, " and "))
	}
	if d.o.screenshot != "" && d.shotErr == nil && d.hook.state(alertExhausted).Fired.IsZero() {
		d.shotErr = errors.New("no screenshot: PoolExhausted never fired")
	}
	return errors.Join(err, ordersErr, d.shotErr)
}

// cleanup stops everything in order, checks that no process is left and
// removes the directory. The directory is kept, with its logs, when -keep
// was given, when the demo failed (failed: run returned an error other than
// an interruption) or when the clean-up itself went wrong. It is safe to
// call after a partial start.
func (d *demo) cleanup(failed bool) error {
	if d.dir == "" {
		return nil
	}
	d.scr.freeze()
	d.scr.line("Stopping everything ...")
	if d.cancel != nil {
		d.cancel()
	}
	var errs []error
	for _, t := range []*traffic{d.shop, d.reports} {
		if t != nil {
			t.stop()
		}
	}
	// After Ctrl-C the terminal's SIGINT has also reached PostgreSQL, which
	// may already have ended the leaked transaction; either way it is gone.
	_ = d.leaker.end()
	d.bg.Wait()
	for i := len(d.services) - 1; i >= 0; i-- {
		if err := d.services[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	left := d.leftovers()
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes still running: %s", strings.Join(left, ", ")))
	}
	names := make([]string, 0, len(d.pids))
	for n, pid := range d.pids {
		names = append(names, fmt.Sprintf("%s (pid %d)", n, pid))
	}
	sort.Strings(names)
	if len(left) == 0 {
		d.scr.line("Stopped %s: no process left.", strings.Join(names, ", "))
	}
	keep := d.o.keep || failed || len(errs) > 0
	if keep {
		d.scr.line("Kept %s with the services' logs; remove it when done.", d.dir)
	} else if err := os.RemoveAll(d.dir); err != nil { //nolint:gosec // G703: the directory this run created
		errs = append(errs, fmt.Errorf("remove %s: %w", d.dir, err))
	} else {
		d.scr.line("Removed %s.", d.dir)
	}
	return errors.Join(errs...)
}

// leftovers lists the demo's processes that still run: the servers it
// started, and any process whose command line names its directory.
func (d *demo) leftovers() []string {
	var left []string
	for name, pid := range d.pids {
		if launch.PIDAlive(pid) {
			left = append(left, fmt.Sprintf("%s (pid %d)", name, pid))
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return left
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), d.dir) || !launch.PIDAlive(pid) {
			continue
		}
		left = append(left, fmt.Sprintf("pid %d (%s)", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
	}
	sort.Strings(left)
	return left
}

// getOK fetches url and returns an error unless it answered 200.
func getOK(ctx context.Context, client *http.Client, url string) error {
	resp, err := httpGet(ctx, client, url)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
