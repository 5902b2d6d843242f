// Package demo is the end-to-end test of `make demo` (internal/demo): the
// demo program, built as `go run` builds it, runs its whole script against
// real PostgreSQL, PgBouncer, Prometheus and Alertmanager, takes its
// screenshot with headless Chromium, and must leave nothing running. About
// 2 min. It guards the README's first command; e2e/alerting covers the
// alerting pipeline itself, e2e/founding the retry-loop leak.
package demo

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// repoRoot is the repository root, from this package's directory.
const repoRoot = "../.."

// demoBudget bounds the whole run; the script's own phases are bounded
// too, and the demo cleans up on SIGTERM.
const demoBudget = 4 * time.Minute

func TestDemo_PagesExhaustionAndLeakThenLeavesNothingRunning(t *testing.T) {
	testenv.Require(t, "postgres", "pgbouncer", "prometheus", "alertmanager", "python")
	screenshot := testenv.Optional(t, "chromium")
	pw := testenv.BuildPoolwatch(t)
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", bin, "./internal/demo")
	build.Dir = repoRoot
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./internal/demo: %s", out)

	args := []string{"-poolwatch", pw, "-dashboards", "dashboards"}
	shot := filepath.Join(t.TempDir(), "alerts.png")
	if screenshot {
		args = append(args, "-screenshot", shot)
	}
	ctx, cancel := context.WithTimeout(context.Background(), demoBudget)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = repoRoot
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // the demo cleans up on SIGINT
	cmd.WaitDelay = 30 * time.Second
	b, err := cmd.CombinedOutput()
	text := string(b)
	require.NoError(t, err, text)

	for _, re := range []string{
		`PAGE  FIRING   PoolExhausted \(critical\)  target=bouncer pool=shop/app`,
		`PAGE  RESOLVED PoolExhausted \(critical\)  target=bouncer pool=shop/app`,
		`PAGE  FIRING   PoolConnectionLeak \(warning\)  target=bouncer pool=shop/app`,
		`PAGE  RESOLVED PoolConnectionLeak \(warning\)  target=bouncer pool=shop/app`,
		`poolwatch logs the culprit: target=bouncer pool=shop/app application_name=shop-web-7`,
		// The retry-loop scene: the page, the app's own error (in either
		// order: the short rules' 5 s lead is the margin), the fix.
		`PAGE  FIRING   PoolUnaccountedConnections \(critical\)  target=orders-api pool=default`,
		`orders-api logs: \S+ ERROR getconn failed \(1 so far\): psycopg2\.pool\.PoolError: connection pool exhausted`,
		`poolwatch paged \d+\.\ds (before|after) orders-api's first "connection pool exhausted" error`,
		`PAGE  RESOLVED PoolUnaccountedConnections \(critical\)  target=orders-api pool=default`,
		`bouncer  shop/app     \[##########\]   3/3   100%`,
		`: no process left\.`,
	} {
		require.Regexp(t, regexp.MustCompile(re), text)
	}
	// One page per incident: the exhaustion (two reasons) and the leak
	// (seen through PgBouncer, on the server and in the application pool)
	// each open exactly one page, and close it once.
	for _, re := range []string{
		`PAGE  FIRING   PoolExhausted `, `PAGE  RESOLVED PoolExhausted `,
		`PAGE  FIRING   PoolConnectionLeak `, `PAGE  RESOLVED PoolConnectionLeak `,
	} {
		require.Len(t, regexp.MustCompile(re).FindAllString(text, -1), 1, "%q: one page per incident\n%s", re, text)
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "PAGE  ") || strings.Contains(line, "  +   ") || strings.Contains(line, " fired ") {
			t.Log(line)
		}
	}
	require.Regexp(t, `PAGE  FIRING   PoolConnectionLeak \(warning\)  target=bouncer pool=shop/app  .*\[\+\d+: .*pg/server`, text,
		"the leak's page names its other views")
	m := regexp.MustCompile(`Removed (\S+)\.`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	_, err = os.Stat(strings.TrimSuffix(m[1], "."))
	require.True(t, os.IsNotExist(err), "the demo directory is gone")

	if screenshot {
		require.Regexp(t, `screenshot written to `+regexp.QuoteMeta(shot), text)
		f, err := os.Open(shot)
		require.NoError(t, err)
		defer f.Close()
		cfg, err := png.DecodeConfig(f)
		require.NoError(t, err, "the screenshot is a PNG")
		require.Equal(t, 1280, cfg.Width)
		require.Equal(t, 760, cfg.Height)
	}
}
