package alerting

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/launch"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

const (
	// fireBudget bounds the wait for an alert at the webhook once its
	// condition holds. The short rules need about for (5s) + scrape (1s) +
	// evaluation (1s) + group_wait (1s); the rest is slack for a loaded
	// 2-core machine running everything under the race detector.
	fireBudget = 60 * time.Second
	// resolveBudget bounds the wait for the resolved notification.
	resolveBudget = 45 * time.Second
)

// TestPipeline_PagesOnExhaustionAndLeaksAndResolvesThem is the whole path
// from a real pool problem to the webhook Alertmanager calls, with the short
// variant of the shipped rules:
//
//  1. five clients hold transactions on a PgBouncer pool of three: both
//     PoolExhausted rules (all_in_use, long_wait) page with the right
//     labels and annotations, from the agent job and the /probe job;
//  2. releasing them resolves every PoolExhausted that fired;
//  3. one client idle in a transaction past leak_threshold fires
//     PoolConnectionLeak on the PgBouncer pool, on the server's slots and on
//     the postgres target's application pool, from both jobs, and all of
//     that reaches the webhook as exactly one notification (the shipped
//     Alertmanager routing groups the leak alerts by upstream); committing
//     resolves it. Meanwhile a session-mode pool filled to its size with
//     nobody waiting reaches the webhook not at all;
//  4. a /probe scrape that stops answering (a blackholed proxy in front of
//     the agent, for one target) reaches the webhook as exactly one
//     notification, and resolves when it answers again;
//  5. every dashboard panel query runs against Prometheus during the run,
//     and the mixin's metric names are checked against the agent's real
//     output;
//  6. alerts that must stay quiet do: PoolExhausted only ever for the
//     exhausted pool, no probe-pool alert, no failing rule evaluation.
func TestPipeline_PagesOnExhaustionAndLeaksAndResolvesThem(t *testing.T) {
	testenv.Require(t, "postgres", "pgbouncer", "prometheus", "alertmanager")
	runStart := time.Now()
	e := startEnv(t)
	t.Logf("pipeline up after %v (rules: %s)", time.Since(runStart).Round(time.Millisecond), e.variant)

	// The dashboards' variables as a user would set them: the agent job
	// (simple mode), the probe job (one instance per target), and All with
	// the postgres target's application pool. $__rate_interval is what
	// Grafana gives a 1s scrape interval at most zoom levels.
	agentSet := variableSet{"agent job", map[string]string{"job": agentJob, "instance": e.pw.Addr, "target": bouncerTarget, "pool": exhaustPool, "__rate_interval": "15s"}}
	probeSet := variableSet{"probe job", map[string]string{"job": probeJob, "instance": bouncerTarget, "target": bouncerTarget, "pool": exhaustPool, "__rate_interval": "15s"}}
	allSet := variableSet{"all, postgres pool", map[string]string{"job": mixin.AllValue, "instance": mixin.AllValue, "target": pgTarget, "pool": leakAppPool, "__rate_interval": "15s"}}
	dash := newDashboardChecker(e.api, runStart, []variableSet{agentSet, probeSet, allSet})

	// 1. Exhaust the pool: 3 clients get the 3 server connections and sit
	// in their transactions, 2 queue behind them.
	exhaustStart := time.Now()
	hold := testenv.HoldTransactions(t, e.pgb.DSN(appUser, appPW, exhaustDB), 5, "exhaust")
	hold.WaitHeld(t, poolSize, 15*time.Second)
	if n := hold.Held(); n != poolSize {
		t.Fatalf("%d clients got a server connection from a pool of %d", n, poolSize)
	}
	fired := e.expectPoolExhausted(t)
	t.Logf("PoolExhausted reached the webhook %v after the pool was exhausted", fired.Sub(exhaustStart).Round(time.Millisecond))
	notes, groups := firingNotifications(e.hook, func(ev testenv.AlertEvent) bool {
		return ev.Labels["alertname"] == mixin.AlertPoolExhausted
	})
	if len(groups) != 1 {
		t.Errorf("PoolExhausted of one pool reached the webhook in %d groups, want 1:\n%s", len(groups), summary(e.hook))
	}
	t.Logf("PoolExhausted (2 reasons x 2 jobs): %d group, %d notification(s) so far", len(groups), len(notes))
	sel := fmt.Sprintf(`{job=%q, target=%q, pool=%q}`, agentJob, bouncerTarget, exhaustPool)
	e.expectValue(t, "poolwatch_pool_in_use_connections"+sel, poolSize)
	e.expectValue(t, "poolwatch_pool_max_connections"+sel, poolSize)
	e.expectValue(t, "poolwatch_pool_waiting_clients"+sel, 2)
	e.expectValue(t, "poolwatch_pool_min_connections"+sel, 1)

	dash.checkpoint(t, "pool exhausted")
	overview, detail, self := e.cfg.DashboardUIDPrefix+e.cfg.OverviewUID, e.cfg.DashboardUIDPrefix+e.cfg.DetailUID, e.cfg.DashboardUIDPrefix+e.cfg.SelfUID
	dash.checkVariables(t, agentSet, overview, detail, self)
	dash.checkVariables(t, probeSet, overview, detail) // the self dashboard is about the agent job only
	dash.checkVariables(t, allSet, overview, detail, self)
	e.checkMetricNames(t)

	// 2. Release: every PoolExhausted that fired must resolve.
	released := time.Now()
	hold.Release()
	if errs := hold.Errors(); len(errs) > 0 {
		t.Errorf("holding transactions: %v", errs)
	}
	e.expectResolved(t, "PoolExhausted after the release", released, func(ev testenv.AlertEvent) bool {
		return ev.Labels["alertname"] == mixin.AlertPoolExhausted
	})

	// 3. A session pool filled to its size by idle sessions, nobody
	// waiting; and a leaked client: BEGIN; SELECT 1, then idle in the
	// transaction past leak_threshold, on a pool that is not exhausted.
	sessions := holdSessions(t, e.pgb.DSN(appUser, appPW, sessionDB), poolSize)
	sessionSel := fmt.Sprintf(`{job=%q, target=%q, pool=%q}`, agentJob, bouncerTarget, sessionPool)
	e.expectValue(t, "poolwatch_pool_in_use_connections"+sessionSel, poolSize)
	e.expectValue(t, "poolwatch_pool_max_connections"+sessionSel, poolSize)
	e.expectValue(t, "poolwatch_pool_waiting_clients"+sessionSel, 0)
	sessionFull := time.Now()

	leakStart := time.Now()
	leak := testenv.HoldTransactions(t, e.pgb.DSN(appUser, appPW, leakDB), 1, leakAppName)
	leak.WaitHeld(t, 1, 15*time.Second)
	e.expectLeak(t, leakStart)
	e.expectOneNotification(t, "the leak", func(ev testenv.AlertEvent) bool {
		return ev.Labels["alertname"] == mixin.AlertPoolConnectionLeak && ev.StartsAt.After(leakStart.Add(-time.Second))
	})
	e.expectTargetDown(t)
	e.expectSessionPoolQuiet(t, sessionFull)
	sessions.close(t)

	dash.checkpoint(t, "connection leaked")

	committed := time.Now()
	leak.Release()
	if errs := leak.Errors(); len(errs) > 0 {
		t.Errorf("holding the leaked transaction: %v", errs)
	}
	e.expectResolved(t, "PoolConnectionLeak after the commit", committed, func(ev testenv.AlertEvent) bool {
		return ev.Labels["alertname"] == mixin.AlertPoolConnectionLeak && ev.StartsAt.After(leakStart.Add(-time.Second)) &&
			(ev.Labels["pool"] == leakPool || ev.Labels["pool"] == leakAppPool)
	})

	// 4. The /probe scrape of one target stops answering.
	probeStart := time.Now()
	e.probeProxy.Blackhole(true)
	e.expectProbeDown(t, probeStart)
	e.expectOneNotification(t, "the /probe failure", func(ev testenv.AlertEvent) bool {
		return ev.Labels["alertname"] == mixin.AlertProbeDown
	})
	answering := time.Now()
	e.probeProxy.Blackhole(false)
	e.expectResolved(t, "PoolwatchProbeDown once /probe answers", answering, func(ev testenv.AlertEvent) bool {
		return ev.Labels["alertname"] == mixin.AlertProbeDown
	})

	// 5. and 6.
	dash.checkpoint(t, "after the resolutions")
	dash.verify(t)
	e.checkRulesHealthy(t)
	e.checkQuiet(t, exhaustStart)
	t.Logf("whole run: %v", time.Since(runStart).Round(time.Millisecond))
}

