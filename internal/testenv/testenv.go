// Package testenv is the real-server test environment shared by poolwatch's
// tests: throwaway PostgreSQL 15 clusters, PgBouncer 1.18, Pgpool-II 4.3,
// Prometheus, Alertmanager and the agent itself, an in-process TCP fault proxy, helpers
// to hold connections open, and one poll helper (Eventually).
//
// The servers are started by internal/launch, which knows nothing of
// package testing; the Start*(tb) functions here wrap it and register a
// tb.Cleanup that closes what they started, so a failing test cleans up
// too. Functions taking a testing.TB must be called from the test's
// goroutine, like tb.Fatal itself. Types document their own thread safety.
//
// # Dependencies and the one opt-out
//
// A test that needs something from the machine says so with Require
// (Start* functions do it for their server). A missing dependency FAILS the
// test, under CI=true and outside it alike, with the apt packages that
// provide it: `make deps` installs them. The one way to skip instead is
// POOLWATCH_TEST_SKIP, a comma-separated list of dependency names (see
// launch.Dependencies: postgres, pgbouncer, pgpool, prometheus, alertmanager,
// chromium, make, and the heavy runtimes of the application tests, python,
// java and node): a test that needs a listed dependency is skipped, whether
// it is installed or not. CI never sets it: under CI=true a non-empty
// POOLWATCH_TEST_SKIP fails every test that consults it.
package testenv

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// SkipEnv is the environment variable of the one opt-out: a comma-separated
// list of dependency names whose tests are skipped (see the package doc).
const SkipEnv = "POOLWATCH_TEST_SKIP"

// InCI reports whether the CI environment variable is set to a true value
// ("true", "1", ...).
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Require checks that every named dependency is installed (a dependency's
// name, or the name of a binary it provides: "promtool" is "prometheus").
// It skips the test when POOLWATCH_TEST_SKIP lists one of them, and
// otherwise fails it when one is missing, saying what to install.
func Require(tb testing.TB, names ...string) {
	tb.Helper()
	deps := make([]launch.Dependency, 0, len(names))
	for _, n := range names {
		d, ok := launch.FindDependency(n)
		if !ok {
			tb.Fatalf("testenv: unknown dependency %q (known: %s)", n, strings.Join(dependencyNames(), ", "))
			return
		}
		deps = append(deps, d)
	}
	requireDeps(tb, deps, os.Getenv(SkipEnv), InCI())
}

// RequireBinaries is Require: its names are dependencies or the binaries
// they provide.
func RequireBinaries(tb testing.TB, names ...string) {
	tb.Helper()
	Require(tb, names...)
}

// requireDeps is Require's policy, with the opt-out list and CI given.
func requireDeps(tb testing.TB, deps []launch.Dependency, skipList string, ci bool) {
	tb.Helper()
	skipped, missing, err := sortDeps(deps, skipList, ci)
	switch {
	case err != nil:
		tb.Fatalf("%v", err)
	case len(skipped) > 0:
		tb.Skipf("%s=%s: skipping a test that needs %s", SkipEnv, skipList, strings.Join(skipped, ", "))
	case len(missing) > 0:
		tb.Fatalf("%s", missingMessage(missing))
	}
}

// Optional is Require for a dependency a test can do without: it reports
// false (and logs why) when POOLWATCH_TEST_SKIP lists it, true when it is
// installed, and fails the test when it is missing.
func Optional(tb testing.TB, name string) bool {
	tb.Helper()
	d, ok := launch.FindDependency(name)
	if !ok {
		tb.Fatalf("testenv: unknown dependency %q (known: %s)", name, strings.Join(dependencyNames(), ", "))
		return false
	}
	skipList := os.Getenv(SkipEnv)
	skipped, missing, err := sortDeps([]launch.Dependency{d}, skipList, InCI())
	switch {
	case err != nil:
		tb.Fatalf("%v", err)
	case len(skipped) > 0:
		tb.Logf("%s=%s: going on without %s", SkipEnv, skipList, name)
		return false
	case len(missing) > 0:
		tb.Fatalf("%s", missingMessage(missing))
	}
	return true
}

// sortDeps returns the deps the opt-out list names and the failed checks of
// the others.
func sortDeps(deps []launch.Dependency, skipList string, ci bool) (skipped, missing []string, err error) {
	skip, err := parseSkip(skipList, ci)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range deps {
		if slices.Contains(skip, d.Name) {
			skipped = append(skipped, d.Name)
		} else if err := d.Check(); err != nil {
			missing = append(missing, err.Error())
		}
	}
	return skipped, missing, nil
}

func missingMessage(missing []string) string {
	return fmt.Sprintf("missing dependencies:\n\t%s\nInstall them with `make deps`, or skip the tests that need them with %s=NAME,... (names: %s).",
		strings.Join(missing, "\n\t"), SkipEnv, strings.Join(dependencyNames(), ","))
}

// parseSkip reads the opt-out list. Unknown names are an error (a typo
// would otherwise make a test fail for a dependency the user meant to
// skip), and so is any list under CI.
func parseSkip(list string, ci bool) ([]string, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return nil, nil
	}
	if ci {
		return nil, fmt.Errorf("%s=%s is set under CI=true: CI runs every test", SkipEnv, list)
	}
	var names []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(dependencyNames(), n) {
			return nil, fmt.Errorf("%s names an unknown dependency %q (known: %s)", SkipEnv, n, strings.Join(dependencyNames(), ","))
		}
		names = append(names, n)
	}
	return names, nil
}

func dependencyNames() []string {
	var names []string
	for _, d := range launch.Dependencies() {
		names = append(names, d.Name)
	}
	return names
}

// LookPath is launch.LookPath: the absolute path of a program.
func LookPath(name string) (string, error) { return launch.LookPath(name) }

// FreePort returns a loopback port that was free a moment ago (see
// launch.FreePort), failing the test if none can be had.
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := launch.FreePort()
	if err != nil {
		tb.Fatalf("pick a free port: %v", err)
	}
	return p
}

// Eventually calls cond at once and then every interval until it reports
// true, and fails the test with cond's last detail when timeout passes
// first. cond runs on the test's goroutine and may call tb.Fatal itself.
// This is the one way tests here wait for something to happen: never a
// bare sleep.
func Eventually(tb testing.TB, timeout, interval time.Duration, cond func() (ok bool, detail string)) {
	tb.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for polls := 1; ; polls++ {
		ok, detail := cond()
		if ok {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			tb.Fatalf("not within %v (%d polls): %s", timeout, polls, detail)
			return
		}
		time.Sleep(min(interval, left))
	}
}

// closeOnCleanup closes c when tb's test ends, failing it if Close does.
func closeOnCleanup(tb testing.TB, what string, c io.Closer) {
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("clean up %s: %v", what, err)
		}
	})
}
