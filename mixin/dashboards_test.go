package mixin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// jsonDashboard is what the tests read back from the committed files: only
// the fields the checks need, so that the checks see the JSON, not the Go
// model.
type jsonDashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Editable      bool   `json:"editable"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Label      string `json:"label"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Multi      bool   `json:"multi"`
			IncludeAll bool   `json:"includeAll"`
			AllValue   string `json:"allValue"`
			Refresh    int    `json:"refresh"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID          int    `json:"id"`
		Type        string `json:"type"`
		Title       string `json:"title"`
		Description string `json:"description"`
		Datasource  *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		GridPos struct {
			H, W, X, Y int
		} `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit       string `json:"unit"`
				Custom     map[string]any
				Thresholds struct {
					Steps []any `json:"steps"`
				} `json:"thresholds"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			Expr       string `json:"expr"`
			RefID      string `json:"refId"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

func committedDashboards(t *testing.T) map[string]jsonDashboard {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "dashboards", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no dashboards in dashboards/: %v", err)
	}
	out := make(map[string]jsonDashboard)
	for _, p := range paths {
		b := readTestFile(t, p)
		if !json.Valid(b) {
			t.Fatalf("%s is not valid JSON", p)
		}
		var d jsonDashboard
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Base(p)] = d
	}
	return out
}

func TestDashboards_AreValidImportableJSON(t *testing.T) {
	ds := committedDashboards(t)
	wantUIDs := map[string]bool{"poolwatch-overview": true, "poolwatch-pool-detail": true, "poolwatch-self": true}
	if len(ds) != len(wantUIDs) {
		t.Errorf("%d dashboards, want %d", len(ds), len(wantUIDs))
	}
	for file, d := range ds {
		if !wantUIDs[d.UID] || file != d.UID+".json" {
			t.Errorf("%s: uid %q is not one of the stable uids %v (or does not match the file name)", file, d.UID, wantUIDs)
		}
		if d.Title == "" || d.SchemaVersion < 36 || len(d.Panels) == 0 {
			t.Errorf("%s: title %q, schemaVersion %d, %d panels", file, d.Title, d.SchemaVersion, len(d.Panels))
		}
		if d.Editable {
			t.Errorf("%s: editable must be false (dashboard-linter)", file)
		}
	}
}

// validUnits is the subset of Grafana's units (dashboard-linter's list)
// that the dashboards may use.
var validUnits = map[string]bool{
	"none": true, "short": true, "percent": true, "percentunit": true, "s": true, "ms": true,
	"bytes": true, "ops": true, "reqps": true, "dateTimeFromNow": true, "dateTimeAsIso": true,
}

var (
	rangeSelector = regexp.MustCompile(`\[[^\]]*\]`)
	jobMatcher    = `job=~"$job"`
	instMatcher   = `instance=~"$instance"`
	// The self-monitoring dashboard's target series filter on a second job
	// variable and on $target instead: in the multi-target mode their job
	// is the /probe job and their instance the target's name, neither of
	// which is the agent's $job/$instance.
	targetJobMatcher = `job=~"$target_job"`
	targetMatcher    = `target=~"$target"`
)

// jobVariableLabels are the job-like variables that must follow
// dashboard-linter's multi-select convention, with their labels. job and
// instance are required on every dashboard; target_job where it is used.
var jobVariableLabels = map[string]string{"job": "Job", "instance": "Instance", "target_job": "Target job"}

