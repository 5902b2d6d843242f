// Package jsonnet renders mixin/mixin.libsonnet with go-jsonnet, as
// kube-prometheus and mixtool users do (no jsonnet library is needed), and
// checks it against the Go generator it is generated from: with the default
// _config it is the shipped files, and each _config key changes exactly
// what it should.
package jsonnet

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-jsonnet"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/poolwatch/poolwatch/mixin"
)

// repoRoot is the repository, the jsonnet import path: the mixin is
// imported as 'mixin/mixin.libsonnet'.
var repoRoot = filepath.Join("..", "..")

// rendered is what the mixin renders, in plain JSON values.
type rendered struct {
	// Groups are the groups of prometheusRules and prometheusAlerts.
	Groups     []any          `json:"groups"`
	Dashboards map[string]any `json:"dashboards"`
}

// render evaluates the mixin with the _config overrides, a jsonnet object
// body such as `variant: 'short'`.
func render(t *testing.T, overrides string) rendered {
	t.Helper()
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{repoRoot}})
	out, err := vm.EvaluateAnonymousSnippet("test.jsonnet", fmt.Sprintf(`
local m = (import 'mixin/mixin.libsonnet') + { _config+:: { %s } };
{
  rules: m.prometheusRules,
  alerts: m.prometheusAlerts,
  dashboards: m.grafanaDashboards,
}`, overrides))
	require.NoError(t, err)
	var v struct {
		Rules      struct{ Groups []any } `json:"rules"`
		Alerts     struct{ Groups []any } `json:"alerts"`
		Dashboards map[string]any         `json:"dashboards"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	for _, g := range v.Rules.Groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			require.NotContains(t, r, "alert", "prometheusRules holds recording rules only")
		}
	}
	for _, g := range v.Alerts.Groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			require.Contains(t, r, "alert", "prometheusAlerts holds alerting rules only")
		}
	}
	return rendered{Groups: sortGroups(append(v.Rules.Groups, v.Alerts.Groups...)), Dashboards: v.Dashboards}
}

// plain turns a decoded YAML or JSON value into what encoding/json decodes:
// the form both sides are compared in.
func plain(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// sortGroups orders rule groups by name: the mixin splits them into
// prometheusRules and prometheusAlerts.
func sortGroups(gs []any) []any {
	slices.SortFunc(gs, func(a, b any) int {
		return strings.Compare(a.(map[string]any)["name"].(string), b.(map[string]any)["name"].(string))
	})
	return gs
}

// parseRules reads a rule file's groups.
func parseRules(t *testing.T, b []byte) []any {
	t.Helper()
	var f struct {
		Groups []any `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(b, &f))
	return sortGroups(plain(t, f.Groups).([]any))
}

// fromGo renders what the Go generator renders for c.
func fromGo(t *testing.T, c mixin.Config, variant string) rendered {
	t.Helper()
	files, err := mixin.Files(c, variant)
	require.NoError(t, err)
	out := rendered{Dashboards: map[string]any{}, Groups: []any{}}
	for p, b := range files {
		if mixin.IsRuleFile(p) {
			out.Groups = sortGroups(append(out.Groups, parseRules(t, b)...))
			continue
		}
		if path.Dir(p) != "dashboards" {
			continue // alertmanager.yml.example: not the jsonnet mixin's
		}
		var d any
		require.NoError(t, json.Unmarshal(b, &d))
		out.Dashboards[path.Base(p)] = d
	}
	return out
}

// shipped reads the committed alerts/*.rules.yml and dashboards/.
func shipped(t *testing.T) rendered {
	t.Helper()
	out := rendered{Groups: []any{}, Dashboards: map[string]any{}}
	ruleFiles, err := filepath.Glob(filepath.Join(repoRoot, "alerts", "*.rules.yml"))
	require.NoError(t, err)
	require.NotEmpty(t, ruleFiles)
	for _, p := range ruleFiles {
		b, err := os.ReadFile(p) //nolint:gosec // a file of the repository
		require.NoError(t, err)
		out.Groups = sortGroups(append(out.Groups, parseRules(t, b)...))
	}
	paths, err := filepath.Glob(filepath.Join(repoRoot, "dashboards", "*.json"))
	require.NoError(t, err)
	require.Len(t, paths, 3)
	for _, p := range paths {
		b, err := os.ReadFile(p) //nolint:gosec // a file of the repository
		require.NoError(t, err)
		var d any
		require.NoError(t, json.Unmarshal(b, &d))
		out.Dashboards[filepath.Base(p)] = d
	}
	return out
}

