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
	"runtime"
	"runtime/debug"
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
	// longest is the largest scrape_timeout of targets. Guarded by mu.
	longest time.Duration

	// slots bounds the rounds running at once: a round holds one of its
	// MaxConcurrentRounds places while it runs; downSlots, of
	// MaxConcurrentDownRounds places, is for the rounds of targets that
	// were down at their last round.
	slots, downSlots chan struct{}
	// requests counts Scrape calls, to rotate the order rounds start in.
	requests atomic.Uint64

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
	a := &Agent{logger: logger, targets: map[string]*targetState{}, closeGrace: closeGrace, now: time.Now,
		slots: make(chan struct{}, MaxConcurrentRounds), downSlots: make(chan struct{}, MaxConcurrentDownRounds)}
	a.addr = newAddressPools(logger, func() time.Time { return a.now() }, func(n string, st *targetState) { a.retire(n, st) })
	return a
}

// Round health of a target, after its last round (targetState.health).
const (
	healthUnknown int32 = iota
	healthUp
	healthDown
)

// MaxConcurrentRounds bounds the rounds that run at once across all
// targets. A round of a target that answers or refuses at once takes
// milliseconds, so thousands of targets go through quickly; a round that
// hangs holds its place for up to its scrape_timeout. When every place is
// taken, a request waits for one, and a target whose round could not start
// before the request's budget ended is down for that request only. The
// bound keeps the goroutines, and the memory the Go runtime never gives
// back for them, in proportion to it rather than to the number of targets
// (docs/performance.md).
const MaxConcurrentRounds = 1024

// MaxConcurrentDownRounds bounds, apart, the rounds of targets that were
// down at their last round. A target that refuses connections costs a
// round of about a millisecond, so thousands go through these places in
// well under a second; hung targets hold one each for their scrape_timeout
// (docs/performance.md).
const MaxConcurrentDownRounds = 64

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

	var longest time.Duration
	for _, st := range next {
		longest = max(longest, st.cfg.ScrapeTimeout)
	}

	a.mu.Lock()
	a.targets = next
	a.order = order
	a.longest = longest
	for name, st := range old {
		if next[name] != st {
			st.retired.Store(true)
		}
	}
	a.mu.Unlock()

	// Removed and changed targets' pools close in the background: their
	// rounds' results are thrown away, and a hung round must not hold up
	// the reload. Close waits for them.
	var retired sync.WaitGroup
	for name, st := range old {
		if next[name] != st {
			retired.Add(1)
			a.retire(name, st, retired.Done)
		}
	}
	if len(old) > len(next) {
		// Fewer targets than before: once the retired pools are closed,
		// hand the memory they held back to the operating system now
		// rather than over the runtime's next minutes, so that a fleet
		// that shrinks shows it in its RSS.
		a.closing.Add(1)
		go func() {
			defer a.closing.Done()
			retired.Wait()
			// Two collections: the first moves what sync.Pools cached
			// (encoding buffers of the last big answers) to their victim
			// caches, the second, FreeOSMemory's, frees it.
			runtime.GC()
			debug.FreeOSMemory()
		}()
	}
	a.addr.apply(cfg)
	return nil
}

// LongestScrapeTimeout returns the largest scrape_timeout of the
// configured targets (0 when there are none): the longest a request for
// fresh data can legitimately wait.
func (a *Agent) LongestScrapeTimeout() time.Duration {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.longest
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
// Each target's round is bounded by the target's scrape_timeout only,
// never by a request: a request that arrives while a round of the same
// target is in flight joins it, and no request can cut a round short (so
// no request can make the agent drop its connection and dial again). With
// min_scrape_interval > 0, a round younger than that is served again. ctx
// bounds how long this request waits: a target whose round has not ended
// when ctx does is down for this request only (RequestBudgetError, under
// query "round"); its round goes on, and is counted, logged and served to
// the requests that wait for it or come after.
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

	// Start (or join) every target's round first, then wait for them: no
	// goroutine per target for the waiting, and rounds start only as
	// round slots free up. The start rotates from request to request, so
	// that when the slots run short it is not always the same targets that
	// wait.
	start := a.now()
	out := make([]*scrape.Result, len(states))
	rounds := make([]*round, len(states))
	for _, i := range a.startOrder(states) {
		rounds[i], out[i] = states[i].begin(ctx, a.slotsFor(states[i]), start)
	}
	for i, r := range rounds {
		if r != nil {
			out[i] = a.finish(ctx, states[i], r, start)
		}
	}
	a.crossCheck(ctx, states, out)
	return slices.DeleteFunc(out, func(r *scrape.Result) bool { return r == nil })
}

