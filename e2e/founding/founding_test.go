package founding

import (
	"strings"
	"testing"
	"time"
)

// alertLead is how long after the application's first "exhausted" error
// PoolUnaccountedConnections may fire at the latest (the issue's
// acceptance: before, or within 10 s of, the first error).
const alertLead = 10 * time.Second

// verdict is the acceptance of one run, by criterion.
type verdict struct {
	unaccountedFirst bool // unaccounted >= 1 before the leaky app's first "exhausted" error
	alertInTime      bool // PoolUnaccountedConnections fired before, or within alertLead of, it
	exhaustedPaged   bool // PoolExhausted{reason="all_in_use"} fired for the leaky app, once it counted every slot in use
	fixedQuiet       bool // neither alert fired for the fixed app
}

func judge(r *result) verdict {
	l, f := r.leaky, r.fixed
	var v verdict
	if !l.firstExhausted.IsZero() {
		v.unaccountedFirst = !l.unaccountedFirst.IsZero() && l.unaccountedFirst.Before(l.firstExhausted)
		fired := l.firedAt(alertUnaccounted)
		v.alertInTime = !fired.IsZero() && !fired.After(l.firstExhausted.Add(alertLead))
	}
	exhausted := l.firedAt(alertExhausted + "/" + reasonAllInUse)
	v.exhaustedPaged = !l.firstFull.IsZero() && !exhausted.IsZero() && !exhausted.Before(l.firstFull)
	v.fixedQuiet = len(r.otherPages) == 0
	for k := range f.fired {
		if k == alertUnaccounted || strings.HasPrefix(k, alertExhausted) {
			v.fixedQuiet = false
		}
	}
	return v
}

// TestFoundingBug_PagesBeforeTheLeakyAppRunsDryAndNeverForTheFixedOne is
// the scenario, once, over two routes at a time: the leaky app
// straight on PostgreSQL, its idle backends terminated every 3 s, and the
// fixed app through the transaction-mode PgBouncer, restarted every 10 s
// (each restart costs poolwatch's pgbouncer target a round, the hardest
// case for a cross-check that needs both sides of every round; the series
// covers all three routes for both). The leaky app runs dry; before it
// does, poolwatch counts connections it holds that PostgreSQL does not
// see, and PoolUnaccountedConnections reaches the webhook before, or within
// 10 s of, the app's first "connection pool exhausted" error; PoolExhausted
// pages for the application's pool once it counts all 10 slots in use;
// the postgres target's view of the app's pool never looks full. The fixed
// app never pages. About 75 s under the race detector.
func TestFoundingBug_PagesBeforeTheLeakyAppRunsDryAndNeverForTheFixedOne(t *testing.T) {
	sc := sameRoute(routeDirect)
	sc.fixed = routeTransaction
	r := run(t, sc)
	t.Log(r.describe())
	l, f := r.leaky, r.fixed
	v := judge(r)

	if l.firstExhausted.IsZero() {
		t.Fatalf("the leaky app never ran dry within %v of faults:\n%s", r.sc.maxFaults, r.describe())
	}
	// 6 workers can fill at most 6 of the 10 slots: the rest are lost.
	if l.final.InUse != appMaxConn || l.final.Lost <= appMaxConn-appWorkers {
		t.Errorf("the leaky app ends with %d of %d slots in use, %d of them lost by the retry loop; want every slot in use, more than %d lost",
			l.final.InUse, appMaxConn, l.final.Lost, appMaxConn-appWorkers)
	}
	if !v.unaccountedFirst {
		t.Errorf("poolwatch_pool_unaccounted_connections was not >= 1 before the first exhausted error")
	}
	if !v.alertInTime {
		t.Errorf("%s did not fire before, or within %v of, the first exhausted error", alertUnaccounted, alertLead)
	}
	if !v.exhaustedPaged {
		t.Errorf("%s{reason=%q} did not page for %s once it counted all its slots in use", alertExhausted, reasonAllInUse, leakyApp)
	}
	if !v.fixedQuiet {
		t.Errorf("the fixed app paged (or another target's cross-check did): %v %v", f.fired, r.otherPages)
	}
	if !f.firstExhausted.IsZero() || f.final.Lost != 0 {
		t.Errorf("the fixed app ran dry or lost connections")
	}
	// The database cannot see this leak: the server side of the app's pool
	// never looks full.
	if l.serverMaxInUse < 0 || l.serverMaxInUse >= appMaxConn {
		t.Errorf("the postgres target's %s pool was in use at most %v of %d, want fewer (the lost connections are dead)", leakyApp, l.serverMaxInUse, appMaxConn)
	}
	if t.Failed() {
		t.Log(r.describe())
	}
}
