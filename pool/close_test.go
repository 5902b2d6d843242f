package pool_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/pool"
)

// closeBound is the deadline the tests give Close. Whatever the pool is
// stuck on outlives it.
const closeBound = 300 * time.Millisecond

// requireClosedByItsDeadline closes p with closeBound and checks that Close
// gave up waiting, in time, with an error saying so.
func requireClosedByItsDeadline(t *testing.T, p *pool.Pool, stuckOn string) {
	t.Helper()
	took, err := closeWithin(t, p, closeBound)
	t.Logf("Close with a %v deadline, %s: returned after %v", closeBound, stuckOn, took)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "the rest closes in the background")
	require.Less(t, took, closeBound+time.Second)
}

// requireBoundedCallFails runs a ping with a 200 ms budget and checks that
// it fails with the budget's error, in time.
func requireBoundedCallFails(t *testing.T, p *pool.Pool) {
	t.Helper()
	const budget = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	err := ping(ctx, p)
	took := time.Since(start)
	t.Logf("Do with a %v budget returned after %v: %v", budget, took, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, took, budget+time.Second)
}

// TestClose_EndsADialStuckInABlackholeWithinItsDeadline: the call gives up
// at its own deadline while its dial goes on in pgxpool's background (so
// that a slow server still yields a connection for the next call); Close
// ends that dial rather than wait for ConnectTimeout, here a minute.
func TestClose_EndsADialStuckInABlackholeWithinItsDeadline(t *testing.T) {
	checkGoroutines(t)
	proxy := testenv.StartProxy(t, pgServer(t).Addr())
	proxy.Blackhole(true)
	opts := testOptions(t, pgDSN(t, proxy.Addr))
	opts.MinConnections = 1
	opts.ConnectTimeout = time.Minute
	p, err := pool.New(opts)
	require.NoError(t, err)

	requireBoundedCallFails(t, p)
	require.Equal(t, 1, p.Stats().Open, "the dial goes on in the background")
	took, err := closeWithin(t, p, closeBound)
	t.Logf("Close with a %v deadline, a dial stuck in a blackhole: returned after %v", closeBound, took)
	require.NoError(t, err)
	require.Less(t, took, closeBound+time.Second)
	waitCleaned(t, p)
	require.Zero(t, p.Stats().Open)
}

// TestClose_ReturnsByItsDeadlineWhileAConnectIsStuckInABlockingPasswordRead:
// the password read here ignores its context and blocks in open(2) on a
// named pipe with no writer: the worst a connect hook can do. (The real
// reader refuses a named pipe at once; see the next test.)
func TestClose_ReturnsByItsDeadlineWhileAConnectIsStuckInABlockingPasswordRead(t *testing.T) {
	checkGoroutines(t)
	fifo := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	var reads atomic.Int64
	opts := testOptions(t, pgDSNWithoutPassword(t))
	opts.ConnectTimeout = time.Minute
	p, err := pool.NewWithHooks(opts, pool.Hooks{Password: func(context.Context) (string, error) {
		reads.Add(1)
		f, err := os.Open(fifo) // blocks until a writer opens the pipe
		if err != nil {
			return "", err
		}
		defer func() { _ = f.Close() }()
		b, err := io.ReadAll(f)
		return strings.TrimSpace(string(b)), err
	}})
	require.NoError(t, err)

	requireBoundedCallFails(t, p)
	require.Equal(t, int64(1), reads.Load())
	requireClosedByItsDeadline(t, p, "a connect blocked reading the password")

	// The read unblocks; the dial it belongs to sees that Close cancelled
	// it, and the background cleanup finishes.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = w.WriteString(monPass + "\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	waitCleaned(t, p)
	require.Zero(t, p.Stats().Open)
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
}

// pgDSNWithoutPassword is pgDSN with the password left out.
func pgDSNWithoutPassword(t *testing.T) string {
	return strings.Replace(pgDSN(t, ""), ":"+monPass+"@", "@", 1)
}