// startOrder returns the order in which a request starts the rounds of
// states, as indexes: the targets that were up at their last round first,
// then those never scraped, then those that were down, each group from an
// offset that moves with every request. It only matters when the round
// slots run short: a fleet of dead targets then waits behind the live
// ones, and not always the same ones wait.
func (a *Agent) startOrder(states []*targetState) []int {
	n := len(states)
	order := make([]int, 0, n)
	if n == 0 {
		return order
	}
	offset := int(a.requests.Add(1) % uint64(n)) //nolint:gosec // bounded by n
	for _, health := range []int32{healthUp, healthUnknown, healthDown} {
		for k := range n {
			if i := (offset + k) % n; states[i].health.Load() == health {
				order = append(order, i)
			}
		}
	}
	return order
}

// slotsFor returns the round slots a round of st takes: the few kept for
// targets that were down at their last round, or the main ones. So dead
// targets, however many, never run more than MaxConcurrentDownRounds
// rounds at once, and the live ones keep the CPU they need.
func (a *Agent) slotsFor(st *targetState) chan struct{} {
	if st.health.Load() == healthDown {
		return a.downSlots
	}
	return a.slots
}

// maxReReads bounds how often one request follows a target through
// reloads that retire it under its round.
const maxReReads = 3

// finish waits for r, a round of st, and returns it; or, when that round
// failed and a reload has retired st meanwhile, a round of the target's
// current state: nil if the reload removed the target. start is when the
// request began.
func (a *Agent) finish(ctx context.Context, st *targetState, r *round, start time.Time) *scrape.Result {
	res := st.wait(ctx, r, start)
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
		r, done := st.begin(ctx, a.slotsFor(st), start)
		if done != nil {
			return done
		}
		res = st.wait(ctx, r, start)
	}
	return res
}

// scrapeCurrent is one target's part of Scrape: a round of st (joined,
// reused or started), or of the target's current state if a reload retired
// st under a failed round; nil if the reload removed the target.
func (a *Agent) scrapeCurrent(ctx context.Context, st *targetState) *scrape.Result {
	start := a.now()
	r, done := st.begin(ctx, a.slotsFor(st), start)
	if done != nil {
		return done
	}
	return a.finish(ctx, st, r, start)
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
	// health is healthUp or healthDown after the last round that ended,
	// healthUnknown before the first.
	health atomic.Int32

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
	// failures is the rate limit of the target's failure lines.
	failures failureLog
}

// FailureLogInterval is how often a target that keeps failing the same way
// is logged again: a failed round is logged when the set of queries that
// failed differs from the last line's, or when this long has passed since
// it; the line then says how many failed rounds went unlogged. So a
// thousand targets down log a thousand lines per interval, not per scrape.
const FailureLogInterval = 5 * time.Minute

// failureLog is one target's failure-line state. Only the round in flight
// uses it (see targetState).
type failureLog struct {
	// queries names the failed queries of the last line logged, "" when the
	// target is up (or was never logged failing).
	queries string
	// at is when the last line was logged.
	at time.Time
	// suppressed counts the failed rounds not logged since then.
	suppressed int
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

// begin returns the round of this target a request waits for: the one in
// flight, or a new one. Or, instead, its result when the request needs no
// round: a recent round (min_scrape_interval), or the target down for this
// request (abandoned) when ctx ends while it waits for a round slot.
//
// A new round takes one of slots (a full channel blocks until a round
// ends), which it gives back when it ends: so at most cap(slots) rounds
// run at once, however many targets and requests. Nil slots bound nothing. Its deadline is the
// target's own scrape_timeout, from when it starts, whatever the request's:
// a round cut short by one request would fail for every request that
// joined it, and destroy the connection it was using.
func (s *targetState) begin(ctx context.Context, slots chan struct{}, start time.Time) (*round, *scrape.Result) {
	for pass := 0; ; pass++ {
		s.mu.Lock()
		if s.cfg.MinScrapeInterval > 0 && s.last != nil && s.now().Sub(s.last.Start) < s.cfg.MinScrapeInterval {
			last := s.last
			s.mu.Unlock()
			if pass > 0 {
				<-slots
			}
			return nil, last
		}
		if r := s.inflight; r != nil {
			s.mu.Unlock()
			if pass > 0 {
				<-slots
			}
			return r, nil
		}
		if pass > 0 || slots == nil {
			// This request holds a slot (or needs none), and no round is
			// in flight.
			release := func() {}
			if slots != nil {
				release = func() { <-slots }
			}
			r := &round{done: make(chan struct{})}
			s.inflight = r
			go s.run(r, time.Now().Add(s.cfg.ScrapeTimeout), release) //nolint:gosec // G118: a round outlives the request that started it and is bounded by its own deadline
			s.mu.Unlock()
			return r, nil
		}
		s.mu.Unlock()
		// Wait for a slot without holding mu, then look again: another
		// request may have started a round meanwhile.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil, s.abandoned(ctx.Err(), start)
		}
	}
}