func TestDashboards_FollowDashboardLinterConventions(t *testing.T) {
	for file, d := range committedDashboards(t) {
		vars := make(map[string]int)
		datasources := 0
		for i, v := range d.Templating.List {
			vars[v.Name] = i
			if v.Type == "datasource" {
				datasources++
				if v.Name != "datasource" || v.Label != "Data source" || v.Query != "prometheus" {
					t.Errorf("%s: datasource variable %q/%q/%v, want datasource/Data source/prometheus", file, v.Name, v.Label, v.Query)
				}
				continue
			}
			if v.Type == "adhoc" {
				if v.Name != "filters" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
					t.Errorf("%s: ad-hoc variable %q must be named filters and use ${datasource}", file, v.Name)
				}
				continue
			}
			if v.Type != "query" {
				t.Errorf("%s: variable %s has type %s", file, v.Name, v.Type)
			}
			if v.Refresh != 2 {
				t.Errorf("%s: variable %s refresh %d, want 2 (on time range change)", file, v.Name, v.Refresh)
			}
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
				t.Errorf("%s: variable %s does not use ${datasource}", file, v.Name)
			}
		}
		if datasources != 1 {
			t.Errorf("%s: %d datasource variables, want exactly 1", file, datasources)
		}
		for _, name := range []string{"job", "instance", "target_job"} {
			i, ok := vars[name]
			if !ok {
				if name != "target_job" {
					t.Errorf("%s: no %s variable", file, name)
				}
				continue
			}
			v := d.Templating.List[i]
			if !v.Multi || !v.IncludeAll || v.AllValue != ".+" || v.Label != jobVariableLabels[name] {
				t.Errorf("%s: %s variable must be multi-select with All = .+ and label %q", file, name, jobVariableLabels[name])
			}
		}
		if _, ok := vars["target"]; !ok {
			t.Errorf("%s: no target variable", file)
		}

		ids := make(map[int]bool)
		titles := make(map[string]bool)
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s panel %q", file, p.Title)
			if titles[p.Title] {
				t.Errorf("%s: two panels have this title", where)
			}
			titles[p.Title] = true
			if ids[p.ID] {
				t.Errorf("%s: duplicate id %d", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				if g := p.GridPos; g.W != 24 || g.H != 1 || g.X != 0 || p.Title == "" {
					t.Errorf("%s: a row spans the grid (w 24, h 1, x 0) and has a title, got %+v", where, g)
				}
				continue
			}
			switch p.Type {
			case "timeseries", "table", "stat":
			default:
				t.Errorf("%s: type %q", where, p.Type)
			}
			if p.Title == "" || p.Description == "" {
				t.Errorf("%s: needs a title and a description", where)
			}
			if !validUnits[p.FieldConfig.Defaults.Unit] {
				t.Errorf("%s: unit %q is missing or not a known Grafana unit", where, p.FieldConfig.Defaults.Unit)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel datasource is not ${datasource}", where)
			}
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v outside the 24-column grid", where, g)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s %s: query datasource is not ${datasource}", where, tg.RefID)
				}
				checkQueryConventions(t, where+" "+tg.RefID, tg.Expr)
				for _, name := range queryVariableNames(t, tg.Expr) {
					if _, ok := vars[name]; !ok {
						t.Errorf("%s %s: uses $%s, which the dashboard does not define", where, tg.RefID, name)
					}
				}
			}
		}
	}
}

// checkQueryConventions reports the problems queryConventionProblems finds.
func checkQueryConventions(t *testing.T, where, expr string) {
	t.Helper()
	for _, p := range queryConventionProblems(expr) {
		t.Errorf("%s: %s", where, p)
	}
}

// queryVariableNames returns the dashboard variables (not Grafana's
// built-in $__ ones) that expr uses.
func queryVariableNames(t *testing.T, expr string) []string {
	t.Helper()
	var names []string
	for i := 0; i < len(expr); i++ {
		if expr[i] != '$' {
			continue
		}
		name, n := variableName(expr[i:])
		if n == 0 {
			t.Errorf("%q: bad variable reference at offset %d", expr, i)
			continue
		}
		if !strings.HasPrefix(name, "__") {
			names = append(names, name)
		}
		i += n - 1
	}
	return names
}

