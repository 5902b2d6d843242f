package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/mixin"
)

// The retry-loop scene (phase 5): poolwatch's founding bug in a real
// application. orders-api is internal/launch/apps/psycopg2_app.py, a
// Python application on psycopg2's ThreadedConnectionPool(2, 10) whose 6
// worker threads check a connection out, health-check it with SELECT 1 and,
// when that fails, try again without returning the failed connection. It
// runs from the start, straight on PostgreSQL, and reports its pool as a
// JSON status document; poolwatch reads it as an application target seen
// as the postgres target. In phase 5 PostgreSQL starts dropping the app's
// idle sessions: the pool hands out dead connections, the loop loses them,
// and the pool counts them in use until it runs dry, while the server sees
// fewer connections, not more. PoolUnaccountedConnections pages on the
// difference; then the fix is deployed (the failed connection closed before
// the retry) and the pages resolve.
const (
	ordersApp    = "orders-api" // application_name, target and pool name
	ordersMax    = 10
	ordersMin    = 2
	ordersThread = 6

	alertUnaccounted = mixin.AlertPoolUnaccounted

	// ordersKillEvery is the time between two rounds of
	// pg_terminate_backend on orders-api's idle sessions: slow enough that
	// the page, which needs the difference for 5 s (then an evaluation and
	// Alertmanager's group_wait), comes before the pool runs dry. The
	// difference shows only once the app has lost more connections than
	// its pool keeps idle (the server sees live idle ones), and the pool
	// runs dry a kill or two later: at 10 s the page led the first error
	// by about 3 s.
	ordersKillEvery = 12 * time.Second
	// ordersBudget bounds the wait for the page and the app's first
	// "connection pool exhausted" error; ordersFixBudget the wait for the
	// pages to resolve after the fix.
	ordersBudget    = 90 * time.Second
	ordersFixBudget = 45 * time.Second
	// ordersHoldAfter lets the app's errors go on a moment after the first
	// one, before the fix: shorter than PoolExhausted's for on acquire
	// timeouts (8 s in the short rules), so that the scene's one page is
	// PoolUnaccountedConnections.
	ordersHoldAfter = time.Second
)

// orders is the scene's application and what the scene saw.
type orders struct {
	app  *launch.Daemon
	dsn  string
	addr string // where poolwatch reads it, the same after the fix
	dir  string // of the running app: its log

	mu         sync.Mutex
	kills      int       // pg_terminate_backend rounds
	killed     int       // sessions terminated
	faultsAt   time.Time // the first round
	firstError time.Time // the app's first "connection pool exhausted" error
	fixedAt    time.Time // the redeploy began: the leaky app stopped
	errorLine  string    // that error, as the app logged it
	leakyLog   string    // the leaky app's log, once the fixed one runs
}

// ordersStatus is the part of the app's /status the scene reads.
type ordersStatus struct {
	InUse            int      `json:"in_use"`
	MaxConn          int      `json:"maxconn"`
	Lost             int      `json:"lost"`
	Timeouts         int      `json:"timeouts"`
	FirstExhaustedAt *float64 `json:"first_exhausted_at"`
}

// startOrders starts orders-api with the leaky retry loop, straight on
// PostgreSQL's shop database.
func (d *demo) startOrders(ctx context.Context) (string, error) {
	dir, err := d.subdir(ordersApp)
	if err != nil {
		return "", err
	}
	d.orders = &orders{dsn: d.pg.DSN(appUser, d.appPW, shopDB)}
	if err := d.orders.start(ctx, "leaky", "", dir); err != nil {
		return "", err
	}
	d.launched(ordersApp, d.orders.app, d.orders.app.PID())
	return fmt.Sprintf("http://%s/status, psycopg2 ThreadedConnectionPool(%d, %d), %d threads, straight on PostgreSQL",
		d.orders.addr, ordersMin, ordersMax, ordersThread), nil
}

// start runs the app in mode (leaky or fixed) on addr ("" picks one),
// with its log in dir.
func (o *orders) start(ctx context.Context, mode, addr, dir string) error {
	app, err := launch.StartApp(ctx, launch.AppOptions{
		App: launch.AppPsycopg2, Dir: dir, DSN: o.dsn, ApplicationName: ordersApp, Addr: addr,
		Args: []string{"--minconn", fmt.Sprint(ordersMin), "--maxconn", fmt.Sprint(ordersMax),
			"--workers", fmt.Sprint(ordersThread), "--mode", mode},
		ProcessOptions: daemonProcess(),
	})
	if err != nil {
		return fmt.Errorf("start %s (%s): %w", ordersApp, mode, err)
	}
	o.app, o.addr, o.dir = app, app.Addr, dir
	return nil
}

