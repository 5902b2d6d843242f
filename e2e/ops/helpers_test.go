// Package ops_test runs the real poolwatch binary against real PostgreSQL
// and PgBouncer servers and checks how it behaves in production: config
// reload, least privilege, TLS to targets, web security and shutdown.
package ops_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// Passwords used by the tests' roles. They are distinctive so that a test
// can assert that none of them ever shows up in the agent's log.
const (
	monPassword  = "Mon-S3cret-8c1f"
	appPassword  = "App-S3cret-77ad"
	statPassword = "Stat-S3cret-2e90"
)

// eventually is testenv.Eventually every 50 ms, naming what it waits for.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, timeout, 50*time.Millisecond, func() (bool, string) {
		ok, last := cond()
		return ok, what + ": last: " + last
	})
}

// replaceFile replaces a file (the agent's config, a certificate...)
// atomically: write a temp file next to it, then rename, so a reader never
// sees it half-written.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s into place: %v", tmp, err)
	}
}

// request sends method to url and returns the status and body. It is safe
// to call from any goroutine: errors are returned, not reported.
func request(c *http.Client, method, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, string(b), nil
}

// lifecycle is the flag that serves POST /-/reload; agents whose test
// reloads over HTTP are started with it.
const lifecycle = "--web.enable-lifecycle"

// reload POSTs /-/reload and returns the status and body.
func reload(t *testing.T, pw *testenv.Poolwatch) (int, string) {
	t.Helper()
	code, body, err := request(http.DefaultClient, http.MethodPost, pw.URL+"/-/reload")
	if err != nil {
		t.Fatalf("POST /-/reload: %v", err)
	}
	return code, body
}

// backendPIDs returns the sorted pids of the client backends with this
// application_name.
func backendPIDs(t *testing.T, pg *testenv.Postgres, app string) []int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := pg.AdminConn(t)
	rows, err := c.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND application_name = $1 ORDER BY pid`, app)
	if err != nil {
		t.Fatalf("list backends of %q: %v", app, err)
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			t.Fatalf("scan pid: %v", err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list backends of %q: %v", app, err)
	}
	return pids
}

// TestMain runs the tests without the -race agent's 1 s sleep at exit (see
// testenv.MainWithoutRaceExitSleep).
func TestMain(m *testing.M) { testenv.MainWithoutRaceExitSleep(m) }

// monDSNVia returns the DSN of mon (monPassword) on pg's postgres
// database through proxy, with application_name app.
func monDSNVia(t *testing.T, proxy *testenv.Proxy, pg *testenv.Postgres, app string) string {
	t.Helper()
	dsn, err := proxy.DSN(pg.DSN("mon", monPassword, "postgres") + "&application_name=" + app)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// monRole creates the least-privileged monitoring role: LOGIN and
// pg_monitor, nothing else.
func monRole(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
}

// pgTarget renders one postgres target entry with its own application_name,
// so that its backends can be told apart in pg_stat_activity.
func pgTarget(name string, pg *testenv.Postgres, app string, extra string) string {
	return fmt.Sprintf(`  - name: %s
    kind: postgres
    dsn: %s&application_name=%s
%s`, name, pg.DSN("mon", monPassword, "postgres"), app, extra)
}
