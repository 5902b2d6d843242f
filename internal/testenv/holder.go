package testenv

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Holder keeps n connections open inside transactions, for pool-exhaustion
// tests. Its methods are safe for concurrent use.
type Holder struct {
	cancel  context.CancelFunc
	release chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	mu   sync.Mutex
	held int
	errs []error
}

const (
	holderConnectTimeout = 5 * time.Second
	holderReleaseBudget  = 10 * time.Second
)

// HoldTransactions opens n connections to dsn (any pgx DSN; pgx-only
// parameters such as default_query_exec_mode are removed) with this
// application_name, and on each sends "BEGIN; SELECT 1" as one simple-protocol
// Query.
//
// It returns once every connection has either sent its query or failed to
// connect (each dial is bounded by 5 s unless the DSN sets connect_timeout).
// A sent query may still be queued, e.g. behind a full PgBouncer pool: Held
// tells how many got through and are now idle in transaction; WaitHeld polls
// for it. Connection failures (e.g. "too many clients", SQLSTATE 53300) are
// in Errors.
//
// Release (also run on cleanup) commits and closes everything: holders that
// are still queued get up to 10 s to get through, then they are cut off.
func HoldTransactions(tb testing.TB, dsn string, n int, appName string) *Holder {
	tb.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		tb.Fatalf("hold transactions: parse DSN: %v", err) // pgconn redacts the password
	}
	cc := &cfg.Config
	if appName != "" {
		cc.RuntimeParams["application_name"] = appName
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = holderConnectTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Holder{cancel: cancel, release: make(chan struct{})}
	sent := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		h.wg.Add(1)
		go h.hold(ctx, cc.Copy(), sent)
	}
	tb.Cleanup(h.Release)
	// Every goroutine signals exactly once, after its dial is over (bounded by
	// ConnectTimeout), so this loop is bounded too.
	for i := 0; i < n; i++ {
		<-sent
	}
	return h
}

func (h *Holder) hold(ctx context.Context, cfg *pgconn.Config, sent chan<- struct{}) {
	defer h.wg.Done()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		h.addErr(fmt.Errorf("connect: %w", err))
		sent <- struct{}{}
		return
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	mrr := conn.Exec(ctx, "BEGIN; SELECT 1") // returns once the Query is written
	sent <- struct{}{}
	if _, err := mrr.ReadAll(); err != nil { // blocks while queued
		h.addErr(fmt.Errorf("BEGIN; SELECT 1: %w", err))
		return
	}
	h.mu.Lock()
	h.held++
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-ctx.Done():
		return
	}
	if _, err := conn.Exec(ctx, "COMMIT").ReadAll(); err != nil {
		h.addErr(fmt.Errorf("COMMIT: %w", err))
	}
}

func (h *Holder) addErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, err)
}

// Held returns how many connections got their BEGIN through and hold a
// transaction open (it does not go down on Release).
func (h *Holder) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// Errors returns the connection and query errors so far.
func (h *Holder) Errors() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// WaitHeld polls until Held() >= n, failing the test with the count and the
// errors on timeout.
func (h *Holder) WaitHeld(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, 10*time.Millisecond, func() (bool, string) {
		held := h.Held()
		return held >= n, fmt.Sprintf("holder: %d of %d transactions held; errors: %v", held, n, h.Errors())
	})
}

// Release commits every held transaction and closes every connection, then
// waits for all of it (at most about 10 s: queued holders that do not get
// through by then are cut off). It is idempotent.
func (h *Holder) Release() {
	h.once.Do(func() {
		close(h.release)
		done := make(chan struct{})
		go func() {
			h.wg.Wait()
			close(done)
		}()
		t := time.NewTimer(holderReleaseBudget)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			h.cancel()
			<-done
		}
		h.cancel()
	})
}
