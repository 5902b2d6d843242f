// Package hostile_test attacks the real poolwatch binary the way a hostile
// neighbour or a bad day would, against real PostgreSQL 15, PgBouncer 1.18
// and Prometheus: a password file that blocks, junk auto-databases, hostile
// scrape-timeout headers, floods of idle HTTP connections, secrets in a
// culprit's query, a server with no slot left, and thousands of targets.
// Each test reproduces one attack and checks what the user sees, that the
// agent recovers, and that nothing leaks.
//
// Lengths and counts that make an attack expensive are parameters: the
// defaults keep `make test` short; POOLWATCH_E2E_FULL=1 runs every attack
// at the size of the issue that reported it.
package hostile_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// Passwords of the tests' roles: distinctive, so that a test can assert
// that none of them ever shows up in the agent's log.
const (
	monPassword  = "Mon-H0stile-51c2"
	appPassword  = "App-H0stile-7d3e"
	statPassword = "Stat-H0stile-90ab"
)

// TestMain runs the tests without the -race agent's 1 s sleep at exit (see
// testenv.MainWithoutRaceExitSleep).
func TestMain(m *testing.M) { testenv.MainWithoutRaceExitSleep(m) }

// full reports whether POOLWATCH_E2E_FULL asks for the full-size attacks.
func full() bool {
	v, _ := strconv.ParseBool(os.Getenv("POOLWATCH_E2E_FULL"))
	return v
}

// size returns small, or big under POOLWATCH_E2E_FULL.
func size[T any](small, big T) T {
	if full() {
		return big
	}
	return small
}

// monitoredBouncer starts PostgreSQL with the role mon (pg_monitor,
// monPassword) and a PgBouncer in front of it with the database appdb and
// the stats user stats (statPassword).
func monitoredBouncer(t *testing.T) (*testenv.Postgres, *testenv.PgBouncer) {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		Databases:  map[string]string{"appdb": "dbname=postgres"},
		Users:      map[string]string{"stats": statPassword},
		StatsUsers: []string{"stats"},
	})
	return pg, pgb
}

// request sends a GET with header pairs and returns the status and body;
// safe from any goroutine (errors are returned, not reported).
func request(c *http.Client, url string, header ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventually is testenv.Eventually every 50 ms, naming what it waits for.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, timeout, 50*time.Millisecond, func() (bool, string) {
		ok, last := cond()
		return ok, what + ": last: " + last
	})
}

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list the agent's descriptors: %v", err)
	}
	return len(entries)
}

// rssBytes reads the resident set size of process pid from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the agent's status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// httpClient is the client of requests whose result a test ignores.
var httpClient = &http.Client{Timeout: 30 * time.Second}
