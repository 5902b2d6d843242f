package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// shape is what each client of a traffic does, over and over: a query that
// takes query (pg_sleep), then a pause.
type shape struct {
	query, pause time.Duration
}

// traffic is a set of clients, each on its own connection, running the
// same shape against one database. The number of clients and the shape can
// change while it runs; a client that is let go finishes its current query
// first. Every query is bounded (shape.query plus queryGrace), so stop is
// bounded too. It is safe for concurrent use.
type traffic struct {
	dsn     string // pgx DSN, without application_name
	appName string // application_name prefix; client i is appName-i
	shape   atomic.Pointer[shape]

	mu      sync.Mutex
	clients []chan struct{} // closed to let client i go
	started int             // clients ever started, for their names
	wg      sync.WaitGroup
	errs    atomic.Int64
	lastErr atomic.Pointer[string]
}

// queryGrace is added to a query's own duration for its deadline; a query
// queued behind a full PgBouncer pool waits in that time.
const queryGrace = 30 * time.Second

func newTraffic(dsn, appName string) *traffic {
	t := &traffic{dsn: dsn, appName: appName}
	t.shape.Store(&shape{query: 100 * time.Millisecond, pause: time.Second})
	return t
}

// set runs n clients with shape sh: it starts the missing clients or lets
// the extra ones go.
func (t *traffic) set(ctx context.Context, n int, sh shape) {
	t.shape.Store(&sh)
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.clients) > n {
		last := len(t.clients) - 1
		close(t.clients[last])
		t.clients = t.clients[:last]
	}
	for len(t.clients) < n {
		stop := make(chan struct{})
		t.clients = append(t.clients, stop)
		t.started++
		name := fmt.Sprintf("%s-%d", t.appName, t.started)
		t.wg.Add(1)
		go t.client(ctx, name, stop) //nolint:gosec // G118: closing a connection must outlive ctx, so client closes it under its own short deadline
	}
}

// stop lets every client go and waits for them.
func (t *traffic) stop() {
	t.mu.Lock()
	for _, c := range t.clients {
		close(c)
	}
	t.clients = nil
	t.mu.Unlock()
	t.wg.Wait()
}

// failures returns how many queries or connections failed, and the last
// failure.
func (t *traffic) failures() (int64, string) {
	last := ""
	if p := t.lastErr.Load(); p != nil {
		last = *p
	}
	return t.errs.Load(), last
}

func (t *traffic) fail(ctx context.Context, err error) {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return // shutting down
	}
	t.errs.Add(1)
	msg := err.Error()
	t.lastErr.Store(&msg)
}

// client is one application connection running the current shape until
// stop is closed or ctx is done. After a failure it reconnects, once a
// second at most.
func (t *traffic) client(ctx context.Context, name string, stop <-chan struct{}) {
	defer t.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
	}()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		sh := *t.shape.Load()
		if conn == nil {
			var err error
			conn, err = connect(ctx, t.dsn, name)
			if err != nil {
				t.fail(ctx, err)
				if !pause(ctx, stop, time.Second) {
					return
				}
				continue
			}
		}
		qctx, cancel := context.WithTimeout(ctx, sh.query+queryGrace)
		_, err := conn.Exec(qctx, fmt.Sprintf("SELECT pg_sleep(%.3f)", sh.query.Seconds()))
		cancel()
		if err != nil {
			t.fail(ctx, fmt.Errorf("%s: %w", name, err))
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(cctx)
			ccancel()
			conn = nil
			if !pause(ctx, stop, time.Second) {
				return
			}
			continue
		}
		if !pause(ctx, stop, jitter(sh.pause)) {
			return
		}
	}
}

// jitter returns d scaled by a random factor between 0.5 and 1.5. Without
// it, clients started together stay in step with each other and with
// Prometheus' fixed scrape times, and a scrape can hit every query (a pool
// that looks full) or none (a pool that looks unused) for minutes.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.5 + rand.Float64())) //nolint:gosec // G404: timing noise, not a secret
}

// pause waits d, and reports false if stop was closed or ctx ended first.
func pause(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-stop:
			return false
		case <-ctx.Done():
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// connect opens one client connection with this application_name, within
// 5 s.
func connect(ctx context.Context, dsn, appName string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse client DSN: %w", err) // pgconn redacts the password
	}
	cfg.RuntimeParams["application_name"] = appName
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect as %s: %w", appName, err)
	}
	return conn, nil
}

// leak is a client that opens a transaction and then goes quiet, holding
// its server connection: the bug a leak alert is for.
type leak struct {
	conn *pgx.Conn
}

// startLeak connects as appName and runs BEGIN and a query, leaving the
// transaction open.
func startLeak(ctx context.Context, dsn, appName string) (*leak, error) {
	conn, err := connect(ctx, dsn, appName)
	if err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, queryGrace)
	defer cancel()
	for _, q := range []string{"BEGIN", "SELECT 42 AS order_id"} {
		if _, err := conn.Exec(qctx, q); err != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(cctx)
			ccancel()
			return nil, fmt.Errorf("leaking client %s: %s: %w", appName, q, err)
		}
	}
	return &leak{conn: conn}, nil
}

// end rolls the transaction back and disconnects. It is idempotent.
func (l *leak) end() error {
	if l == nil || l.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.conn.Exec(ctx, "ROLLBACK")
	cerr := l.conn.Close(ctx)
	l.conn = nil
	if err != nil {
		return fmt.Errorf("roll back the leaked transaction: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("close the leaking client: %w", cerr)
	}
	return nil
}
