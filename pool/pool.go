package pool

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/poolwatch/poolwatch/config"
)

// Defaults used where Options leaves a duration at zero.
const (
	DefaultConnectTimeout     = 3 * time.Second
	DefaultHealthCheckTimeout = time.Second
	// DefaultApplicationName is sent unless the DSN sets application_name.
	DefaultApplicationName = "poolwatch"
	// FreshFor is how recently a connection must have completed a query
	// successfully to be handed out without a health check, as pgxpool's
	// default ShouldPing does.
	FreshFor = time.Second
	// maxBackoff caps the exponential backoff between attempts.
	maxBackoff = 5 * time.Second
	// destroyTimeout caps the polite Terminate sent when a connection is
	// destroyed, within the caller's context. The socket is closed when it
	// expires.
	destroyTimeout = time.Second
	// neverIdle is a MaxConnIdleTime that pgxpool never reaches.
	neverIdle = time.Duration(math.MaxInt64)
	// lastOKKey is the key, in a connection's pgconn CustomData, of the
	// time it last completed a query successfully.
	lastOKKey = "poolwatch.last_ok"
)

// ErrClosed is returned by Do after Close has been called.
var ErrClosed = errors.New("probe pool is closed")

// Options configure a Pool. What the zero value of each field means is
// documented on the field.
type Options struct {
	// Target names the target in logs and errors. It is not a secret.
	Target string
	// Kind selects the health check and the start-up parameters (see
	// kindPolicy). Zero means config.KindPostgres; New rejects a kind the
	// pool does not know.
	Kind config.Kind
	// DSN is the connection string, in URL or keyword/value form. It may
	// contain a password: it is never logged or put into an error.
	DSN string
	// Password, when not zero, is read before every new connection, within
	// the dial's deadline, and replaces the DSN's password, so a password
	// read from a file or the environment can rotate without a restart.
	// The pool keeps one reader for its life, so a file system that hangs
	// holds at most one of its goroutines. Zero: the DSN's password, if any.
	Password config.PasswordSource
	// ProbePool holds the sizes, timeouts, retries and thresholds, as
	// config resolves them for a target (config.ProbePool documents each).
	// Here the zero value of each means:
	//   - MinConnections: keep none open between calls. Otherwise a
	//     connection destroyed below it is replaced in the background, about
	//     half a second later, without holding up any Do; the pool still
	//     opens lazily, and IdleClose closes these too.
	//   - MaxConnections: rejected by New; it is the most connections the
	//     pool ever holds, dials in progress included. When all are in use, Do
	//     waits for one until its context is done.
	//   - ConnectTimeout: DefaultConnectTimeout; it bounds each dial as a
	//     whole (reading the password and TLS files, TCP, TLS and
	//     authentication) and is never unlimited.
	//   - HealthCheckTimeout: DefaultHealthCheckTimeout.
	//   - AcquireRetries: a single attempt. Authentication errors, a missing
	//     database, a certificate that fails verification and an unreadable
	//     password or TLS file are never retried.
	//   - RetryBackoff: retry at once; otherwise it doubles for each further
	//     retry, up to 5s.
	//   - LeakThreshold: leak tracking off.
	//   - IdleClose: never close for idleness.
	//   - StatementTimeout, LockTimeout: not sent, the server's setting
	//     applies. They are sent as runtime parameters on PostgreSQL targets
	//     only, never to a pooler's console.
	config.ProbePool
	// Logger receives warnings about leaks. Nil means no logging.
	Logger log.Logger
	// Now is the clock used for leak tracking, idle close and FreshFor. Nil
	// means time.Now. Tests inject a fake clock here.
	Now func() time.Time
}

// kindPolicy is everything the pool does differently per kind of target.
// It is the one place to add a kind (see policyFor).
type kindPolicy struct {
	// simpleProtocol: every query uses the simple protocol and nothing is
	// cached, for a console or a pooler that does not speak the extended
	// protocol.
	simpleProtocol bool
	// sessionTimeouts: Options.StatementTimeout and LockTimeout are sent as
	// start-up parameters. A console rejects unknown start-up parameters,
	// so only a PostgreSQL server gets them.
	sessionTimeouts bool
	// check is the health-check statement, run over the simple protocol.
	// Empty means pgx's Ping (an empty statement).
	check string
	// maxConns, when > 0, is the most connections the kind allows the
	// probe pool to hold: New refuses a larger MaxConnections.
	maxConns int
}

