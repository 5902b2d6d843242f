package mixin

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The dashboards must work in both of the agent's modes (see
// prometheus.yml.example): the end-to-end test runs both scrape jobs at once,
// so a panel that is empty in one mode only would pass there. These tests
// build the series Prometheus would hold in each mode from the names the
// dashboards use, with the labels the agent and Prometheus give them, and
// run every choice a user can make from the dashboards' variables.

// seriesLabels is one series: its labels, with the metric name as __name__.
type seriesLabels map[string]string

const (
	modeAgentJob = "poolwatch"
	modeProbeJob = "poolwatch-probe"
)

// modeTargets are the targets of the synthetic deployment, of each kind,
// with their pools: "app/*" checks that regex characters survive the
// variables, and orders-db declares an application pool beside its server
// slots.
var modeTargets = []struct {
	name, kind string
	pools      []string
}{
	{"bouncer-1", "pgbouncer", []string{"app/*"}},
	{"orders-db", "postgres", []string{"server", "orders-api"}},
}

// modeAgents are two agent replicas. In the simple mode each scrapes its own
// target (one Prometheus job, two instances); in the multi-target mode they
// share one config, so each has a probe pool for every target, and the
// /probe job labels the target series with instance = target name.
var modeAgents = []string{"10.0.0.1:9648", "10.0.0.2:9648"}

