package hostile_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// scaleConfig renders a configuration of the two real targets and n-2
// targets at a closed port.
func scaleConfig(pg *testenv.Postgres, pgb *testenv.PgBouncer, closedPort, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `defaults:
  scrape_timeout: 2s
targets:
  - name: pg
    kind: postgres
    dsn: %s
  - name: bouncer
    kind: pgbouncer
    dsn: %s
`, pg.DSN("mon", monPassword, "postgres"), pgb.DSN("stats", statPassword, "pgbouncer"))
	for i := range n - 2 {
		fmt.Fprintf(&b, "  - name: closed-%05d\n    kind: postgres\n    dsn: postgres://mon:%s@127.0.0.1:%d/postgres?sslmode=disable\n", i, monPassword, closedPort)
	}
	return b.String()
}

// selfSample is what the agent says of itself on one /metrics answer.
type selfSample struct {
	took       time.Duration
	bytes      int
	up, down   int
	goroutines float64
	cpu        float64
	rss        int64
	liveDown   []string
}

func sampleSelf(t *testing.T, pw *testenv.Poolwatch, header ...string) selfSample {
	t.Helper()
	start := time.Now()
	code, body, err := request(httpClient, pw.URL+"/metrics", header...)
	took := time.Since(start)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	m := testenv.ParseMetrics(t, body)
	s := selfSample{took: took, bytes: len(body), rss: rssBytes(t, pw.PID())}
	for _, mt := range m["poolwatch_target_up"].GetMetric() {
		if mt.GetGauge().GetValue() == 1 {
			s.up++
		} else {
			s.down++
		}
	}
	for _, live := range []string{"pg", "bouncer"} {
		if up, _ := m.Get(t, "poolwatch_target_up", "target", live); up != 1 {
			s.liveDown = append(s.liveDown, live)
		}
	}
	s.goroutines = m.Must(t, "go_goroutines")
	s.cpu = m.Must(t, "process_cpu_seconds_total")
	return s
}