// queryConventionProblems applies dashboard-linter's query rules: every
// selector filters on $job and $instance, every range is $__rate_interval,
// and counters are only read through rate or increase. The one exception
// to the first rule is a target series on the self-monitoring dashboard,
// which filters on $target_job and $target instead (see targetJobMatcher).
// dashboard-linter itself would need a lint exclusion for those panels.
func queryConventionProblems(expr string) []string {
	sels, err := Selectors(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if len(sels) == 0 {
		problems = append(problems, fmt.Sprintf("%q selects nothing", expr))
	}
	for _, s := range sels {
		agentScoped := strings.Contains(s.Matchers, jobMatcher) && strings.Contains(s.Matchers, instMatcher)
		targetScoped := strings.Contains(s.Matchers, targetJobMatcher) && strings.Contains(s.Matchers, targetMatcher) &&
			!strings.Contains(s.Matchers, jobMatcher) && !strings.Contains(s.Matchers, instMatcher)
		if !agentScoped && !targetScoped {
			problems = append(problems, fmt.Sprintf("selector %s{%s} must filter on %s and %s (or, for target series, on %s and %s alone)",
				s.Name, s.Matchers, jobMatcher, instMatcher, targetJobMatcher, targetMatcher))
		}
		if strings.HasSuffix(s.Name, "_total") {
			before := strings.TrimRight(expr[:s.Offset], " ")
			if !strings.HasSuffix(before, "rate(") && !strings.HasSuffix(before, "increase(") {
				problems = append(problems, fmt.Sprintf("counter %s is not read through rate() or increase()", s.Name))
			}
		}
	}
	for _, r := range rangeSelector.FindAllString(stripStrings(expr), -1) {
		if r != "[$__rate_interval]" {
			problems = append(problems, fmt.Sprintf("range %s, want [$__rate_interval]", r))
		}
	}
	return problems
}

func TestQueryConventions_CatchWhatTheLinterWould(t *testing.T) {
	for _, good := range []string{
		`sum(rate(a_total{job=~"$job", instance=~"$instance", x=~"[a-z]+"}[$__rate_interval]))`,
		`count(poolwatch_target_up{job=~"$target_job", target=~"$target"} == 0)`,
	} {
		if p := queryConventionProblems(good); len(p) != 0 {
			t.Errorf("good query %s flagged: %v", good, p)
		}
	}
	bad := map[string]string{
		"target job without target":            `a{job=~"$target_job"}`,
		"target job with the agent's instance": `a{job=~"$target_job", instance=~"$instance", target=~"$target"}`,
		"agent and target job at once":         `a{job=~"$job", job=~"$target_job", target=~"$target"}`,
		"target without any job":               `a{target=~"$target"}`,
		"no instance":                          `a{job=~"$job"}`,
		"no job":                               `a{instance=~"$instance"}`,
		"bare":                                 `a`,
		"fixed range":                          `rate(a_total{job=~"$job", instance=~"$instance"}[5m])`,
		"raw counter":                          `a_total{job=~"$job", instance=~"$instance"}`,
		"second bare":                          `a{job=~"$job", instance=~"$instance"} / b`,
		"no selectors":                         `vector(1)`,
	}
	for name, q := range bad {
		if p := queryConventionProblems(q); len(p) == 0 {
			t.Errorf("%s: %s not flagged", name, q)
		}
	}
}

// stripStrings blanks out string literals, whose contents may hold
// brackets (regexes).
func stripStrings(expr string) string {
	var b strings.Builder
	for i := 0; i < len(expr); i++ {
		if c := expr[i]; c == '"' {
			end, err := skipString(expr, i)
			if err != nil {
				return expr
			}
			b.WriteString(`""`)
			i = end - 1
			continue
		}
		b.WriteByte(expr[i])
	}
	return b.String()
}

func TestPanelQueries_ListEveryQueryOfTheCommittedDashboards(t *testing.T) {
	committed := make(map[string]int)
	total := 0
	for _, d := range committedDashboards(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				committed[d.UID+"|"+p.Title+"|"+tg.RefID+"|"+tg.Expr]++
				total++
			}
		}
	}
	listed := PanelQueries(Default())
	if len(listed) != total {
		t.Errorf("PanelQueries lists %d queries, the files hold %d", len(listed), total)
	}
	for _, q := range listed {
		key := q.DashboardUID + "|" + q.PanelTitle + "|" + q.RefID + "|" + q.Expr
		if committed[key] == 0 {
			t.Errorf("%s: not in the committed dashboards (or listed twice)", q)
		}
		committed[key]--
		if q.DashboardTitle == "" || q.PanelTitle == "" {
			t.Errorf("%s: missing titles", q)
		}
	}
}

// testVariables are the values substituted for the dashboards' variables
// before the queries are given to promtool. "app/*" checks that a pool
// name with regex characters stays valid.
var testVariables = map[string]string{
	"job":        "poolwatch",
	"instance":   "127.0.0.1:9648",
	"target_job": "poolwatch-probe",
	"target":     "bouncer-1",
	"pool":       "app/*",
}

// allQueries returns every dashboard query, expanded with vars, and every
// variable's selector: name -> PromQL.
func allQueries(t *testing.T, vars map[string]string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, q := range PanelQueries(Default()) {
		e, err := ExpandVariables(q.Expr, vars)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out[q.String()] = e
	}
	sels, err := VariableSelectors(Default())
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range sels {
		e, err := ExpandVariables(s, vars)
		if err != nil {
			t.Fatalf("variable %s: %v", name, err)
		}
		out["variable "+name] = e
	}
	return out
}