// policyFor returns the policy of kind k. A later kind is one case here.
//
// Pgpool-II: every connection takes one of its num_init_children child
// processes for as long as it is open, so the agent holds at most one
// (maxConns 1); its SHOW commands go over the simple protocol, and the
// health check is SHOW POOL_VERSION, which Pgpool-II answers itself. The
// PgCat and Odyssey admin consoles behave like PgBouncer's; Odyssey's
// check is SHOW LISTS, which every version has.
func policyFor(k config.Kind) (kindPolicy, error) {
	switch k {
	case config.KindPostgres, "":
		return kindPolicy{sessionTimeouts: true}, nil
	case config.KindPgBouncer, config.KindPgCat:
		return kindPolicy{simpleProtocol: true, check: "SHOW VERSION"}, nil
	case config.KindOdyssey:
		// Older Odyssey consoles know no SHOW VERSION; every one knows
		// SHOW LISTS.
		return kindPolicy{simpleProtocol: true, check: "SHOW LISTS"}, nil
	case config.KindPgpool:
		return kindPolicy{simpleProtocol: true, check: "SHOW POOL_VERSION", maxConns: 1}, nil
	default:
		return kindPolicy{}, fmt.Errorf("unknown kind %q", k)
	}
}

// Stats is a point-in-time snapshot of a Pool.
type Stats struct {
	// Min and Max are the configured bounds.
	Min, Max int
	// Open counts connections that exist or are being dialled; InUse counts
	// those acquired (in a callback, in a health check, or by a MinConns
	// top-up for the length of its dial); Idle counts those waiting in the
	// pool. Open = InUse + Idle + connections being dialled.
	Open, InUse, Idle int
	// Leaked counts connections held by a callback for longer than
	// Options.LeakThreshold.
	Leaked int
	// OldestHeld is how long the longest-held connection has been held (0
	// when none is held).
	OldestHeld time.Duration
	// AcquireRetries counts attempts made after a failed first attempt.
	AcquireRetries uint64
	// AcquireErrors counts Do calls that ended without a healthy connection.
	AcquireErrors uint64
	// HealthCheckFailures counts failed or timed-out health checks.
	HealthCheckFailures uint64
	// NewConnections counts connections successfully established.
	NewConnections uint64
}

// held is one connection in a callback's hands.
type held struct {
	since  time.Time
	logged bool // guarded by Pool.mu
}

// Pool is a probe pool. Create it with New; it must be closed with Close.
type Pool struct {
	opts   Options
	policy kindPolicy
	cfg    *pgxpool.Config // template; copied for every inner pool
	logger log.Logger
	now    func() time.Time
	hooks  hooks
	// password reads Options.Password under a dial's context; nil when the
	// DSN's password is used.
	password func(context.Context) (string, error)

	// baseCtx lives as long as the pool. Every callback's context and
	// every dial's password read derive from it, so Close can cancel them.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	// inflight counts running Do calls. Add is only called with mu held and
	// closed false, so the Wait in cleanup sees every call.
	inflight sync.WaitGroup
	// background counts the pool's own goroutines that touch an inner
	// pool: idle closes and MinConns top-ups. Add is only called with mu
	// held and closed false, so the Wait in cleanup sees every one.
	background sync.WaitGroup

	mu sync.Mutex
	// inner is nil until the first Do and after an idle close. Guarded by mu.
	inner *pgxpool.Pool
	// active counts Do calls using inner; idle close only happens at 0.
	// Guarded by mu.
	active int
	// lastUsed is when the last Do ended. Guarded by mu.
	lastUsed time.Time
	// closed is set once by Close. Guarded by mu.
	closed bool
	// held maps a handed-out connection to its tracking record. Guarded by mu.
	held map[*pgx.Conn]*held
	// replenishing is true while a MinConns top-up runs. Guarded by mu.
	replenishing bool
	// parsing is the parse of the DSN in progress, nil when none. Guarded
	// by mu.
	parsing *parseCall
	// failing is true while the target is down: the last Do that tried
	// found no healthy connection. Such a Do makes a single attempt, and
	// one that fails drops the inner pool if it holds nothing. Guarded by
	// mu.
	failing bool
	// reparse is true when every dial must parse the DSN afresh, because
	// parsing it reads files that may change (config.DSNReadsFiles). Set
	// by New, never changed after.
	reparse bool

	retries        atomic.Uint64
	acquireErrors  atomic.Uint64
	healthFailures atomic.Uint64
	newConns       atomic.Uint64

	// janitorStop stops the running janitor; nil when none runs. The
	// janitor runs while the pool is in use: enter starts it, and it stops
	// when a down target's inner pool is dropped (dropIfEmpty) and at
	// Close, so that a target that is down costs no goroutine between
	// calls. Guarded by mu.
	janitorStop chan struct{}
	// janitors counts running janitors (at most one at a time, but a
	// stopped one may still be finishing its tick). Add is only called with
	// mu held and closed false, so the Wait in cleanup sees every one.
	janitors sync.WaitGroup
	// tick is the janitor's tick source; nil means a ticker per janitor.
	// Set by New, never changed after.
	tick <-chan time.Time
	// cleaned is closed when the cleanup that Close starts has finished:
	// every Do returned and every connection closed.
	cleaned chan struct{}
}

