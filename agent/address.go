package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/scrape"
)

// This file holds the probe pools of /probe by address: targets that are
// not in the configuration, named by the request (address, kind and auth
// module; config.AddressTarget builds their config.Target). Each address
// gets a targetState like a configured target's (pool, scraper, coalesced
// rounds, error counters), created on its first probe, kept while it is
// probed, and closed once it has not been probed for probe.idle_close. At
// most probe.max_targets are held at once: a probe of a new address past
// that is refused (ErrTooManyAddressTargets) until one closes, so a caller
// cycling through addresses can neither open more pools nor grow the
// agent's memory.

// ErrTooManyAddressTargets is returned by ProbeAddress for a new address
// while probe.max_targets probe pools by address are held.
var ErrTooManyAddressTargets = errors.New("too many probe pools by address")

// ErrAgentClosed is returned by ProbeAddress after Close.
var ErrAgentClosed = errors.New("agent is closed")

// Reasons a probe by address is refused, the values of the reason label of
// poolwatch_probe_address_refused_total.
const (
	RefusedNotAllowed = "not_allowed" // probes by address off, or address not in probe.allowed_targets
	RefusedInvalid    = "invalid"     // bad address, kind or auth module
	RefusedMaxTargets = "max_targets" // probe.max_targets pools held
)

// addressPools holds the probe pools by address of one agent. Its fields
// are guarded by mu; no dial, query or pool close runs while mu is held.
type addressPools struct {
	logger log.Logger
	now    func() time.Time
	// retire closes a state's pool in the background (Agent.retire).
	retire func(name string, st *targetState)

	mu sync.Mutex
	// cfg is the configuration in force; nil before the first Apply.
	cfg *config.Config
	// entries maps addressKey to the held pools.
	entries map[addressKey]*addressEntry
	// pending counts pools being created, whose slots are reserved.
	pending int
	// refused counts refused probes by reason.
	refused map[string]uint64
	// janitor is true while the idle-close goroutine runs; stop ends it.
	janitor bool
	stop    chan struct{}
	// closed is set by close; nothing is created afterwards.
	closed bool
	// done counts janitor goroutines.
	done sync.WaitGroup
}

// addressKey identifies a probe pool by address: the same address probed
// as another kind or with another auth module gets a pool of its own.
type addressKey struct {
	kind    config.Kind
	module  string
	address string // the target's canonical name, HOST:PORT/DATABASE
}

// addressEntry is one held probe pool by address.
type addressEntry struct {
	st *targetState
	// users counts probes running on it; lastUsed is when the last one
	// ended. Both guarded by addressPools.mu.
	users    int
	lastUsed time.Time
}

func newAddressPools(logger log.Logger, now func() time.Time, retire func(string, *targetState)) *addressPools {
	return &addressPools{
		logger:  logger,
		now:     now,
		retire:  retire,
		entries: map[addressKey]*addressEntry{},
		refused: map[string]uint64{RefusedNotAllowed: 0, RefusedInvalid: 0, RefusedMaxTargets: 0},
	}
}

// AddressProbesEnabled reports whether the configuration in force allows
// probes by address (probe.allowed_targets is not empty).
func (a *Agent) AddressProbesEnabled() bool {
	a.addr.mu.Lock()
	defer a.addr.mu.Unlock()
	return a.addr.cfg.Probe().Enabled()
}

// ProbeAddress runs a round against the target that config.AddressTarget
// builds from kind, module and address, creating its probe pool on first
// use, and returns the round's result, shared like Scrape's: do not modify
// it. ctx bounds the wait as in Scrape.
//
// The error, when the probe is refused before any connection, wraps one of
// config's ErrAddressProbesOff, ErrAddressNotAllowed, ErrBadAddress or
// ErrUnknownAuthModule, or ErrTooManyAddressTargets, or ErrAgentClosed, or
// is the error of creating the pool; its text says what to change. A
// target that cannot be reached is not an error: its result says so.
func (a *Agent) ProbeAddress(ctx context.Context, kind config.Kind, module, address string) (*scrape.Result, error) {
	e, err := a.addr.acquire(kind, module, address, a.logger)
	if err != nil {
		return nil, err
	}
	defer a.addr.release(e)
	return e.st.scrape(ctx), nil
}

