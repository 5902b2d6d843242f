package mixin

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

func alertRules(c Config) []Rule {
	var out []Rule
	for _, g := range Rules(c) {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

func TestRules_HaveExactlyTheAlertsOfTheSpec(t *testing.T) {
	want := map[string]struct {
		severity string
		rules    int
	}{
		AlertPoolExhausted:          {SeverityCritical, 4},
		AlertPoolNearExhaustion:     {SeverityWarning, 1},
		AlertPoolExhaustionForecast: {SeverityWarning, 1},
		AlertPoolClientsWaiting:     {SeverityWarning, 1},
		AlertPoolConnectionLeak:     {SeverityWarning, 1},
		AlertPoolUnaccounted:        {SeverityCritical, 1},
		AlertTargetDown:             {SeverityCritical, 1},
		AlertTargetQueryFailing:     {SeverityWarning, 1},
		AlertProbeDown:              {SeverityCritical, 1},
		AlertLimitedVisibility:      {SeverityWarning, 1},
		AlertReloadFailed:           {SeverityWarning, 1},
		AlertPoolsDropped:           {SeverityWarning, 1},
		AlertProbePoolLeak:          {SeverityWarning, 1},
		AlertProbeRetriesHigh:       {SeverityWarning, 1},
		AlertPoolwatchDown:          {SeverityCritical, 1},
	}
	got := make(map[string]int)
	for _, r := range alertRules(Default()) {
		w, ok := want[r.Alert]
		if !ok {
			t.Errorf("unexpected alert %s", r.Alert)
			continue
		}
		got[r.Alert]++
		if r.Labels["severity"] != w.severity {
			t.Errorf("%s: severity %q, want %q", r.Alert, r.Labels["severity"], w.severity)
		}
	}
	for name, w := range want {
		if got[name] != w.rules {
			t.Errorf("%s: %d rules, want %d", name, got[name], w.rules)
		}
	}
	// PoolExhausted's rules are told apart by reason, one value each.
	reasons := map[string]bool{}
	for _, r := range alertRules(Default()) {
		if r.Alert == AlertPoolExhausted {
			reasons[r.Labels["reason"]] = true
		}
	}
	for _, want := range []string{ReasonAllInUse, ReasonLongWait, ReasonAcquireTimeouts, ReasonRefused} {
		if !reasons[want] {
			t.Errorf("no PoolExhausted rule with reason %q", want)
		}
	}
}

func TestRules_AnnotationsFollowMixinConventions(t *testing.T) {
	c := Default()
	for _, r := range alertRules(c) {
		a := r.Annotations
		if a == nil {
			t.Errorf("%s: no annotations", r.Alert)
			continue
		}
		if !strings.HasSuffix(a.Summary, ".") || strings.Contains(a.Summary, "{{") {
			t.Errorf("%s: summary %q must be static and end with a period", r.Alert, a.Summary)
		}
		if !strings.Contains(a.Description, "{{") {
			t.Errorf("%s: description %q is not templated", r.Alert, a.Description)
		}
		switch {
		case strings.HasPrefix(r.Alert, "Pool") && !strings.HasPrefix(r.Alert, "Poolwatch"):
			if !strings.Contains(a.Description, "$labels.target") || !strings.Contains(a.Description, "$labels.pool") {
				t.Errorf("%s: description %q must name the target and the pool", r.Alert, a.Description)
			}
		case r.Alert == AlertPoolwatchDown || r.Alert == AlertReloadFailed:
			if !strings.Contains(a.Description, "$labels.instance") {
				t.Errorf("%s: description %q must name the agent instance", r.Alert, a.Description)
			}
		default:
			if !strings.Contains(a.Description, "$labels.target") {
				t.Errorf("%s: description %q must name the target", r.Alert, a.Description)
			}
		}
		if want := c.RunbookURL + "#" + strings.ToLower(r.Alert); a.RunbookURL != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, a.RunbookURL, want)
		}
		if r.For == "" {
			t.Errorf("%s: no for:", r.Alert)
		}
	}
}

