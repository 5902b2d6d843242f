package founding

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
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

// TestFoundingBug_Series is the acceptance series, not part of
// make test: POOLWATCH_FOUNDING_RUNS runs (make founding-bug RUNS=10) over
// the three routes in turn, each with the leaky and the fixed app under the
// same faults. It prints every run and the counts the issue asks for, and
// fails when they fall short: unaccounted >= 1 before the first exhausted
// error in at least 9 of 10 runs, PoolUnaccountedConnections before or
// within 10 s of it, PoolExhausted for the app's pool once every slot is
// in use, and the fixed app never paged.
func TestFoundingBug_Series(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("POOLWATCH_FOUNDING_RUNS"))
	if n <= 0 {
		t.Skip("set POOLWATCH_FOUNDING_RUNS=N (make founding-bug RUNS=10) to run the acceptance series")
	}
	rs := routes
	if env := os.Getenv("POOLWATCH_FOUNDING_ROUTES"); env != "" {
		rs = nil
		for _, name := range strings.Split(env, ",") {
			rs = append(rs, route(strings.TrimSpace(name)))
		}
	}
	start := time.Now()
	var results []*result
	for i := range n {
		sc := sameRoute(rs[i%len(rs)])
		if env := os.Getenv("POOLWATCH_FOUNDING_RESTART_EVERY"); env != "" {
			d, err := time.ParseDuration(env)
			if err != nil || d <= 0 {
				t.Fatalf("POOLWATCH_FOUNDING_RESTART_EVERY=%q: want a positive duration", env)
			}
			sc.restartEvery = d
		}
		t.Run(fmt.Sprintf("run%02d-%s", i+1, sc), func(t *testing.T) {
			r := run(t, sc)
			t.Log(r.describe())
			results = append(results, r)
		})
	}
	table, counts := seriesTable(results)
	t.Logf("%d runs in %v\n%s", len(results), time.Since(start).Round(time.Second), table)
	need := (9*len(results) + 9) / 10 // at least 9 of 10
	if counts.unaccountedFirst < need || counts.alertInTime < need || counts.exhaustedPaged < need || counts.fixedQuiet < len(results) {
		t.Errorf("the acceptance does not hold: %+v of %d runs", counts, len(results))
	}
}

// seriesCounts counts the runs that meet each criterion.
type seriesCounts struct {
	unaccountedFirst, alertInTime, exhaustedPaged, fixedQuiet int
}

// seriesTable writes the series as a Markdown table, times in seconds
// after the run's first fault, and counts the criteria.
func seriesTable(results []*result) (string, seriesCounts) {
	var b strings.Builder
	var c seriesCounts
	b.WriteString("| run | route | kills, restarts | leaky: first exhausted | unaccounted >= 1 | PoolUnaccountedConnections | all slots in use | PoolExhausted (all_in_use) | server side max in use | fixed: max unaccounted | fixed: pending | fixed: pages |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	yes := func(ok bool) string {
		if ok {
			return ""
		}
		return " ✗"
	}
	for i, r := range results {
		v := judge(r)
		if v.unaccountedFirst {
			c.unaccountedFirst++
		}
		if v.alertInTime {
			c.alertInTime++
		}
		if v.exhaustedPaged {
			c.exhaustedPaged++
		}
		if v.fixedQuiet {
			c.fixedQuiet++
		}
		l, f, s := r.leaky, r.fixed, r.faultsStart
		fmt.Fprintf(&b, "| %d | %s | %d, %d | %s | %s%s | %s%s | %s | %s%s | %v | %v | %s | %s%s |\n", i+1, r.sc, r.kills, r.restarts,
			since(s, l.firstExhausted), since(s, l.unaccountedFirst), yes(v.unaccountedFirst),
			since(s, l.firedAt(alertUnaccounted)), yes(v.alertInTime),
			since(s, l.firstFull), since(s, l.firedAt(alertExhausted+"/"+reasonAllInUse)), yes(v.exhaustedPaged),
			l.serverMaxInUse, f.unaccountedMax, strings.Join(slices.Sorted(maps.Keys(f.pending)), " "), strings.Join(slices.Sorted(maps.Keys(f.fired)), " "), yes(v.fixedQuiet))
	}
	n := len(results)
	fmt.Fprintf(&b, "\nunaccounted >= 1 before the first exhausted error: %d of %d; PoolUnaccountedConnections before or within %v of it: %d of %d; PoolExhausted once all slots in use: %d of %d; fixed app never paged: %d of %d\n",
		c.unaccountedFirst, n, alertLead, c.alertInTime, n, c.exhaustedPaged, n, c.fixedQuiet, n)
	return b.String(), c
}
