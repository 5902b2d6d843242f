package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/launch"
)

func exhausted(status string) launch.WebhookAlert {
	return launch.WebhookAlert{
		Status:      status,
		Fingerprint: "f1",
		Labels:      map[string]string{"alertname": "PoolExhausted", "severity": "critical", "target": "bouncer", "pool": "shop/app"},
		Annotations: map[string]string{"summary": "A connection pool is exhausted."},
	}
}

// recorder collects the pages a receiver reports.
type recorder struct {
	mu    sync.Mutex
	pages []page
}

func (r *recorder) add(p page) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pages = append(r.pages, p)
}

func (r *recorder) strings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.pages))
	for _, p := range r.pages {
		out = append(out, p.String())
	}
	return out
}

// post sends a notification to the receiver over HTTP and returns the status.
func post(t *testing.T, r *receiver, body any) int {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	resp, err := http.Post(r.URL(), "application/json", bytes.NewReader(b)) //nolint:noctx // a test against a local server
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

func TestReceiver_ReportsEachStateChangeOnceThoughAlertmanagerRepeatsTheGroup(t *testing.T) {
	rec := &recorder{}
	r := newReceiver(rec.add)
	require.NoError(t, r.start())
	t.Cleanup(func() { require.NoError(t, r.Close()) })

	firing := launch.WebhookNotification{Version: "4", Status: "firing", Alerts: []launch.WebhookAlert{exhausted("firing")}}
	require.Equal(t, http.StatusOK, post(t, r, firing))
	require.Equal(t, http.StatusOK, post(t, r, firing)) // the group again, unchanged
	require.Equal(t, http.StatusOK, post(t, r, launch.WebhookNotification{Version: "4", Status: "resolved", Alerts: []launch.WebhookAlert{exhausted("resolved")}}))

	require.Equal(t, []string{
		"FIRING   PoolExhausted (critical)  target=bouncer pool=shop/app  A connection pool is exhausted.",
		"RESOLVED PoolExhausted (critical)  target=bouncer pool=shop/app  A connection pool is exhausted.",
	}, rec.strings())
	st := r.state("PoolExhausted")
	require.False(t, st.Fired.IsZero())
	require.False(t, st.Resolved.IsZero())
	require.Zero(t, st.Firing)
}

func TestReceiver_CountsAnAlertAsFiringUntilEveryInstanceResolved(t *testing.T) {
	r := newReceiver(nil)
	a, b := exhausted("firing"), exhausted("firing")
	b.Fingerprint, b.Labels = "f2", map[string]string{"alertname": "PoolExhausted", "reason": "long_wait"}
	r.take(launch.WebhookNotification{Alerts: []launch.WebhookAlert{a, b}})
	a.Status = "resolved"
	r.take(launch.WebhookNotification{Alerts: []launch.WebhookAlert{a, b}})

	require.Equal(t, 1, r.state("PoolExhausted").Firing)
	r.mu.Lock()
	require.False(t, r.firingLocked("PoolExhausted", "bouncer"), "the bouncer's instance resolved")
	require.True(t, r.firingLocked("PoolExhausted", ""), "the other has no target label")
	require.False(t, r.firedAndResolvedLocked("PoolExhausted"))
	require.False(t, r.allResolvedLocked())
	r.mu.Unlock()

	b.Status = "resolved"
	r.take(launch.WebhookNotification{Alerts: []launch.WebhookAlert{a, b}})
	r.mu.Lock()
	defer r.mu.Unlock()
	require.True(t, r.firedAndResolvedLocked("PoolExhausted"))
	require.True(t, r.allResolvedLocked())
}

func TestReceiver_WaitReturnsWhenTheAlertFiresAndGivesUpAtItsTimeout(t *testing.T) {
	r := newReceiver(nil)
	ctx := context.Background()
	require.False(t, r.wait(ctx, 20*time.Millisecond, func() bool { return r.firedLocked("PoolExhausted") }))

	woke := make(chan bool)
	go func() { woke <- r.wait(ctx, 10*time.Second, func() bool { return r.firedLocked("PoolExhausted") }) }()
	start := time.Now()
	r.take(launch.WebhookNotification{Alerts: []launch.WebhookAlert{exhausted("firing")}})
	require.True(t, <-woke)
	require.Less(t, time.Since(start), 5*time.Second, "woken by the notification, not by the timeout")
}

func TestReceiver_RejectsWhatIsNotANotification(t *testing.T) {
	r := newReceiver(nil)
	require.NoError(t, r.start())
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	resp, err := http.Post(r.URL(), "application/json", bytes.NewReader([]byte("{not json"))) //nolint:noctx // a local test server
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, 1, r.badRequests())

	resp, err = http.Get(r.URL()) //nolint:noctx // a local test server
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func leakView(job, target, pool string) launch.WebhookAlert {
	return launch.WebhookAlert{
		Status:      "firing",
		Fingerprint: job + target + pool,
		Labels:      map[string]string{"alertname": "PoolConnectionLeak", "severity": "warning", "job": job, "target": target, "pool": pool, "upstream": "pg"},
		Annotations: map[string]string{"summary": "Connections are held with no activity past the leak threshold."},
	}
}

// One incident (one Alertmanager group) is one page however many views it
// has, named by the view where the clients are (the PgBouncer in front of
// the server), and one page when it is over; a view that joins later is an
// update of the same incident.
func TestReceiver_OnePagePerIncidentNamedByItsFirstView(t *testing.T) {
	rec := &recorder{}
	r := newReceiver(rec.add)
	views := []launch.WebhookAlert{
		leakView("poolwatch", "pg", "server"), leakView("poolwatch", "pg", "shop-web"),
		leakView("poolwatch", "bouncer", "shop/app"), leakView("poolwatch-probe", "bouncer", "shop/app"),
	}
	leak := launch.WebhookNotification{Version: "4", Status: "firing", GroupKey: `{}/{}:{upstream="pg"}`, Alerts: views}
	r.take(leak)
	r.take(leak) // repeated, unchanged: nothing
	exh := launch.WebhookNotification{Version: "4", Status: "firing", GroupKey: `{}:{alertname="PoolExhausted"}`, Alerts: []launch.WebhookAlert{exhausted("firing")}}
	r.take(exh)
	late := exh
	longWait := launch.WebhookAlert{Status: "firing", Fingerprint: "f9", Labels: map[string]string{"alertname": "PoolExhausted", "severity": "critical", "target": "bouncer", "pool": "shop/app", "reason": "long_wait"}}
	late.Alerts = []launch.WebhookAlert{exhausted("firing"), longWait}
	r.take(late)
	for i := range views {
		views[i].Status = "resolved"
	}
	r.take(launch.WebhookNotification{Version: "4", Status: "resolved", GroupKey: leak.GroupKey, Alerts: views})

	require.Equal(t, []string{
		"FIRING   PoolConnectionLeak (warning)  target=bouncer pool=shop/app  Connections are held with no activity past the leak threshold.  [+2: pg/server, pg/shop-web]",
		"FIRING   PoolExhausted (critical)  target=bouncer pool=shop/app  A connection pool is exhausted.",
		"FIRING   PoolExhausted (critical)  target=bouncer pool=shop/app reason=long_wait",
		"RESOLVED PoolConnectionLeak (warning)  target=bouncer pool=shop/app  Connections are held with no activity past the leak threshold.  [+2: pg/server, pg/shop-web]",
	}, rec.strings())
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Equal(t, []bool{false, false, true, false}, []bool{rec.pages[0].Update, rec.pages[1].Update, rec.pages[2].Update, rec.pages[3].Update})
}
