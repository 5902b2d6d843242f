package alerting

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

// variableSet is one choice of the dashboards' Grafana variables, as a user
// would pick them from the values the run produced.
type variableSet struct {
	name string
	vars map[string]string
}

// values returns the set's variables. A set that does not give $target_job
// (the self-monitoring dashboard's job of the target series) gets its $job:
// each set names the one job the target series are read from.
func (s variableSet) values() map[string]string {
	if _, ok := s.vars["target_job"]; ok {
		return s.vars
	}
	out := make(map[string]string, len(s.vars)+1)
	for k, v := range s.vars {
		out[k] = v
	}
	out["target_job"] = s.vars["job"]
	return out
}

// queryCoverage tracks, for one panel query, what running it against
// Prometheus showed over the whole run.
type queryCoverage struct {
	pq       mixin.PanelQuery
	runs     int
	withData int
	// selectors[i] is the text of the i-th selector (with the first
	// variable set that ran) and matched[i] whether it matched any series
	// under some variable set.
	selectors []string
	matched   []bool
}

// dashboardChecker runs every panel query of the dashboards at checkpoints
// of the run and remembers what came back. Not safe for concurrent use.
type dashboardChecker struct {
	api      testenv.PromAPI
	runStart time.Time
	sets     []variableSet
	queries  []*queryCoverage
	// seriesCache memoizes /api/v1/series answers within one checkpoint.
	seriesCache map[string]int
}

func newDashboardChecker(api testenv.PromAPI, runStart time.Time, sets []variableSet) *dashboardChecker {
	c := &dashboardChecker{api: api, runStart: runStart, sets: sets}
	// The shipped dashboards (Default); the Short variant's panel queries
	// are the same, and the recording rules have the same names in both.
	for _, pq := range mixin.PanelQueries(mixin.Default()) {
		c.queries = append(c.queries, &queryCoverage{pq: pq})
	}
	return c
}

// rangeWindow is how much history a range panel query covers (Grafana's
// time picker), capped at the start of the run.
const rangeWindow = 2 * time.Minute

// checkpoint runs every panel query under every variable set now, and
// checks each selector of each query against the series Prometheus has
// seen since the run started. A query that fails to execute, or a variable
// that cannot be expanded, fails the test at once.
func (c *dashboardChecker) checkpoint(t *testing.T, label string) {
	t.Helper()
	now := time.Now()
	start := now.Add(-rangeWindow)
	if start.Before(c.runStart) {
		start = c.runStart
	}
	c.seriesCache = map[string]int{}
	empty := 0
	for _, q := range c.queries {
		for _, set := range c.sets {
			expr, err := mixin.ExpandVariables(q.pq.Expr, set.values())
			if err != nil {
				t.Errorf("%s: expand %s with %s: %v", label, q.pq, set.name, err)
				continue
			}
			var res testenv.QueryResult
			if q.pq.Instant {
				res, err = c.api.Query(t.Context(), expr, now)
			} else {
				res, err = c.api.QueryRange(t.Context(), expr, start, now, time.Second)
			}
			q.runs++
			if err != nil {
				t.Errorf("%s: panel query %s (%s) failed: %v\n\t%s", label, q.pq, set.name, err, expr)
				continue
			}
			if res.Len() > 0 {
				q.withData++
			} else {
				empty++
			}
			sels, err := mixin.Selectors(expr)
			if err != nil {
				t.Errorf("%s: selectors of %s: %v", label, q.pq, err)
				continue
			}
			if q.selectors == nil {
				q.selectors = make([]string, len(sels))
				q.matched = make([]bool, len(sels))
			}
			if len(sels) != len(q.selectors) {
				t.Errorf("%s: %s has %d selectors with %s, %d before", label, q.pq, len(sels), set.name, len(q.selectors))
				continue
			}
			for i, s := range sels {
				text := selectorText(s)
				if q.selectors[i] == "" {
					q.selectors[i] = text
				}
				if q.matched[i] {
					continue
				}
				n, err := c.series(t.Context(), text, c.runStart, now)
				if err != nil {
					t.Errorf("%s: series of selector %s of %s: %v", label, text, q.pq, err)
					continue
				}
				q.matched[i] = n > 0
			}
		}
	}
	t.Logf("dashboards at %s: %d panel queries x %d variable sets run in %v, %d empty answers",
		label, len(c.queries), len(c.sets), time.Since(now).Round(time.Millisecond), empty)
}