// isTargetSeries reports whether the agent exports a metric from a target's
// scrape (collector.NewTargets: on /metrics in the simple mode, on /probe in
// the multi-target mode) rather than about itself. The recording rules keep
// the labels of the pool series they are computed from.
func isTargetSeries(name string) bool {
	for _, p := range []string{"poolwatch_pool_", "poolwatch_target_", "poolwatch_pgbouncer_", "target_pool:"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// modeSeries returns the series Prometheus holds in a mode (multiTarget or
// simple) for the metric names the dashboards use. ALERTS is left out: it
// exists only while something fires.
func modeSeries(names []string, multiTarget bool) []seriesLabels {
	var out []seriesLabels
	add := func(name, job, instance string, extra ...string) {
		s := seriesLabels{"__name__": name, "job": job, "instance": instance}
		for i := 0; i+1 < len(extra); i += 2 {
			s[extra[i]] = extra[i+1]
		}
		out = append(out, s)
	}
	// Where a target's series are scraped from, and which agents have a
	// probe pool for it.
	targetScrape := func(i int) (job, instance string) {
		if multiTarget {
			return modeProbeJob, modeTargets[i].name
		}
		return modeAgentJob, modeAgents[i%len(modeAgents)]
	}
	agentsOf := func(i int) []string {
		if multiTarget {
			return modeAgents
		}
		return []string{modeAgents[i%len(modeAgents)]}
	}
	for _, name := range names {
		switch {
		case name == "ALERTS" || name == "ALERTS_FOR_STATE":
		case name == "up" || strings.HasPrefix(name, "scrape_"):
			for _, a := range modeAgents {
				add(name, modeAgentJob, a)
			}
			if multiTarget {
				for _, tg := range modeTargets {
					add(name, modeProbeJob, tg.name)
				}
			}
		case isTargetSeries(name):
			for i, tg := range modeTargets {
				job, inst := targetScrape(i)
				for _, pool := range tg.pools {
					add(name, job, inst, "target", tg.name, "kind", tg.kind, "pool", pool, "database", "appdb", "query", "round")
				}
			}
		case strings.HasPrefix(name, "poolwatch_probe_pool_"):
			for i, tg := range modeTargets {
				for _, a := range agentsOf(i) {
					add(name, modeAgentJob, a, "target", tg.name)
				}
			}
		default: // the agent's own series: build info, reload, process, Go
			for _, a := range modeAgents {
				add(name, modeAgentJob, a)
			}
		}
	}
	return out
}

// labelMatcher is one label matcher of a selector.
type labelMatcher struct {
	label, op string
	re        *regexp.Regexp // for =~ and !~, anchored as PromQL anchors them
	value     string
}

var matcherPattern = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*(?:,|$)`)

// parseMatchers parses the text between a selector's braces, with the
// variables already expanded.
func parseMatchers(text string) ([]labelMatcher, error) {
	var out []labelMatcher
	for rest := strings.TrimSpace(text); rest != ""; rest = strings.TrimSpace(rest) {
		m := matcherPattern.FindStringSubmatch(rest)
		if m == nil {
			return nil, fmt.Errorf("cannot parse matchers at %q", rest)
		}
		value, err := strconv.Unquote(m[3])
		if err != nil {
			return nil, fmt.Errorf("matcher %s: %w", m[0], err)
		}
		lm := labelMatcher{label: m[1], op: m[2], value: value}
		if lm.op == "=~" || lm.op == "!~" {
			if lm.re, err = regexp.Compile("^(?:" + value + ")$"); err != nil {
				return nil, fmt.Errorf("matcher %s: %w", m[0], err)
			}
		}
		out = append(out, lm)
		rest = rest[len(m[0]):]
	}
	return out, nil
}

func (m labelMatcher) matches(s seriesLabels) bool {
	v := s[m.label] // a missing label is the empty string, as in PromQL
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return m.re.MatchString(v)
	default:
		return !m.re.MatchString(v)
	}
}

// selectSeries returns the series a selector (variables expanded) matches.
func selectSeries(sel Selector, series []seriesLabels) ([]seriesLabels, error) {
	ms, err := parseMatchers(sel.Matchers)
	if err != nil {
		return nil, err
	}
	var out []seriesLabels
next:
	for _, s := range series {
		if sel.Name != "" && s["__name__"] != sel.Name {
			continue
		}
		for _, m := range ms {
			if !m.matches(s) {
				continue next
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// variableChoices returns the values a user can pick for v, given the
// earlier variables' values: All first (where offered) and then the label
// values its query returns. All stands for AllValue even where Grafana
// would send the list of values, which selects the same series or more.
func variableChoices(v Variable, vars map[string]string, series []seriesLabels) ([]string, error) {
	selText, label, err := splitLabelValues(v.Query)
	if err != nil {
		return nil, err
	}
	expr, err := ExpandVariables(selText, vars)
	if err != nil {
		return nil, err
	}
	sels, err := Selectors(expr)
	if err != nil {
		return nil, fmt.Errorf("variable %s: %w", v.Name, err)
	}
	if len(sels) != 1 {
		return nil, fmt.Errorf("variable %s: %q is not one selector", v.Name, expr)
	}
	matched, err := selectSeries(sels[0], series)
	if err != nil {
		return nil, fmt.Errorf("variable %s: %w", v.Name, err)
	}
	seen := map[string]bool{}
	var values []string
	for _, s := range matched {
		if val := s[label]; val != "" && !seen[val] {
			seen[val] = true
			values = append(values, val)
		}
	}
	sort.Strings(values)
	if len(values) == 0 {
		return nil, nil
	}
	if v.IncludeAll {
		values = append([]string{AllValue}, values...)
	}
	return values, nil
}

// maxAssignments bounds the choices tried per dashboard and mode.
const maxAssignments = 5000

// variableAssignments returns every choice of values for d's query
// variables, in variable order, and the problems met (a variable that
// offers no value under some earlier choice).
func variableAssignments(d Dashboard, series []seriesLabels) ([]map[string]string, []string) {
	var vs []Variable
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			vs = append(vs, v)
		}
	}
	var out []map[string]string
	var problems []string
	var walk func(i int, vars map[string]string)
	walk = func(i int, vars map[string]string) {
		if len(out) >= maxAssignments {
			return
		}
		if i == len(vs) {
			out = append(out, vars)
			return
		}
		choices, err := variableChoices(vs[i], vars, series)
		if err != nil {
			problems = append(problems, err.Error())
			return
		}
		if len(choices) == 0 {
			problems = append(problems, fmt.Sprintf("variable $%s offers no value with %s", vs[i].Name, describeVars(vars)))
			return
		}
		for _, c := range choices {
			next := make(map[string]string, len(vars)+1)
			for k, v := range vars {
				next[k] = v
			}
			next[vs[i].Name] = c
			walk(i+1, next)
		}
	}
	walk(0, map[string]string{})
	return out, problems
}

func describeVars(vars map[string]string) string {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := vars[k]
		if v == AllValue {
			v = "All"
		}
		parts = append(parts, k+"="+v)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// dashboardMetricNames returns every metric name the rules, panels and
// variables of c use.
func dashboardMetricNames(t *testing.T, c Config) []string {
	t.Helper()
	qs, err := Queries(c)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var names []string
	for _, q := range qs {
		ns, err := MetricNames(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	return names
}

// dashboardProblems returns every variable of ds that offers nothing and
// every panel query selector that matches none of series under some choice
// of the variables (with one example choice per selector). ALERTS is not
// checked: it exists only while something fires.
func dashboardProblems(t *testing.T, ds []Dashboard, series []seriesLabels) []string {
	t.Helper()
	var problems []string
	for _, d := range ds {
		assignments, vp := variableAssignments(d, series)
		for _, p := range vp {
			problems = append(problems, d.UID+": "+p)
		}
		if len(assignments) >= maxAssignments {
			t.Fatalf("%s: more than %d variable choices; raise maxAssignments", d.UID, maxAssignments)
		}
		reported := map[string]bool{}
		// A query that may be empty (it filters for trouble, or for pools
		// that only some targets have) must match under some choice, not
		// under every one.
		someMatch := map[string]bool{}
		var someMatchOrder []string
		for _, vars := range assignments {
			for _, p := range d.Panels {
				for _, tg := range p.Targets {
					expr, err := ExpandVariables(tg.Expr, vars)
					if err != nil {
						t.Fatalf("%s / %s: %v", d.UID, p.Title, err)
					}
					sels, err := Selectors(expr)
					if err != nil {
						t.Fatal(err)
					}
					for i, s := range sels {
						key := fmt.Sprintf("%s|%s|%s|%d", d.UID, p.Title, tg.RefID, i)
						if s.Name == "ALERTS" || reported[key] {
							continue
						}
						matched, err := selectSeries(s, series)
						if err != nil {
							t.Fatalf("%s / %s: %v", d.UID, p.Title, err)
						}
						if tg.MayBeEmpty {
							if _, seen := someMatch[key]; !seen {
								someMatchOrder = append(someMatchOrder, key)
								someMatch[key] = false
							}
							someMatch[key] = someMatch[key] || len(matched) > 0
							continue
						}
						if len(matched) == 0 {
							reported[key] = true
							problems = append(problems, fmt.Sprintf("%s / %s / %s: %s{%s} matches no series with %s",
								d.UID, p.Title, tg.RefID, s.Name, s.Matchers, describeVars(vars)))
						}
					}
				}
			}
		}
		for _, key := range someMatchOrder {
			if !someMatch[key] {
				problems = append(problems, fmt.Sprintf("%s: a query that may be empty matches no series under any variable choice", key))
			}
		}
		t.Logf("%s: %d variable choices", d.UID, len(assignments))
	}
	return problems
}

func TestDashboards_EveryPanelHasSeriesInTheSimpleMode(t *testing.T) {
	c := Default()
	for _, p := range dashboardProblems(t, Dashboards(c), modeSeries(dashboardMetricNames(t, c), false)) {
		t.Error(p)
	}
}

func TestDashboards_EveryPanelHasSeriesInTheMultiTargetMode(t *testing.T) {
	c := Default()
	for _, p := range dashboardProblems(t, Dashboards(c), modeSeries(dashboardMetricNames(t, c), true)) {
		t.Error(p)
	}
}

func TestDashboardProblems_CatchATargetPanelThatFiltersOnTheAgentJob(t *testing.T) {
	// The self-monitoring dashboard's old target panels: target series
	// filtered on the agent's $job and $instance. In the multi-target mode
	// their instance is the target's name, so picking an agent empties
	// them; in the simple mode they are fine.
	c := Default()
	d := selfMonitoring(c)
	d.Panels = append(d.Panels, panel("timeseries", "Old target up", "x", "none",
		[]Target{rangeQuery(`poolwatch_target_up{job=~"$job", instance=~"$instance", target=~"$target"}`, "")}, nil))
	names := dashboardMetricNames(t, c)
	multi := dashboardProblems(t, []Dashboard{d}, modeSeries(names, true))
	if len(multi) != 1 || !strings.Contains(multi[0], "Old target up") || !strings.Contains(multi[0], "instance="+modeAgents[0]) {
		t.Errorf("multi-target mode: want one problem, with the old panel and instance=%s, got %q", modeAgents[0], multi)
	}
	if simple := dashboardProblems(t, []Dashboard{d}, modeSeries(names, false)); len(simple) != 0 {
		t.Errorf("simple mode: want no problem, got %q", simple)
	}
}

func TestParseMatchers_ReadsExpandedMatchers(t *testing.T) {
	ms, err := parseMatchers(`job=~"poolwatch|poolwatch-probe", pool="app/*", target=~"app/\\*" , x!="a\"b", y!~".+"`)
	if err != nil {
		t.Fatal(err)
	}
	s := seriesLabels{"job": "poolwatch-probe", "pool": "app/*", "target": "app/*", "x": "c"}
	for _, m := range ms {
		if !m.matches(s) {
			t.Errorf("%s %s %q does not match %v", m.label, m.op, m.value, s)
		}
	}
	if len(ms) != 5 || ms[3].value != `a"b` {
		t.Errorf("parsed %+v", ms)
	}
	if ms[2].matches(seriesLabels{"target": "app/x"}) {
		t.Error(`target=~"app/\\*" matches app/x: the escape was lost`)
	}
	for _, bad := range []string{`job`, `job="x" y`, `job=~"("`} {
		if _, err := parseMatchers(bad); err == nil {
			t.Errorf("parseMatchers(%s) succeeded", bad)
		}
	}
}