// New validates opts and returns a Pool. It opens no connection: the first
// Do does. The returned error never contains the DSN's password.
func New(opts Options) (*Pool, error) { return newPool(opts, hooks{}) }

func newPool(opts Options, h hooks) (*Pool, error) {
	if opts.MaxConnections <= 0 {
		return nil, fmt.Errorf("probe pool %q: max connections must be > 0, got %d", opts.Target, opts.MaxConnections)
	}
	if opts.MinConnections < 0 || opts.MinConnections > opts.MaxConnections {
		return nil, fmt.Errorf("probe pool %q: min connections %d must be between 0 and max %d", opts.Target, opts.MinConnections, opts.MaxConnections)
	}
	if opts.AcquireRetries < 0 {
		return nil, fmt.Errorf("probe pool %q: acquire retries must be >= 0, got %d", opts.Target, opts.AcquireRetries)
	}
	policy, err := policyFor(opts.Kind)
	if err != nil {
		return nil, fmt.Errorf("probe pool %q: %w", opts.Target, err)
	}
	if policy.maxConns > 0 && opts.MaxConnections > policy.maxConns {
		return nil, fmt.Errorf("probe pool %q: a %s target allows at most %d connection(s), got max %d",
			opts.Target, opts.Kind, policy.maxConns, opts.MaxConnections)
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.HealthCheckTimeout <= 0 {
		opts.HealthCheckTimeout = DefaultHealthCheckTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.NewNopLogger()
	}
	// Parsing reads the TLS files the DSN names, with blocking reads.
	cfg, err := within(opts.ConnectTimeout, func() (*pgxpool.Config, error) { return pgxpool.ParseConfig(opts.DSN) })
	if errors.Is(err, errGaveUp) {
		return nil, fmt.Errorf("probe pool %q: read the TLS files named in the DSN: %w", opts.Target, err)
	}
	if err != nil {
		// pgconn's parse errors redact the password; say no more than the
		// target to be sure.
		return nil, fmt.Errorf("probe pool %q: invalid DSN: %w", opts.Target, config.RedactError(err))
	}
	p := &Pool{
		opts:    opts,
		policy:  policy,
		logger:  logger,
		now:     opts.Now,
		hooks:   h,
		held:    make(map[*pgx.Conn]*held),
		cleaned: make(chan struct{}),
	}
	switch {
	case h.password != nil:
		p.password = h.password
	case !opts.Password.IsZero():
		p.password = opts.Password.NewReader().Read
	}
	p.reparse = config.DSNReadsFiles(opts.DSN, p.password != nil)
	p.baseCtx, p.cancelBase = context.WithCancel(context.Background())
	p.configure(cfg)
	if h.configure != nil {
		h.configure(cfg)
	}
	p.cfg = cfg
	p.lastUsed = p.now()
	p.tick = h.tick
	return p, nil
}

// errGaveUp says that within stopped waiting.
var errGaveUp = errors.New("gave up waiting")

// within runs f in a goroutine of its own and returns its result, or
// errGaveUp once d has passed. f may be blocked on a file that never
// answers (a named pipe, a hung file system): its goroutine then ends only
// when the file does.
func within[T any](d time.Duration, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-done:
		return r.v, r.err
	case <-t.C:
		var zero T
		return zero, fmt.Errorf("%w after %v", errGaveUp, d)
	}
}