// ordersConfig is orders-api's target in poolwatch's configuration.
func (d *demo) ordersConfig() string {
	return fmt.Sprintf(`  - name: %s
    kind: application
    url: http://%s/status
    # Compare what the app counts in use with what PostgreSQL shows for it.
    seen_as:
      - {target: %s, application_name: %s}
`, ordersApp, d.orders.addr, pgTarget, ordersApp)
}

// ordersScene is phase 5. It returns an error only when a service fails;
// a page that does not come is for report.
func (d *demo) ordersScene(ctx context.Context) error {
	o := d.orders
	d.phase(5, "a retry loop loses connections in a real application",
		fmt.Sprintf("%s (Python, psycopg2 ThreadedConnectionPool(%d, %d), %d threads) retries a failed health check without returning the failed connection. From now on PostgreSQL drops its idle sessions every %s (pg_terminate_backend).",
			ordersApp, ordersMin, ordersMax, ordersThread, ordersKillEvery))
	if d.hook.state(alertUnaccounted).Fired.IsZero() {
		d.scr.line("         Nothing is unaccounted so far: every connection orders-api counts in use is one PostgreSQL shows.")
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.killOrders(sctx) }()
	go func() { defer wg.Done(); d.followOrdersLog(sctx) }()
	go func() { defer wg.Done(); d.watchUnaccounted(sctx) }()
	defer func() { stop(); wg.Wait() }()

	// The page and the app's first error, in either order.
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(ordersBudget)
	for {
		st, err := o.status(ctx, client)
		if err == nil && st.FirstExhaustedAt != nil {
			o.mu.Lock()
			if o.firstError.IsZero() {
				o.firstError = time.UnixMilli(int64(math.Round(*st.FirstExhaustedAt * 1000)))
			}
			o.mu.Unlock()
		}
		// The error is shown once the app's log line has been printed.
		paged := !d.hook.state(alertUnaccounted).Fired.IsZero()
		if paged && !o.errorAt().IsZero() && o.logged() {
			break
		}
		if time.Now().After(deadline) {
			d.scr.event("%s did not page and the app did not run dry within %v", alertUnaccounted, ordersBudget)
			break
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
	if paged, failed := d.hook.state(alertUnaccounted).Fired, o.errorAt(); !paged.IsZero() && !failed.IsZero() {
		word := "before"
		if paged.After(failed) {
			word = "after"
		}
		d.scr.event("%s", d.scr.colour("1", fmt.Sprintf("poolwatch paged %.1fs %s orders-api's first \"connection pool exhausted\" error",
			math.Abs(failed.Sub(paged).Seconds()), word)))
	}
	if !sleep(ctx, ordersHoldAfter) {
		return ctx.Err()
	}
	d.scr.flushPools()

	// The fix, deployed where poolwatch reads the app; the faults go on.
	d.scr.event("%s", d.scr.colour("1", "the fix: orders-api is redeployed closing the failed connection before it retries (putconn(conn, close=True)); PostgreSQL keeps dropping its idle sessions"))
	o.mu.Lock()
	o.fixedAt = time.Now()
	o.mu.Unlock()
	if err := o.app.Close(); err != nil {
		return fmt.Errorf("stop %s: %w", ordersApp, err)
	}
	dir, err := d.subdir(ordersApp + "-fixed")
	if err != nil {
		return err
	}
	leakyLog := o.app.LogPath
	if err := o.start(ctx, "fixed", o.addr, dir); err != nil {
		return err
	}
	o.mu.Lock()
	o.leakyLog = leakyLog
	o.mu.Unlock()
	d.launched(ordersApp+" (fixed)", o.app, o.app.PID())
	resolved := func() bool {
		for _, name := range []string{alertUnaccounted, alertExhausted} {
			if d.hook.firingLocked(name, ordersApp) {
				return false
			}
		}
		return true
	}
	if !d.hook.wait(ctx, ordersFixBudget, resolved) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.scr.event("orders-api's pages did not resolve within %v of the fix", ordersFixBudget)
	}
	if !sleep(ctx, 2*time.Second) {
		return ctx.Err()
	}
	d.scr.flushPools()
	return nil
}

// errorAt is when the app first failed with "connection pool exhausted".
func (o *orders) errorAt() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.firstError
}

// logged reports whether the app's first error has been printed.
func (o *orders) logged() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.errorLine != ""
}