// expectValue polls Prometheus for up to 10s until expr has exactly one
// sample, of value want.
func (e *env) expectValue(t *testing.T, expr string, want float64) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("Prometheus sees:\n%s", e.diagnose())
		}
	}()
	var last string
	ok := false
	testenv.Eventually(t, 10*time.Second, 100*time.Millisecond, func() (bool, string) {
		r, err := e.api.Query(t.Context(), expr, time.Now())
		if err == nil && r.Len() == 1 {
			last = fmt.Sprintf("value %v", r.Samples[0].Value)
			ok = r.Samples[0].Value == want
		} else {
			last = fmt.Sprintf("%d samples (%v)", r.Len(), err)
		}
		if ok {
			return true, ""
		}
		return false, fmt.Sprintf("%s: want one sample of %v, got %s", expr, want, last)
	})
}

// expectPoolExhausted waits for PoolExhausted at the webhook, for the
// exhausted pool: reason all_in_use from the agent job and from the probe
// job, and reason long_wait (two clients queue past 2s) from the agent job.
// It returns when the first arrived.
func (e *env) expectPoolExhausted(t *testing.T) time.Time {
	t.Helper()
	deadline := time.Now().Add(fireBudget)
	want := []struct{ job, instance, reason string }{
		{agentJob, e.pw.Addr, mixin.ReasonAllInUse},
		{probeJob, bouncerTarget, mixin.ReasonAllInUse},
		{agentJob, e.pw.Addr, mixin.ReasonLongWait},
	}
	var first time.Time
	for _, w := range want {
		ev, ok := e.hook.Await(deadline, func(ev testenv.AlertEvent) bool {
			return ev.Status == "firing" && ev.Labels["alertname"] == mixin.AlertPoolExhausted &&
				ev.Labels["job"] == w.job && ev.Labels["reason"] == w.reason &&
				ev.Labels["target"] == bouncerTarget && ev.Labels["pool"] == exhaustPool
		})
		if !ok {
			t.Fatalf("PoolExhausted{reason=%q, job=%q, target=%q, pool=%q} did not reach the webhook within %v of the exhaustion.\nReceived:\n%sPrometheus sees:\n%s",
				w.reason, w.job, bouncerTarget, exhaustPool, fireBudget, summary(e.hook), e.diagnose())
		}
		e.checkAlert(t, ev, map[string]string{
			"alertname": mixin.AlertPoolExhausted, "severity": mixin.SeverityCritical, "reason": w.reason,
			"job": w.job, "instance": w.instance, "target": bouncerTarget, "pool": exhaustPool, "database": exhaustDB,
		})
		if first.IsZero() || ev.Received.Before(first) {
			first = ev.Received
		}
	}
	return first
}