// acquire returns the entry of the address, created if need be, with its
// users count taken; release gives it back.
func (ap *addressPools) acquire(kind config.Kind, module, address string, logger log.Logger) (*addressEntry, error) {
	ap.mu.Lock()
	cfg := ap.cfg
	ap.mu.Unlock()
	t, err := cfg.AddressTarget(kind, module, address)
	if err != nil {
		reason := RefusedInvalid
		if errors.Is(err, config.ErrAddressProbesOff) || errors.Is(err, config.ErrAddressNotAllowed) {
			reason = RefusedNotAllowed
		}
		ap.mu.Lock()
		ap.refused[reason]++
		ap.mu.Unlock()
		return nil, err
	}
	key := addressKey{kind: t.Kind, module: module, address: t.Name}
	probe := cfg.Probe()

	ap.mu.Lock()
	if ap.closed {
		ap.mu.Unlock()
		return nil, ErrAgentClosed
	}
	if e := ap.entries[key]; e != nil && e.st.cfg.Equal(t) {
		e.users++
		ap.mu.Unlock()
		return e, nil
	}
	var idle []*addressEntry
	if len(ap.entries)+ap.pending >= probe.MaxTargets {
		idle = ap.sweepLocked(probe.IdleClose)
	}
	full := len(ap.entries)+ap.pending >= probe.MaxTargets
	if full {
		ap.refused[RefusedMaxTargets]++
	} else {
		ap.pending++
	}
	held := len(ap.entries) + ap.pending
	ap.mu.Unlock()
	ap.retireAll(idle)
	if full {
		return nil, fmt.Errorf("%w: %d are held, probe.max_targets; a new address is refused until one has not been probed for probe.idle_close (%v)",
			ErrTooManyAddressTargets, held, probe.IdleClose)
	}

	// Created outside the lock: pool.New parses the connection string,
	// which can read files. The reserved slot keeps the bound.
	st, err := newTargetState(t, logger, ap.now)
	ap.mu.Lock()
	ap.pending--
	switch {
	case err != nil:
		ap.refused[RefusedInvalid]++
		ap.mu.Unlock()
		return nil, err
	case ap.closed:
		ap.mu.Unlock()
		ap.retire(t.Name, st)
		return nil, ErrAgentClosed
	}
	if e := ap.entries[key]; e != nil && e.st.cfg.Equal(t) {
		// Another request created it meanwhile.
		e.users++
		ap.mu.Unlock()
		ap.retire(t.Name, st)
		return e, nil
	}
	old := ap.entries[key]
	e := &addressEntry{st: st, users: 1}
	ap.entries[key] = e
	ap.startJanitorLocked()
	ap.mu.Unlock()
	if old != nil {
		// A pool of an older configuration; Apply normally retires it.
		ap.retireAll([]*addressEntry{old})
	}
	level.Debug(logger).Log("msg", "probe pool by address created", "target", t.Name, "kind", t.Kind, "auth_module", module)
	return e, nil
}

// release ends one probe of e.
func (ap *addressPools) release(e *addressEntry) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	e.users--
	e.lastUsed = ap.now()
}

// sweepLocked removes the entries idle for idleClose or longer and marks
// them retired; the caller closes their pools (retireAll) after unlocking.
func (ap *addressPools) sweepLocked(idleClose time.Duration) []*addressEntry {
	var idle []*addressEntry
	now := ap.now()
	for k, e := range ap.entries {
		if e.users == 0 && now.Sub(e.lastUsed) >= idleClose {
			delete(ap.entries, k)
			e.st.retired.Store(true)
			idle = append(idle, e)
		}
	}
	return idle
}

// retireAll closes the pools of entries already taken out of the map.
func (ap *addressPools) retireAll(es []*addressEntry) {
	for _, e := range es {
		e.st.retired.Store(true)
		ap.retire(e.st.cfg.Name, e.st)
	}
}

// sweep closes the pools idle for probe.idle_close and reports whether no
// pool by address is held any more.
func (ap *addressPools) sweep() (empty bool) {
	ap.mu.Lock()
	idle := ap.sweepLocked(ap.cfg.Probe().IdleClose)
	empty = len(ap.entries) == 0 && ap.pending == 0
	ap.mu.Unlock()
	if len(idle) > 0 {
		level.Debug(ap.logger).Log("msg", "closing idle probe pools by address", "count", len(idle))
	}
	ap.retireAll(idle)
	return empty
}

// startJanitorLocked starts the idle-close goroutine unless it runs. It
// ends by itself once no pool by address is held, and on close.
func (ap *addressPools) startJanitorLocked() {
	if ap.janitor || ap.closed {
		return
	}
	ap.janitor = true
	ap.stop = make(chan struct{})
	ap.done.Add(1)
	go ap.runJanitor(ap.stop)
}