// status reads the app's /status.
func (o *orders) status(ctx context.Context, client *http.Client) (ordersStatus, error) {
	var st ordersStatus
	resp, err := httpGet(ctx, client, "http://"+o.addr+"/status")
	if err != nil {
		return st, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s /status: %s", ordersApp, resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
	return st, err
}

// killOrders terminates orders-api's idle sessions every ordersKillEvery
// until ctx ends (ordersScene's bounded waits end it), and says so.
func (d *demo) killOrders(ctx context.Context) {
	o := d.orders
	tick := time.NewTicker(ordersKillEvery)
	defer tick.Stop()
	for {
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := d.pg.TerminateIdleBackends(kctx, ordersApp)
		cancel()
		o.mu.Lock()
		if o.faultsAt.IsZero() {
			o.faultsAt = time.Now()
		}
		o.kills++
		o.killed += n
		o.mu.Unlock()
		switch {
		case err != nil && ctx.Err() == nil:
			d.scr.event("pg_terminate_backend failed: %v", err)
		case err == nil:
			d.scr.event("PostgreSQL terminated %d idle orders-api session(s)", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// followOrdersLog prints the app's first "connection pool exhausted"
// error as the app logged it.
func (d *demo) followOrdersLog(ctx context.Context) {
	o := d.orders
	followLines(ctx, o.app.LogPath, 250*time.Millisecond, func(line string) bool {
		line = strings.TrimSpace(line)
		if !strings.Contains(line, "connection pool exhausted") {
			return true
		}
		o.mu.Lock()
		first := o.errorLine == ""
		if first {
			o.errorLine = line
		}
		o.mu.Unlock()
		if first {
			d.scr.event("%s", d.scr.colour("31", "orders-api logs: "+line))
		}
		return !first
	})
}

// watchUnaccounted prints what poolwatch counts for orders-api each time
// the count of unaccounted connections reaches a new high.
func (d *demo) watchUnaccounted(ctx context.Context) {
	client := &http.Client{Timeout: 2 * time.Second}
	high := 0.0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		inUse, unaccounted, err := ordersGauges(ctx, client, d.pw.URL+"/metrics")
		if err != nil || unaccounted <= high {
			continue
		}
		high = unaccounted
		d.scr.event("poolwatch: orders-api counts %g of %d connections in use; PostgreSQL does not see %g of them (poolwatch_pool_unaccounted_connections %g)",
			inUse, ordersMax, unaccounted, unaccounted)
	}
}

// ordersGauges reads orders-api's in use and unaccounted gauges from
// poolwatch's /metrics.
func ordersGauges(ctx context.Context, client *http.Client, url string) (inUse, unaccounted float64, err error) {
	resp, err := httpGet(ctx, client, url)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("parse metrics: %w", err)
	}
	get := func(name string) (float64, bool) {
		for _, m := range families[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "target" && l.GetValue() == ordersApp {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	inUse, ok1 := get("poolwatch_pool_in_use_connections")
	unaccounted, ok2 := get("poolwatch_pool_unaccounted_connections")
	if !ok1 || !ok2 {
		return 0, 0, errors.New("no orders-api series yet")
	}
	return inUse, unaccounted, nil
}

// ordersReport prints the scene's timeline and returns an error unless
// PoolUnaccountedConnections paged during the scene (not before it) and
// resolved after the fix.
func (d *demo) ordersReport() error {
	o := d.orders
	if o == nil {
		return nil
	}
	o.mu.Lock()
	faultsAt, firstError, fixedAt, kills, killed, log := o.faultsAt, o.firstError, o.fixedAt, o.kills, o.killed, o.leakyLog
	o.mu.Unlock()
	if log == "" {
		log = o.app.LogPath
	}
	st := d.hook.state(alertUnaccounted)
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		s := fmt.Sprintf("%5.1fs", t.Sub(d.readyAt).Seconds())
		if !faultsAt.IsZero() {
			s += fmt.Sprintf(" (%4.1fs after the first kill)", t.Sub(faultsAt).Seconds())
		}
		return s
	}
	d.scr.line("  %-26s %s", "orders-api: first error", at(firstError))
	resolved := "never"
	if !st.Resolved.IsZero() && st.Firing == 0 && !fixedAt.IsZero() {
		resolved = fmt.Sprintf("%5.1fs (%4.1fs after the redeploy began)", st.Resolved.Sub(d.readyAt).Seconds(), st.Resolved.Sub(fixedAt).Seconds())
	}
	d.scr.line("  %-26s fired %s, resolved %s", alertUnaccounted, at(st.Fired), resolved)
	d.scr.line("  (%d pg_terminate_backend rounds, %d idle orders-api sessions terminated; the leaky app's log: %s)", kills, killed, log)
	var errs []error
	switch {
	case st.Fired.IsZero():
		errs = append(errs, fmt.Errorf("%s never fired for %s", alertUnaccounted, ordersApp))
	case !faultsAt.IsZero() && st.Fired.Before(faultsAt):
		errs = append(errs, fmt.Errorf("%s fired before any fault, at %s", alertUnaccounted, at(st.Fired)))
	case st.Resolved.IsZero() || st.Firing > 0:
		errs = append(errs, fmt.Errorf("%s did not resolve after the fix", alertUnaccounted))
	}
	if firstError.IsZero() {
		errs = append(errs, errors.New("orders-api never ran dry"))
	}
	return errors.Join(errs...)
}