// expectLeak waits for PoolConnectionLeak on every view of the leaked
// client, from both jobs: the PgBouncer pool, the server's slots and the
// postgres target's application pool that matches its application_name. All
// carry upstream="pg": the pgbouncer target's upstream key names the
// postgres target, which is its own upstream.
func (e *env) expectLeak(t *testing.T, leakStart time.Time) {
	t.Helper()
	deadline := time.Now().Add(fireBudget)
	for _, job := range []struct{ job, instance string }{{agentJob, e.pw.Addr}, {probeJob, ""}} {
		for _, w := range []struct{ target, pool string }{{bouncerTarget, leakPool}, {pgTarget, "server"}, {pgTarget, leakAppPool}} {
			// The exhaustion's held transactions were leaks too, and the
			// server pool's leak alert fired then: look at this leak's.
			ev, ok := e.hook.Await(deadline, func(ev testenv.AlertEvent) bool {
				return ev.Status == "firing" && ev.Labels["alertname"] == mixin.AlertPoolConnectionLeak &&
					ev.Labels["job"] == job.job && ev.Labels["target"] == w.target && ev.Labels["pool"] == w.pool &&
					ev.StartsAt.After(leakStart)
			})
			if !ok {
				t.Fatalf("PoolConnectionLeak{job=%q, target=%q, pool=%q} did not reach the webhook within %v of the leak (threshold %v).\nReceived:\n%sPrometheus sees:\n%s",
					job.job, w.target, w.pool, fireBudget, leakThreshold, summary(e.hook), e.diagnose())
			}
			instance := job.instance
			if instance == "" {
				instance = w.target // the /probe job's instance is the target
			}
			e.checkAlert(t, ev, map[string]string{
				"alertname": mixin.AlertPoolConnectionLeak, "severity": mixin.SeverityWarning,
				"job": job.job, "instance": instance, "target": w.target, "pool": w.pool, mixin.LabelUpstream: pgTarget,
			})
			if ev.StartsAt.Before(leakStart.Add(leakThreshold)) {
				t.Errorf("PoolConnectionLeak on %s/%s starts at %v, before the leak was %v old (leaked at %v)",
					w.target, w.pool, ev.StartsAt, leakThreshold, leakStart)
			}
			t.Logf("PoolConnectionLeak on %s %s (%s) reached the webhook %v after the leak", w.target, w.pool, job.job, ev.Received.Sub(leakStart).Round(time.Millisecond))
		}
	}
}

