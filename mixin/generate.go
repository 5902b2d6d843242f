package mixin

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// RulesFile is the path of the rule file, relative to the output directory
// (the repository root for the shipped files).
const RulesFile = "alerts/poolwatch.rules.yml"

// Files renders every generated file for c: the rule files, the dashboards
// and the example Alertmanager configuration (which does not depend on c),
// keyed by path relative to the output directory. variant only names the
// variant in the rule file's header.
func Files(c Config, variant string) (map[string][]byte, error) {
	rules, err := RenderRules(c, variant)
	if err != nil {
		return nil, fmt.Errorf("render rules: %w", err)
	}
	files, err := RenderDashboards(c)
	if err != nil {
		return nil, fmt.Errorf("render dashboards: %w", err)
	}
	files[RulesFile] = rules
	if files[TimeWeightedRulesFile], err = RenderTimeWeightedRules(c, variant); err != nil {
		return nil, fmt.Errorf("render time-weighted rules: %w", err)
	}
	am, err := RenderAlertmanager(ExampleAlertmanager())
	if err != nil {
		return nil, err
	}
	files[AlertmanagerFile] = am
	return files, nil
}

// Write writes files under dir, creating directories as needed, in sorted
// path order.
func Write(dir string, files map[string][]byte) error {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(dir, filepath.FromSlash(p))
		// The rules and dashboards are public repository files that
		// Prometheus and Grafana read: world-readable on purpose.
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil { //nolint:gosec // G301: see above
			return fmt.Errorf("create directory for %s: %w", full, err)
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil { //nolint:gosec // G306: see above
			return fmt.Errorf("write %s: %w", full, err)
		}
	}
	return nil
}

// WriteRules writes the rule file for c as dir/poolwatch.rules.yml and
// returns its path.
func WriteRules(c Config, variant, dir string) (string, error) {
	b, err := RenderRules(c, variant)
	if err != nil {
		return "", fmt.Errorf("render rules: %w", err)
	}
	path := filepath.Join(dir, filepath.Base(RulesFile))
	// Prometheus, possibly another user, reads this file.
	if err := os.WriteFile(path, b, 0o644); err != nil { //nolint:gosec // G306: world-readable on purpose
		return "", fmt.Errorf("write rules: %w", err)
	}
	return path, nil
}

// WriteShortRules writes the Short variant's rules as
// dir/poolwatch.rules.yml, for the end-to-end test and the demo, and returns
// the path.
func WriteShortRules(dir string) (string, error) {
	return WriteRules(Short(), "short", dir)
}
