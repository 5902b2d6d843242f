package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun_WritesRulesAndDashboardsUnderOut(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"-variant", "short", "-out", dir}); err != nil {
		t.Fatalf("run: %v", err)
	}
	rules, err := os.ReadFile(filepath.Join(dir, "alerts", "poolwatch.rules.yml")) //nolint:gosec // G304: the test's own temp dir
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rules), "-variant short") || !strings.Contains(string(rules), `interval: "1s"`) {
		t.Errorf("rules are not the short variant:\n%.300s", rules)
	}
	dashboards, err := filepath.Glob(filepath.Join(dir, "dashboards", "*.json"))
	if err != nil || len(dashboards) != 3 {
		t.Errorf("dashboards = %v (%v), want 3 files", dashboards, err)
	}
}

func TestRun_RejectsUnknownVariantAndStrayArguments(t *testing.T) {
	for _, args := range [][]string{{"-variant", "long"}, {"-out", t.TempDir(), "extra"}, {"-nope"}} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