// expectProbeDown waits for PoolwatchProbeDown on the victim target, whose
// /probe scrape stopped answering at start.
func (e *env) expectProbeDown(t *testing.T, start time.Time) {
	t.Helper()
	ev, ok := e.hook.Await(time.Now().Add(fireBudget), func(ev testenv.AlertEvent) bool {
		return ev.Status == "firing" && ev.Labels["alertname"] == mixin.AlertProbeDown && ev.Labels["target"] == victimTarget
	})
	if !ok {
		t.Fatalf("PoolwatchProbeDown{target=%q} did not reach the webhook within %v of the blackhole.\nReceived:\n%s", victimTarget, fireBudget, summary(e.hook))
	}
	e.checkAlert(t, ev, map[string]string{
		"alertname": mixin.AlertProbeDown, "severity": mixin.SeverityCritical,
		"job": probeJob, "instance": victimTarget, "target": victimTarget,
	})
	t.Logf("PoolwatchProbeDown reached the webhook %v after /probe stopped answering", ev.Received.Sub(start).Round(time.Millisecond))
}

// firingNotifications returns the notifications (by index) and the group
// keys that carried a firing alert matching sel.
func firingNotifications(hook *testenv.WebhookReceiver, sel func(testenv.AlertEvent) bool) (notes map[int]bool, groups map[string]bool) {
	notes, groups = map[int]bool{}, map[string]bool{}
	for _, ev := range hook.Events() {
		if ev.Status == "firing" && sel(ev) {
			notes[ev.Notification] = true
			groups[ev.GroupKey] = true
		}
	}
	return notes, groups
}

// expectOneNotification checks that the firing alerts matching sel reached
// the webhook in exactly one notification. It first waits, for at most
// Alertmanager's group interval plus 3s after the last of them arrived, for
// a second notification that would carry one of them (a view that fired
// late, or one that resolved and fired again): Alertmanager sends changes
// to a group at most once per group interval.
func (e *env) expectOneNotification(t *testing.T, what string, sel func(testenv.AlertEvent) bool) {
	t.Helper()
	notes, _ := firingNotifications(e.hook, sel)
	last := time.Time{}
	for _, ev := range e.hook.Events() {
		if ev.Status == "firing" && sel(ev) && ev.Received.After(last) {
			last = ev.Received
		}
	}
	window := e.amOptions.GroupInterval + 3*time.Second
	// Returns early when a second notification comes: the count below
	// then fails.
	e.hook.Await(last.Add(window), func(ev testenv.AlertEvent) bool {
		return ev.Status == "firing" && sel(ev) && !notes[ev.Notification]
	})
	notes, groups := firingNotifications(e.hook, sel)
	alerts := map[string]bool{}
	for _, ev := range e.hook.Events() {
		if ev.Status == "firing" && sel(ev) {
			alerts[ev.Key()] = true
		}
	}
	if len(notes) != 1 || len(groups) != 1 {
		t.Errorf("%s reached the webhook as %d notifications in %d groups, want exactly one notification:\n%s", what, len(notes), len(groups), summary(e.hook))
		return
	}
	t.Logf("%s: %d alerts in exactly 1 notification (no other within %v of the last)", what, len(alerts), window)
}