func TestMixin_DefaultConfigRendersTheShippedFiles(t *testing.T) {
	require.Equal(t, shipped(t), render(t, ""))
}

func TestMixin_ShortVariantRendersWhatTheGoGeneratorRendersForShort(t *testing.T) {
	require.Equal(t, fromGo(t, mixin.Short(), "short"), render(t, "variant: 'short'"))
}

// alerts calls f on every alerting rule of r.
func alerts(r rendered, f func(rule map[string]any)) {
	for _, g := range r.Groups {
		for _, rule := range g.(map[string]any)["rules"].([]any) {
			if m := rule.(map[string]any); m["alert"] != nil {
				f(m)
			}
		}
	}
}

// One test per _config key: the override renders what the Go generator
// renders with the same setting, or, for the keys that only the mixin
// has, the default render changed exactly as the key says.
func TestMixin_EachConfigKeyChangesExactlyWhatItShould(t *testing.T) {
	goConfig := func(change func(c *mixin.Config)) func(*testing.T) rendered {
		return func(t *testing.T) rendered {
			c := mixin.Default()
			change(&c)
			return fromGo(t, c, "default")
		}
	}
	fromDefault := func(change func(r rendered)) func(*testing.T) rendered {
		return func(t *testing.T) rendered {
			r := fromGo(t, mixin.Default(), "default")
			change(r)
			return r
		}
	}
	for _, tc := range []struct {
		key, override string
		want          func(*testing.T) rendered
	}{
		{"variant", `variant: 'short'`, func(t *testing.T) rendered { return fromGo(t, mixin.Short(), "short") }},
		{"poolSelector", `poolSelector: 'job="db-probe", cluster="eu1"'`,
			goConfig(func(c *mixin.Config) { c.PoolSelector = `job="db-probe", cluster="eu1"` })},
		// The agent's selector may contain the pool's default: the
		// replacement goes through placeholders.
		{"agentSelector", `agentSelector: 'job=~"poolwatch|poolwatch-probe", role="agent"'`,
			goConfig(func(c *mixin.Config) { c.AgentSelector = `job=~"poolwatch|poolwatch-probe", role="agent"` })},
		{"runbookURL", `runbookURL: 'https://wiki.example.com/runbooks/poolwatch'`,
			goConfig(func(c *mixin.Config) { c.RunbookURL = "https://wiki.example.com/runbooks/poolwatch" })},
		{"dashboardTags", `dashboardTags: ['databases', 'poolwatch']`,
			goConfig(func(c *mixin.Config) { c.DashboardTags = []string{"databases", "poolwatch"} })},
		{"dashboardUIDPrefix", `dashboardUIDPrefix: 'dba-'`,
			goConfig(func(c *mixin.Config) { c.DashboardUIDPrefix = "dba-" })},
		{"dashboardRefresh", `dashboardRefresh: '1m'`,
			goConfig(func(c *mixin.Config) { c.DashboardRefresh = "1m" })},
		{"dashboardTimeFrom", `dashboardTimeFrom: 'now-24h'`,
			goConfig(func(c *mixin.Config) { c.DashboardTimeFrom = "now-24h" })},
		{"severities", `severities: { critical: 'page', warning: 'ticket' }`, fromDefault(func(r rendered) {
			alerts(r, func(rule map[string]any) {
				labels := rule["labels"].(map[string]any)
				labels["severity"] = map[string]string{"critical": "page", "warning": "ticket"}[labels["severity"].(string)]
			})
		})},
		{"extraLabels", `extraLabels: { team: 'dba', source: 'poolwatch' }`, fromDefault(func(r rendered) {
			alerts(r, func(rule map[string]any) {
				labels := rule["labels"].(map[string]any)
				labels["team"], labels["source"] = "dba", "poolwatch"
			})
		})},
		// The opposite of what the Go generator renders by default: off
		// drops the absent() branches, on adds PoolwatchDown's.
		{"alertWhenNotScraped", fmt.Sprintf("alertWhenNotScraped: %v", !notScrapedByDefault(t)), fromDefault(func(r rendered) {
			alerts(r, func(rule map[string]any) {
				expr := rule["expr"].(string)
				if !notScrapedByDefault(t) {
					if rule["alert"] == mixin.AlertPoolwatchDown {
						rule["expr"] = expr + "\nor\nabsent(up{" + mixin.Default().AgentSelector + "})"
					}
					return
				}
				var kept []string
				for _, part := range strings.Split(expr, "\nor\n") {
					if !strings.Contains(part, "absent(") {
						kept = append(kept, part)
					}
				}
				rule["expr"] = strings.Join(kept, "\nor\n")
			})
		})},
	} {
		t.Run(tc.key, func(t *testing.T) {
			want := tc.want(t)
			got := render(t, tc.override)
			require.Equal(t, want, got)
			require.NotEqual(t, render(t, ""), got, "the override changes something")
		})
	}
}

