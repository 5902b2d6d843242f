package launch

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// WebhookAlert is one alert of an Alertmanager webhook notification
// (payload version 4).
type WebhookAlert struct {
	Status       string            `json:"status"` // "firing" or "resolved"
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// WebhookNotification is the body Alertmanager POSTs to a webhook.
type WebhookNotification struct {
	Version     string            `json:"version"`
	GroupKey    string            `json:"groupKey"`
	Status      string            `json:"status"`
	Receiver    string            `json:"receiver"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []WebhookAlert    `json:"alerts"`
}

// AlertEvent is one alert as one notification carried it.
type AlertEvent struct {
	Received     time.Time
	Notification int // index of the notification, from 0
	// GroupKey and Receiver are the notification's: one group key is one
	// incident as Alertmanager grouped it.
	GroupKey, Receiver string
	WebhookAlert
}

// Key identifies the alert across notifications: its sorted label set (see
// LabelsString).
func (e AlertEvent) Key() string { return LabelsString(e.Labels) }

// LabelsString writes a label set sorted by name, as PromQL writes it:
// {a="1", b="2"}.
func LabelsString(l map[string]string) string {
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

// maxNotification bounds the body of one notification.
const maxNotification = 4 << 20

// WebhookReceiver is an Alertmanager webhook receiver on a free loopback
// port. It records every alert of every notification POSTed to URL();
// anything else (another method or path, a body that is not a version 4
// notification) is answered 405, 404 or 400 and recorded as bad. It is safe
// for concurrent use.
type WebhookReceiver struct {
	srv      *http.Server
	addr     string
	onNotify func(WebhookNotification)

	mu      sync.Mutex
	notes   int
	events  []AlertEvent
	bad     []string
	changed chan struct{} // closed and replaced on every notification
}

// StartWebhookReceiver serves a WebhookReceiver on a free loopback port
// until Close. onNotify, when not nil, is called with every valid
// notification after it was recorded and before Alertmanager gets its
// answer, outside the receiver's lock; it may be called concurrently.
func StartWebhookReceiver(onNotify func(WebhookNotification)) (*WebhookReceiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the webhook: %w", err)
	}
	r := &WebhookReceiver{addr: l.Addr().String(), onNotify: onNotify, changed: make(chan struct{})}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

// Close closes the server and its connections at once.
func (r *WebhookReceiver) Close() error {
	if err := r.srv.Close(); err != nil {
		return fmt.Errorf("stop the webhook receiver: %w", err)
	}
	return nil
}

// URL is the address to give Alertmanager.
func (r *WebhookReceiver) URL() string { return "http://" + r.addr + "/alerts" }

// ServeHTTP takes one notification.
func (r *WebhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxNotification))
	var n WebhookNotification
	if err == nil {
		err = json.Unmarshal(body, &n)
	}
	code := http.StatusOK
	switch {
	case req.Method != http.MethodPost:
		code = http.StatusMethodNotAllowed
	case req.URL.Path != "/alerts":
		code = http.StatusNotFound
	case err != nil || n.Version != "4":
		code = http.StatusBadRequest
	}
	r.mu.Lock()
	if code != http.StatusOK {
		r.bad = append(r.bad, fmt.Sprintf("%s %s version %q: %v: %.300s", req.Method, req.URL.Path, n.Version, err, body))
		r.mu.Unlock()
		http.Error(w, "bad notification", code)
		return
	}
	now := time.Now()
	for _, a := range n.Alerts {
		r.events = append(r.events, AlertEvent{Received: now, Notification: r.notes, GroupKey: n.GroupKey, Receiver: n.Receiver, WebhookAlert: a})
	}
	r.notes++
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.onNotify != nil {
		r.onNotify(n)
	}
	w.WriteHeader(http.StatusOK)
}

// Events returns every alert received so far, in order.
func (r *WebhookReceiver) Events() []AlertEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]AlertEvent(nil), r.events...)
}

// Bad returns the malformed requests received so far.
func (r *WebhookReceiver) Bad() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// Await waits until an alert that satisfies match has been received (at
// any time since the start) and returns it, or returns false at the
// deadline. It wakes on each notification; it never sleeps blindly.
func (r *WebhookReceiver) Await(deadline time.Time, match func(AlertEvent) bool) (AlertEvent, bool) {
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
			return AlertEvent{}, false
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