// expectSessionPoolQuiet waits until the session pool has been full, with
// nobody waiting, for longer than any rule's for: plus Alertmanager's group
// wait (and 3s), and fails if anything about it reached the webhook.
func (e *env) expectSessionPoolQuiet(t *testing.T, fullSince time.Time) {
	t.Helper()
	longest := max(e.cfg.ExhaustedFor, e.cfg.NearExhaustionFor, e.cfg.ClientsWaitingWindow+e.cfg.ClientsWaitingFor)
	until := fullSince.Add(longest + e.amOptions.GroupWait + 3*time.Second)
	if ev, ok := e.hook.Await(until, func(ev testenv.AlertEvent) bool { return ev.Labels["pool"] == sessionPool }); ok {
		t.Errorf("the session pool, full with nobody waiting, reached the webhook: %s %s %v", ev.Status, ev.Key(), ev.Annotations["description"])
		return
	}
	t.Logf("session pool %s full (%d/%d) with nobody waiting for %v: 0 notifications", sessionPool, poolSize, poolSize, time.Since(fullSince).Round(time.Second))
}

// expectTargetDown waits for PoolwatchTargetDown on the unreachable target,
// which has been down since the start.
func (e *env) expectTargetDown(t *testing.T) {
	t.Helper()
	ev, ok := e.hook.Await(time.Now().Add(fireBudget), func(ev testenv.AlertEvent) bool {
		return ev.Status == "firing" && ev.Labels["alertname"] == mixin.AlertTargetDown &&
			ev.Labels["job"] == agentJob && ev.Labels["target"] == goneTarget
	})
	if !ok {
		t.Fatalf("PoolwatchTargetDown{target=%q} never reached the webhook.\nReceived:\n%s", goneTarget, summary(e.hook))
	}
	e.checkAlert(t, ev, map[string]string{
		"alertname": mixin.AlertTargetDown, "severity": mixin.SeverityCritical,
		"job": agentJob, "instance": e.pw.Addr, "target": goneTarget,
	})
}

// expectResolved waits until every alert that matched sel and fired has
// been notified as resolved, and checks that each resolution came after
// since (when the cause went away).
func (e *env) expectResolved(t *testing.T, what string, since time.Time, sel func(testenv.AlertEvent) bool) {
	t.Helper()
	fired := map[string]testenv.AlertEvent{}
	for _, ev := range e.hook.Events() {
		if ev.Status == "firing" && sel(ev) {
			fired[ev.Key()] = ev
		}
	}
	if len(fired) == 0 {
		t.Fatalf("%s: nothing fired to resolve", what)
	}
	deadline := time.Now().Add(resolveBudget)
	for _, k := range slices.Sorted(maps.Keys(fired)) {
		ev, ok := e.hook.Await(deadline, func(ev testenv.AlertEvent) bool {
			return ev.Status == "resolved" && ev.Key() == k
		})
		if !ok {
			t.Fatalf("%s: %s was not resolved at the webhook within %v.\nReceived:\n%sPrometheus sees:\n%s",
				what, k, resolveBudget, summary(e.hook), e.diagnose())
		}
		if ev.EndsAt.IsZero() || !ev.EndsAt.After(ev.StartsAt) || ev.EndsAt.Before(since.Add(-time.Second)) {
			t.Errorf("%s: %s resolved with startsAt %v endsAt %v; the cause went away at %v", what, k, ev.StartsAt, ev.EndsAt, since)
		}
		t.Logf("resolved %v after the cause went away: %s", ev.Received.Sub(since).Round(time.Millisecond), k)
	}
}

// checkAlert checks an alert's exact label set and its annotations against
// the rule that produced it: the static summary ending with a period, a
// rendered description naming the target (and the pool, when the alert has
// one), and the runbook_url of the alert's anchor.
func (e *env) checkAlert(t *testing.T, ev testenv.AlertEvent, labels map[string]string) {
	t.Helper()
	if got, want := launch.LabelsString(ev.Labels), launch.LabelsString(labels); got != want {
		t.Errorf("%s: labels %s, want %s", labels["alertname"], got, want)
	}
	rule, ok := findRule(e.cfg, labels["alertname"], labels["reason"])
	if !ok {
		t.Fatalf("no generated rule for %s reason %q", labels["alertname"], labels["reason"])
	}
	a := ev.Annotations
	if len(a) != 3 {
		t.Errorf("%s: annotations %v, want exactly summary, description and runbook_url", labels["alertname"], a)
	}
	if a["summary"] != rule.Annotations.Summary || !strings.HasSuffix(a["summary"], ".") {
		t.Errorf("%s: summary %q, want the rule's static %q ending with a period", labels["alertname"], a["summary"], rule.Annotations.Summary)
	}
	desc := a["description"]
	if strings.Contains(desc, "{{") || !strings.Contains(desc, "target "+labels["target"]) {
		t.Errorf("%s: description %q is not rendered or does not name target %s", labels["alertname"], desc, labels["target"])
	}
	if p := labels["pool"]; p != "" && !strings.Contains(desc, "pool "+p) && !strings.Contains(desc, "Pool "+p) {
		t.Errorf("%s: description %q does not name pool %s", labels["alertname"], desc, p)
	}
	wantURL := e.cfg.RunbookURL + "#" + mixin.RunbookAnchor(labels["alertname"])
	if a["runbook_url"] != wantURL {
		t.Errorf("%s: runbook_url %q, want %q", labels["alertname"], a["runbook_url"], wantURL)
	}
	// Alertmanager's webhook sends a firing alert with a zero endsAt.
	if ev.StartsAt.IsZero() || !ev.EndsAt.IsZero() {
		t.Errorf("%s: firing alert with startsAt %v, endsAt %v", labels["alertname"], ev.StartsAt, ev.EndsAt)
	}
	if !strings.Contains(ev.GeneratorURL, "/graph?g0.expr=") {
		t.Errorf("%s: generatorURL %q does not link to the rule's expression in Prometheus", labels["alertname"], ev.GeneratorURL)
	}
}

