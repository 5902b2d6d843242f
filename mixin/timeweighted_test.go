package mixin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// renderBoth writes the default variant's two rule files into dir, with
// the time-weighted group mutated by mutate (nil: as shipped).
func renderBoth(t *testing.T, dir string, mutate func(*Config)) {
	t.Helper()
	c := Default()
	if _, err := WriteRules(c, "default", dir); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&c)
	}
	b, err := RenderTimeWeightedRules(c, "default")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(TimeWeightedRulesFile)), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPromtool_TimeWeightedCatchesABurstTheGaugesMiss(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := t.TempDir()
	renderBoth(t, dir, nil)
	names := copyFiles(t, filepath.Join("testdata", "timeweighted", "*.yml"), dir)
	out, err := runTool(t, dir, promtool, append([]string{"test", "rules"}, names...)...)
	if err != nil || strings.Contains(out, "FAILED") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	out, err = runTool(t, repoRoot, promtool, "check", "rules", TimeWeightedRulesFile)
	if err != nil || !strings.Contains(out, "SUCCESS: 3 rules found") {
		t.Errorf("promtool check rules %s: %v\n%s", TimeWeightedRulesFile, err, out)
	}
}

// The test must be able to fail: a window too short for two samples leaves
// no ratio at all, and a wrong selector none either.
func TestPromtool_TimeWeightedTestCatchesBrokenRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	for name, mutate := range map[string]func(*Config){
		"window of one sample": func(c *Config) { c.TimeWeightedWindow = 10e9 },
		"wrong pool selector":  func(c *Config) { c.PoolSelector = `job="elsewhere"` },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			renderBoth(t, dir, mutate)
			names := copyFiles(t, filepath.Join("testdata", "timeweighted", "*.yml"), dir)
			out, err := runTool(t, dir, promtool, append([]string{"test", "rules"}, names...)...)
			if err == nil && !strings.Contains(out, "FAILED") {
				t.Errorf("the broken rules passed the test:\n%s", out)
			}
		})
	}
}