func TestPromtool_EveryPanelQueryParses(t *testing.T) {
	promtool := requireTool(t, "promtool")
	all := map[string]string{}
	for _, vars := range []map[string]string{testVariables, {"job": AllValue, "instance": AllValue, "target_job": AllValue, "target": AllValue, "pool": "orders/app"}} {
		for name, q := range allQueries(t, vars) {
			all[name+" "+fmt.Sprint(len(all))] = q
		}
	}
	var rules []Rule
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	for i, name := range names {
		rules = append(rules, Rule{Record: fmt.Sprintf("dashboard_query_%d", i), Expr: all[name]})
	}
	b, err := yaml.Marshal(RuleFile{Groups: []RuleGroup{{Name: "dashboard_queries", Rules: rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "dashboard_queries.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runTool(t, dir, promtool, "check", "rules", path)
	if err != nil || !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(rules))) {
		t.Errorf("promtool check rules on the dashboard queries: %v\n%s\n%s", err, out, b)
	}
}

func goldenExposition(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "metrics.prom"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckMetricNames_DashboardsAndRulesUseExportedMetrics(t *testing.T) {
	queries, err := Queries(Default())
	if err != nil {
		t.Fatal(err)
	}
	if want := len(PanelQueries(Default())) + ruleCount(); len(queries) < want {
		t.Fatalf("Queries returned %d expressions, want at least %d", len(queries), want)
	}
	if err := CheckMetricNames(queries, goldenExposition(t)); err != nil {
		t.Error(err)
	}
	// The same queries with the variables expanded, as Prometheus sees them.
	var expanded []string
	for _, q := range allQueries(t, testVariables) {
		expanded = append(expanded, q)
	}
	if err := CheckMetricNames(expanded, goldenExposition(t)); err != nil {
		t.Error(err)
	}
}

func TestCheckMetricNames_NamesTheUnknownMetricAndItsQuery(t *testing.T) {
	q := `rate(poolwatch_pool_bogus_total{job=~"$job"}[$__rate_interval]) / poolwatch_pool_open_connections`
	err := CheckMetricNames([]string{q}, goldenExposition(t))
	if err == nil {
		t.Fatal("CheckMetricNames accepted an unknown metric")
	}
	if !strings.Contains(err.Error(), "poolwatch_pool_bogus_total") || !strings.Contains(err.Error(), q) {
		t.Errorf("error %q must name the metric and the query", err)
	}
	if strings.Contains(err.Error(), "poolwatch_pool_open_connections ") {
		t.Errorf("error %q names a known metric", err)
	}
}

func TestCheckMetricNames_AcceptsRecordingRulesAndPrometheusSeries(t *testing.T) {
	qs := []string{RecordUtilization + ` > 0.85`, `up{job="poolwatch"} == 0`, `ALERTS{alertstate="firing"}`}
	if err := CheckMetricNames(qs, "go_goroutines 1\n"); err != nil {
		t.Error(err)
	}
}

func TestCheckMetricNames_RejectsAnEmptyExposition(t *testing.T) {
	if err := CheckMetricNames([]string{"up"}, "\n# just a comment\n"); err == nil {
		t.Error("CheckMetricNames accepted an exposition with no metrics")
	}
}

func TestCheckMetricNames_KnowsHistogramAndSummarySeries(t *testing.T) {
	expo := "# TYPE req_seconds histogram\n# TYPE gc_seconds summary\n"
	qs := []string{`rate(req_seconds_bucket[1m])`, `gc_seconds_sum / gc_seconds_count`}
	if err := CheckMetricNames(qs, expo); err != nil {
		t.Error(err)
	}
}

// contractMetrics are the metrics the agent promises (issues 2 and 3). The
// golden exposition must hold them all, so that the checks above test the
// dashboards against the whole contract.
var contractMetrics = []string{
	"poolwatch_pool_min_connections", "poolwatch_pool_max_connections", "poolwatch_pool_reserve_connections",
	"poolwatch_pool_open_connections", "poolwatch_pool_in_use_connections", "poolwatch_pool_waiting_clients",
	"poolwatch_pool_max_wait_seconds", "poolwatch_pool_leaked_connections", "poolwatch_pool_oldest_leak_seconds",
	"poolwatch_pool_info", "poolwatch_target_up", "poolwatch_target_scrape_errors_total",
	"poolwatch_target_scrape_duration_seconds", "poolwatch_target_info", "poolwatch_target_pools_dropped",
	"poolwatch_pgbouncer_database_paused", "poolwatch_pgbouncer_database_disabled",
	"poolwatch_pgbouncer_transactions_total", "poolwatch_pgbouncer_queries_total",
	"poolwatch_pgbouncer_client_wait_seconds_total",
	"poolwatch_probe_pool_min_connections", "poolwatch_probe_pool_max_connections",
	"poolwatch_probe_pool_open_connections", "poolwatch_probe_pool_in_use_connections",
	"poolwatch_probe_pool_idle_connections", "poolwatch_probe_pool_leaked_connections",
	"poolwatch_probe_pool_acquire_retries_total", "poolwatch_probe_pool_acquire_errors_total",
	"poolwatch_probe_pool_health_check_failures_total", "poolwatch_probe_pool_new_connections_total",
	"poolwatch_build_info", "poolwatch_config_last_reload_successful",
	"poolwatch_config_last_reload_success_timestamp_seconds",
	"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "go_goroutines",
}

func TestGoldenExposition_HoldsTheWholeMetricContract(t *testing.T) {
	names, err := ExpositionMetricNames(goldenExposition(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range contractMetrics {
		if !names[m] {
			t.Errorf("testdata/metrics.prom lacks %s", m)
		}
	}
}

func TestVariableLabels_NameTheLabelEachVariableReads(t *testing.T) {
	c := Default()
	labels, err := VariableLabels(c)
	if err != nil {
		t.Fatal(err)
	}
	sels, err := VariableSelectors(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(labels) != len(sels) {
		t.Errorf("%d variable labels, %d variable selectors", len(labels), len(sels))
	}
	for key := range sels {
		_, name, _ := strings.Cut(key, "/")
		want := name
		if name == "target_job" {
			want = "job"
		}
		if labels[key] != want {
			t.Errorf("variable %s reads label %q, want %q", key, labels[key], want)
		}
	}
	if _, ok := labels["poolwatch-self/target_job"]; !ok {
		t.Error("the self-monitoring dashboard has no target_job variable")
	}
}

func TestSplitLabelValues_RejectsOtherQueries(t *testing.T) {
	sel, label, err := splitLabelValues(`label_values(x{a="b,c"}, job)`)
	if err != nil || sel != `x{a="b,c"}` || label != "job" {
		t.Errorf("got %q, %q, %v", sel, label, err)
	}
	for _, q := range []string{`label_values(x)`, `query_result(x)`, `label_values(x, )`, `label_values(x, job`} {
		if _, _, err := splitLabelValues(q); err == nil {
			t.Errorf("splitLabelValues(%s) succeeded", q)
		}
	}
}

// Fleet conventions: every dashboard folds into rows and offers ad-hoc
// filters (a cluster, an environment, any static label); time series with
// thresholds draw them; the overview's time series show the top k pools
// only; alert panels follow the selected target.
func TestDashboards_FoldIntoRowsFilterAdHocDrawThresholdsAndShowTheTopK(t *testing.T) {
	c := Default()
	for file, d := range committedDashboards(t) {
		if len(d.Panels) == 0 || d.Panels[0].Type != "row" {
			t.Errorf("%s: the first panel must be a row, so that every panel folds under one", file)
		}
		rows := 0
		for _, p := range d.Panels {
			if p.Type == "row" {
				rows++
			}
		}
		if rows < 3 {
			t.Errorf("%s: %d rows, want at least 3", file, rows)
		}
		adhoc := 0
		for _, v := range d.Templating.List {
			if v.Type == "adhoc" {
				adhoc++
			}
		}
		if adhoc != 1 {
			t.Errorf("%s: %d ad-hoc filter variables, want 1", file, adhoc)
		}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s panel %q", file, p.Title)
			if p.Type == "timeseries" && len(p.FieldConfig.Defaults.Thresholds.Steps) > 1 {
				style, _ := p.FieldConfig.Defaults.Custom["thresholdsStyle"].(map[string]any)
				if mode, _ := style["mode"].(string); mode == "" || mode == "off" {
					t.Errorf("%s: has thresholds but does not draw them (custom.thresholdsStyle)", where)
				}
			}
			for _, tg := range p.Targets {
				if strings.Contains(tg.Expr, "ALERTS{") && !strings.Contains(tg.Expr, "target=") {
					t.Errorf("%s: an alert panel must filter on the selected target: %s", where, tg.Expr)
				}
				if d.UID == c.DashboardUIDPrefix+c.OverviewUID && p.Type == "timeseries" &&
					!strings.HasPrefix(tg.Expr, fmt.Sprintf("topk(%d, ", c.DashboardTopK)) && !strings.Contains(tg.Expr, "poolwatch_pool_max_connections") &&
					!strings.Contains(tg.Expr, "paused") && !strings.Contains(tg.Expr, "disabled") {
					t.Errorf("%s: the overview's time series show the top %d only: %s", where, c.DashboardTopK, tg.Expr)
				}
			}
		}
	}
}