// findRule returns the generated alerting rule of an alert; reason tells
// PoolExhausted's two rules apart.
func findRule(c mixin.Config, alert, reason string) (mixin.Rule, bool) {
	for _, g := range mixin.Rules(c) {
		for _, r := range g.Rules {
			if r.Alert == alert && r.Labels["reason"] == reason {
				return r, true
			}
		}
	}
	return mixin.Rule{}, false
}

// checkQuiet fails the test for notifications that must not have happened:
// PoolExhausted for any pool but the exhausted one or before it was
// exhausted, and any alert about the agent's own probe pools. PoolwatchDown
// is only logged: it must not fire while the agent is scraped, but its
// absent() branch is evaluated before Prometheus' first scrape.
func (e *env) checkQuiet(t *testing.T, exhaustStart time.Time) {
	t.Helper()
	if bad := e.hook.Bad(); len(bad) > 0 {
		t.Errorf("the webhook received malformed notifications: %v", bad)
	}
	for _, ev := range e.hook.Events() {
		if ev.Labels["pool"] == sessionPool {
			t.Errorf("the session pool reached the webhook: %s %s", ev.Status, ev.Key())
		}
		switch ev.Labels["alertname"] {
		case mixin.AlertPoolExhausted:
			if ev.Labels["target"] != bouncerTarget || ev.Labels["pool"] != exhaustPool {
				t.Errorf("PoolExhausted fired for a pool that was never exhausted: %s", ev.Key())
			}
			if ev.StartsAt.Before(exhaustStart) {
				t.Errorf("PoolExhausted started at %v, before the pool was exhausted at %v: %s", ev.StartsAt, exhaustStart, ev.Key())
			}
		case mixin.AlertProbePoolLeak, mixin.AlertProbeRetriesHigh:
			t.Errorf("the agent's own probe pool alerted (%s): %s %v", ev.Status, ev.Key(), ev.Annotations["description"])
		case mixin.AlertPoolConnectionLeak:
			if ev.Labels[mixin.LabelUpstream] != pgTarget {
				t.Errorf("PoolConnectionLeak outside the leak's incident: %s", ev.Key())
			}
		case mixin.AlertLimitedVisibility, mixin.AlertReloadFailed, mixin.AlertPoolUnaccounted:
			t.Errorf("%s fired, with nothing to cause it: %s", ev.Labels["alertname"], ev.Key())
		case mixin.AlertTargetQueryFailing:
			t.Logf("note: PoolwatchTargetQueryFailing was notified (%s): %s %v", ev.Status, ev.Key(), ev.Annotations["description"])
		case mixin.AlertPoolwatchDown:
			t.Logf("note: PoolwatchDown was notified (%s): %s", ev.Status, ev.Key())
		}
	}
	t.Logf("notifications received:\n%s", summary(e.hook))
}

// goldenPath is the mixin's copy of the agent's /metrics output.
var goldenPath = filepath.Join("..", "..", "mixin", "testdata", "metrics.prom")

