package alerting

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// amAlert is one alert of an Alertmanager webhook notification (payload
// version 4).
type amAlert struct {
	Status       string            `json:"status"` // "firing" or "resolved"
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// amNotification is the body Alertmanager POSTs to a webhook.
type amNotification struct {
	Version     string            `json:"version"`
	GroupKey    string            `json:"groupKey"`
	Status      string            `json:"status"`
	Receiver    string            `json:"receiver"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []amAlert         `json:"alerts"`
}

// alertEvent is one alert as one notification carried it.
type alertEvent struct {
	Received     time.Time
	Notification int // index of the notification, from 0
	amAlert
}

// key identifies the alert across notifications: its sorted label set.
func (e alertEvent) key() string { return labelsKey(e.Labels) }

func labelsKey(l map[string]string) string {
	names := make([]string, 0, len(l))
	for n := range l {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", n, l[n])
	}
	b.WriteByte('}')
	return b.String()
}

// receiver is the webhook Alertmanager notifies. It records every alert of
// every notification; it is safe for concurrent use.
type receiver struct {
	srv *httptest.Server

	mu      sync.Mutex
	notes   int
	events  []alertEvent
	bad     []string      // malformed requests
	changed chan struct{} // closed and replaced on every notification
}

// startReceiver serves the webhook on a free loopback port until cleanup.
func startReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve)) // 127.0.0.1:0
	t.Cleanup(r.srv.Close)
	return r
}

// URL is the address to give Alertmanager.
func (r *receiver) URL() string { return r.srv.URL + "/alerts" }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	var n amNotification
	if err == nil {
		err = json.Unmarshal(body, &n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil || req.Method != http.MethodPost || req.URL.Path != "/alerts" || n.Version != "4" {
		r.bad = append(r.bad, fmt.Sprintf("%s %s version %q: %v: %.300s", req.Method, req.URL.Path, n.Version, err, body))
		http.Error(w, "bad notification", http.StatusBadRequest)
		return
	}
	now := time.Now()
	for _, a := range n.Alerts {
		r.events = append(r.events, alertEvent{Received: now, Notification: r.notes, amAlert: a})
	}
	r.notes++
	close(r.changed)
	r.changed = make(chan struct{})
	w.WriteHeader(http.StatusOK)
}

// Events returns every alert received so far, in order.
func (r *receiver) Events() []alertEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alertEvent(nil), r.events...)
}

// Bad returns the malformed requests received so far.
func (r *receiver) Bad() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// await waits until an alert that satisfies match has been received (at any
// time since the start) and returns it, or returns false at the deadline.
// It wakes on each notification; it never sleeps blindly.
func (r *receiver) await(deadline time.Time, match func(alertEvent) bool) (alertEvent, bool) {
	for {
		r.mu.Lock()
		for _, e := range r.events {
			if match(e) {
				r.mu.Unlock()
				return e, true
			}
		}
		changed := r.changed
		r.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			return alertEvent{}, false
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// summary lists the distinct (alertname, status, target, pool) of the
// alerts received so far, for failure messages.
func (r *receiver) summary() string {
	seen := map[string]int{}
	for _, e := range r.Events() {
		k := fmt.Sprintf("%s %s target=%s pool=%s job=%s reason=%s", e.Labels["alertname"], e.Status,
			e.Labels["target"], e.Labels["pool"], e.Labels["job"], e.Labels["reason"])
		seen[k]++
	}
	if len(seen) == 0 {
		return "(no notification received)"
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\t%s (x%d)\n", k, seen[k])
	}
	return b.String()
}
