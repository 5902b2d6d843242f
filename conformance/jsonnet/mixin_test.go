// Package jsonnet renders mixin/mixin.libsonnet with go-jsonnet, as
// kube-prometheus and mixtool users do (no jsonnet library is needed), and
// checks it against the Go generator it is generated from: with the default
// _config it is the shipped files (renderedFiles: byte for byte), and each
// _config key changes exactly what it should.
package jsonnet

import (
	"encoding/json"
	"fmt"
	"maps"
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

// renderedFiles evaluates the mixin's renderedFiles (the files as text,
// keyed by path) with the _config overrides.
func renderedFiles(t *testing.T, overrides string) map[string]string {
	t.Helper()
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{repoRoot}})
	out, err := vm.EvaluateAnonymousSnippet("files.jsonnet", fmt.Sprintf(
		`((import 'mixin/mixin.libsonnet') + { _config+:: { %s } }).renderedFiles`, overrides))
	require.NoError(t, err)
	var files map[string]string
	require.NoError(t, json.Unmarshal([]byte(out), &files))
	return files
}

// requireSameBytes fails at the first line where got differs from want.
func requireSameBytes(t *testing.T, name string, want, got []byte) {
	t.Helper()
	if string(want) == string(got) {
		return
	}
	wantLines, gotLines := strings.SplitAfter(string(want), "\n"), strings.SplitAfter(string(got), "\n")
	for i := 0; ; i++ {
		var w, g string
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if w != g {
			t.Errorf("%s: differs from line %d (%d and %d bytes in all)\nwant %q\ngot  %q", name, i+1, len(want), len(got), w, g)
			return
		}
	}
}

// The acceptance of issue 13: with the default _config, renderedFiles is
// the shipped rule files and dashboards, byte for byte, and nothing else.
func TestMixin_DefaultConfigRendersTheShippedFilesByteForByte(t *testing.T) {
	files := renderedFiles(t, "")
	var shippedPaths []string
	for _, pattern := range []string{"alerts/*.rules.yml", "dashboards/*.json"} {
		paths, err := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(pattern)))
		require.NoError(t, err)
		require.NotEmpty(t, paths, pattern)
		for _, p := range paths {
			rel, err := filepath.Rel(repoRoot, p)
			require.NoError(t, err)
			shippedPaths = append(shippedPaths, filepath.ToSlash(rel))
		}
	}
	require.ElementsMatch(t, shippedPaths, slices.Collect(maps.Keys(files)), "renderedFiles holds exactly the shipped files")
	for _, p := range shippedPaths {
		want, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(p))) //nolint:gosec // a file of the repository
		require.NoError(t, err)
		requireSameBytes(t, p, want, []byte(files[p]))
	}
}

// The short variant renders, byte for byte, what the Go generator writes
// for it (go run ./mixin/cmd/mixin -variant short).
func TestMixin_ShortVariantRendersTheGoGeneratorsShortFilesByteForByte(t *testing.T) {
	files := renderedFiles(t, "variant: 'short'")
	want, err := mixin.Files(mixin.Short(), "short")
	require.NoError(t, err)
	n := 0
	for p, b := range want {
		if !mixin.IsRuleFile(p) && path.Dir(p) != "dashboards" {
			continue // alertmanager.yml.example: not the jsonnet mixin's
		}
		n++
		require.Contains(t, files, p)
		requireSameBytes(t, p, b, []byte(files[p]))
	}
	require.Len(t, files, n, "renderedFiles holds only the generator's rule files and dashboards")
}

