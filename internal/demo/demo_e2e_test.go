package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the demo's concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemo_PagesExhaustionAndLeakThenLeavesNothingRunning runs the whole
// demo, as `make demo` does, against the real servers: about 70 s. It is
// opt-in (POOLWATCH_DEMO_E2E=1) because e2e/alerting already covers the
// same pipeline in `make test`; this one guards the demo's own script.
func TestDemo_PagesExhaustionAndLeakThenLeavesNothingRunning(t *testing.T) {
	if os.Getenv("POOLWATCH_DEMO_E2E") != "1" {
		t.Skip("set POOLWATCH_DEMO_E2E=1 to run the whole demo (about 70 s)")
	}
	testenv.RequireBinaries(t, "postgres", "pgbouncer", "prometheus", "alertmanager")
	bin := testenv.BuildPoolwatch(t)
	// The demo points TMPDIR at its own directory; give it back afterwards.
	// (Not a t.TempDir: the postgres user must be able to traverse it.)
	t.Setenv("TMPDIR", os.Getenv("TMPDIR"))

	var out syncBuffer
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