// checkVariables checks that the dashboards' template variables, run as
// Grafana runs them (label_values of their selector), offer the values of
// set: for each dashboard whose uid is in uids, each variable's selector
// matches series and the variable's label takes the value set gives it
// (any value when set gives mixin.AllValue).
func (c *dashboardChecker) checkVariables(t *testing.T, set variableSet, uids ...string) {
	t.Helper()
	sels, err := mixin.VariableSelectors(mixin.Default())
	if err != nil {
		t.Fatal(err)
	}
	labels, err := mixin.VariableLabels(mixin.Default())
	if err != nil {
		t.Fatal(err)
	}
	vars := set.values()
	checked := 0
	for key, sel := range sels {
		uid, name, _ := strings.Cut(key, "/")
		if !slices.Contains(uids, uid) {
			continue
		}
		want, ok := vars[name]
		if !ok {
			t.Errorf("dashboard %s has a variable $%s that the variable set %q does not give", uid, name, set.name)
			continue
		}
		expr, err := mixin.ExpandVariables(sel, vars)
		if err != nil {
			t.Errorf("variable %s: expand %s with %s: %v", key, sel, set.name, err)
			continue
		}
		values, err := c.api.LabelValues(t.Context(), expr, labels[key], c.runStart, time.Now())
		if err != nil {
			t.Errorf("variable %s: %v", key, err)
			continue
		}
		checked++
		if len(values) == 0 || (want != mixin.AllValue && !slices.Contains(values, want)) {
			t.Errorf("dashboard variable %s (label_values(%s, %s)) offers %v, not %q (%s)", key, expr, labels[key], values, want, set.name)
		}
	}
	if checked == 0 {
		t.Errorf("no dashboard variable checked for %v", uids)
	}
}

// series returns how many series match sel between start and end,
// memoized within one checkpoint.
func (c *dashboardChecker) series(ctx context.Context, sel string, start, end time.Time) (int, error) {
	if n, ok := c.seriesCache[sel]; ok {
		return n, nil
	}
	series, err := c.api.Series(ctx, sel, start, end)
	if err != nil {
		return 0, err
	}
	c.seriesCache[sel] = len(series)
	return len(series), nil
}

// selectorText writes a selector back as PromQL.
func selectorText(s mixin.Selector) string {
	if s.Matchers == "" {
		return s.Name
	}
	return s.Name + "{" + s.Matchers + "}"
}

// verify fails the test for every panel query that never ran, never
// returned data, or has a selector that never matched a series. Queries
// marked MayBeEmpty (they filter for trouble) are only logged.
func (c *dashboardChecker) verify(t *testing.T) {
	t.Helper()
	var noData, unmatched, maybe []string
	for _, q := range c.queries {
		if q.runs == 0 {
			t.Errorf("panel query %s never ran", q.pq)
			continue
		}
		var never []string
		for i, m := range q.matched {
			if !m {
				never = append(never, q.selectors[i])
			}
		}
		if q.pq.MayBeEmpty {
			maybe = append(maybe, fmt.Sprintf("%s: data in %d of %d runs, selectors never matched: %v", q.pq, q.withData, q.runs, never))
			continue
		}
		if q.withData == 0 {
			noData = append(noData, fmt.Sprintf("%s: `%s`", q.pq, q.pq.Expr))
		}
		if len(never) > 0 {
			unmatched = append(unmatched, fmt.Sprintf("%s: %s", q.pq, strings.Join(never, ", ")))
		}
	}
	if len(noData) > 0 {
		t.Errorf("%d panel queries never returned data during the run:\n\t%s", len(noData), strings.Join(noData, "\n\t"))
	}
	if len(unmatched) > 0 {
		t.Errorf("%d panel queries have selectors that never matched a series:\n\t%s", len(unmatched), strings.Join(unmatched, "\n\t"))
	}
	for _, m := range maybe {
		t.Logf("may be empty: %s", m)
	}
	t.Logf("dashboards: %d panel queries checked against Prometheus", len(c.queries))
}