// The Go ports of the two manifest functions write what go-jsonnet's
// std.manifestYamlDoc and std.manifestJsonEx write, on values that reach
// every branch: quoted and bare keys, empty, nested and block values.
func TestManifest_GoPortsWriteWhatGoJsonnetWrites(t *testing.T) {
	values := []string{
		`null`, `true`, `0`, `-1.5`, `1e-7`, `12345678901234`, `""`, `"plain"`, `"two\nlines"`, `"ends\nin a newline\n"`,
		`"quote \" backslash \\ tab \t cr \r bell \u0007 del \u007f é < & > \u2028"`,
		`[]`, `{}`, `[[]]`, `[{}]`, `[[1, [2, 3]], [], {}]`, `{"a": [], "b": {}, "c": [[1]], "d": {"e": {"f": "g"}}}`,
		`[{"x": 1, "y": [1, {"z": "w"}]}, "s"]`,
		`{"on": 1, "Yes": 2, "y": 3, "null": 4, "-": 5, "---": 6, "''": 7, "1": 8, "1.5": 9, "0x1F": 10, "a0x1": 11,
		  "0b101": 12, "2026-12-03": 13, "1-2-3": 14, ".inf": 15, "nan": 16, "Infinity": 17, "": 18, "a b": 19, "a:b": 20,
		  "é": 21, "keep_firing_for": 22, "runbook_url": 23, "a/b.c-d": 24, "_": 25, "Z": 26, "\"": 27, "a\nb": 28}`,
	}
	for _, src := range values {
		var v any
		require.NoError(t, json.Unmarshal([]byte(src), &v), src)
		for _, tc := range []struct {
			call string
			port func(any) (string, error)
		}{
			{"std.manifestYamlDoc(v, indent_array_in_object=true, quote_keys=false)", mixin.ManifestYAMLDoc},
			{"std.manifestJsonEx(v, '  ')", func(v any) (string, error) { return mixin.ManifestJSONEx(v, "  ") }},
		} {
			vm := jsonnet.MakeVM()
			vm.ExtVar("v", src)
			out, err := vm.EvaluateAnonymousSnippet("manifest.jsonnet", "local v = std.parseJson(std.extVar('v')); "+tc.call)
			require.NoError(t, err, src)
			var want string
			require.NoError(t, json.Unmarshal([]byte(out), &want))
			got, err := tc.port(v)
			require.NoError(t, err, src)
			require.Equal(t, want, got, "%s of %s", tc.call, src)
		}
	}
}

// The _config keys that Config also has: renderedFiles with the override
// is, byte for byte, what the Go generator writes with the same setting.
func TestMixin_ConfigKeysOfTheGoGeneratorRenderItsFilesByteForByte(t *testing.T) {
	for _, tc := range []struct {
		key, override string
		change        func(c *mixin.Config)
	}{
		{"poolSelector", `poolSelector: 'job="db-probe", cluster="eu1"'`, func(c *mixin.Config) { c.PoolSelector = `job="db-probe", cluster="eu1"` }},
		{"agentSelector", `agentSelector: 'job=~"poolwatch|poolwatch-probe", role="agent"'`, func(c *mixin.Config) { c.AgentSelector = `job=~"poolwatch|poolwatch-probe", role="agent"` }},
		{"runbookURL", `runbookURL: 'https://wiki.example.com/runbooks/poolwatch'`, func(c *mixin.Config) { c.RunbookURL = "https://wiki.example.com/runbooks/poolwatch" }},
		{"dashboardTags", `dashboardTags: ['databases', 'poolwatch']`, func(c *mixin.Config) { c.DashboardTags = []string{"databases", "poolwatch"} }},
		{"dashboardUIDPrefix", `dashboardUIDPrefix: 'dba-'`, func(c *mixin.Config) { c.DashboardUIDPrefix = "dba-" }},
		{"dashboardRefresh", `dashboardRefresh: '1m'`, func(c *mixin.Config) { c.DashboardRefresh = "1m" }},
		{"dashboardTimeFrom", `dashboardTimeFrom: 'now-24h'`, func(c *mixin.Config) { c.DashboardTimeFrom = "now-24h" }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			c := mixin.Default()
			tc.change(&c)
			want, err := mixin.Files(c, "default")
			require.NoError(t, err)
			files := renderedFiles(t, tc.override)
			n := 0
			for p, b := range want {
				if !mixin.IsRuleFile(p) && path.Dir(p) != "dashboards" {
					continue
				}
				n++
				require.Contains(t, files, p)
				requireSameBytes(t, p, b, []byte(files[p]))
			}
			require.Len(t, files, n)
		})
	}
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
				// A multi-line expression ends in a newline in the rule
				// files (a YAML block): patch the expression without it,
				// then put it back if the result has more than one line.
				expr := strings.TrimSuffix(rule["expr"].(string), "\n")
				block := func(e string) string {
					if strings.Contains(e, "\n") {
						return e + "\n"
					}
					return e
				}
				if !notScrapedByDefault(t) {
					if rule["alert"] == mixin.AlertPoolwatchDown {
						rule["expr"] = block(expr + "\nor\nabsent(up{" + mixin.Default().AgentSelector + "})")
					}
					return
				}
				var kept []string
				for _, part := range strings.Split(expr, "\nor\n") {
					if !strings.Contains(part, "absent(") {
						kept = append(kept, part)
					}
				}
				rule["expr"] = block(strings.Join(kept, "\nor\n"))
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
