// Package agent keeps one probe pool and one scraper per configured target
// and runs scrape rounds against them: in parallel across targets, each
// bounded by its own timeout, and coalesced so that concurrent requests for
// the same target share one round. What a round returns is the scrape
// package's Result, completed here with the round's timing and error
// counters, and handed on as it is.
package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/pool"
	"github.com/poolwatch/poolwatch/scrape"
)

// Agent is safe for concurrent use. Apply must not run concurrently with
// itself; the reload path serializes it.
type Agent struct {
	logger log.Logger

	mu sync.RWMutex
	// targets maps a target's name to its state; order is config order.
	// Both guarded by mu; a targetState itself is immutable but for its own
	// mutex-guarded fields.
	targets map[string]*targetState
	order   []string

	// closing counts pools of removed targets still closing.
	closing sync.WaitGroup
	// closeGrace is how long a removed target's running round may go on
	// before its pool cancels it.
	closeGrace time.Duration

	// now is the clock of rounds' Start and of min_scrape_interval;
	// time.Now but in tests. Set before Apply, never changed after.
	now func() time.Time
	// afterSnapshot, when not nil, runs in Scrape between taking the
	// targets and starting their rounds: a test hook for what a reload can
	// do in that window. Set before use, never changed after.
	afterSnapshot func()

	// addr holds the probe pools of /probe by address (address.go).
	addr *addressPools
}

// DefaultCloseGrace is New's closeGrace when it is given 0.
const DefaultCloseGrace = 10 * time.Second

// New returns an agent with no targets; call Apply to configure it. When a
// reload removes or changes a target, its running round gets closeGrace (0
// means DefaultCloseGrace) before it is cancelled.
func New(logger log.Logger, closeGrace time.Duration) *Agent {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if closeGrace <= 0 {
		closeGrace = DefaultCloseGrace
	}
	a := &Agent{logger: logger, targets: map[string]*targetState{}, closeGrace: closeGrace, now: time.Now}
	a.addr = newAddressPools(logger, func() time.Time { return a.now() }, a.retire)
	return a
}

// Apply makes cfg the agent's configuration. Targets whose configuration is
// unchanged keep their probe pool and its connections; removed or changed
// targets have their pool closed in the background (their rounds get the
// agent's close grace, then are cancelled; a request whose round fails on
// such a pool is served by the target's new state, see Scrape); new ones get
// a new pool, which
// opens no connection until it is first used. If any new pool cannot be
// created, nothing changes and the error is returned. Apply must not run
// concurrently with itself.
func (a *Agent) Apply(cfg *config.Config) error {
	a.mu.RLock()
	old := a.targets
	a.mu.RUnlock()

	next := make(map[string]*targetState, len(cfg.Targets()))
	var order []string
	var created []*targetState
	for _, t := range cfg.Targets() {
		order = append(order, t.Name)
		if prev, ok := old[t.Name]; ok && prev.cfg.Equal(t) {
			next[t.Name] = prev
			continue
		}
		st, err := newTargetState(t, a.logger, a.now)
		if err != nil {
			for _, c := range created {
				_ = c.close(context.Background()) // never used: nothing to wait for
			}
			return err
		}
		created = append(created, st)
		next[t.Name] = st
	}

	a.mu.Lock()
	a.targets = next
	a.order = order
	for name, st := range old {
		if next[name] != st {
			st.retired.Store(true)
		}
	}
	a.mu.Unlock()

	// Removed and changed targets' pools close in the background: their
	// rounds' results are thrown away, and a hung round must not hold up
	// the reload. Close waits for them.
	for name, st := range old {
		if next[name] != st {
			a.retire(name, st)
		}
	}
	a.addr.apply(cfg)
	return nil
}

// Names returns the configured target names in config order.
func (a *Agent) Names() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return append([]string(nil), a.order...)
}

// Has reports whether a target of that name is configured.
func (a *Agent) Has(name string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.targets[name]
	return ok
}