// TestDo_PasswordFileThatIsANamedPipeIsRefusedWithinTheBudget uses the real
// password reader: a named pipe is refused at once, not waited on, and not
// retried; once the pipe is replaced by a regular file, the next call works.
func TestDo_PasswordFileThatIsANamedPipeIsRefusedWithinTheBudget(t *testing.T) {
	checkGoroutines(t)
	pwFile := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, syscall.Mkfifo(pwFile, 0o600))
	opts := testOptions(t, pgDSNWithoutPassword(t))
	opts.Password = config.PasswordSource{File: pwFile}
	p := newPool(t, opts)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := ping(ctx, p)
	require.EqualError(t, err, `probe pool "`+t.Name()+`": acquire: read password: password file "`+pwFile+`" is a named pipe, not a regular file`)
	require.NoError(t, ctx.Err(), "refused before the budget ran out")
	s := p.Stats()
	require.Equal(t, uint64(0), s.AcquireRetries, "not retried")
	require.Equal(t, 0, s.Open)

	require.NoError(t, os.Remove(pwFile))
	require.NoError(t, os.WriteFile(pwFile, []byte(monPass+"\n"), 0o600))
	require.NoError(t, ping(context.Background(), p), "the fixed file is read by the next call")
	took, err := closeWithin(t, p, time.Second)
	require.NoError(t, err)
	t.Logf("Close took %v", took)
	waitCleaned(t, p)
}

func TestClose_ReturnsByItsDeadlineWhileACallbackIgnoresItsContext(t *testing.T) {
	checkGoroutines(t)
	p, err := pool.New(testOptions(t, pgDSN(t, "")))
	require.NoError(t, err)
	started := make(chan struct{})
	release := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- p.Do(context.Background(), func(_ context.Context, c *pgx.Conn) error {
			close(started)
			<-release // ignores its context
			return c.Ping(context.Background())
		})
	}()
	<-started
	requireClosedByItsDeadline(t, p, "a callback that ignores its context")
	require.Equal(t, 1, p.Stats().InUse, "the callback still has its connection")
	select {
	case <-p.Cleaned():
		t.Fatal("cleanup finished while a callback still held a connection")
	default:
	}
	require.ErrorIs(t, ping(context.Background(), p), pool.ErrClosed)

	close(release)
	require.NoError(t, <-result)
	waitCleaned(t, p)
	require.Zero(t, p.Stats().Open)
	pgServer(t).WaitBackends(t, appName(t), func(n int) bool { return n == 0 }, 10*time.Second)
}

// TestDo_TLSFileThatBlocksCostsTheDialItsDeadlineNotMore: pgconn reads the
// TLS files named in the DSN with plain blocking reads. A named pipe in
// their place holds one parse, not the calls, New or Close; once the pipe
// is replaced by the real file, the next call works.
func TestDo_TLSFileThatBlocksCostsTheDialItsDeadlineNotMore(t *testing.T) {
	checkGoroutines(t)
	ca := testenv.NewCA(t, "poolwatch test CA")
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o600))
	// sslmode=prefer: the test server has no TLS, so pgx falls back to
	// plain text, but it still reads the file.
	dsnWithCA := func(path string) string {
		return strings.Replace(pgDSN(t, ""), "sslmode=disable", "sslmode=prefer", 1) + "&sslrootcert=" + path
	}
	opts := testOptions(t, dsnWithCA(caFile))
	opts.ConnectTimeout = 300 * time.Millisecond
	opts.AcquireRetries = 0
	p := newPool(t, opts)

	require.NoError(t, os.Remove(caFile))
	require.NoError(t, syscall.Mkfifo(caFile, 0o600))
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ping(ctx, p)
		require.EqualError(t, err, `probe pool "`+t.Name()+`": acquire: read TLS files: gave up waiting: context deadline exceeded`)
		require.NoError(t, ctx.Err(), "bounded by ConnectTimeout, not by the call's budget")
		cancel()
	}
	require.Equal(t, 0, p.Stats().Open)

	// New reads the files too, with the same bound.
	newFifo := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, syscall.Mkfifo(newFifo, 0o600))
	newOpts := opts
	newOpts.DSN = dsnWithCA(newFifo)
	_, err := pool.New(newOpts)
	require.EqualError(t, err, `probe pool "`+t.Name()+`": read the TLS files named in the DSN: gave up waiting after 300ms`)

	// The blocked reads get their data and end; the pipe becomes a file.
	for _, fifo := range []string{caFile, newFifo} {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = w.Write(ca.CertPEM)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	require.NoError(t, os.Remove(caFile))
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o600))
	require.NoError(t, ping(context.Background(), p))
}
