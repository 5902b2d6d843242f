package hostile_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// newConnections sums poolwatch_probe_pool_new_connections_total over the
// targets: the connections the agent has opened to them.
func newConnections(t *testing.T, m testenv.Metrics, targets ...string) float64 {
	t.Helper()
	var n float64
	for _, tg := range targets {
		n += m.Must(t, "poolwatch_probe_pool_new_connections_total", "target", tg)
	}
	return n
}

// TestHeader_AHostileScrapeTimeoutCannotFailOtherScrapesNorForceReconnects
// has 4 senders flood /metrics with X-Prometheus-Scrape-Timeout-Seconds:
// 0.001, which any HTTP client can send, while a Prometheus-like client
// scrapes twice a second: no normal scrape sees a target down, and the
// agent opens no new connection to any target. One target has
// min_scrape_interval, whose cached round a cut-short round used to
// poison for the whole interval. (Before the fix, a round took its
// deadline from the request that started it: the issue saw 12 of 60
// scrapes with a target down and 1,741 new connections in 30 s.)
//
// The flood lasts 6 s (12 normal scrapes); POOLWATCH_E2E_FULL=1 runs the
// issue's 30 s (60 scrapes).
func TestHeader_AHostileScrapeTimeoutCannotFailOtherScrapesNorForceReconnects(t *testing.T) {
	flood := size(6*time.Second, 30*time.Second)
	const every = 500 * time.Millisecond
	pg, pgb := monitoredBouncer(t)
	targets := []string{"pg", "pg-cached", "bouncer"}
	cfg := fmt.Sprintf(`targets:
  - name: pg
    kind: postgres
    dsn: %[1]s&application_name=pw-hdr
  - name: pg-cached
    kind: postgres
    dsn: %[1]s&application_name=pw-hdr-cached
    min_scrape_interval: 10s
  - name: bouncer
    kind: pgbouncer
    dsn: %[2]s
`, pg.DSN("mon", monPassword, "postgres"), pgb.DSN("stats", statPassword, "pgbouncer"))
	pw := testenv.StartPoolwatch(t, cfg)
	before := pw.Scrape(t, "X-Prometheus-Scrape-Timeout-Seconds", "10")
	for _, tg := range targets {
		if up := before.Must(t, "poolwatch_target_up", "target", tg); up != 1 {
			t.Fatalf("target %s up %v before the flood, want 1", tg, up)
		}
	}
	conns := newConnections(t, before, targets...)

	var sent, sendErrs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := request(c, pw.URL+"/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "0.001"); err != nil {
					sendErrs.Add(1)
				}
				sent.Add(1)
			}
		}()
	}

	normal, down := 0, 0
	var downs []string
	tick := time.NewTicker(every)
	deadline := time.Now().Add(flood)
	for time.Now().Before(deadline) {
		<-tick.C
		m := pw.Scrape(t, "X-Prometheus-Scrape-Timeout-Seconds", "10")
		normal++
		var bad []string
		for _, tg := range targets {
			if up := m.Must(t, "poolwatch_target_up", "target", tg); up != 1 {
				bad = append(bad, tg)
			}
		}
		if len(bad) > 0 {
			down++
			downs = append(downs, strings.Join(bad, ","))
		}
	}
	tick.Stop()
	close(stop)
	wg.Wait()

	after := pw.Scrape(t, "X-Prometheus-Scrape-Timeout-Seconds", "10")
	opened := newConnections(t, after, targets...) - conns
	t.Logf("flood of %v: %d hostile requests (%d errors), %d normal scrapes, %d with a target down %v, %v new target connections",
		flood, sent.Load(), sendErrs.Load(), normal, down, downs, opened)
	if down != 0 {
		t.Errorf("%d of %d normal scrapes saw a target down during the flood: %v", down, normal, downs)
	}
	if opened != 0 {
		t.Errorf("the agent opened %v new target connections during the flood, want 0", opened)
	}
	if sent.Load() < int64(normal) {
		t.Errorf("only %d hostile requests: the flood did not happen", sent.Load())
	}
	if n := strings.Count(pw.Logs(), "target scrape failed"); n != 0 {
		t.Errorf("%d failure lines logged during the flood, want 0", n)
	}
	pw.StopAndCheck(t, monPassword, statPassword)
}
