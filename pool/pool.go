package pool

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind is the kind of server a pool talks to. It decides the health check
// and which runtime parameters are sent at connection start-up.
type Kind int

const (
	// KindPostgres is a PostgreSQL server. The health check is an empty
	// statement, and connections set statement_timeout and lock_timeout.
	KindPostgres Kind = iota
	// KindPgBouncer is a PgBouncer admin console. Every query uses the
	// simple protocol, the health check is SHOW VERSION, and no runtime
	// parameter other than application_name is sent, because the console
	// rejects unknown start-up parameters.
	KindPgBouncer
)

// String returns "postgres" or "pgbouncer".
func (k Kind) String() string {
	if k == KindPgBouncer {
		return "pgbouncer"
	}
	return "postgres"
}

// Defaults used where Options leaves a duration at zero.
const (
	DefaultConnectTimeout     = 3 * time.Second
	DefaultHealthCheckTimeout = time.Second
	// DefaultApplicationName is sent unless the DSN sets application_name.
	DefaultApplicationName = "poolwatch"
	// maxBackoff caps the exponential backoff between attempts.
	maxBackoff = 5 * time.Second
	// destroyTimeout bounds the polite Terminate sent when a connection is
	// destroyed. The socket is closed when it expires.
	destroyTimeout = time.Second
)

// ErrClosed is returned by Do after Close has been called.
var ErrClosed = errors.New("probe pool is closed")

// Options configure a Pool. The zero value of each field is documented.
type Options struct {
	// Target names the target in logs and errors. It is not a secret.
	Target string
	// Kind selects the health check and start-up parameters.
	Kind Kind
	// DSN is the connection string, in URL or keyword/value form. It may
	// contain a password: it is never logged or put into an error.
	DSN string
	// Password, when not nil, is called before every new connection and its
	// result replaces the DSN's password, so a password read from a file or
	// the environment can rotate without a restart.
	Password func() (string, error)
	// MinConns is kept open while the pool is open (0: none). The pool still
	// opens lazily and IdleClose closes these too.
	MinConns int32
	// MaxConns is the most connections the pool ever holds. It must be > 0.
	// When all are in use, Do waits for one until its context is done.
	MaxConns int32
	// ConnectTimeout bounds each dial, TLS and authentication included.
	// Zero means DefaultConnectTimeout; it is never unlimited.
	ConnectTimeout time.Duration
	// HealthCheckTimeout bounds each health check. Zero means
	// DefaultHealthCheckTimeout.
	HealthCheckTimeout time.Duration
	// AcquireRetries is how many attempts Do makes after the first one fails
	// (0: a single attempt). Authentication errors are not retried.
	AcquireRetries int
	// RetryBackoff is the wait before the first retry. It doubles for each
	// further retry, up to 5s. Zero means retry at once.
	RetryBackoff time.Duration
	// LeakThreshold is how long a callback may hold a connection before it
	// counts as leaked. Zero turns leak tracking off.
	LeakThreshold time.Duration
	// IdleClose closes every connection after the pool has gone this long
	// without a Do. Zero means never.
	IdleClose time.Duration
	// StatementTimeout and LockTimeout are sent as runtime parameters on
	// PostgreSQL targets (zero: not sent, the server's setting applies).
	// They are never sent to PgBouncer.
	StatementTimeout time.Duration
	LockTimeout      time.Duration
	// Logger receives warnings about leaks. Nil means no logging.
	Logger log.Logger
	// Now is the clock used for leak tracking and idle close. Nil means
	// time.Now. Tests inject a fake clock here.
	Now func() time.Time
}

// Stats is a point-in-time snapshot of a Pool.
type Stats struct {
	// Min and Max are the configured bounds.
	Min, Max int
	// Open counts connections that exist or are being dialled; InUse counts
	// those acquired (in a callback or in a health check); Idle counts those
	// waiting in the pool. Open = InUse + Idle + connections being dialled.
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
	cfg    *pgxpool.Config // template; copied for every inner pool
	logger log.Logger
	now    func() time.Time

	// baseCtx lives as long as the pool. Every callback's context derives
	// from it, so Close can cancel in-flight I/O.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	// inflight counts running Do calls. Add is only called with mu held and
	// closed false, so Wait in Close sees every call.
	inflight sync.WaitGroup

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

	retries        atomic.Uint64
	acquireErrors  atomic.Uint64
	healthFailures atomic.Uint64
	newConns       atomic.Uint64

	janitorDone chan struct{}
	stopJanitor chan struct{}
}