// configure applies the probe pool's policy to a parsed pgxpool config.
func (p *Pool) configure(cfg *pgxpool.Config) {
	o := p.opts
	// The pool keeps MinConns itself (see replenish): pgxpool would dial
	// its MinConns at once when an inner pool opens, beside the first
	// call's own dial, and would then keep both; and its top-ups run with
	// their own minute-long budget, which Close cannot end.
	cfg.MinConns = 0
	cfg.MaxConns = int32(o.MaxConnections) //nolint:gosec // validated small
	// A connection lives until it fails, breaks, or idles out: no lifetime
	// limit, and an idle connection is closed after IdleClose (never when
	// zero), as the whole pool is.
	cfg.MaxConnLifetime = 0
	cfg.MaxConnIdleTime = neverIdle
	if o.IdleClose > 0 {
		cfg.MaxConnIdleTime = o.IdleClose
	}
	// The pool owns health checking: pgxpool must never ping on its own.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	cc := cfg.ConnConfig
	cc.ConnectTimeout = o.ConnectTimeout
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = DefaultApplicationName
	}
	if p.policy.simpleProtocol {
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		cc.StatementCacheCapacity = 0
		cc.DescriptionCacheCapacity = 0
	}
	delete(cc.RuntimeParams, "statement_timeout")
	delete(cc.RuntimeParams, "lock_timeout")
	if p.policy.sessionTimeouts {
		if o.StatementTimeout > 0 {
			cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
		}
		if o.LockTimeout > 0 {
			cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(o.LockTimeout.Milliseconds(), 10)
		}
	}
	cfg.BeforeConnect = p.beforeConnect
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		p.newConns.Add(1)
		p.markOK(c) // authentication was a successful round trip
		return nil
	}
}

