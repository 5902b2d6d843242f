package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// crashHelperEnv makes the test binary act as a test process that gets
// killed (see TestStartPostgres_ServerDiesWhenTestProcessIsKilled).
const crashHelperEnv = "POOLWATCH_TESTENV_CRASH_HELPER"

// sharedCluster is the cluster, started on first use, for tests that only
// need their own roles and databases on some PostgreSQL. TestMain stops it.
var sharedCluster struct {
	once sync.Once
	pg   *Postgres
	stop func()
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	code := m.Run()
	if sharedCluster.stop != nil {
		sharedCluster.stop()
	}
	if code == 0 && os.Getenv(crashHelperEnv) == "" {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines left after all tests: %v\n", err)
			return 1
		}
	}
	return code
}

// sharedPG returns the shared cluster, skipping (or failing under CI) when
// PostgreSQL is not installed.
func sharedPG(t *testing.T) *Postgres {
	t.Helper()
	RequireBinaries(t, "postgres")
	sharedCluster.once.Do(func() {
		start := time.Now()
		sharedCluster.pg, sharedCluster.stop, sharedCluster.err = LaunchPostgres(PostgresOptions{})
		t.Logf("shared postgres ready in %v", time.Since(start).Round(time.Millisecond))
	})
	if sharedCluster.err != nil {
		t.Fatalf("shared postgres: %v", sharedCluster.err)
	}
	return sharedCluster.pg
}

// uniqueName returns a lower-case identifier unique to this test run.
func uniqueName(t *testing.T, prefix string) string {
	t.Helper()
	return fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// fakeTB records Skip and Fatal instead of ending the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
}

func TestRequireBinaries_SkipsOutsideCIAndFailsUnderCI(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeTB{TB: t}
	RequireBinaries(f, "no-such-binary-poolwatch")
	require.True(t, f.skipped, "outside CI a missing binary skips")
	require.False(t, f.failed)
	require.Contains(t, f.msg, "no-such-binary-poolwatch")

	t.Setenv("CI", "true")
	f = &fakeTB{TB: t}
	RequireBinaries(f, "no-such-binary-poolwatch")
	require.True(t, f.failed, "under CI=true a missing binary fails")
	require.False(t, f.skipped)
	require.Contains(t, f.msg, "no-such-binary-poolwatch")
}

func TestLookPath_FindsTheInstalledServers(t *testing.T) {
	RequireBinaries(t, "postgres", "pgbouncer", "promtool", "prometheus", "alertmanager")
	for name, want := range map[string]string{
		"postgres":     filepath.Join(PostgresBinDir, "postgres"),
		"initdb":       filepath.Join(PostgresBinDir, "initdb"),
		"pgbouncer":    "pgbouncer",
		"promtool":     "promtool",
		"prometheus":   "prometheus",
		"alertmanager": "prometheus-alertmanager",
	} {
		got, err := LookPath(name)
		require.NoError(t, err, name)
		require.True(t, filepath.IsAbs(got), "%s: %s is absolute", name, got)
		require.True(t, strings.HasSuffix(got, want), "%s: %s ends with %s", name, got, want)
	}
	_, err := LookPath("no-such-binary-poolwatch")
	require.ErrorIs(t, err, ErrBinaryNotFound)
}

func TestFreePort_ReturnsAPortThatCanBeBound(t *testing.T) {
	port := FreePort(t)
	require.Greater(t, port, 0)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestSweepStale_RemovesOnlyDirsOfDeadProcesses(t *testing.T) {
	tmp := t.TempDir()
	// A pid that belonged to a process that has exited. The kernel may hand
	// it out again at once; try a few until one stays free.
	deadPID := 0
	for range 20 {
		dead := exec.Command("true")
		require.NoError(t, dead.Run())
		if !pidAlive(dead.Process.Pid) {
			deadPID = dead.Process.Pid
			break
		}
	}
	require.NotZero(t, deadPID, "every exited pid was reused at once")
	mk := func(name string) string {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.MkdirAll(filepath.Join(p, "data"), 0o700))
		return p
	}
	stale := mk(fmt.Sprintf("%spg-%d-123", tempPrefix, deadPID))
	mine := mk(fmt.Sprintf("%spg-%d-456", tempPrefix, os.Getpid()))
	// A dead owner but a live postmaster (here: this process) is kept.
	guarded := mk(fmt.Sprintf("%spg-%d-789", tempPrefix, deadPID))
	require.NoError(t, os.WriteFile(filepath.Join(guarded, "data", "postmaster.pid"), []byte(fmt.Sprintf("%d\n/x\n", os.Getpid())), 0o600))
	other := mk("somebody-else-1-2")

	removed := sweepStale(tmp)
	require.Equal(t, []string{stale}, removed)
	for _, keep := range []string{mine, guarded, other} {
		_, err := os.Stat(keep)
		require.NoError(t, err, keep)
	}
}
