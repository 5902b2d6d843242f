// Package agent keeps one probe pool and one scraper per configured target
// and runs scrape rounds against them: in parallel across targets, each
// bounded by its own timeout, and coalesced so that concurrent requests for
// the same target share one round.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/pool"
	"github.com/poolwatch/poolwatch/target"
)

// Outcome is the result of one round against one target.
type Outcome struct {
	Target string
	Kind   config.Kind
	// Labels are the target's static labels. Do not modify.
	Labels map[string]string
	// Result is what the round read. It is never nil; on a failed round it
	// holds the errors and whatever the successful queries returned.
	Result *target.Result
	// Up is true when every query of the round succeeded.
	Up bool
	// Start is when the round began; Duration how long it took.
	Start    time.Time
	Duration time.Duration
	// ScrapeErrors counts failed queries of the target by query name since
	// the target was configured. It is a copy.
	ScrapeErrors map[string]float64
}

// ProbePool is one target's probe pool snapshot.
type ProbePool struct {
	Target string
	Labels map[string]string
	Stats  pool.Stats
}

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
	return &Agent{logger: logger, targets: map[string]*targetState{}, closeGrace: closeGrace}
}

// Apply makes cfg the agent's configuration. Targets whose configuration is
// unchanged keep their probe pool and its connections; removed or changed
// targets have their pool closed in the background (their rounds get the
// agent's close grace, then are cancelled); new ones get a new pool, which
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
		st, err := newTargetState(t, a.logger)
		if err != nil {
			for _, c := range created {
				_ = c.pool.Close(context.Background()) // never used: nothing to wait for
			}
			return err
		}
		created = append(created, st)
		next[t.Name] = st
	}

	a.mu.Lock()
	a.targets = next
	a.order = order
	a.mu.Unlock()

	// Removed and changed targets' pools close in the background: their
	// rounds' results are thrown away, and a hung round must not hold up
	// the reload. Close waits for them.
	for name, st := range old {
		if next[name] == st {
			continue
		}
		a.closing.Add(1)
		go func() {
			defer a.closing.Done()
			ctx, cancel := context.WithTimeout(context.Background(), a.closeGrace)
			defer cancel()
			if err := st.pool.Close(ctx); err != nil {
				level.Warn(a.logger).Log("msg", "closing the probe pool of a removed target cancelled its queries", "target", name, "err", err)
			}
		}()
	}
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
// returns their outcomes in the order of names. Unknown names are skipped.
//
// Each target's round is bounded by its scrape_timeout and by ctx's
// deadline. A request that arrives while a round of the same target is in
// flight joins it; the round keeps its first deadline. With
// min_scrape_interval > 0, a round younger than that is served again. If ctx
// ends before a round does, that target's outcome is a failure.
func (a *Agent) Scrape(ctx context.Context, names []string) []*Outcome {
	a.mu.RLock()
	states := make([]*targetState, 0, len(names))
	for _, n := range names {
		if st, ok := a.targets[n]; ok {
			states = append(states, st)
		}
	}
	a.mu.RUnlock()

	out := make([]*Outcome, len(states))
	var wg sync.WaitGroup
	for i, st := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = st.scrape(ctx)
		}()
	}
	wg.Wait()
	return out
}

// ProbePools returns a snapshot of every target's probe pool, in config
// order.
func (a *Agent) ProbePools() []ProbePool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	ps := make([]ProbePool, 0, len(a.order))
	for _, n := range a.order {
		st := a.targets[n]
		ps = append(ps, ProbePool{Target: n, Labels: st.cfg.Labels, Stats: st.pool.Stats()})
	}
	return ps
}

