package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// TestDemo_PagesExhaustionAndLeakThenLeavesNothingRunning runs the whole
// demo, as `make demo` does, against the real servers: about 70 s. It
// guards the README's first command; e2e/alerting covers the alerting
// pipeline itself.
func TestDemo_PagesExhaustionAndLeakThenLeavesNothingRunning(t *testing.T) {
	testenv.RequireBinaries(t, "postgres", "pgbouncer", "prometheus", "alertmanager")
	bin := testenv.BuildPoolwatch(t)
	// The demo points TMPDIR at its own directory; give it back afterwards.
	// (Not a t.TempDir: the postgres user must be able to traverse it.)
	t.Setenv("TMPDIR", os.Getenv("TMPDIR"))

	var out testenv.SyncBuffer
	code := run([]string{"-poolwatch", bin, "-dashboards", filepath.Join("..", "..", "dashboards")}, &out, &out)
	text := out.String()
	require.Equal(t, exitOK, code, text)

	for _, re := range []string{
		`PAGE  FIRING   PoolExhausted \(critical\)  target=bouncer pool=shop/app`,
		`PAGE  RESOLVED PoolExhausted \(critical\)  target=bouncer pool=shop/app`,
		`PAGE  FIRING   PoolConnectionLeak \(warning\)  target=bouncer pool=shop/app`,
		`PAGE  RESOLVED PoolConnectionLeak \(warning\)  target=bouncer pool=shop/app`,
		`poolwatch logs the culprit: target=bouncer pool=shop/app application_name=shop-web-7`,
		`bouncer  shop/app     \[##########\]   3/3   100%`,
		`: no process left\.`,
	} {
		require.Regexp(t, regexp.MustCompile(re), text)
	}
	m := regexp.MustCompile(`Removed (\S+)\.`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	_, err := os.Stat(strings.TrimSuffix(m[1], "."))
	require.True(t, os.IsNotExist(err), "the demo directory is gone")
}
