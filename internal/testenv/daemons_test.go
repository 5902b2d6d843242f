package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// TestStartPrometheusAndAlertmanager_DeliverAFiringAlertToTheWebhook runs
// the real servers: Prometheus loads a rule that always fires, scrapes
// Alertmanager, and Alertmanager notifies the webhook. (The rule has a
// "for" of 8s: Prometheus drops the alerts it has before it discovers the
// Alertmanager, which takes up to 5 s, and resends only after a minute.)
func TestStartPrometheusAndAlertmanager_DeliverAFiringAlertToTheWebhook(t *testing.T) {
	Require(t, "prometheus", "alertmanager")
	hook := StartWebhookReceiver(t)
	am := StartAlertmanager(t, AlertmanagerOptions{Dir: t.TempDir(), Config: launch.AlertmanagerConfig("hook", hook.URL(), "alertname")})
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", am.PID()))
	require.NoError(t, err)
	require.Contains(t, strings.Split(string(cmdline), "\x00"), "--cluster.listen-address=", "clustering off")

	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yml")
	require.NoError(t, os.WriteFile(broken, []byte("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: 'up =='\n"), 0o600))
	require.ErrorContains(t, launch.CheckRules(t.Context(), broken), "promtool check rules "+broken)
	rules := filepath.Join(dir, "rules.yml")
	require.NoError(t, os.WriteFile(rules, []byte(`groups:
  - name: testenv
    rules:
      - alert: TestenvAlways
        expr: vector(1)
        for: 8s
        labels: {severity: none}
        annotations: {summary: Always.}
`), 0o600))
	require.NoError(t, launch.CheckRules(t.Context(), rules))
	prom := StartPrometheus(t, PrometheusOptions{Dir: dir, Config: launch.PrometheusConfig([]string{rules}, am.Addr,
		"  - job_name: alertmanager\n    static_configs:\n      - targets: ['"+am.Addr+"']\n")})
	api := PromAPI{URL: prom.URL, Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}

	ev, ok := hook.Await(time.Now().Add(60*time.Second), func(e AlertEvent) bool {
		return e.Status == "firing" && e.Labels["alertname"] == "TestenvAlways"
	})
	require.True(t, ok, "no notification; alertmanager log:\n%s", am.LogTail(20))
	require.Equal(t, "Always.", ev.Annotations["summary"])
	require.Contains(t, ev.GeneratorURL, "/graph?g0.expr=")

	groups, err := api.Rules(t.Context())
	require.NoError(t, err)
	require.Len(t, groups, 1)
	require.Equal(t, "TestenvAlways", groups[0].Rules[0].Name)
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		up, err := api.Vector(t.Context(), `up{job="alertmanager"} == 1`)
		return err == nil && len(up) == 1, fmt.Sprintf("alertmanager not scraped: %v %v", up, err)
	})
	active, _, err := api.Targets(context.Background())
	require.NoError(t, err)
	require.Len(t, active, 1)
	require.Equal(t, "http://"+am.Addr+"/metrics", active[0].ScrapeURL)
	require.Empty(t, hook.Bad())
}