// Close closes every probe pool, waiting for running rounds until ctx is
// done and cancelling them then. The agent must not be used afterwards.
func (a *Agent) Close(ctx context.Context) error {
	a.mu.Lock()
	states := a.targets
	a.targets = map[string]*targetState{}
	a.order = nil
	a.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 0, len(states))
	var mu sync.Mutex
	for _, st := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.pool.Close(ctx); err != nil {
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
	cfg     config.Target
	pool    *pool.Pool
	scraper target.Scraper
	logger  log.Logger

	mu sync.Mutex
	// inflight is the round running now, nil when none. Guarded by mu.
	inflight *round
	// last is the last completed round. Guarded by mu.
	last *Outcome
	// scrapeErrors counts failed queries by name. Guarded by mu.
	scrapeErrors map[string]float64
	// seenLeaks holds the IDs of leaks already logged that are still
	// present. Guarded by mu.
	seenLeaks map[string]bool
	// dropping is true while the pool cap drops pools. Guarded by mu.
	dropping bool
	// limited is true while the postgres role cannot see other roles'
	// backends. Guarded by mu.
	limited bool
}

type round struct {
	done chan struct{}
	out  *Outcome
}

func newTargetState(t config.Target, logger log.Logger) (*targetState, error) {
	logger = log.With(logger, "target", t.Name)
	opts := pool.Options{
		Target:             t.Name,
		DSN:                connString(t),
		MinConns:           int32(t.ProbePool.MinConnections), //nolint:gosec // validated small
		MaxConns:           int32(t.ProbePool.MaxConnections), //nolint:gosec // validated small
		ConnectTimeout:     t.ProbePool.ConnectTimeout,
		HealthCheckTimeout: t.ProbePool.HealthCheckTimeout,
		AcquireRetries:     t.ProbePool.AcquireRetries,
		RetryBackoff:       t.ProbePool.RetryBackoff,
		LeakThreshold:      t.ProbePool.LeakThreshold,
		IdleClose:          t.ProbePool.IdleClose,
		StatementTimeout:   t.ProbePool.StatementTimeout,
		LockTimeout:        t.ProbePool.LockTimeout,
		Logger:             logger,
	}
	if t.Password != (config.PasswordSource{}) {
		opts.Password = t.Password
	}
	var scraper target.Scraper
	switch t.Kind {
	case config.KindPgBouncer:
		opts.Kind = config.KindPgBouncer
		scraper = target.NewPgBouncer(target.PgBouncerOptions{
			LeakThreshold:    t.LeakThreshold,
			SessionModeLeaks: t.SessionModeLeaks,
			MaxPools:         t.MaxPools,
		})
	default:
		opts.Kind = config.KindPostgres
		apps := make([]target.ApplicationPool, 0, len(t.ApplicationPools))
		for _, ap := range t.ApplicationPools {
			apps = append(apps, target.ApplicationPool{
				Name:            ap.Name,
				ApplicationName: ap.ApplicationName,
				User:            ap.User,
				Database:        ap.Database,
				Min:             optional(ap.MinConnections),
				Max:             optional(ap.MaxConnections),
			})
		}
		scraper = target.NewPostgres(target.PostgresOptions{
			LeakThreshold:    t.LeakThreshold,
			MaxPools:         t.MaxPools,
			ApplicationPools: apps,
		})
	}
	p, err := pool.New(opts)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", t.Name, err)
	}
	// Error counters start at zero, so that rate() sees the first error.
	scrapeErrors := map[string]float64{}
	for _, q := range target.Queries(string(t.Kind)) {
		scrapeErrors[q] = 0
	}
	return &targetState{
		cfg:          t,
		pool:         p,
		scraper:      scraper,
		logger:       logger,
		scrapeErrors: scrapeErrors,
		seenLeaks:    map[string]bool{},
	}, nil
}

func optional(v *int) target.Optional {
	if v == nil {
		return target.Optional{}
	}
	return target.Optional{Value: float64(*v), Valid: true}
}

// connString adds the target's TLS files to its DSN, in the DSN's own form.
func connString(t config.Target) string {
	params := [][2]string{{"sslrootcert", t.TLS.CAFile}, {"sslcert", t.TLS.CertFile}, {"sslkey", t.TLS.KeyFile}}
	dsn := t.DSN
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		changed := false
		for _, p := range params {
			if p[1] != "" {
				q.Set(p[0], p[1])
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
			dsn = u.String()
		}
		return dsn
	}
	var b strings.Builder
	b.WriteString(dsn)
	for _, p := range params {
		if p[1] != "" {
			fmt.Fprintf(&b, " %s='%s'", p[0], strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p[1]))
		}
	}
	return b.String()
}

