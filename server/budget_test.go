package server_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// TestMetrics_HostileTimeoutHeadersNeverCutTheRoundNorReconnect sends
// X-Prometheus-Scrape-Timeout-Seconds values that any client can send (a
// millisecond, zero, negative, NaN, infinite, huge, garbage) while a slow
// round runs: none of them makes the round fail for a plain request, and
// the agent keeps its one connection to the target.
func TestMetrics_HostileTimeoutHeadersNeverCutTheRoundNorReconnect(t *testing.T) {
	_, pgb := shared.Get(t)
	p := testenv.StartProxy(t, pgb.Addr())
	f := start(t, "targets:"+bouncerTarget("b", p.Addr), true)
	code, body := f.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `poolwatch_target_up{target="b"} 1`)
	conns := f.agent.ProbePools()[0].Stats.NewConnections

	p.SetLatency(30 * time.Millisecond) // each round takes several round trips
	values := []string{"0.001", "0.53", "0.56", "0.6", "0", "-1", "NaN", "+Inf", "1e300", "abc"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, v := range values {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _, _ = get(f.srv.URL+"/metrics", "X-Prometheus-Scrape-Timeout-Seconds", v)
			}
		}()
	}
	down := 0
	for range 5 {
		code, body := f.get(t, "/metrics")
		require.Equal(t, http.StatusOK, code)
		if !strings.Contains(body, `poolwatch_target_up{target="b"} 1`) {
			down++
		}
	}
	close(stop)
	wg.Wait()
	require.Zero(t, down, "plain scrapes that saw the target down during the flood")
	require.Equal(t, conns, f.agent.ProbePools()[0].Stats.NewConnections, "no reconnect")
	_, body = f.get(t, "/metrics")
	require.Contains(t, body, `poolwatch_target_scrape_errors_total{query="round",target="b"} 0`, "no round was cut")
	require.Zero(t, strings.Count(f.logs.String(), "target scrape failed"), "and none logged:\n%s", f.logs.String())
}

// get is a GET that reports errors instead of failing the test, for use
// from any goroutine.
func get(url string, header ...string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
