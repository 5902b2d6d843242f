package agent

import (
	"strings"
	"time"

	"github.com/poolwatch/poolwatch/config"
)

// TargetStatus is what the agent knows about one configured target without
// querying it: its last completed round, if any. The landing page shows it.
type TargetStatus struct {
	Name string
	Kind config.Kind
	// Scraped is false until a round of the target has completed; the
	// fields below are then zero.
	Scraped bool
	// Up is the last round's Up; LastScrape when it started and Duration
	// how long it took.
	Up         bool
	LastScrape time.Time
	Duration   time.Duration
	// Error is the last round's failed queries, one "query: error" per
	// failure joined by "; ", empty when it succeeded. The errors carry no
	// secret (the probe pool and scrape redact them).
	Error string
	// Pools is the number of pools the last round reported.
	Pools int
}

// Status returns the state of every configured target, in config order. It
// never starts a round and holds each target's lock only to copy.
func (a *Agent) Status() []TargetStatus {
	a.mu.RLock()
	states := make([]*targetState, 0, len(a.order))
	for _, n := range a.order {
		states = append(states, a.targets[n])
	}
	a.mu.RUnlock()

	out := make([]TargetStatus, 0, len(states))
	for _, st := range states {
		ts := TargetStatus{Name: st.cfg.Name, Kind: st.cfg.Kind}
		st.mu.Lock()
		last := st.last
		st.mu.Unlock()
		if last != nil {
			ts.Scraped, ts.Up, ts.LastScrape, ts.Duration, ts.Pools = true, last.Up(), last.Start, last.Duration, len(last.Pools)
			msgs := make([]string, 0, len(last.Errors))
			for _, e := range last.Errors {
				msgs = append(msgs, e.Query+": "+e.Err.Error())
			}
			ts.Error = strings.Join(msgs, "; ")
		}
		out = append(out, ts)
	}
	return out
}