var recordName = regexp.MustCompile(`^[a-z_]+:[a-z_]+:[a-z_]+$`)

func TestRules_RecordingRulesComeFirstAndAreNamedLevelMetricOperations(t *testing.T) {
	groups := Rules(Default())
	if len(groups) != 2 {
		t.Fatalf("%d groups, want 2", len(groups))
	}
	for _, r := range groups[0].Rules {
		if r.Record == "" {
			t.Errorf("first group has a non-recording rule %q", r.Alert)
		}
		if !recordName.MatchString(r.Record) {
			t.Errorf("recording rule %q is not level:metric:operations", r.Record)
		}
	}
	for _, r := range groups[1].Rules {
		if r.Alert == "" {
			t.Errorf("second group has a recording rule %q", r.Record)
		}
	}
	if got := RecordingRuleNames(); len(got) != len(groups[0].Rules) {
		t.Errorf("RecordingRuleNames = %v", got)
	}
}

// Aggregations would drop job, instance and static labels, and two agent
// replicas or two Prometheus label sets would collapse into one alert. The
// one exception folds the reasons of one target's refusal gauge into one
// series and keeps every other label.
var aggregation = regexp.MustCompile(`\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*(\(|by|without)`)

const allowedAggregation = "max without(reason) ("

func TestRules_NeverAggregateLabelsAway(t *testing.T) {
	for _, g := range Rules(Default()) {
		for _, r := range g.Rules {
			expr := strings.ReplaceAll(r.Expr, allowedAggregation, "(")
			if m := aggregation.FindString(expr); m != "" {
				t.Errorf("%s%s aggregates (%q): %s", r.Record, r.Alert, m, r.Expr)
			}
			if strings.Contains(r.Expr, "clamp_min") {
				t.Errorf("%s%s uses clamp_min: an unlimited (0 or absent) max must mean no ceiling", r.Record, r.Alert)
			}
		}
	}
}

// Joins add labels from info series; they must match on the labels that
// identify a target or a pool, with the static labels carried by the
// series' own side, and never ignoring() (which would break when an info
// series gains a label).
func TestRules_JoinOnTargetOrPoolOnly(t *testing.T) {
	on := regexp.MustCompile(`\bon\(([^)]*)\)`)
	allowed := map[string]bool{
		"job, instance, target":           true,
		"job, instance, target, pool":     true,
		"job, instance, target, database": true,
		"job, instance":                   true,
	}
	for _, r := range alertRules(Default()) {
		if strings.Contains(r.Expr, "ignoring(") {
			t.Errorf("%s uses ignoring(): %s", r.Alert, r.Expr)
		}
		for _, m := range on.FindAllStringSubmatch(r.Expr, -1) {
			if !allowed[m[1]] {
				t.Errorf("%s joins on(%s)", r.Alert, m[1])
			}
		}
	}
}

func TestRules_UseTheConfiguredSelectors(t *testing.T) {
	c := Default()
	c.PoolSelector = `job="pools", cluster="eu"`
	c.AgentSelector = `job="agent"`
	c.ProbeSelector = `job="probes"`
	for _, g := range Rules(c) {
		for _, r := range g.Rules {
			sels, err := Selectors(r.Expr)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sels {
				agent := s.Name == "up" || strings.HasPrefix(s.Name, "poolwatch_probe_pool_") ||
					s.Name == "poolwatch_build_info" || strings.HasPrefix(s.Name, "poolwatch_config_")
				want := c.PoolSelector
				switch {
				case agent && r.Alert == AlertProbeDown:
					want = c.ProbeSelector
				case agent:
					want = c.AgentSelector
				}
				// The configured matchers first; a rule may narrow them.
				if s.Matchers != want && !strings.HasPrefix(s.Matchers, want+", ") {
					t.Errorf("%s%s: selector %s{%s}, want matchers %s first", r.Record, r.Alert, s.Name, s.Matchers, want)
				}
			}
		}
	}
}

