package mixin

import (
	"path"
	"strings"
)

// ChartFilesDir is where the Helm chart (deploy/helm/poolwatch) keeps its
// copies of the rule files (rules/) and the dashboards (dashboards/),
// relative to the repository root: Helm reads only files inside the chart,
// so `make mixin` writes the shipped files there too, and the chart's
// PrometheusRule and dashboard ConfigMaps are rendered from them.
const ChartFilesDir = "deploy/helm/poolwatch/files"

// IsRuleFile reports whether p, a path of Files, is a Prometheus rule
// file: alerts/*.rules.yml.
func IsRuleFile(p string) bool {
	return path.Dir(p) == "alerts" && strings.HasSuffix(p, ".rules.yml")
}

// chartFiles returns the chart's copies of the shipped rule files and
// dashboards in files (as Files renders them), keyed by path.
func chartFiles(files map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for p, b := range files {
		switch {
		case IsRuleFile(p):
			out[path.Join(ChartFilesDir, "rules", path.Base(p))] = b
		case path.Dir(p) == "dashboards":
			out[path.Join(ChartFilesDir, p)] = b
		}
	}
	return out
}