// notScrapedByDefault reports whether the shipped PoolwatchDown fires when
// no agent is scraped at all (an absent() branch).
func notScrapedByDefault(t *testing.T) bool {
	t.Helper()
	found := false
	alerts(fromGo(t, mixin.Default(), "default"), func(rule map[string]any) {
		if rule["alert"] == mixin.AlertPoolwatchDown && strings.Contains(rule["expr"].(string), "absent(") {
			found = true
		}
	})
	return found
}

// Either way, PoolwatchDown keeps paging on a failed scrape of the agent
// (up == 0), and the not-scraped branch is absent(up) of the agent's job.
func TestMixin_AlertWhenNotScrapedTogglesOnlyTheAbsentBranch(t *testing.T) {
	exprs := map[bool]string{}
	for _, on := range []bool{false, true} {
		alerts(render(t, fmt.Sprintf("alertWhenNotScraped: %v", on)), func(rule map[string]any) {
			if rule["alert"] == mixin.AlertPoolwatchDown {
				exprs[on] = rule["expr"].(string)
			}
		})
	}
	require.True(t, strings.HasPrefix(exprs[false], `up{job="poolwatch"} == 0`), exprs[false])
	require.NotContains(t, exprs[false], "absent(")
	require.Contains(t, exprs[true], `absent(up{job="poolwatch"})`)
}

// The generated JSON the mixin imports is what `make mixin` writes: a
// stale one fails here too, not only in the mixin package.
func TestMixin_GeneratedJSONIsUpToDate(t *testing.T) {
	files, err := mixin.JsonnetFiles()
	require.NoError(t, err)
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(p)))
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "%s: run make mixin", p)
	}
}

// The example of mixin/README.md evaluates, imported as jsonnet-bundler
// vendors the mixin (github.com/poolwatch/poolwatch/mixin/...).
func TestMixin_TheREADMEExampleRenders(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "mixin", "README.md"))
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(b), "```jsonnet\n")
	require.True(t, ok, "mixin/README.md has no jsonnet example")
	example, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)

	vendor := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(vendor, "github.com", "poolwatch"), 0o750))
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	require.NoError(t, os.Symlink(root, filepath.Join(vendor, "github.com", "poolwatch", "poolwatch")))
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{vendor}})
	out, err := vm.EvaluateAnonymousSnippet("README.jsonnet", example)
	require.NoError(t, err)
	var files map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &files))
	require.Contains(t, files, "poolwatch.rules.yml")
	require.Contains(t, files["poolwatch.rules.yml"], `"team": "dba"`)
	require.Contains(t, files, "dba-overview.json")
}
