package launch

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sendToHook sends body to url with method and returns the status code.
func sendToHook(t *testing.T, method, url, body string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	require.NoError(t, err)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

func notification(t *testing.T, version string, alerts ...WebhookAlert) string {
	t.Helper()
	b, err := json.Marshal(WebhookNotification{Version: version, Status: "firing", GroupKey: "{}:{alertname=\"A\"}", Receiver: "pager", Alerts: alerts})
	require.NoError(t, err)
	return string(b)
}

func TestWebhookReceiver_RecordsEveryAlertOfEveryNotification(t *testing.T) {
	var mu sync.Mutex
	var notified []string
	hook, err := StartWebhookReceiver(func(n WebhookNotification) {
		mu.Lock()
		defer mu.Unlock()
		notified = append(notified, n.Status)
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, hook.Close()) })
	require.True(t, strings.HasSuffix(hook.URL(), "/alerts"), hook.URL())

	a := WebhookAlert{Status: "firing", Labels: map[string]string{"alertname": "A", "pool": "p"}}
	b := WebhookAlert{Status: "firing", Labels: map[string]string{"alertname": "B"}}
	require.Equal(t, http.StatusOK, sendToHook(t, http.MethodPost, hook.URL(), notification(t, "4", a, b)))
	a.Status = "resolved"
	require.Equal(t, http.StatusOK, sendToHook(t, http.MethodPost, hook.URL(), notification(t, "4", a)))

	events := hook.Events()
	require.Len(t, events, 3)
	require.Equal(t, []int{0, 0, 1}, []int{events[0].Notification, events[1].Notification, events[2].Notification})
	require.Equal(t, `{alertname="A", pool="p"}`, events[2].Key())
	require.Equal(t, "resolved", events[2].Status)
	require.Equal(t, `{}:{alertname="A"}`, events[2].GroupKey)
	require.Equal(t, "pager", events[2].Receiver)
	ev, ok := hook.Await(time.Now().Add(time.Second), func(e AlertEvent) bool { return e.Labels["alertname"] == "B" })
	require.True(t, ok)
	require.Equal(t, "firing", ev.Status)
	mu.Lock()
	require.Equal(t, []string{"firing", "firing"}, notified)
	mu.Unlock()
	require.Empty(t, hook.Bad())
}

func TestWebhookReceiver_RejectsAndRecordsWhatIsNotANotification(t *testing.T) {
	hook, err := StartWebhookReceiver(nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, hook.Close()) })
	base := strings.TrimSuffix(hook.URL(), "/alerts")

	require.Equal(t, http.StatusBadRequest, sendToHook(t, http.MethodPost, hook.URL(), "{not json"))
	require.Equal(t, http.StatusBadRequest, sendToHook(t, http.MethodPost, hook.URL(), notification(t, "3")))
	require.Equal(t, http.StatusMethodNotAllowed, sendToHook(t, http.MethodGet, hook.URL(), ""))
	require.Equal(t, http.StatusNotFound, sendToHook(t, http.MethodPost, base+"/other", notification(t, "4")))

	require.Len(t, hook.Bad(), 4)
	require.Empty(t, hook.Events())
	start := time.Now()
	_, ok := hook.Await(start.Add(100*time.Millisecond), func(AlertEvent) bool { return true })
	require.False(t, ok)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
}

func TestLabelsString_SortsAndQuotes(t *testing.T) {
	require.Equal(t, `{a="1", b="x\"y"}`, LabelsString(map[string]string{"b": `x"y`, "a": "1"}))
	require.Equal(t, `{}`, LabelsString(nil))
}

func TestConfigs_AreTheShortRunConfigurations(t *testing.T) {
	require.Equal(t, `route:
  receiver: hook
  group_by: [alertname, pool]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: 'http://127.0.0.1:1/alerts'
        send_resolved: true
`, AlertmanagerConfig("hook", "http://127.0.0.1:1/alerts", "alertname", "pool"))
	require.Equal(t, `global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - /r.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:2']
scrape_configs:
  - job_name: x
`, PrometheusConfig([]string{"/r.yml"}, "127.0.0.1:2", "  - job_name: x\n"))
	require.Equal(t, "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
		PrometheusConfig(nil, "", ""))
}