// beforeConnect prepares a new connection's config. It runs in pgxpool's
// dial goroutine, under a context that only pgxpool's Close cancels, so it
// sets the dial's deadline itself: ConnectTimeout from now for the whole
// dial, files included, ended early by Close.
//
// Secrets that live in files are read again for every new connection, so a
// rotated password or a renewed certificate works without a reload: pgconn
// reads sslrootcert, sslcert and sslkey while parsing the DSN, so the TLS
// settings are parsed afresh each time.
func (p *Pool) beforeConnect(ctx context.Context, c *pgx.ConnConfig) error {
	deadline := time.Now().Add(p.opts.ConnectTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	defer context.AfterFunc(p.baseCtx, cancel)()
	if p.reparse {
		fresh, err := p.parseDSN(ctx)
		if err != nil {
			return fileError{fmt.Errorf("read TLS files: %w", err)}
		}
		c.TLSConfig = fresh.TLSConfig
		c.Fallbacks = fresh.Fallbacks
	}
	if p.password != nil {
		pw, err := p.password(ctx)
		if err != nil {
			return fileError{fmt.Errorf("read password: %w", err)}
		}
		c.Password = pw
	}
	// What is left of the budget goes to pgx's dial. Never zero: pgx reads
	// a zero ConnectTimeout as no timeout.
	c.ConnectTimeout = max(time.Until(deadline), time.Millisecond)
	return ctx.Err()
}

// parseDSN parses the DSN afresh, which reads the TLS files it names, and
// returns when ctx is done even if a read blocks (a named pipe, a hung
// file system): pgconn reads them with plain blocking reads. At most one
// parse runs at a time; a dial that finds one running waits for its
// result, so a file that never answers holds one goroutine per pool.
func (p *Pool) parseDSN(ctx context.Context) (*pgconn.Config, error) {
	p.mu.Lock()
	call := p.parsing
	if call == nil {
		call = &parseCall{done: make(chan struct{})}
		p.parsing = call
		go func() {
			cfg, err := pgconn.ParseConfig(p.opts.DSN)
			if err != nil {
				err = config.RedactError(err)
			}
			call.cfg, call.err = cfg, err
			p.mu.Lock()
			p.parsing = nil
			p.mu.Unlock()
			close(call.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-call.done:
		return call.cfg, call.err
	case <-ctx.Done():
		return nil, fmt.Errorf("gave up waiting: %w", ctx.Err())
	}
}

// parseCall is one parse of the DSN. cfg and err are written once, before
// done is closed, and only read after it is closed.
type parseCall struct {
	done chan struct{}
	cfg  *pgconn.Config
	err  error
}

// Do acquires a healthy connection, calls fn with it and releases it.
//
// Do blocks until a connection is free, a new one is dialled, or ctx is
// done: ctx bounds the whole call, waits, health checks, backoff and the
// destruction of failed connections included (fn aside, which must honour
// its context). If every attempt fails, Do returns the last attempt's error
// without calling fn.
//
// fn runs under a context derived from ctx that Close also cancels; fn must
// honour it. The connection must not be used after fn returns. After fn
// returns or panics, the connection goes back to the pool, unless it is
// closed, busy, or in a transaction, in which case it is destroyed. Do
// returns fn's error as is.
//
// A panic anywhere in Do, in fn or before it (in a health check, which runs
// pgx code and any tracer), is re-raised to the caller after the connection
// it concerns has been released or destroyed: released if fn panicked and
// left it reusable, destroyed otherwise.
func (p *Pool) Do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	inner, err := p.enter()
	if err != nil {
		return err
	}
	defer p.leave()

	// The call's context ends when the caller's ends or when Close cancels
	// the pool's base context.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.baseCtx, cancel)()

	conn, err := p.acquire(ctx, inner)
	p.mu.Lock()
	p.failing = err != nil
	p.mu.Unlock()
	if err != nil {
		p.acquireErrors.Add(1)
		p.dropIfEmpty(inner)
		return err
	}
	// From here on, conn is this call's: the deferred release disposes of
	// it on every path, panics included. Nothing between acquire returning
	// and this defer can panic.
	succeeded := false
	defer func() { p.release(ctx, conn, succeeded) }()
	p.track(ctx, conn.Conn())
	p.at(ctx, pointHandOff)
	err = fn(ctx, conn.Conn())
	succeeded = err == nil
	return err
}

// enter registers a Do call and returns the pgxpool to use, opening it if
// needed.
func (p *Pool) enter() (*pgxpool.Pool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.inner == nil {
		inner, err := pgxpool.NewWithConfig(context.Background(), p.cfg.Copy())
		if err != nil {
			return nil, fmt.Errorf("probe pool %q: open: %w", p.opts.Target, config.RedactError(err))
		}
		p.inner = inner
	}
	p.startJanitorLocked()
	p.active++
	p.inflight.Add(1)
	return p.inner, nil
}

// leave ends a Do call.
func (p *Pool) leave() {
	p.mu.Lock()
	p.active--
	p.lastUsed = p.now()
	p.mu.Unlock()
	p.inflight.Done()
}

// acquire runs the bounded attempt loop. On return, either the connection
// is healthy and acquired, or every connection any attempt acquired has been
// destroyed; also when it panics.
func (p *Pool) acquire(ctx context.Context, inner *pgxpool.Pool) (*pgxpool.Conn, error) {
	retries := p.opts.AcquireRetries
	p.mu.Lock()
	if p.failing {
		// Down at the last call: one attempt. Retries are for a target
		// that answered and blipped, not for one that is gone, where they
		// would only multiply the dials and lengthen every failed round.
		retries = 0
	}
	p.mu.Unlock()
	var lastErr error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			p.retries.Add(1)
			if err := p.sleep(ctx, backoff(p.opts.RetryBackoff, attempt)); err != nil {
				return nil, p.wrapAcquireErr(ctx, lastErr)
			}
		}
		conn, err := p.attempt(ctx, inner)
		if err == nil {
			return conn, nil
		}
		lastErr = err
		if ctx.Err() != nil || !retryable(err) {
			return nil, p.wrapAcquireErr(ctx, lastErr)
		}
	}
	return nil, p.wrapAcquireErr(ctx, lastErr)
}

// attempt acquires one connection and checks it. It returns the connection
// only if it is healthy; on every other path, a panic included, the
// connection it acquired is destroyed before attempt returns or unwinds.
//
// A connection that completed a query successfully within FreshFor is
// handed out without a health check, unless its socket shows that the
// server has spoken or left since (see quiet): a backend terminated or a
// server restarted within the last second is caught here, not by the
// caller's first query.
func (p *Pool) attempt(ctx context.Context, inner *pgxpool.Pool) (_ *pgxpool.Conn, err error) {
	conn, err := inner.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	healthy := false
	defer func() {
		if !healthy {
			p.destroy(ctx, conn)
		}
	}()
	p.at(ctx, pointAcquired)
	if c := conn.Conn(); !p.fresh(c) || !synced(ctx, c) || !quiet(c.PgConn().Conn()) {
		if err := p.healthCheck(ctx, c); err != nil {
			p.healthFailures.Add(1)
			return nil, fmt.Errorf("health check: %w", err)
		}
		p.markOK(c)
	}
	p.at(ctx, pointChecked)
	healthy = true
	return conn, nil
}

