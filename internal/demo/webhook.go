package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// page is what the terminal shows of one notification: the incident it
// opens or closes (a page), or how it changed an open one (an update). An
// incident is one Alertmanager group: its alerts are the views of one
// problem (the same leak through PgBouncer, on the server and in an
// application pool), so the page names the first and counts the others.
type page struct {
	At        time.Time
	Status    string // "firing" or "resolved"
	AlertName string
	Severity  string
	Target    string
	Pool      string
	Reason    string
	Summary   string
	// Views are the other alerts of the change, "target/pool" (with the
	// reason, where there is one).
	Views []string
	// Update is set for a change of an incident that is open before and
	// after it.
	Update bool
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
	if p.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", p.Reason)
	}
	if p.Summary != "" {
		fmt.Fprintf(&b, "  %s", p.Summary)
	}
	if len(p.Views) > 0 {
		fmt.Fprintf(&b, "  [+%d: %s]", len(p.Views), strings.Join(p.Views, ", "))
	}
	return b.String()
}

// receiver is the webhook Alertmanager notifies: launch's webhook
// receiver, which takes the HTTP requests, feeding take. Alertmanager sends
// a group's whole alert list on every change, so the receiver keeps the
// last status of each alert (by fingerprint) and reports only changes: one
// page when a group starts firing (a new incident) and one when all its
// alerts have resolved, and an update in between. It is safe for
// concurrent use.
type receiver struct {
	hook *launch.WebhookReceiver
	now  func() time.Time
	// onPage is called, in order, for every page and update.
	onPage func(page)

	mu     sync.Mutex
	status map[string]lastStatus // fingerprint -> last status
	// groups are the firing alerts of each Alertmanager group (incident),
	// by group key; opened is the page that opened each.
	groups   map[string]map[string]bool
	opened   map[string]page
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
		groups:   map[string]map[string]bool{},
		opened:   map[string]page{},
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

// viewOrder sorts the alerts of a change so that the first names the
// incident: the view where the clients are (a target that is not its own
// upstream, such as the PgBouncer in front of a server) before the server's
// own views, then by target, pool and reason.
func viewOrder(a, b launch.WebhookAlert) bool {
	ka := []string{strconv.FormatBool(a.Labels["upstream"] == a.Labels["target"]), a.Labels["target"], a.Labels["pool"], a.Labels["reason"], a.Labels["job"]}
	kb := []string{strconv.FormatBool(b.Labels["upstream"] == b.Labels["target"]), b.Labels["target"], b.Labels["pool"], b.Labels["reason"], b.Labels["job"]}
	return strings.Join(ka, "\x00") < strings.Join(kb, "\x00")
}

// pageOf makes the page of a change: its first alert, and the other views
// (deduplicated: the same view from two scrape jobs is one).
func pageOf(at time.Time, status string, alerts []launch.WebhookAlert, update bool) page {
	sort.SliceStable(alerts, func(i, j int) bool { return viewOrder(alerts[i], alerts[j]) })
	first := alerts[0]
	p := page{
		At: at, Status: status, AlertName: first.Labels["alertname"], Severity: first.Labels["severity"],
		Target: first.Labels["target"], Pool: first.Labels["pool"], Reason: first.Labels["reason"],
		Summary: first.Annotations["summary"], Update: update,
	}
	view := func(a launch.WebhookAlert) string {
		v := a.Labels["target"]
		if pool := a.Labels["pool"]; pool != "" {
			v += "/" + pool
		}
		if reason := a.Labels["reason"]; reason != "" {
			v += " " + reason
		}
		if a.Labels["alertname"] != p.AlertName {
			v = a.Labels["alertname"] + " " + v
		}
		return v
	}
	seen := map[string]bool{view(first): true}
	for _, a := range alerts[1:] {
		if v := view(a); !seen[v] {
			seen[v] = true
			p.Views = append(p.Views, v)
		}
	}
	return p
}

// take records a notification and reports its state changes.
func (r *receiver) take(n launch.WebhookNotification) {
	now := r.now()
	r.mu.Lock()
	group := r.groups[n.GroupKey]
	if group == nil {
		group = map[string]bool{}
		r.groups[n.GroupKey] = group
	}
	open := len(group) > 0
	var firing, resolved []launch.WebhookAlert
	for _, a := range n.Alerts {
		key := a.Fingerprint
		if key == "" {
			key = launch.LabelsString(a.Labels)
		}
		if r.status[key].status == a.Status {
			continue
		}
		r.status[key] = lastStatus{alertname: a.Labels["alertname"], target: a.Labels["target"], status: a.Status}
		name := a.Labels["alertname"]
		switch a.Status {
		case "firing":
			if _, ok := r.fired[name]; !ok {
				r.fired[name] = now
			}
			group[key] = true
			firing = append(firing, a)
		case "resolved":
			r.resolved[name] = now
			delete(group, key)
			resolved = append(resolved, a)
		}
	}
	stillOpen := len(group) > 0
	var changes []page
	if len(resolved) > 0 {
		p, ok := r.opened[n.GroupKey]
		switch {
		case open && !stillOpen && ok:
			// The incident is over: the closing page names it as the
			// opening one did.
			p.At, p.Status = now, "resolved"
			changes = append(changes, p)
		default:
			changes = append(changes, pageOf(now, "resolved", resolved, open && stillOpen))
		}
	}
	if len(firing) > 0 {
		p := pageOf(now, "firing", firing, open)
		if !open {
			r.opened[n.GroupKey] = p
		}
		changes = append(changes, p)
	}
	r.pages = append(r.pages, changes...)
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