// scrape returns a round of this target, outside the agent's round slots
// (by-address probes, address.go, whose pools come and go on their own).
func (s *targetState) scrape(ctx context.Context) *scrape.Result {
	start := s.now()
	r, done := s.begin(ctx, nil, start)
	if done != nil {
		return done
	}
	return s.wait(ctx, r, start)
}

// wait waits for r or for ctx, whichever ends first; start is when the
// request began to wait for this target.
func (s *targetState) wait(ctx context.Context, r *round, start time.Time) *scrape.Result {
	// A round that has ended is the answer, even if ctx has ended too (a
	// request waits for its targets one after the other).
	select {
	case <-r.done:
		return r.out
	default:
	}
	select {
	case <-r.done:
		return r.out
	case <-ctx.Done():
		return s.abandoned(ctx.Err(), start)
	}
}

// RequestBudgetError is the error of a target whose round had not ended
// when the request waiting for it gave up (its context ended: Prometheus'
// X-Prometheus-Scrape-Timeout-Seconds minus --scrape.timeout-offset, or the
// client went away). It concerns that request only.
type RequestBudgetError struct {
	// Waited is how long the request waited for the round.
	Waited time.Duration
	Err    error
}

func (e *RequestBudgetError) Error() string {
	return fmt.Sprintf("the request's time budget ended after %v, before the target's round (which goes on): %v", e.Waited.Round(time.Millisecond), e.Err)
}

func (e *RequestBudgetError) Unwrap() error { return e.Err }

// abandoned is the result for a caller whose context ended before the
// round it joined: the target down for this caller only. It is neither
// counted in the target's error counters nor logged (the round's own
// outcome is), so that no request can inflate either.
func (s *targetState) abandoned(err error, waitStart time.Time) *scrape.Result {
	waited := s.now().Sub(waitStart)
	res := scrape.Failed(s.cfg, &RequestBudgetError{Waited: waited, Err: err})
	res.Start, res.Duration = waitStart, waited
	s.mu.Lock()
	defer s.mu.Unlock()
	res.ScrapeErrors = maps.Clone(s.scrapeErrors)
	return res
}

// run performs one round under its own deadline, independent of the
// callers waiting for it, publishes its result, and calls release.
func (s *targetState) run(r *round, deadline time.Time, release func()) {
	defer release()
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
	if res.Up() {
		s.health.Store(healthUp)
	} else {
		s.health.Store(healthDown)
	}
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

// logFailure logs a failed round in one line, rate-limited per target
// (FailureLogInterval), and the first successful round after a logged
// failure.
func (s *targetState) logFailure(res *scrape.Result) {
	f := &s.failures
	if len(res.Errors) == 0 {
		if f.queries != "" {
			level.Info(s.logger).Log("msg", "target scrape succeeded again", "unlogged_failed_scrapes", f.suppressed)
		}
		*f = failureLog{}
		return
	}
	names := make([]string, 0, len(res.Errors))
	msgs := make([]string, 0, len(res.Errors))
	for _, e := range res.Errors {
		names = append(names, e.Query)
		msgs = append(msgs, e.Query+": "+e.Err.Error())
	}
	queries, now := strings.Join(names, ","), s.now()
	if queries == f.queries && now.Sub(f.at) < FailureLogInterval {
		f.suppressed++
		return
	}
	kv := []any{"msg", "target scrape failed", "err", strings.Join(msgs, "; ")}
	if f.suppressed > 0 {
		kv = append(kv, "unlogged_failed_scrapes", f.suppressed)
	}
	level.Warn(s.logger).Log(kv...)
	*f = failureLog{queries: queries, at: now}
}

// logRound logs a failed round (rate-limited), each new leak once, and the
// pool cap being hit and the role's limited view once each. Only the round
// in flight calls it.
func (s *targetState) logRound(res *scrape.Result) {
	s.logFailure(res)

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
