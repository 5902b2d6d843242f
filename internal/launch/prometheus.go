package launch

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PrometheusOptions configure a Prometheus server started by
// StartPrometheus.
type PrometheusOptions struct {
	// Dir holds prometheus.yml, the TSDB (Dir/data) and the logs. It must
	// exist; relative paths in Config (file_sd lists) resolve against it.
	Dir string
	// Config is written to Dir/prometheus.yml (see PrometheusConfig).
	Config string
	ProcessOptions
}

// StartPrometheus runs Prometheus with opts.Config on a free loopback port
// and returns once /-/ready answers 200 (see StartDaemon). Talk to it with
// PromAPI{URL: d.URL}.
func StartPrometheus(ctx context.Context, opts PrometheusOptions) (*Daemon, error) {
	return prometheusDaemon(opts).start(ctx)
}

func prometheusDaemon(opts PrometheusOptions) configuredDaemon {
	return configuredDaemon{
		name: "prometheus", dir: opts.Dir, file: "prometheus.yml", config: opts.Config, po: opts.ProcessOptions,
		args: func(cfg, addr string) []string {
			return []string{
				"--config.file=" + cfg,
				"--storage.tsdb.path=" + filepath.Join(opts.Dir, "data"),
				"--web.listen-address=" + addr,
			}
		},
	}
}

// PrometheusConfig returns a prometheus.yml for a short run: scrapes and
// rule evaluations every second with a 900 ms scrape timeout, the rules of
// ruleFiles, alerts sent to the Alertmanager at alertmanager (host:port;
// none when empty), and scrapeConfigs, the entries of scrape_configs as YAML
// indented by two spaces ("  - job_name: ...").
func PrometheusConfig(ruleFiles []string, alertmanager, scrapeConfigs string) string {
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n")
	if len(ruleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range ruleFiles {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	if alertmanager != "" {
		fmt.Fprintf(&b, "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['%s']\n", alertmanager)
	}
	b.WriteString("scrape_configs:\n")
	b.WriteString(scrapeConfigs)
	return b.String()
}

// CheckRules runs promtool check rules on files, for at most a minute, and
// returns its output in the error when it fails. A missing promtool gives
// an error wrapping ErrNotInstalled.
func CheckRules(ctx context.Context, files ...string) error {
	promtool, err := LookPath("promtool")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, promtool, append([]string{"check", "rules"}, files...)...).CombinedOutput() //nolint:gosec // promtool from LookPath
	if err != nil {
		return fmt.Errorf("promtool check rules %s: %w\n%s", strings.Join(files, " "), err, out)
	}
	return nil
}