func (p *Pool) sleep(ctx context.Context, d time.Duration) error {
	if p.hooks.sleep != nil {
		return p.hooks.sleep(ctx, d)
	}
	return sleepCtx(ctx, d)
}

func (p *Pool) wrapAcquireErr(ctx context.Context, err error) error {
	if err == nil {
		err = ctx.Err()
	}
	err = explain(p.opts.Kind, err)
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("probe pool %q: acquire: %w (%w)", p.opts.Target, ctxErr, config.RedactError(err))
	}
	return fmt.Errorf("probe pool %q: acquire: %w", p.opts.Target, config.RedactError(err))
}

// healthCheck runs the kind's check under HealthCheckTimeout.
func (p *Pool) healthCheck(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.HealthCheckTimeout)
	defer cancel()
	p.at(ctx, pointCheck)
	if p.policy.check != "" {
		_, err := conn.Exec(ctx, p.policy.check, pgx.QueryExecModeSimpleProtocol)
		return err
	}
	return conn.Ping(ctx)
}

// synced reports whether pgx has nothing of c's left to read: its
// background reader stopped and its buffer empty, so that a peek at the
// socket sees all the server has sent. pgconn's SyncConn costs nothing
// then; otherwise it pings under ctx (a round trip, which the health check
// would make anyway), and a failed ping sends c to the health check.
func synced(ctx context.Context, c *pgx.Conn) bool {
	return c.PgConn().SyncConn(ctx) == nil
}

// fresh reports whether c completed a query successfully within FreshFor.
// Only the connection's holder calls it.
func (p *Pool) fresh(c *pgx.Conn) bool {
	t, ok := c.PgConn().CustomData()[lastOKKey].(time.Time)
	return ok && p.now().Sub(t) < FreshFor
}

// markOK records that c just completed a query successfully. Only the
// connection's holder (or its dialler) calls it.
func (p *Pool) markOK(c *pgx.Conn) { c.PgConn().CustomData()[lastOKKey] = p.now() }

// track records that conn is now in a callback's hands.
func (p *Pool) track(ctx context.Context, conn *pgx.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at(ctx, pointTrack)
	p.held[conn] = &held{since: p.now()}
}

func (p *Pool) untrack(conn *pgx.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.held, conn)
}

// release returns conn to the pool or destroys it. It runs exactly once per
// handed-out connection, from a defer, so it also runs when fn panics; if
// release itself panics, conn is destroyed. succeeded says fn returned
// nil: only then does conn count as having completed a query successfully.
func (p *Pool) release(ctx context.Context, conn *pgxpool.Conn, succeeded bool) {
	c := conn.Conn()
	returned := false
	defer func() {
		if !returned {
			p.destroy(ctx, conn)
		}
	}()
	p.untrack(c)
	p.at(ctx, pointRelease)
	if reusable(c) {
		if succeeded {
			p.markOK(c)
		}
		returned = true
		conn.Release()
		p.replenish() // the target answers: bring it up to MinConns
	}
}

// reusable reports whether a connection may go back to the pool: open, idle
// and outside any transaction.
func reusable(c *pgx.Conn) bool {
	pc := c.PgConn()
	return !c.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'I'
}

// destroy takes conn out of pgxpool (which frees its slot at once), closes
// it, and has a replacement dialled in the background if the pool is now
// below MinConns. It never returns the connection to the pool.
//
// The polite Terminate is bounded by ctx and by destroyTimeout. Then the
// socket itself is closed, also if anything here panics: a connection
// broken by a timeout is already being closed by pgx in the background,
// which would otherwise wait up to 15 s for a hung server to close its end,
// holding the socket, the server's backend and a goroutine.
func (p *Pool) destroy(ctx context.Context, conn *pgxpool.Conn) {
	c := conn.Hijack()
	defer func() {
		if !c.IsClosed() {
			// Only after a panic before Close: close without a Terminate.
			_ = c.Close(cancelled())
		}
		_ = c.PgConn().Conn().Close() // already closed on the normal path
		p.replenish()
	}()
	p.at(ctx, pointDestroy)
	ctx, cancel := context.WithTimeout(ctx, destroyTimeout)
	defer cancel()
	_ = c.Close(ctx) // best effort
}

// replenish starts, unless one is running, a background top-up of the
// inner pool to MinConns. It never blocks: the caller's Do goes on without
// waiting for the new connection. It is called after a connection was
// destroyed and after one was returned, so the pool only dials ahead of
// need while the target answers.
func (p *Pool) replenish() {
	if p.opts.MinConnections == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	inner := p.inner
	if p.closed || inner == nil || p.replenishing || inner.Stat().TotalConns() >= int32(p.opts.MinConnections) { //nolint:gosec // validated small
		return
	}
	p.replenishing = true
	p.background.Add(1)
	go p.topUp(inner)
}