// TestScale_ThousandsOfTargetsFitTheScrapeAndGiveMemoryBack runs the agent
// with 2 real targets, reloads it to thousands (all but 2 at a closed
// port), scrapes it as a Prometheus with a 3 s timeout would, and reloads
// it back to 2: every scrape answers within the timeout with every target
// present (the 2 real ones up), the log holds one failure line per target,
// not one per scrape, and the resident memory comes back within 2× of what
// it was with 2 targets. (Before the fix, 10,000 targets took 5.3–5.9 s per
// scrape, logged 10,000 warnings per scrape, and memory stayed at 636 MB
// after going back to 2 targets from a start of 20 MB.)
//
// 1,000 targets by default; POOLWATCH_E2E_FULL=1 runs the 10,000.
// The figures in docs/performance.md come from the full run.
func TestScale_ThousandsOfTargetsFitTheScrapeAndGiveMemoryBack(t *testing.T) {
	n := size(1000, 10000)
	if testenv.RaceBuild() {
		n = size(300, 10000) // the race detector multiplies CPU and memory
	}
	pg, pgb := monitoredBouncer(t)
	closedPort := testenv.FreePort(t) // nothing listens there
	pw := testenv.StartPoolwatch(t, scaleConfig(pg, pgb, closedPort, 2), "--web.enable-lifecycle")
	header := []string{"X-Prometheus-Scrape-Timeout-Seconds", "3"}
	for range 3 {
		sampleSelf(t, pw, header...)
	}
	small := sampleSelf(t, pw, header...)
	t.Logf("2 targets: RSS %.1f MB, %v goroutines, /metrics %v", mb(small.rss), small.goroutines, small.took.Round(time.Millisecond))

	reload := func(cfg string) {
		t.Helper()
		if err := os.WriteFile(pw.ConfigPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		code, body, err := func() (int, string, error) {
			req, _ := http.NewRequest(http.MethodPost, pw.URL+"/-/reload", nil)
			resp, err := httpClient.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			return resp.StatusCode, "", nil
		}()
		if err != nil || code != http.StatusOK {
			t.Fatalf("reload: %d %s %v", code, body, err)
		}
	}
	start := time.Now()
	reload(scaleConfig(pg, pgb, closedPort, n))
	loaded := sampleSelfNoScrape(t, pw)
	t.Logf("%d targets loaded in %v: RSS %.1f MB", n, time.Since(start).Round(time.Millisecond), mb(loaded))

	const scrapes = 5
	var worst time.Duration
	var last selfSample
	bothUp := false
	var afterFirst float64
	prevCPU := small.cpu
	for i := range scrapes {
		s := sampleSelf(t, pw, header...)
		t.Logf("%d targets, scrape %d: %v, %.1f MB answer, up %d down %d (live ones down: %v), %v goroutines, CPU %.2f s, RSS %.1f MB",
			n, i+1, s.took.Round(time.Millisecond), float64(s.bytes)/1e6, s.up, s.down, s.liveDown, s.goroutines, s.cpu-prevCPU, mb(s.rss))
		prevCPU = s.cpu
		if i == 0 {
			afterFirst = s.cpu
		}
		worst = max(worst, s.took)
		if s.up+s.down != n || s.up > 2 {
			t.Errorf("scrape %d: %d up and %d down, want every one of %d targets, at most the 2 real ones up", i+1, s.up, s.down, n)
		}
		bothUp = bothUp || s.up == 2
		last = s
	}
	// Timings are measurements, not assertions (on a shared machine the
	// CPU a scrape gets varies): the answer is bounded by the request's
	// budget, what does not fit is down for that request only, and the
	// live targets start first.
	t.Logf("slowest of %d scrapes of %d targets: %v (Prometheus' timeout here: 3 s)", scrapes, n, worst)
	switch {
	case !bothUp && full():
		// At 10,000 targets the CPU a scrape needs (docs/performance.md)
		// is more than a shared 2-core machine may give within the budget:
		// the live rounds start first, but may not end in time.
		t.Logf("no scrape of %d had both live targets up within its budget", scrapes)
	case !bothUp:
		t.Errorf("no scrape of %d had both live targets up: they must start ahead of the dead ones", scrapes)
	}
	t.Logf("per target: %.1f KB of RSS, %.2f goroutines, %.3f ms of CPU per scrape (the last %d scrapes; the first one retries every dead target)",
		float64(last.rss-small.rss)/1024/float64(n), (last.goroutines-small.goroutines)/float64(n),
		1000*(last.cpu-afterFirst)/float64(scrapes-1)/float64(n), scrapes-1)
	if lines := strings.Count(pw.Logs(), `msg="target scrape failed"`); lines > n {
		t.Errorf("%d failure lines after %d scrapes of %d targets, want at most one per target", lines, scrapes, n)
	}

	reload(scaleConfig(pg, pgb, closedPort, 2))
	var rss int64
	if testenv.RaceBuild() {
		// The race detector's shadow memory is never given back.
		eventually(t, time.Minute, "the reload back to 2 targets", func() (bool, string) {
			s := sampleSelf(t, pw, header...)
			return s.up+s.down == 2, fmt.Sprintf("%d targets", s.up+s.down)
		})
		t.Logf("race build: RSS %.1f MB back at 2 targets, not compared with the start", mb(rssBytes(t, pw.PID())))
		pw.StopAndCheck(t, monPassword, statPassword)
		return
	}
	eventually(t, 2*time.Minute, "RSS back within 2× of the 2-target agent's", func() (bool, string) {
		rss = rssBytes(t, pw.PID())
		return rss <= 2*small.rss, fmt.Sprintf("RSS %.1f MB, 2-target start %.1f MB", mb(rss), mb(small.rss))
	})
	after := sampleSelf(t, pw, header...)
	t.Logf("back to 2 targets: RSS %.1f MB (start %.1f MB), %v goroutines (start %v)", mb(after.rss), mb(small.rss), after.goroutines, small.goroutines)
	if after.up != 2 || after.down != 0 {
		t.Errorf("back to 2 targets: %d up, %d down", after.up, after.down)
	}
	if after.goroutines > small.goroutines+10 {
		t.Errorf("%v goroutines back at 2 targets, want about %v", after.goroutines, small.goroutines)
	}
	pw.StopAndCheck(t, monPassword, statPassword)
}

// sampleSelfNoScrape reads the agent's RSS without scraping it.
func sampleSelfNoScrape(t *testing.T, pw *testenv.Poolwatch) int64 {
	t.Helper()
	return rssBytes(t, pw.PID())
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