func TestPromtool_CheckRules_IsClean(t *testing.T) {
	promtool := requireTool(t, "promtool")
	for _, variant := range []string{"default", "short"} {
		cfg, _ := Variant(variant)
		dir := t.TempDir()
		path, err := WriteRules(cfg, variant, dir)
		if err != nil {
			t.Fatal(err)
		}
		out, err := runTool(t, dir, promtool, "check", "rules", path)
		if err != nil || !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", ruleCount())) {
			t.Errorf("%s: promtool check rules: %v\n%s", variant, err, out)
		}
	}
	// The committed file too, where the Makefile and the e2e test find it.
	out, err := runTool(t, repoRoot, promtool, "check", "rules", RulesFile)
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules %s: %v\n%s", RulesFile, err, out)
	}
}

// Paging when Prometheus does not scrape poolwatch at all is an opt-in:
// the shipped rules stay quiet then (agent.yml), the opt-in pages.
func TestPromtool_AlertWhenNotScrapedPagesForAMissingJob(t *testing.T) {
	promtool := requireTool(t, "promtool")
	c := Default()
	c.AlertWhenNotScraped = true
	dir := t.TempDir()
	if _, err := WriteRules(c, "not-scraped", dir); err != nil {
		t.Fatal(err)
	}
	names := copyFiles(t, filepath.Join("testdata", "not_scraped", "*.yml"), dir)
	out, err := runTool(t, dir, promtool, append([]string{"test", "rules"}, names...)...)
	if err != nil || strings.Contains(out, "FAILED") {
		t.Fatalf("promtool test rules (AlertWhenNotScraped): %v\n%s", err, out)
	}
	if strings.Contains(alertExpr(t, Default(), AlertPoolwatchDown), "absent(") {
		t.Error("the shipped PoolwatchDown uses absent(): it pages every Prometheus that loads the rules without scraping poolwatch")
	}
}

// alertExpr returns the expression of the (first) rule of an alert.
func alertExpr(t *testing.T, c Config, alert string) string {
	t.Helper()
	for _, r := range alertRules(c) {
		if r.Alert == alert {
			return r.Expr
		}
	}
	t.Fatalf("no rule %s", alert)
	return ""
}

// unitTests returns the base names of the committed promtool tests.
func unitTests(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "alerts", "tests", "*.yml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no promtool tests in alerts/tests: %v", err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	return names
}

func TestPromtool_RuleUnitTestsPass(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := filepath.Join(repoRoot, "alerts", "tests")
	out, err := runTool(t, dir, promtool, append([]string{"test", "rules"}, unitTests(t)...)...)
	if err != nil || strings.Contains(out, "FAILED") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if n := strings.Count(out, "SUCCESS"); n != len(unitTests(t)) {
		t.Errorf("%d of %d test files succeeded:\n%s", n, len(unitTests(t)), out)
	}
}

func TestPromtool_ShortVariantUnitTestsPass(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := t.TempDir()
	if _, err := WriteShortRules(dir); err != nil {
		t.Fatal(err)
	}
	names := copyFiles(t, filepath.Join("testdata", "short", "*.yml"), dir)
	out, err := runTool(t, dir, promtool, append([]string{"test", "rules"}, names...)...)
	if err != nil || strings.Contains(out, "FAILED") {
		t.Fatalf("promtool test rules (short variant): %v\n%s", err, out)
	}
}

// ruleCount is the number of rules of the shipped file.
func ruleCount() int {
	n := 0
	for _, g := range Rules(Default()) {
		n += len(g.Rules)
	}
	return n
}

// mutation breaks the shipped rules on purpose: through the Config, or by
// editing the generated groups.
type mutation struct {
	name   string
	config func(*Config)
	rules  func([]RuleGroup)
	// alert, for a rule mutation, limits the run to the test files that
	// test that alert.
	alert string
}