// Scrape runs a round against each named target, all in parallel, and
// returns their results in the order of names. Unknown names are skipped.
// The results are shared with other requests: do not modify them.
//
// Each target's round is bounded by its scrape_timeout and by ctx's
// deadline. A request that arrives while a round of the same target is in
// flight joins it; the round keeps its first deadline. With
// min_scrape_interval > 0, a round younger than that is served again. If ctx
// ends before a round does, that target's result is a failure.
//
// A reload (Apply) that changes or removes a target while its round runs
// may close the pool under the round. A round that fails on a target
// retired that way is not reported: the request is served by the target's
// current state instead, and a target the reload removed is left out.
func (a *Agent) Scrape(ctx context.Context, names []string) []*scrape.Result {
	a.mu.RLock()
	states := make([]*targetState, 0, len(names))
	for _, n := range names {
		if st, ok := a.targets[n]; ok {
			states = append(states, st)
		}
	}
	a.mu.RUnlock()
	if a.afterSnapshot != nil {
		a.afterSnapshot()
	}

	out := make([]*scrape.Result, len(states))
	var wg sync.WaitGroup
	for i, st := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = a.scrapeCurrent(ctx, st)
		}()
	}
	wg.Wait()
	a.crossCheck(ctx, states, out)
	return slices.DeleteFunc(out, func(r *scrape.Result) bool { return r == nil })
}

// maxReReads bounds how often one request follows a target through
// reloads that retire it under its round.
const maxReReads = 3

// scrapeCurrent returns a round of st, or, when that round failed and a
// reload has retired st meanwhile, a round of the target's current state:
// nil if the reload removed the target.
func (a *Agent) scrapeCurrent(ctx context.Context, st *targetState) *scrape.Result {
	res := st.scrape(ctx)
	for range maxReReads {
		if res.Up() || !st.retired.Load() || ctx.Err() != nil {
			return res
		}
		a.mu.RLock()
		cur := a.targets[st.cfg.Name]
		a.mu.RUnlock()
		if cur == nil {
			return nil
		}
		st = cur
		res = st.scrape(ctx)
	}
	return res
}

// ProbePools returns a snapshot of every target's probe pool, in config
// order, then those of probes by address, sorted by address. Targets
// without one (kind application) are left out.
func (a *Agent) ProbePools() []scrape.ProbePool {
	a.mu.RLock()
	ps := make([]scrape.ProbePool, 0, len(a.order))
	for _, n := range a.order {
		st := a.targets[n]
		if st.pool == nil {
			continue
		}
		ps = append(ps, scrape.ProbePool{Target: n, Labels: st.cfg.Labels, Stats: st.pool.Stats()})
	}
	a.mu.RUnlock()
	return append(ps, a.addr.snapshot()...)
}

// Close closes every probe pool, waiting for running rounds until ctx is
// done and cancelling them then. The agent must not be used afterwards.
func (a *Agent) Close(ctx context.Context) error {
	a.mu.Lock()
	states := slices.Collect(maps.Values(a.targets))
	a.targets = map[string]*targetState{}
	a.order = nil
	a.mu.Unlock()
	states = append(states, a.addr.close()...)
	var wg sync.WaitGroup
	errs := make([]error, 0, len(states))
	var mu sync.Mutex
	for _, st := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	a.closing.Wait()
	return errors.Join(errs...)
}

// targetState is one configured target: its pool, scraper and round state.
type targetState struct {
	cfg config.Target
	// pool is the target's probe pool; nil when its scraper is
	// scrape.SelfContained (kind application).
	pool    *pool.Pool
	scraper scrape.Scraper
	logger  log.Logger
	now     func() time.Time

	// retired is set, before its pool starts closing, once a reload has
	// removed or changed the target: the state is no longer in the agent.
	retired atomic.Bool

	mu sync.Mutex
	// inflight is the round running now, nil when none. Guarded by mu.
	inflight *round
	// last is the last completed round. Guarded by mu.
	last *scrape.Result
	// scrapeErrors counts failed queries by name. Guarded by mu.
	scrapeErrors map[string]float64

	// The log-once state below belongs to the round in flight: one runs at a
	// time, and mu (inflight) hands it from one round to the next. It is
	// not touched under mu, so logging holds no lock.
	//
	// leaks logs each leaked connection once.
	leaks *scrape.LeakLog
	// dropping is true while the pool cap drops pools.
	dropping bool
	// limited is true while the postgres role cannot see other roles'
	// backends.
	limited bool
}

type round struct {
	done chan struct{}
	out  *scrape.Result
}

func newTargetState(t config.Target, logger log.Logger, now func() time.Time) (*targetState, error) {
	logger = log.With(logger, "target", t.Name)
	scraper, err := scrape.New(t)
	if err != nil {
		return nil, err
	}
	var p *pool.Pool
	if _, self := scraper.(scrape.SelfContained); !self {
		opts := pool.Options{
			Target:    t.Name,
			Kind:      t.Kind,
			DSN:       t.ConnString(),
			Password:  t.Password,
			ProbePool: t.ProbePool,
			Logger:    logger,
		}
		if p, err = pool.New(opts); err != nil {
			return nil, fmt.Errorf("target %q: %w", t.Name, err)
		}
	}
	// Error counters start at zero, so that rate() sees the first error.
	scrapeErrors := map[string]float64{}
	for _, q := range scrape.Queries(t.Kind) {
		scrapeErrors[q] = 0
	}
	return &targetState{
		cfg:          t,
		pool:         p,
		scraper:      scraper,
		logger:       logger,
		now:          now,
		scrapeErrors: scrapeErrors,
		leaks:        scrape.NewLeakLog(logger),
	}, nil
}