// janitorPeriod is how often idle pools are looked for: a quarter of
// idle_close, between 50 ms and 1 s (a sweep only reads max_targets
// entries' times).
func janitorPeriod(idleClose time.Duration) time.Duration {
	return min(max(idleClose/4, 50*time.Millisecond), time.Second)
}

func (ap *addressPools) runJanitor(stop <-chan struct{}) {
	defer ap.done.Done()
	for {
		ap.mu.Lock()
		period := janitorPeriod(ap.cfg.Probe().IdleClose)
		ap.mu.Unlock()
		t := time.NewTimer(period)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		if ap.sweep() {
			ap.mu.Lock()
			// Still empty under the lock: nothing was created meanwhile.
			if len(ap.entries) == 0 && ap.pending == 0 {
				ap.janitor = false
				ap.mu.Unlock()
				return
			}
			ap.mu.Unlock()
		}
	}
}

// apply makes cfg the configuration of probes by address. A held pool
// whose target the new configuration builds differently (another auth
// module, other defaults), or no longer allows, is closed.
func (ap *addressPools) apply(cfg *config.Config) {
	ap.mu.Lock()
	ap.cfg = cfg
	held := maps.Clone(ap.entries)
	ap.mu.Unlock()
	// AddressTarget parses a connection string: not under the lock.
	stale := map[addressKey]bool{}
	for k, e := range held {
		t, err := cfg.AddressTarget(k.kind, k.module, k.address)
		if err != nil || !e.st.cfg.Equal(t) {
			stale[k] = true
		}
	}
	var gone []*addressEntry
	ap.mu.Lock()
	for k := range stale {
		if e := ap.entries[k]; e != nil && e == held[k] {
			delete(ap.entries, k)
			gone = append(gone, e)
		}
	}
	ap.mu.Unlock()
	ap.retireAll(gone)
}

// close stops the janitor and returns the held states, for the agent to
// close their pools; nothing is created afterwards.
func (ap *addressPools) close() []*targetState {
	ap.mu.Lock()
	ap.closed = true
	if ap.janitor {
		close(ap.stop)
		ap.janitor = false
	}
	states := make([]*targetState, 0, len(ap.entries))
	for k, e := range ap.entries {
		e.st.retired.Store(true)
		states = append(states, e.st)
		delete(ap.entries, k)
	}
	ap.mu.Unlock()
	ap.done.Wait()
	return states
}

// snapshot returns the probe pools by address, sorted by target name (then
// kind and module).
func (ap *addressPools) snapshot() []scrape.ProbePool {
	ap.mu.Lock()
	keys := slices.SortedFunc(maps.Keys(ap.entries), func(x, y addressKey) int {
		switch {
		case x.address != y.address:
			return cmp.Compare(x.address, y.address)
		case x.kind != y.kind:
			return cmp.Compare(x.kind, y.kind)
		}
		return cmp.Compare(x.module, y.module)
	})
	states := make([]*targetState, 0, len(keys))
	for _, k := range keys {
		states = append(states, ap.entries[k].st)
	}
	ap.mu.Unlock()
	ps := make([]scrape.ProbePool, 0, len(states))
	for _, st := range states {
		if st.pool == nil {
			continue // a kind without a probe pool
		}
		ps = append(ps, scrape.ProbePool{Target: st.cfg.Name, Labels: st.cfg.Labels, Stats: st.pool.Stats()})
	}
	return ps
}

// AddressProbes returns the state of probes by address for the metrics:
// enabled is false while probe.allowed_targets is empty.
func (a *Agent) AddressProbes() (stats scrape.AddressProbes, enabled bool) {
	ap := a.addr
	ap.mu.Lock()
	defer ap.mu.Unlock()
	probe := ap.cfg.Probe()
	return scrape.AddressProbes{
		Pools:    len(ap.entries),
		MaxPools: probe.MaxTargets,
		Refused:  maps.Clone(ap.refused),
	}, probe.Enabled()
}

// retire closes the pool of a state that is no longer in the agent, in the
// background: its running round gets the close grace, then is cancelled.
// Close waits for it. Each of then runs once the pool is closed.
func (a *Agent) retire(name string, st *targetState, then ...func()) {
	a.closing.Add(1)
	go func() {
		defer a.closing.Done()
		for _, f := range then {
			defer f()
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.closeGrace)
		defer cancel()
		if err := st.close(ctx); err != nil {
			level.Warn(a.logger).Log("msg", "closing the probe pool of a removed target cancelled its queries", "target", name, "err", err)
		}
	}()
}