// topUp holds connections from inner until it has MinConns, dialling the
// missing ones, then returns them all to the pool. With MinConns 1 it only
// ever dials; above 1 it may hold an idle connection for the length of a
// dial. It is bounded by ConnectTimeout and ended by Close.
func (p *Pool) topUp(inner *pgxpool.Pool) {
	defer p.background.Done()
	defer func() {
		p.mu.Lock()
		p.replenishing = false
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(p.baseCtx, p.opts.ConnectTimeout)
	defer cancel()
	var held []*pgxpool.Conn
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	for inner.Stat().TotalConns() < int32(p.opts.MinConnections) { //nolint:gosec // validated small
		c, err := inner.Acquire(ctx)
		if err != nil {
			return // the next destroy or return tries again
		}
		held = append(held, c)
	}
}

// cancelled returns a context that is already done.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// fileError is an error reading a file a new connection needs (the
// password or TLS files). Another attempt within the same call would read
// the same file the same way, so it is not retried.
type fileError struct{ err error }

func (e fileError) Error() string { return e.err.Error() }
func (e fileError) Unwrap() error { return e.err }

// retryable reports whether another attempt could succeed. Authentication
// failures, a missing database, a certificate that fails verification and
// unreadable files are not retried: retrying a wrong password only risks
// locking the account, and the others fail the same way every time.
func retryable(err error) bool {
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var file fileError
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &file) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) >= 2 && pgErr.Code[:2] == "28": // invalid authorization
			return false
		case pgErr.Code == "3D000": // invalid catalog name
			return false
		}
	}
	return true
}

// backoff is the wait before retry number attempt (1 for the first retry):
// base, doubled for each further retry, capped at maxBackoff. Zero base
// means no wait.
func backoff(base time.Duration, attempt int) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// sleepCtx waits d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Stats returns a snapshot. It is safe to call at any time, also after Close.
// Leaks found here for the first time are logged.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	inner := p.inner
	scan := p.scanLeaksLocked()
	p.mu.Unlock()
	p.logLeaks(scan.newly)
	s := Stats{
		Min:                 p.opts.MinConnections,
		Max:                 p.opts.MaxConnections,
		Leaked:              scan.leaked,
		OldestHeld:          scan.oldest,
		AcquireRetries:      p.retries.Load(),
		AcquireErrors:       p.acquireErrors.Load(),
		HealthCheckFailures: p.healthFailures.Load(),
		NewConnections:      p.newConns.Load(),
	}
	if inner != nil {
		st := inner.Stat()
		s.Open = int(st.TotalConns())
		s.InUse = int(st.AcquiredConns())
		s.Idle = int(st.IdleConns())
	}
	return s
}

// leakScan is what one pass over the held connections found.
type leakScan struct {
	leaked int
	oldest time.Duration
	// newly holds the ages of the leaks found for the first time, to be
	// logged once the lock is released.
	newly []time.Duration
}

// scanLeaksLocked counts held connections past the leak threshold and
// marks the new ones as logged; the caller logs them with logLeaks after
// releasing p.mu. p.mu must be held.
func (p *Pool) scanLeaksLocked() leakScan {
	var s leakScan
	now := p.now()
	for _, h := range p.held {
		age := now.Sub(h.since)
		s.oldest = max(s.oldest, age)
		if p.opts.LeakThreshold <= 0 || age <= p.opts.LeakThreshold {
			continue
		}
		s.leaked++
		if !h.logged {
			h.logged = true
			s.newly = append(s.newly, age)
		}
	}
	return s
}

// logLeaks logs each newly found leak. p.mu must not be held.
func (p *Pool) logLeaks(ages []time.Duration) {
	for _, age := range ages {
		level.Warn(p.logger).Log("msg", "probe pool connection held past leak threshold",
			"target", p.opts.Target, "held_for", age.Round(time.Millisecond), "leak_threshold", p.opts.LeakThreshold)
	}
}