// scrape returns the outcome of a round for this target: a recent one
// (min_scrape_interval), the one in flight, or a new one.
func (s *targetState) scrape(ctx context.Context) *Outcome {
	s.mu.Lock()
	if s.cfg.MinScrapeInterval > 0 && s.last != nil && time.Since(s.last.Start) < s.cfg.MinScrapeInterval {
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

// abandoned is the outcome for a caller whose context ended before the
// round it joined.
func (s *targetState) abandoned(err error) *Outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Outcome{
		Target:       s.cfg.Name,
		Kind:         s.cfg.Kind,
		Labels:       s.cfg.Labels,
		Result:       &target.Result{Kind: string(s.cfg.Kind), Errors: []target.QueryError{{Query: target.QueryRound, Err: err}}},
		Start:        time.Now(),
		ScrapeErrors: copyCounts(s.scrapeErrors),
	}
}

// run performs one round under its own deadline, independent of the
// callers waiting for it, and publishes the outcome.
func (s *targetState) run(r *round, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	res := s.safeScrape(ctx)
	dur := time.Since(start)

	s.mu.Lock()
	for _, e := range res.Errors {
		s.scrapeErrors[e.Query]++
	}
	out := &Outcome{
		Target:       s.cfg.Name,
		Kind:         s.cfg.Kind,
		Labels:       s.cfg.Labels,
		Result:       res,
		Up:           len(res.Errors) == 0,
		Start:        start,
		Duration:     dur,
		ScrapeErrors: copyCounts(s.scrapeErrors),
	}
	s.logRoundLocked(res)
	s.last = out
	s.inflight = nil
	r.out = out
	s.mu.Unlock()
	close(r.done)
}

// safeScrape runs the scraper and turns a panic into a failed round, so a
// bug in one target's mapping cannot take the agent down.
func (s *targetState) safeScrape(ctx context.Context) (res *target.Result) {
	defer func() {
		if v := recover(); v != nil {
			res = &target.Result{Kind: string(s.cfg.Kind), Errors: []target.QueryError{{Query: target.QueryRound, Err: fmt.Errorf("panic: %v", v)}}}
		}
	}()
	res = s.scraper.Scrape(ctx, s.pool)
	if res == nil {
		res = &target.Result{Kind: string(s.cfg.Kind), Errors: []target.QueryError{{Query: target.QueryRound, Err: errors.New("scraper returned no result")}}}
	}
	return res
}

// logRoundLocked logs a failed round (one line), each new leak once, and
// the pool cap being hit once. s.mu must be held.
func (s *targetState) logRoundLocked(res *target.Result) {
	if len(res.Errors) > 0 {
		msgs := make([]string, 0, len(res.Errors))
		for _, e := range res.Errors {
			msgs = append(msgs, e.Query+": "+e.Err.Error())
		}
		level.Warn(s.logger).Log("msg", "target scrape failed", "err", strings.Join(msgs, "; "))
	}

	current := make(map[string]bool, len(res.Leaks))
	for _, l := range res.Leaks {
		current[l.ID] = true
		if s.seenLeaks[l.ID] {
			continue
		}
		kv := []any{"msg", "leaked connection", "pool", l.Pool, "application_name", l.ApplicationName,
			"user", l.User, "database", l.Database, "client_addr", l.ClientAddr, "pid", l.PID,
			"held_for", l.Age.Round(time.Second)}
		if l.Query != "" {
			kv = append(kv, "last_query", l.Query)
		}
		level.Warn(s.logger).Log(kv...)
	}
	s.seenLeaks = current

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

func copyCounts(m map[string]float64) map[string]float64 {
	c := make(map[string]float64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