// New validates opts and returns a Pool. It opens no connection: the first
// Do does. The returned error never contains the DSN's password.
func New(opts Options) (*Pool, error) {
	if opts.MaxConns <= 0 {
		return nil, fmt.Errorf("probe pool %q: max connections must be > 0, got %d", opts.Target, opts.MaxConns)
	}
	if opts.MinConns < 0 || opts.MinConns > opts.MaxConns {
		return nil, fmt.Errorf("probe pool %q: min connections %d must be between 0 and max %d", opts.Target, opts.MinConns, opts.MaxConns)
	}
	if opts.AcquireRetries < 0 {
		return nil, fmt.Errorf("probe pool %q: acquire retries must be >= 0, got %d", opts.Target, opts.AcquireRetries)
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
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgconn's parse errors redact the password; say no more than the
		// target to be sure.
		return nil, fmt.Errorf("probe pool %q: invalid DSN: %w", opts.Target, redactedError{err})
	}
	p := &Pool{
		opts:        opts,
		logger:      logger,
		now:         opts.Now,
		held:        make(map[*pgx.Conn]*held),
		janitorDone: make(chan struct{}),
		stopJanitor: make(chan struct{}),
	}
	p.configure(cfg)
	p.cfg = cfg
	p.baseCtx, p.cancelBase = context.WithCancel(context.Background())
	p.lastUsed = p.now()
	go p.janitor()
	return p, nil
}

// configure applies the probe pool's policy to a parsed pgxpool config.
func (p *Pool) configure(cfg *pgxpool.Config) {
	o := p.opts
	cfg.MinConns = o.MinConns
	cfg.MaxConns = o.MaxConns
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
	switch o.Kind {
	case KindPgBouncer:
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		cc.StatementCacheCapacity = 0
		cc.DescriptionCacheCapacity = 0
		delete(cc.RuntimeParams, "statement_timeout")
		delete(cc.RuntimeParams, "lock_timeout")
	default:
		if o.StatementTimeout > 0 {
			cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
		}
		if o.LockTimeout > 0 {
			cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(o.LockTimeout.Milliseconds(), 10)
		}
	}
	// Secrets that live in files are read again for every new connection,
	// so a rotated password or a renewed certificate works without a
	// reload: pgconn reads sslrootcert, sslcert and sslkey while parsing the
	// DSN, so the TLS settings are parsed afresh each time.
	dsn, readPassword := o.DSN, o.Password
	cfg.BeforeConnect = func(_ context.Context, c *pgx.ConnConfig) error {
		fresh, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return fmt.Errorf("read TLS files: %w", redactedError{err})
		}
		c.TLSConfig = fresh.TLSConfig
		c.Fallbacks = fresh.Fallbacks
		if readPassword != nil {
			pw, err := readPassword()
			if err != nil {
				return fmt.Errorf("read password: %w", err)
			}
			c.Password = pw
		}
		return nil
	}
	cfg.AfterConnect = func(context.Context, *pgx.Conn) error {
		p.newConns.Add(1)
		return nil
	}
}

// Do acquires a healthy connection, calls fn with it and releases it.
//
// Do blocks until a connection is free, a new one is dialled, or ctx is
// done: ctx bounds the whole call, waits, health checks and backoff
// included. If every attempt fails, Do returns the last attempt's error
// without calling fn.
//
// fn runs under a context derived from ctx that Close also cancels; fn must
// honour it. The connection must not be used after fn returns. After fn
// returns or panics, the connection goes back to the pool, unless it is
// closed, busy, or in a transaction, in which case it is destroyed. A panic
// in fn is re-raised after the connection is released. Do returns fn's
// error as is.
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
	stop := context.AfterFunc(p.baseCtx, cancel)
	defer stop()

	conn, err := p.acquire(ctx, inner)
	if err != nil {
		p.acquireErrors.Add(1)
		return err
	}
	p.track(conn.Conn())
	defer p.release(conn)
	return fn(ctx, conn.Conn())
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
			return nil, fmt.Errorf("probe pool %q: open: %w", p.opts.Target, redactedError{err})
		}
		p.inner = inner
	}
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
// destroyed.
func (p *Pool) acquire(ctx context.Context, inner *pgxpool.Pool) (*pgxpool.Conn, error) {
	var lastErr error
	for attempt := 0; attempt <= p.opts.AcquireRetries; attempt++ {
		if attempt > 0 {
			p.retries.Add(1)
			if err := sleepCtx(ctx, backoff(p.opts.RetryBackoff, attempt)); err != nil {
				return nil, p.wrapAcquireErr(ctx, lastErr)
			}
		}
		conn, err := inner.Acquire(ctx)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil || !retryable(err) {
				return nil, p.wrapAcquireErr(ctx, lastErr)
			}
			continue
		}
		if err := p.healthCheck(ctx, conn.Conn()); err != nil {
			p.healthFailures.Add(1)
			destroy(conn)
			lastErr = fmt.Errorf("health check: %w", err)
			if ctx.Err() != nil {
				return nil, p.wrapAcquireErr(ctx, lastErr)
			}
			continue
		}
		return conn, nil
	}
	return nil, p.wrapAcquireErr(ctx, lastErr)
}

func (p *Pool) wrapAcquireErr(ctx context.Context, err error) error {
	if err == nil {
		err = ctx.Err()
	}
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("probe pool %q: acquire: %w (%w)", p.opts.Target, ctxErr, redactedError{err})
	}
	return fmt.Errorf("probe pool %q: acquire: %w", p.opts.Target, redactedError{err})
}