// janitor logs leaks promptly and closes the inner pool once it has been
// idle for IdleClose, at every tick. It exits when stopCh is closed.
func (p *Pool) janitor(tick <-chan time.Time, stopTick func(), stopCh <-chan struct{}) {
	defer p.janitors.Done()
	defer stopTick()
	for {
		select {
		case <-stopCh:
			return
		case <-tick:
			p.mu.Lock()
			scan := p.scanLeaksLocked()
			p.mu.Unlock()
			p.logLeaks(scan.newly)
			p.closeIfIdle()
		}
	}
}

func janitorPeriod(leak, idle time.Duration) time.Duration {
	period := 10 * time.Second
	for _, d := range []time.Duration{leak / 2, idle / 2} {
		if d > 0 && d < period {
			period = d
		}
	}
	return max(period, 10*time.Millisecond)
}

// dropIfEmpty closes inner, after a Do on it found no healthy connection,
// if that Do is its only user and it holds no connection and dials none:
// a target that is down then costs the pool nothing between calls (no
// pgxpool, none of its goroutines), whatever the number of targets. The
// next Do opens a new inner pool. A dial that outlived its caller keeps
// the inner pool, so that a slow target still yields a connection.
func (p *Pool) dropIfEmpty(inner *pgxpool.Pool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inner != inner || p.active > 1 || p.closed || p.replenishing || inner.Stat().TotalConns() > 0 {
		return
	}
	p.inner = nil
	p.stopJanitorLocked()
	p.background.Add(1)
	go func() {
		defer p.background.Done()
		inner.Close()
	}()
}

// startJanitorLocked starts the janitor unless it runs. p.mu is held.
func (p *Pool) startJanitorLocked() {
	if p.janitorStop != nil || p.closed {
		return
	}
	stopCh := make(chan struct{})
	p.janitorStop = stopCh
	tick, stopTick := p.tick, func() {}
	if tick == nil {
		t := time.NewTicker(janitorPeriod(p.opts.LeakThreshold, p.opts.IdleClose))
		tick, stopTick = t.C, t.Stop
	}
	p.janitors.Add(1)
	go p.janitor(tick, stopTick, stopCh)
}

// stopJanitorLocked stops the running janitor, if any. p.mu is held.
func (p *Pool) stopJanitorLocked() {
	if p.janitorStop != nil {
		close(p.janitorStop)
		p.janitorStop = nil
	}
}

// closeIfIdle closes the inner pool when no Do has run for IdleClose. It
// reports whether it did. The close runs in the background: no Do uses
// that pool, so it only waits for dials in progress (ConnectTimeout) and
// the destruction of idle connections.
func (p *Pool) closeIfIdle() bool {
	if p.opts.IdleClose <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	inner := p.inner
	if inner == nil || p.active > 0 || p.closed || p.now().Sub(p.lastUsed) < p.opts.IdleClose {
		return false
	}
	p.inner = nil
	p.background.Add(1)
	go func() {
		defer p.background.Done()
		inner.Close()
	}()
	return true
}

// Close closes the pool and returns by the time ctx is done. It is safe to
// call more than once and from any goroutine; later calls return nil at
// once.
//
// New Do calls fail with ErrClosed at once. Close waits, until ctx is done,
// for running calls to return and then for every connection to close,
// dials in progress included. If ctx ends first, Close cancels the context
// callbacks, health checks and password reads run under, and returns an
// error wrapping ctx.Err(); what is still running is cleaned up by one
// background goroutine as it ends: a dial within ConnectTimeout, a callback
// when it returns (at once if it honours its context), and then the
// remaining connections are closed. A callback that ignores its context
// therefore holds that goroutine and its connection until it returns, but
// never Close.
//
// A context without a deadline makes Close wait for all of it.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.stopJanitorLocked()
	p.mu.Unlock()

	go p.cleanup()
	select {
	case <-p.cleaned:
		return nil
	case <-ctx.Done():
		p.cancelBase()
		return fmt.Errorf("probe pool %q: close: stopped waiting, the rest closes in the background: %w", p.opts.Target, ctx.Err())
	}
}

// cleanup is Close's background part: it waits for the janitor, running
// calls, idle closes and top-ups, then closes the inner pool, and finally
// closes p.cleaned.
func (p *Pool) cleanup() {
	defer close(p.cleaned)
	p.janitors.Wait()
	p.inflight.Wait()
	// No call is left: end what derives from the base context, such as a
	// MinConns top-up and its password read.
	p.cancelBase()
	p.background.Wait()
	p.mu.Lock()
	inner := p.inner
	p.mu.Unlock()
	if inner != nil {
		// pgxpool's Close waits for dials in progress and destroys every
		// connection.
		inner.Close()
	}
}
