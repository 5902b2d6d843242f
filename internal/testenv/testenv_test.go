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

	"github.com/poolwatch/poolwatch/internal/launch"
)

// crashHelperEnv makes the test binary act as a test process that gets
// killed (see TestStartPostgres_ServerDiesWhenTestProcessIsKilled).
const crashHelperEnv = "POOLWATCH_TESTENV_CRASH_HELPER"

// sharedCluster is the cluster, started on first use, for tests that only
// need their own roles and databases on some PostgreSQL. TestMain stops it.
var sharedCluster struct {
	once sync.Once
	pg   *Postgres
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	code := m.Run()
	if sharedCluster.pg != nil {
		if err := sharedCluster.pg.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop the shared cluster: %v\n", err)
		}
	}
	if code == 0 && os.Getenv(crashHelperEnv) == "" {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines left after all tests: %v\n", err)
			return 1
		}
	}
	return code
}

// sharedPG returns the shared cluster, failing or skipping as Require does
// when PostgreSQL is not installed.
func sharedPG(t *testing.T) *Postgres {
	t.Helper()
	Require(t, "postgres")
	sharedCluster.once.Do(func() {
		start := time.Now()
		pg, err := launch.StartPostgres(PostgresOptions{})
		if err == nil {
			sharedCluster.pg = &Postgres{pg}
		}
		sharedCluster.err = err
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

// fakeTB records Skipf, Fatal and Fatalf instead of ending the goroutine.
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
func (f *fakeTB) Fatal(args ...any) { f.failed, f.msg = true, fmt.Sprint(args...) }

// missingDep is a dependency that no machine has.
var missingDep = launch.Dependency{Name: "pgbouncer", Binaries: []string{"no-such-binary-poolwatch"}, Apt: []string{"pgbouncer"}}

func TestRequire_FailsOnAMissingDependencyInAndOutsideCIWithTheInstallHint(t *testing.T) {
	for _, ci := range []bool{false, true} {
		f := &fakeTB{TB: t}
		requireDeps(f, []launch.Dependency{missingDep}, "", ci)
		require.True(t, f.failed, "CI=%v: a missing dependency fails", ci)
		require.False(t, f.skipped)
		require.Contains(t, f.msg, "no-such-binary-poolwatch")
		require.Contains(t, f.msg, "`make deps`")
		require.Contains(t, f.msg, "apt package pgbouncer")
		require.Contains(t, f.msg, SkipEnv+"=NAME")
	}
}

func TestRequire_SkipsWhatThePOOLWATCH_TEST_SKIPListNames(t *testing.T) {
	f := &fakeTB{TB: t}
	requireDeps(f, []launch.Dependency{missingDep}, "chromium, pgbouncer", false)
	require.True(t, f.skipped, "an opted-out dependency skips, installed or not")
	require.False(t, f.failed)
	require.Contains(t, f.msg, "needs pgbouncer")

	f = &fakeTB{TB: t}
	requireDeps(f, []launch.Dependency{{Name: "prometheus", Binaries: []string{"sh"}}}, "pgbouncer", false)
	require.False(t, f.skipped || f.failed, "a dependency that is not listed and is installed runs")
}

func TestRequire_RejectsAnOptOutUnderCIAndAnUnknownName(t *testing.T) {
	f := &fakeTB{TB: t}
	requireDeps(f, []launch.Dependency{missingDep}, "pgbouncer", true)
	require.True(t, f.failed, "CI never opts out")
	require.False(t, f.skipped)
	require.Contains(t, f.msg, "under CI=true")

	f = &fakeTB{TB: t}
	requireDeps(f, nil, "pgbouncr", false)
	require.True(t, f.failed, "a typo must not silently run or skip")
	require.Contains(t, f.msg, `unknown dependency "pgbouncr"`)

	t.Setenv("CI", "")
	t.Setenv(SkipEnv, "")
	f = &fakeTB{TB: t}
	Require(f, "no-such-dependency")
	require.True(t, f.failed)
	require.Contains(t, f.msg, "known: postgres, pgbouncer")
}

func TestRequire_FailsWhenPostgreSQLIsNotWhereItIsLookedFor(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv(SkipEnv, "")
	t.Setenv("POOLWATCH_PG_BINDIR", t.TempDir())
	f := &fakeTB{TB: t}
	Require(f, "postgres")
	require.True(t, f.failed)
	require.Contains(t, f.msg, "postgres is not installed")
	require.Contains(t, f.msg, "apt package postgresql-15")
}

func TestLookPath_FindsTheInstalledServers(t *testing.T) {
	Require(t, "postgres", "pgbouncer", "prometheus", "alertmanager")
	for name, want := range map[string]string{
		"postgres":     filepath.Join(launch.PostgresBinDir, "postgres"),
		"initdb":       filepath.Join(launch.PostgresBinDir, "initdb"),
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
}

func TestEventually_ReturnsOnceTheConditionHoldsAndFailsWithTheLastDetail(t *testing.T) {
	calls := 0
	Eventually(t, time.Second, time.Millisecond, func() (bool, string) {
		calls++
		return calls == 3, ""
	})
	require.Equal(t, 3, calls)

	f := &fakeTB{TB: t}
	calls = 0
	start := time.Now()
	Eventually(f, 50*time.Millisecond, 10*time.Millisecond, func() (bool, string) {
		calls++
		return false, fmt.Sprintf("attempt %d", calls)
	})
	require.True(t, f.failed)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	require.Contains(t, f.msg, fmt.Sprintf("not within 50ms (%d polls): attempt %d", calls, calls))
	require.GreaterOrEqual(t, calls, 2)
}

func TestFreePort_ReturnsAPortThatCanBeBound(t *testing.T) {
	port := FreePort(t)
	require.Greater(t, port, 0)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestOptional_IsFalseWhenOptedOutTrueWhenInstalledAndFailsWhenMissing(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv(SkipEnv, "make")
	f := &fakeTB{TB: t}
	require.False(t, Optional(f, "make"))
	require.False(t, f.failed || f.skipped)

	t.Setenv(SkipEnv, "")
	if d, _ := launch.FindDependency("make"); d.Check() == nil { // installed wherever make test runs
		require.True(t, Optional(f, "make"))
	}
	t.Setenv("POOLWATCH_PG_BINDIR", t.TempDir())
	f = &fakeTB{TB: t}
	Optional(f, "postgres")
	require.True(t, f.failed)
	require.Contains(t, f.msg, "make deps")
}

// TestDependencies_MakeDepsInstallsEveryAptPackage keeps the Makefile's
// package list and launch.Dependencies in step: whatever a test can
// Require, `make deps` installs (make itself excepted: it runs make deps).
func TestDependencies_MakeDepsInstallsEveryAptPackage(t *testing.T) {
	Require(t, "make")
	makeBin, err := LookPath("make")
	require.NoError(t, err)
	cmd := exec.Command(makeBin, "--no-print-directory", "-s", "-C", "../..", "--eval", "print-apt-packages: ; @echo $(APT_PACKAGES)", "print-apt-packages") //nolint:gosec // make from LookPath
	cmd.Env = append(os.Environ(), "MAKEFLAGS=", "MAKELEVEL=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	installed := strings.Fields(string(out))
	makefile, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	if strings.Contains(string(makefile), `missing="$$missing postgresql-15"`) {
		installed = append(installed, "postgresql-15") // deps-apt checks it by its binary's path
	}
	if strings.Contains(string(makefile), `missing="$$missing npm"`) {
		installed = append(installed, "npm") // deps-apt checks it by its binary: NodeSource's nodejs has it
	}
	for _, d := range launch.Dependencies() {
		if d.Name == "make" {
			continue
		}
		for _, pkg := range d.Apt {
			require.Contains(t, installed, pkg, "dependency %s: make deps does not install apt package %s", d.Name, pkg)
		}
		if d.GoInstall != "" {
			require.Contains(t, string(makefile), strings.Split(d.GoInstall, "@")[0], "dependency %s: make deps does not go install it", d.Name)
			require.Contains(t, string(makefile), strings.Split(d.GoInstall, "@")[1], "dependency %s: make deps installs another version", d.Name)
		}
	}
}
