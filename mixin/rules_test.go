package mixin

import (
	"os"
	"path/filepath"
	"regexp"
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
		AlertPoolExhausted:          {SeverityCritical, 2},
		AlertPoolNearExhaustion:     {SeverityWarning, 1},
		AlertPoolExhaustionForecast: {SeverityWarning, 1},
		AlertPoolClientsWaiting:     {SeverityWarning, 1},
		AlertPoolConnectionLeak:     {SeverityWarning, 1},
		AlertTargetDown:             {SeverityCritical, 1},
		AlertProbePoolLeak:          {SeverityCritical, 1},
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
		case r.Alert == AlertPoolwatchDown:
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
// replicas or two Prometheus label sets would collapse into one alert.
var aggregation = regexp.MustCompile(`\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*(\(|by|without)`)

func TestRules_NeverAggregateLabelsAway(t *testing.T) {
	for _, g := range Rules(Default()) {
		for _, r := range g.Rules {
			if m := aggregation.FindString(r.Expr); m != "" {
				t.Errorf("%s%s aggregates (%q): %s", r.Record, r.Alert, m, r.Expr)
			}
			if strings.Contains(r.Expr, "clamp_min") {
				t.Errorf("%s%s uses clamp_min: an unlimited (0 or absent) max must mean no ceiling", r.Record, r.Alert)
			}
		}
	}
}

func TestRules_UseTheConfiguredSelectors(t *testing.T) {
	c := Default()
	c.PoolSelector = `job="pools", cluster="eu"`
	c.AgentSelector = `job="agent"`
	for _, g := range Rules(c) {
		for _, r := range g.Rules {
			sels, err := Selectors(r.Expr)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sels {
				agent := s.Name == "up" || strings.HasPrefix(s.Name, "poolwatch_probe_pool_") || s.Name == "poolwatch_build_info"
				want := c.PoolSelector
				if agent {
					want = c.AgentSelector
				}
				if s.Matchers != want {
					t.Errorf("%s%s: selector %s{%s}, want matchers %s", r.Record, r.Alert, s.Name, s.Matchers, want)
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
		if err != nil || !strings.Contains(out, "SUCCESS: 15 rules found") {
			t.Errorf("%s: promtool check rules: %v\n%s", variant, err, out)
		}
	}
	// The committed file too, where the Makefile and the e2e test find it.
	out, err := runTool(t, repoRoot, promtool, "check", "rules", RulesFile)
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules %s: %v\n%s", RulesFile, err, out)
	}
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

// The unit tests must be able to fail: each of these breaks one rule on
// purpose, and the committed tests must catch it.
func TestPromtool_RuleUnitTestsCatchBrokenRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	// Each mutation runs against the test file that covers it.
	mutations := map[string]struct {
		file   string
		mutate func(*Config)
	}{
		"exhaustion threshold above 1":    {"pool_exhaustion.yml", func(c *Config) { c.ExhaustedRatio = 1.01 }},
		"near-exhaustion threshold 95%":   {"pool_exhaustion.yml", func(c *Config) { c.NearExhaustionRatio = 0.95 }},
		"wrong pool selector":             {"pool_exhaustion.yml", func(c *Config) { c.PoolSelector = `job="elsewhere"` }},
		"forecast guard removed":          {"forecast.yml", func(c *Config) { c.ForecastMinRatio = 0.01 }},
		"leak for 20m":                    {"waiting_and_leaks.yml", func(c *Config) { c.LeakFor = 20 * time.Minute }},
		"retries for shorter than window": {"agent.yml", func(c *Config) { c.ProbeRetriesFor = 2 * time.Minute }},
		"wrong agent selector":            {"agent.yml", func(c *Config) { c.AgentSelector = `job="elsewhere"` }},
	}
	for name, m := range mutations {
		t.Run(name, func(t *testing.T) {
			c := Default()
			m.mutate(&c)
			dir := t.TempDir()
			if _, err := WriteRules(c, "broken", dir); err != nil {
				t.Fatal(err)
			}
			testsDir := filepath.Join(dir, "tests")
			if err := os.Mkdir(testsDir, 0o750); err != nil {
				t.Fatal(err)
			}
			names := copyFiles(t, filepath.Join(repoRoot, "alerts", "tests", m.file), testsDir)
			out, err := runTool(t, testsDir, promtool, append([]string{"test", "rules"}, names...)...)
			if err == nil || !strings.Contains(out, "FAILED") {
				t.Errorf("promtool test rules passed against broken rules:\n%s", out)
			}
		})
	}
}
