package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// page is one alert state change, as the terminal shows it.
type page struct {
	At        time.Time
	Status    string // "firing" or "resolved"
	AlertName string
	Severity  string
	Target    string
	Pool      string
	Summary   string
}

// String formats the page for the terminal, e.g.
//
//	FIRING   PoolExhausted (critical)  target=bouncer pool=shop/app  A connection pool is exhausted.
func (p page) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %s (%s)", strings.ToUpper(p.Status), p.AlertName, p.Severity)
	if p.Target != "" {
		fmt.Fprintf(&b, "  target=%s", p.Target)
	}
	if p.Pool != "" {
		fmt.Fprintf(&b, " pool=%s", p.Pool)
	}
	if p.Summary != "" {
		fmt.Fprintf(&b, "  %s", p.Summary)
	}
	return b.String()
}

// receiver is the webhook Alertmanager notifies: launch's webhook
// receiver, which takes the HTTP requests, feeding take. Alertmanager sends
// a group's whole alert list on every change, so the receiver keeps the
// last status of each alert (by fingerprint) and reports only changes. It
// is safe for concurrent use.
type receiver struct {
	hook *launch.WebhookReceiver
	now  func() time.Time
	// onPage is called, in order, for every state change.
	onPage func(page)

	mu       sync.Mutex
	status   map[string]lastStatus // fingerprint -> last status
	fired    map[string]time.Time
	resolved map[string]time.Time
	pages    []page
	changed  chan struct{} // closed and replaced on every change
}

func newReceiver(onPage func(page)) *receiver {
	return &receiver{
		now:      time.Now,
		onPage:   onPage,
		status:   map[string]lastStatus{},
		fired:    map[string]time.Time{},
		resolved: map[string]time.Time{},
		changed:  make(chan struct{}),
	}
}

// start serves the webhook on a free loopback port until stop.
func (r *receiver) start() error {
	hook, err := launch.StartWebhookReceiver(r.take)
	if err != nil {
		return err
	}
	r.hook = hook
	return nil
}

// URL is the address to give Alertmanager.
func (r *receiver) URL() string { return r.hook.URL() }

// Close closes the server and its connections. Alertmanager, the only
// client, is stopped before it, so nothing is in flight worth waiting for.
func (r *receiver) Close() error {
	if r.hook == nil {
		return nil
	}
	return r.hook.Close()
}

// take records a notification and reports its state changes.
func (r *receiver) take(n launch.WebhookNotification) {
	now := r.now()
	alerts := append([]launch.WebhookAlert(nil), n.Alerts...)
	// Resolutions first, then by name and labels: stable output.
	sort.SliceStable(alerts, func(i, j int) bool {
		if alerts[i].Status != alerts[j].Status {
			return alerts[i].Status == "resolved"
		}
		return alerts[i].Labels["alertname"]+alerts[i].Fingerprint < alerts[j].Labels["alertname"]+alerts[j].Fingerprint
	})
	r.mu.Lock()
	var changes []page
	for _, a := range alerts {
		key := a.Fingerprint
		if key == "" {
			key = launch.LabelsString(a.Labels)
		}
		if r.status[key].status == a.Status {
			continue
		}
		r.status[key] = lastStatus{alertname: a.Labels["alertname"], target: a.Labels["target"], status: a.Status}
		p := page{
			At: now, Status: a.Status, AlertName: a.Labels["alertname"], Severity: a.Labels["severity"],
			Target: a.Labels["target"], Pool: a.Labels["pool"], Summary: a.Annotations["summary"],
		}
		switch a.Status {
		case "firing":
			if _, ok := r.fired[p.AlertName]; !ok {
				r.fired[p.AlertName] = now
			}
		case "resolved":
			r.resolved[p.AlertName] = now
		}
		r.pages = append(r.pages, p)
		changes = append(changes, p)
	}
	if len(changes) > 0 {
		close(r.changed)
		r.changed = make(chan struct{})
	}
	r.mu.Unlock()
	for _, p := range changes {
		if r.onPage != nil {
			r.onPage(p)
		}
	}
}

// lastStatus is the last status seen of one alert.
type lastStatus struct{ alertname, target, status string }

// alertState summarizes what the receiver saw of one alert name.
type alertState struct {
	Fired    time.Time // first firing notification; zero if never
	Resolved time.Time // last resolved notification; zero if never
	Firing   int       // alerts of that name firing now
}

// state returns what the receiver saw of alertname.
func (r *receiver) state(alertname string) alertState {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := alertState{Fired: r.fired[alertname], Resolved: r.resolved[alertname]}
	for _, st := range r.status {
		if st.alertname == alertname && st.status == "firing" {
			s.Firing++
		}
	}
	return s
}

// firedAndResolvedLocked reports whether alertname fired and no alert of
// that name is firing any more; call inside wait's cond.
func (r *receiver) firedAndResolvedLocked(alertname string) bool {
	if _, ok := r.fired[alertname]; !ok {
		return false
	}
	for _, st := range r.status {
		if st.alertname == alertname && st.status == "firing" {
			return false
		}
	}
	return true
}

// wait blocks until cond (called with the receiver locked) holds, ctx is
// done or timeout passes; it reports whether cond held.
func (r *receiver) wait(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// firingLocked reports whether an alert alertname of target is firing;
// call inside wait's cond.
func (r *receiver) firingLocked(alertname, target string) bool {
	for _, st := range r.status {
		if st.alertname == alertname && st.target == target && st.status == "firing" {
			return true
		}
	}
	return false
}

// firedLocked reports whether alertname has fired; call inside wait's cond.
func (r *receiver) firedLocked(alertname string) bool {
	_, ok := r.fired[alertname]
	return ok
}

// allResolvedLocked reports whether every alert that fired has resolved
// again; call inside wait's cond.
func (r *receiver) allResolvedLocked() bool {
	for _, st := range r.status {
		if st.status == "firing" {
			return false
		}
	}
	return true
}

// badRequests returns how many requests could not be decoded.
func (r *receiver) badRequests() int {
	if r.hook == nil {
		return 0
	}
	return len(r.hook.Bad())
}