// healthCheck runs the kind's check under HealthCheckTimeout.
func (p *Pool) healthCheck(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.HealthCheckTimeout)
	defer cancel()
	if p.opts.Kind == KindPgBouncer {
		_, err := conn.Exec(ctx, "SHOW VERSION", pgx.QueryExecModeSimpleProtocol)
		return err
	}
	return conn.Ping(ctx)
}

// track records that conn is now in a callback's hands.
func (p *Pool) track(conn *pgx.Conn) {
	p.mu.Lock()
	p.held[conn] = &held{since: p.now()}
	p.mu.Unlock()
}

// release returns conn to the pool or destroys it. It runs exactly once per
// handed-out connection, from a defer, so it also runs when fn panics.
func (p *Pool) release(conn *pgxpool.Conn) {
	c := conn.Conn()
	p.mu.Lock()
	delete(p.held, c)
	p.mu.Unlock()
	if reusable(c) {
		conn.Release()
		return
	}
	destroy(conn)
}

// reusable reports whether a connection may go back to the pool: open, idle
// and outside any transaction.
func reusable(c *pgx.Conn) bool {
	pc := c.PgConn()
	return !c.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'I'
}

// destroy takes conn out of pgxpool and closes it. It never returns the
// connection to the pool.
//
// Close sends a polite Terminate. Then the socket itself is closed: a
// connection broken by a timeout is already being closed by pgx in the
// background, which would otherwise wait up to 15 s for a hung server to
// close its end, holding the socket, the server's backend and a goroutine.
func destroy(conn *pgxpool.Conn) {
	c := conn.Hijack()
	ctx, cancel := context.WithTimeout(context.Background(), destroyTimeout)
	defer cancel()
	_ = c.Close(ctx)              // best effort
	_ = c.PgConn().Conn().Close() // already closed on the normal path
}

// retryable reports whether another attempt could succeed. Authentication
// failures, a missing database and a certificate that fails verification are
// not retried: retrying a wrong password only risks locking the account,
// and the others fail the same way every time.
func retryable(err error) bool {
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) {
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
	leaked, oldest := p.scanLeaksLocked()
	p.mu.Unlock()
	s := Stats{
		Min:                 int(p.opts.MinConns),
		Max:                 int(p.opts.MaxConns),
		Leaked:              leaked,
		OldestHeld:          oldest,
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

// scanLeaksLocked counts held connections past the leak threshold and logs
// each one once. p.mu must be held.
func (p *Pool) scanLeaksLocked() (leaked int, oldest time.Duration) {
	now := p.now()
	for _, h := range p.held {
		age := now.Sub(h.since)
		oldest = max(oldest, age)
		if p.opts.LeakThreshold <= 0 || age <= p.opts.LeakThreshold {
			continue
		}
		leaked++
		if !h.logged {
			h.logged = true
			level.Warn(p.logger).Log("msg", "probe pool connection held past leak threshold",
				"target", p.opts.Target, "held_for", age.Round(time.Millisecond), "leak_threshold", p.opts.LeakThreshold)
		}
	}
	return leaked, oldest
}

// janitor logs leaks promptly and closes the inner pool once it has been
// idle for IdleClose. It exits when Close stops it.
func (p *Pool) janitor() {
	defer close(p.janitorDone)
	period := janitorPeriod(p.opts.LeakThreshold, p.opts.IdleClose)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-p.stopJanitor:
			return
		case <-t.C:
			p.mu.Lock()
			p.scanLeaksLocked()
			p.mu.Unlock()
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

// closeIfIdle closes the inner pool when no Do has run for IdleClose. It
// reports whether it closed it.
func (p *Pool) closeIfIdle() bool {
	if p.opts.IdleClose <= 0 {
		return false
	}
	p.mu.Lock()
	inner := p.inner
	if inner == nil || p.active > 0 || p.closed || p.now().Sub(p.lastUsed) < p.opts.IdleClose {
		p.mu.Unlock()
		return false
	}
	p.inner = nil
	p.mu.Unlock()
	// No Do is using inner and none can start on it, so Close cannot block
	// on an acquired connection.
	inner.Close()
	return true
}

// Close closes the pool. It is safe to call more than once and from any
// goroutine; later calls return at once.
//
// New Do calls fail with ErrClosed at once. Close waits for running callbacks
// to return until ctx is done; then it cancels the context they run under,
// which unblocks their I/O, and waits for them to return. Finally it closes
// every connection, including dials still in progress. Close never hangs
// while callbacks honour their context. It returns ctx.Err() if it had to
// cancel callbacks, else nil.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	close(p.stopJanitor)
	<-p.janitorDone

	done := make(chan struct{})
	go func() {
		p.inflight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("probe pool %q: close: cancelled running callbacks: %w", p.opts.Target, ctx.Err())
		p.cancelBase()
		<-done
	}
	p.cancelBase()

	p.mu.Lock()
	inner := p.inner
	p.inner = nil
	p.mu.Unlock()
	if inner != nil {
		inner.Close()
	}
	return err
}

// redactedError wraps an error from pgx whose text might, in some future
// version, quote a connection string. It removes any password=... or
// user:password@ it finds.
type redactedError struct{ err error }

func (e redactedError) Error() string { return redactSecrets(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }
