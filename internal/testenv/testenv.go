// Package testenv is the real-server test environment shared by poolwatch's
// tests: a throwaway PostgreSQL 15 cluster, a throwaway PgBouncer 1.18 in front
// of it, an in-process TCP fault proxy, and helpers to hold connections open.
//
// # Contracts
//
//   - Every Start* function registers a tb.Cleanup that stops the server and
//     removes its directory, so a failing test cleans up too. The Launch*
//     variants are for TestMain: they return a stop function instead.
//   - Child processes get SysProcAttr.Pdeathsig = SIGKILL, so a test binary
//     that dies (panic, timeout, SIGKILL) takes its servers with it. Directories
//     left by such a crash are removed by the next run (see sweepStale).
//   - When the test process runs as root, initdb, postgres and pgbouncer run
//     as the "postgres" system user, in a temporary directory owned by it.
//   - Ports are picked at run time by binding 127.0.0.1:0; nothing is
//     hard-coded. Everything listens on 127.0.0.1 only.
//   - Under CI=true a missing server binary fails the test; otherwise the test
//     is skipped (see RequireBinaries).
//
// # initdb cache
//
// initdb takes 1-16 s, so it runs at most once per process, into a template
// data directory that each cluster copies. The template is kept in
// $TMPDIR/poolwatch-testenv-cache-<euid>/ and is shared by concurrent and
// later test processes (it is created under a temporary name and renamed into
// place, so readers only ever see a complete template). Deleting that
// directory is always safe.
//
// Functions taking a testing.TB must be called from the test's goroutine,
// like tb.Fatal itself. Types document their own thread safety.
package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// ErrBinaryNotFound is wrapped by LookPath (and the Launch* functions) when a
// server binary is not installed.
var ErrBinaryNotFound = errors.New("testenv: binary not found")

// PostgresBinDir is where the PostgreSQL 15 binaries are looked up, unless
// the environment variable POOLWATCH_PG_BINDIR names another directory.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// InCI reports whether the CI environment variable is set to a true value
// ("true", "1", ...). Under CI a missing binary is a failure, never a skip.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// LookPath returns the absolute path of a server binary known to testenv:
//
//   - "postgres", "initdb" and any other PostgreSQL program: in
//     $POOLWATCH_PG_BINDIR or PostgresBinDir (never PATH, which may hold
//     another major version);
//   - "pgbouncer": PATH, then /usr/sbin/pgbouncer (a non-root PATH often
//     lacks /usr/sbin);
//   - "alertmanager": PATH as "prometheus-alertmanager" (Debian's name), then
//     "alertmanager";
//   - anything else ("promtool", "prometheus", ...): PATH.
//
// A missing binary yields an error wrapping ErrBinaryNotFound.
func LookPath(name string) (string, error) {
	var candidates []string
	switch name {
	case "postgres", "initdb", "pg_ctl", "psql", "pgbench", "pg_isready":
		dir := os.Getenv("POOLWATCH_PG_BINDIR")
		if dir == "" {
			dir = PostgresBinDir
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%w: %s (looked in %s)", ErrBinaryNotFound, name, dir)
	case "pgbouncer":
		candidates = []string{"pgbouncer", "/usr/sbin/pgbouncer"}
	case "alertmanager":
		candidates = []string{"prometheus-alertmanager", "alertmanager", "/usr/bin/prometheus-alertmanager"}
	default:
		candidates = []string{name}
	}
	for _, c := range candidates {
		if filepath.IsAbs(c) {
			if isExecutable(c) {
				return c, nil
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s (looked for %v)", ErrBinaryNotFound, name, candidates)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p) //nolint:gosec // only stats a binary path chosen by LookPath
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// RequireBinaries checks that every named binary is installed (see LookPath;
// "postgres" also checks initdb). When one is missing the test is skipped,
// or, under CI=true, failed with t.Fatal.
func RequireBinaries(tb testing.TB, names ...string) {
	tb.Helper()
	var missing []string
	for _, n := range names {
		check := []string{n}
		if n == "postgres" {
			check = append(check, "initdb")
		}
		for _, c := range check {
			if _, err := LookPath(c); err != nil {
				missing = append(missing, err.Error())
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	if InCI() {
		tb.Fatalf("required binaries missing under CI=true: %v", missing)
		return
	}
	tb.Skipf("required binaries missing (set CI=true to make this a failure): %v", missing)
}

// FreePort binds 127.0.0.1:0, closes the listener and returns the port the
// kernel picked. Another process can take the port before it is used, so
// the Start functions retry on a bind failure with a new port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freePort()
	if err != nil {
		tb.Fatalf("pick a free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port //nolint:errcheck,forcetypeassert // a TCP listener
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("close probe listener: %w", err)
	}
	return port, nil
}