const goldenHeader = `# The agent's real /metrics output (simple mode: its own metrics and every
# target's series on one path), captured by the end-to-end test e2e/alerting
# while a PgBouncer pool was exhausted and one target was down, so that the
# waiting, leak and scrape-error series exist. TestCheckMetricNames_* check the
# dashboards and rules against it, and e2e/alerting fails when its poolwatch_*
# metric names differ from a live run. Refresh it with:
#   POOLWATCH_E2E_UPDATE_GOLDEN=1 go test -count=1 ./e2e/alerting/
`

// checkMetricNames fetches the agent's real /metrics and /probe output and
// checks every metric name the rules, panels and dashboard variables use
// against it (mixin.CheckMetricNames). It also compares the poolwatch_*
// names of /metrics with the mixin's golden copy, or rewrites that copy
// under POOLWATCH_E2E_UPDATE_GOLDEN=1.
func (e *env) checkMetricNames(t *testing.T) {
	t.Helper()
	var all []string
	var metrics string
	for _, path := range []string{"/metrics", "/probe?target=" + bouncerTarget, "/probe?target=" + pgTarget, "/probe?target=" + goneTarget} {
		code, body := e.pw.Get(t, path)
		if code != 200 {
			t.Fatalf("GET %s: HTTP %d\n%s", path, code, body)
		}
		if path == "/metrics" {
			metrics = body
		}
		all = append(all, body)
	}
	// The shipped rules and dashboards, and the short rules Prometheus runs.
	queries, err := mixin.Queries(mixin.Default())
	if err != nil {
		t.Fatal(err)
	}
	short, err := mixin.Queries(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	queries = append(queries, short...)
	if err := mixin.CheckMetricNames(queries, strings.Join(all, "\n")); err != nil {
		t.Errorf("the mixin uses metrics the agent does not export:\n%v", err)
	}
	live, err := mixin.ExpositionMetricNames(metrics)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range all[1:] {
		names, err := mixin.ExpositionMetricNames(body)
		if err != nil {
			t.Fatal(err)
		}
		for n := range names {
			if !live[n] {
				t.Errorf("/probe exports %s, which the simple-mode /metrics lacks", n)
			}
		}
	}

	if os.Getenv("POOLWATCH_E2E_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(goldenPath, []byte(goldenHeader+metrics), 0o644); err != nil { //nolint:gosec // a repository file
			t.Fatalf("update %s: %v", goldenPath, err)
		}
		t.Logf("wrote %s from the agent's real /metrics", goldenPath)
		return
	}
	b, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("read the golden exposition: %v", err)
	}
	golden, err := mixin.ExpositionMetricNames(string(b))
	if err != nil {
		t.Fatalf("%s: %v", goldenPath, err)
	}
	var onlyGolden, onlyReal []string
	for n := range golden {
		if strings.HasPrefix(n, "poolwatch_") && !live[n] {
			onlyGolden = append(onlyGolden, n)
		}
	}
	for n := range live {
		if strings.HasPrefix(n, "poolwatch_") && !golden[n] {
			onlyReal = append(onlyReal, n)
		}
	}
	sort.Strings(onlyGolden)
	sort.Strings(onlyReal)
	if len(onlyGolden)+len(onlyReal) > 0 {
		t.Errorf("%s disagrees with the agent's real /metrics: only in the golden file %v, only in the real output %v; "+
			"refresh it with POOLWATCH_E2E_UPDATE_GOLDEN=1", goldenPath, onlyGolden, onlyReal)
	}
	t.Logf("metric names: %d queries checked against the real /metrics and /probe output (%d metric names)", len(queries), len(live))
}

// sessions holds idle connections open outside any transaction: in a
// session-mode PgBouncer pool each holds a server connection for its whole
// session, which is no leak and no exhaustion.
type sessions struct{ conns []*pgx.Conn }

// holdSessions opens n connections to dsn and runs one query on each.
func holdSessions(t *testing.T, dsn string, n int) *sessions {
	t.Helper()
	s := &sessions{}
	t.Cleanup(func() { s.close(t) })
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			cancel()
			t.Fatalf("session DSN: %v", err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		cfg.RuntimeParams["application_name"] = "session-app"
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			_, err = c.Exec(ctx, "SELECT 1")
		}
		cancel()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		s.conns = append(s.conns, c)
	}
	return s
}

// close closes every session; it may be called more than once.
func (s *sessions) close(t *testing.T) {
	for _, c := range s.conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Close(ctx); err != nil {
			t.Errorf("close a session: %v", err)
		}
		cancel()
	}
	s.conns = nil
}