// configMutations break one threshold, duration or selector each.
func configMutations() []mutation {
	return []mutation{
		{name: "exhaustion threshold above 1", config: func(c *Config) { c.ExhaustedRatio = 1.01 }},
		{name: "near-exhaustion threshold 95%", config: func(c *Config) { c.NearExhaustionRatio = 0.95 }},
		{name: "wrong pool selector", config: func(c *Config) { c.PoolSelector = `job="elsewhere"` }},
		{name: "forecast guard removed", config: func(c *Config) { c.ForecastMinRatio = 0.01 }},
		{name: "leak for 20m", config: func(c *Config) { c.LeakFor = 20 * time.Minute }},
		{name: "retries for shorter than window", config: func(c *Config) { c.ProbeRetriesFor = 2 * time.Minute }},
		{name: "wrong agent selector", config: func(c *Config) { c.AgentSelector = `job="elsewhere"` }},
		{name: "wrong probe selector", config: func(c *Config) { c.ProbeSelector = `job="elsewhere"` }},
		{name: "queueing ratio 90%", config: func(c *Config) { c.ClientsWaitingRatio = 0.9 }},
		{name: "queueing gap 10m", config: func(c *Config) { c.ClientsWaitingGap = 10 * time.Minute }},
		{name: "acquire timeouts for shorter than window", config: func(c *Config) { c.AcquireTimeoutsFor = time.Minute }},
		{name: "unaccounted for 5m", config: func(c *Config) { c.UnaccountedFor = 5 * time.Minute }},
		{name: "target down for 10m", config: func(c *Config) { c.TargetDownFor = 10 * time.Minute }},
		{name: "query failing for shorter than window", config: func(c *Config) { c.QueryFailingFor = 2 * time.Minute }},
		{name: "probe down for 10m", config: func(c *Config) { c.ProbeDownFor = 10 * time.Minute }},
		{name: "limited visibility for 20m", config: func(c *Config) { c.LimitedVisibilityFor = 20 * time.Minute }},
		{name: "reload failed for 10m", config: func(c *Config) { c.ReloadFailedFor = 10 * time.Minute }},
		{name: "pools dropped for 30m", config: func(c *Config) { c.PoolsDroppedFor = 30 * time.Minute }},
		{name: "alert when not scraped", config: func(c *Config) { c.AlertWhenNotScraped = true }},
	}
}

// operatorLine matches a line of a generated expression that holds only a
// set operator (and its matching clause): the rules put every branch of an
// or, and every operand of an and or unless, on lines of their own.
var operatorLine = regexp.MustCompile(`^(\s*)(or|and|unless)( on\([^)]*\))?$`)

// dropOperands returns copies of expr with one operand of one set operator
// removed each: the operator line and the lines of the operand after it
// (down to the next operator at the same indentation, or a line indented
// less). At the top level, the first operand is dropped too.
func dropOperands(expr string) []string {
	lines := strings.Split(expr, "\n")
	indentOf := func(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }
	var out []string
	for i, l := range lines {
		m := operatorLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		d := len(m[1])
		end := i + 1
		for end < len(lines) && indentOf(lines[end]) >= d && (indentOf(lines[end]) != d || !operatorLine.MatchString(lines[end])) {
			end++
		}
		kept := append(append([]string{}, lines[:i]...), lines[end:]...)
		out = append(out, strings.Join(kept, "\n"))
		if d == 0 && firstTopLevelOperator(lines) == i {
			out = append(out, strings.Join(lines[i+1:], "\n"))
		}
	}
	return out
}

// firstTopLevelOperator returns the index of the first unindented operator
// line, or -1.
func firstTopLevelOperator(lines []string) int {
	for i, l := range lines {
		if m := operatorLine.FindStringSubmatch(l); m != nil && m[1] == "" {
			return i
		}
	}
	return -1
}

