package mixin

import "path"

// ChartFilesDir is where the Helm chart (deploy/helm/poolwatch) keeps its
// copies of the rule file and the dashboards, relative to the repository
// root: Helm reads only files inside the chart, so `make mixin` writes the
// shipped files there too, and the chart's PrometheusRule and dashboard
// ConfigMaps are rendered from them.
const ChartFilesDir = "deploy/helm/poolwatch/files"

// chartFiles returns the chart's copies of the shipped rule file and
// dashboards in files (as Files renders them), keyed by path.
func chartFiles(files map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for p, b := range files {
		switch {
		case p == RulesFile:
			out[path.Join(ChartFilesDir, path.Base(p))] = b
		case path.Dir(p) == "dashboards":
			out[path.Join(ChartFilesDir, p)] = b
		}
	}
	return out
}