// scrape returns a round of this target: a recent one
// (min_scrape_interval), the one in flight, or a new one.
func (s *targetState) scrape(ctx context.Context) *scrape.Result {
	s.mu.Lock()
	if s.cfg.MinScrapeInterval > 0 && s.last != nil && s.now().Sub(s.last.Start) < s.cfg.MinScrapeInterval {
		last := s.last
		s.mu.Unlock()
		return last
	}
	r := s.inflight
	if r == nil {
		deadline := time.Now().Add(s.cfg.ScrapeTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		r = &round{done: make(chan struct{})}
		s.inflight = r
		go s.run(r, deadline) //nolint:gosec // G118: a round outlives the request that started it and is bounded by its own deadline
	}
	s.mu.Unlock()

	select {
	case <-r.done:
		return r.out
	case <-ctx.Done():
		return s.abandoned(ctx.Err())
	}
}

// abandoned is the result for a caller whose context ended before the
// round it joined.
func (s *targetState) abandoned(err error) *scrape.Result {
	res := scrape.Failed(s.cfg, err)
	res.Start = s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	res.ScrapeErrors = maps.Clone(s.scrapeErrors)
	return res
}

// run performs one round under its own deadline, independent of the
// callers waiting for it, and publishes its result.
func (s *targetState) run(r *round, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	start := s.now()
	res := s.safeScrape(ctx)
	res.Start, res.Duration = start, s.now().Sub(start)
	s.logRound(res)

	s.mu.Lock()
	for _, e := range res.Errors {
		s.scrapeErrors[e.Query]++
	}
	res.ScrapeErrors = maps.Clone(s.scrapeErrors)
	s.last = res
	s.inflight = nil
	r.out = res
	s.mu.Unlock()
	close(r.done)
}

// safeScrape runs the scraper and turns a panic into a failed round, so a
// bug in one target's mapping cannot take the agent down.
func (s *targetState) safeScrape(ctx context.Context) (res *scrape.Result) {
	defer func() {
		if v := recover(); v != nil {
			res = scrape.Failed(s.cfg, fmt.Errorf("panic: %v", v))
		}
	}()
	res = s.scraper.Scrape(ctx, s.querier())
	if res == nil {
		res = scrape.Failed(s.cfg, errors.New("scraper returned no result"))
	}
	return res
}

// logRound logs a failed round (one line), each new leak once, and the
// pool cap being hit and the role's limited view once each. Only the round
// in flight calls it.
func (s *targetState) logRound(res *scrape.Result) {
	if len(res.Errors) > 0 {
		msgs := make([]string, 0, len(res.Errors))
		for _, e := range res.Errors {
			msgs = append(msgs, e.Query+": "+e.Err.Error())
		}
		level.Warn(s.logger).Log("msg", "target scrape failed", "err", strings.Join(msgs, "; "))
	}

	s.leaks.Observe(res.Leaks)

	if res.LimitedVisibility && !s.limited {
		level.Warn(s.logger).Log("msg", "role cannot see other roles' connections, so every count is too low: grant it pg_monitor")
	}
	if len(res.Errors) == 0 {
		s.limited = res.LimitedVisibility
	}

	if res.PoolsDropped > 0 && !s.dropping {
		level.Warn(s.logger).Log("msg", "too many pools, dropping the rest", "max_pools", s.cfg.MaxPools, "dropped", res.PoolsDropped)
	}
	s.dropping = res.PoolsDropped > 0
}

// querier is what the target's rounds query through: its probe pool, or
// nil for a self-contained scraper.
func (s *targetState) querier() scrape.Querier {
	if s.pool == nil {
		return nil
	}
	return s.pool
}

// close closes the target's probe pool (see pool.Pool.Close: running rounds
// get until ctx is done), or the self-contained scraper, whose running
// round is cancelled at once.
func (s *targetState) close(ctx context.Context) error {
	if s.pool != nil {
		return s.pool.Close(ctx)
	}
	if c, ok := s.scraper.(scrape.SelfContained); ok {
		c.Close()
	}
	return nil
}