// ruleMutations break each alerting rule so that it never fires, and drop
// each operand of each set operator in it.
func ruleMutations() []mutation {
	var out []mutation
	for gi, g := range Rules(Default()) {
		for ri, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			id := r.Alert
			if reason := r.Labels["reason"]; reason != "" {
				id += "{reason=" + reason + "}"
			}
			gi, ri := gi, ri
			out = append(out, mutation{name: id + " never fires", alert: r.Alert, rules: func(gs []RuleGroup) { gs[gi].Rules[ri].Expr = "vector(1) < 0" }})
			if r.KeepFiringFor != "" {
				out = append(out, mutation{name: id + " without keep_firing_for", alert: r.Alert, rules: func(gs []RuleGroup) { gs[gi].Rules[ri].KeepFiringFor = "" }})
			}
			for k, expr := range dropOperands(r.Expr) {
				expr := expr
				out = append(out, mutation{name: fmt.Sprintf("%s without operand %d", id, k+1), alert: r.Alert, rules: func(gs []RuleGroup) { gs[gi].Rules[ri].Expr = expr }})
			}
		}
	}
	return out
}

func TestDropOperands_RemovesEachOperandOnce(t *testing.T) {
	got := dropOperands("a\nor\n(\n  b\n  and on(x)\n  c\n)\nor on(y)\nd")
	want := []string{
		"a\nor on(y)\nd",
		"(\n  b\n  and on(x)\n  c\n)\nor on(y)\nd",
		"a\nor\n(\n  b\n)\nor on(y)\nd",
		"a\nor\n(\n  b\n  and on(x)\n  c\n)",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dropOperands =\n%q\nwant\n%q", got, want)
	}
}

// The unit tests must be able to fail: each mutation breaks the rules on
// purpose, and the committed tests must catch it. A rule mutation runs the
// test files that name its alert, the one naming it most often first, a
// Config mutation every file, forecast.yml (hours of series) last; one at a
// time until one fails.
func TestPromtool_RuleUnitTestsCatchBrokenRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	files := unitTests(t)
	sort.SliceStable(files, func(i, j int) bool { return files[j] == "forecast.yml" && files[i] != "forecast.yml" })
	text := map[string]string{}
	for _, f := range files {
		text[f] = string(readTestFile(t, filepath.Join(repoRoot, "alerts", "tests", f)))
	}
	mutations := append(configMutations(), ruleMutations()...)
	if len(mutations) < 50 {
		t.Fatalf("only %d mutations", len(mutations))
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			var run []string
			for _, f := range files {
				if m.alert == "" || strings.Contains(text[f], "alertname: "+m.alert+"\n") {
					run = append(run, f)
				}
			}
			if len(run) == 0 {
				t.Fatalf("no test file tests %s", m.alert)
			}
			// The file that tests the alert most often first.
			sort.SliceStable(run, func(i, j int) bool {
				return strings.Count(text[run[i]], "alertname: "+m.alert+"\n") > strings.Count(text[run[j]], "alertname: "+m.alert+"\n")
			})
			c := Default()
			if m.config != nil {
				m.config(&c)
			}
			groups := Rules(c)
			if m.rules != nil {
				m.rules(groups)
			}
			b, err := encodeRules(groups, "broken")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(RulesFile)), b, 0o600); err != nil {
				t.Fatal(err)
			}
			testsDir := filepath.Join(dir, "tests")
			if err := os.Mkdir(testsDir, 0o750); err != nil {
				t.Fatal(err)
			}
			for _, f := range run {
				if err := os.WriteFile(filepath.Join(testsDir, f), []byte(text[f]), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range run {
				out, err := runTool(t, testsDir, promtool, "test", "rules", f)
				if err != nil && strings.Contains(out, "FAILED") {
					return
				}
				if err != nil {
					t.Fatalf("promtool test rules %s: %v\n%s", f, err, out)
				}
			}
			t.Errorf("promtool test rules %v passed against broken rules (%s)", run, m.name)
		})
	}
}
