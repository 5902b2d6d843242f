package server_test

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/server"
)

// Without --web.enable-lifecycle, /-/reload reloads nothing and says how to
// turn it on.
func TestReload_IsForbiddenUnlessTheLifecycleAPIIsEnabled(t *testing.T) {
	pg, _ := shared.Get(t)
	f := start(t, "targets:"+pgTarget("pg", pg.Addr(), "pw_lifecycle", ""), true,
		func(o *server.Options) { o.EnableLifecycle = false })
	var mu sync.Mutex
	calls := 0
	f.reload = func() error { mu.Lock(); defer mu.Unlock(); calls++; return nil }
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodGet} {
		req, err := http.NewRequest(method, f.srv.URL+"/-/reload", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusForbidden, resp.StatusCode, method)
		require.Contains(t, string(b), "Lifecycle API is not enabled")
		require.Contains(t, string(b), "--web.enable-lifecycle")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, calls)
}

var hrefRE = regexp.MustCompile(`href="([^"]+)"`)

// The landing page lists the configured targets with the state of their
// last scrape, and every link on it answers (no pprof link: poolwatch does
// not serve pprof).
func TestLanding_ListsTargetsWithTheirStateAndOnlyWorkingLinks(t *testing.T) {
	pg, _ := shared.Get(t)
	port := testenv.FreePort(t)
	f := start(t, "targets:"+pgTarget("orders-db", pg.Addr(), "pw_landing", "")+
		pgTarget("down", fmt.Sprintf("127.0.0.1:%d", port), "pw_landing_down", "    probe_pool: {acquire_retries: 0}")+
		pgTarget("never", pg.Addr(), "pw_landing_never", ""), false)
	_, body := f.get(t, "/")
	require.Contains(t, body, "not scraped yet")

	code, _ := f.get(t, "/probe?target=orders-db")
	require.Equal(t, http.StatusOK, code)
	code, _ = f.get(t, "/probe?target=down")
	require.Equal(t, http.StatusOK, code)

	code, body = f.get(t, "/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "<td>orders-db</td>\n<td>postgres</td>\n<td>up</td>")
	require.Contains(t, body, "<td>down</td>\n<td>postgres</td>\n<td>down: connect: ")
	require.Contains(t, body, "<td>never</td>\n<td>postgres</td>\n<td>not scraped yet</td>")
	require.NotContains(t, body, "debug/pprof")
	require.NotContains(t, body, monPass)

	links := hrefRE.FindAllStringSubmatch(body, -1)
	require.GreaterOrEqual(t, len(links), 6, "metrics, health, readiness and a probe link per target")
	for _, l := range links {
		href := html.UnescapeString(l[1])
		if strings.HasPrefix(href, "http") {
			continue // the project's home page
		}
		code, _ := f.get(t, "/"+strings.TrimPrefix(href, "/"))
		require.Equal(t, http.StatusOK, code, "link %s", href)
	}
	code, _ = f.get(t, "/debug/pprof/heap")
	require.Equal(t, http.StatusNotFound, code)
}

const addressPWEnv = "POOLWATCH_SERVER_TEST_PW"

func addressYAML(t *testing.T, maxTargets int, idleClose string) string {
	t.Helper()
	t.Setenv(addressPWEnv, monPass)
	return fmt.Sprintf(`
defaults:
  probe_pool: {acquire_retries: 0}
auth_modules:
  monitoring:
    user: %s
    password_env: %s
    sslmode: disable
probe:
  allowed_targets: ["127.0.0.1:*"]
  max_targets: %d
  idle_close: %s
`, monUser, addressPWEnv, maxTargets, idleClose)
}

func TestProbe_ByAddressServesPostgresAndPgBouncerWithTheAuthModule(t *testing.T) {
	pg, pgb := shared.Get(t)
	f := start(t, addressYAML(t, 10, "5m"), false)
	code, body := f.get(t, "/probe?target="+pg.Addr()+"/postgres&kind=postgres&auth_module=monitoring")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, fmt.Sprintf(`poolwatch_target_up{target="%s/postgres"} 1`, pg.Addr()))
	require.Contains(t, body, fmt.Sprintf(`poolwatch_pool_in_use_connections{pool="server",target="%s/postgres"}`, pg.Addr()))

	code, body = f.get(t, "/probe?target="+pgb.Addr()+"&kind=pgbouncer&auth_module=monitoring")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, fmt.Sprintf(`poolwatch_target_up{target="%s/pgbouncer"} 1`, pgb.Addr()))
	require.Contains(t, body, fmt.Sprintf(`poolwatch_pool_in_use_connections{pool="clients",target="%s/pgbouncer"} 1`, pgb.Addr()))

	_, body = f.get(t, "/metrics")
	require.Contains(t, body, "poolwatch_probe_address_pools 2\n")
	require.Contains(t, body, "poolwatch_probe_address_pools_max 10\n")
	require.Contains(t, body, fmt.Sprintf(`poolwatch_probe_pool_open_connections{target="%s/postgres"} 1`, pg.Addr()))
	_, body = f.get(t, "/")
	require.Contains(t, body, "/probe?target=HOST:PORT/DATABASE")
}

func TestProbe_ByAddressRefusalsAreClearAndOpenNothing(t *testing.T) {
	pg, _ := shared.Get(t)
	proxy := testenv.StartProxy(t, pg.Addr())
	f := start(t, addressYAML(t, 1, "5m"), false)
	for _, tc := range []struct {
		query string
		code  int
		msg   string
	}{
		{"target=10.1.2.3:5432/postgres&auth_module=monitoring", http.StatusForbidden,
			"address not allowed: 10.1.2.3:5432 matches none of probe.allowed_targets (127.0.0.1:*)"},
		{"target=" + proxy.Addr + "/postgres&auth_module=nope", http.StatusBadRequest,
			`unknown auth module "nope" (configured: monitoring)`},
		{"target=" + proxy.Addr + "/postgres&kind=oracle&auth_module=monitoring", http.StatusBadRequest,
			`bad address: kind "oracle" cannot be probed by address`},
		{"target=" + proxy.Addr + "/postgres%3Fsslmode%3Ddisable&auth_module=monitoring", http.StatusBadRequest,
			"bad address: invalid database name"},
		{"target=" + proxy.Addr + "/postgres", http.StatusBadRequest,
			"it is not in the configuration; to probe an address, add &auth_module=NAME"},
	} {
		code, body := f.get(t, "/probe?"+tc.query)
		require.Equal(t, tc.code, code, tc.query)
		require.Contains(t, body, tc.msg, tc.query)
	}
	require.Zero(t, proxy.ActiveConns(), "no refused probe connected")

	code, _ := f.get(t, "/probe?target="+pg.Addr()+"/postgres&auth_module=monitoring")
	require.Equal(t, http.StatusOK, code)
	code, body := f.get(t, "/probe?target="+proxy.Addr+"/postgres&auth_module=monitoring")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "too many probe pools by address: 1 are held, probe.max_targets; a new address is refused until one has not been probed for probe.idle_close (5m0s)")
	require.Zero(t, proxy.ActiveConns())

	_, body = f.get(t, "/metrics")
	for _, want := range []string{
		`poolwatch_probe_address_refused_total{reason="not_allowed"} 1`,
		`poolwatch_probe_address_refused_total{reason="invalid"} 3`,
		`poolwatch_probe_address_refused_total{reason="max_targets"} 1`,
	} {
		require.Contains(t, body, want)
	}
}

var addressPoolsRE = regexp.MustCompile(`(?m)^poolwatch_probe_address_pools (\d+)$`)

func heldPools(t *testing.T, f *fixture) int {
	t.Helper()
	_, body := f.get(t, "/metrics")
	m := addressPoolsRE.FindStringSubmatch(body)
	require.NotNil(t, m, "no poolwatch_probe_address_pools in /metrics")
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// 1,000 distinct addresses over HTTP, in real time: the agent's own metric
// never shows more pools than max_targets, refusals are 503, and the idle
// pools close by themselves after idle_close. Nothing listens at the
// addresses (a free port, 1,000 database names), so each probe fails at
// once and the loop outpaces idle_close.
func TestProbe_ThousandAddressesOverHTTPNeverExceedMaxTargets(t *testing.T) {
	const maxTargets = 10
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	f := start(t, addressYAML(t, maxTargets, "1s"), false)
	require.Zero(t, heldPools(t, f)) // and the client's keep-alive connection is open
	base := testenv.Baseline(t)
	codes := map[int]int{}
	most := 0
	for i := range 1000 {
		code, _ := f.get(t, fmt.Sprintf("/probe?target=%s/db%04d&auth_module=monitoring", addr, i))
		codes[code]++
		// The agent's own count after every request, its metric every 10th
		// (a gather costs milliseconds under -race).
		s, _ := f.agent.AddressProbes()
		n := s.Pools
		if i%10 == 0 {
			n = heldPools(t, f)
		}
		most = max(most, n)
		require.LessOrEqual(t, n, maxTargets, "after address %d", i)
	}
	require.Equal(t, 1000, codes[http.StatusOK]+codes[http.StatusServiceUnavailable], "%v", codes)
	require.Positive(t, codes[http.StatusOK])
	require.Positive(t, codes[http.StatusServiceUnavailable])
	require.Equal(t, maxTargets, most)
	start := time.Now()
	testenv.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
		n := heldPools(t, f)
		return n == 0, fmt.Sprintf("%d pools still held", n)
	})
	after := testenv.SettleAt(t, base)
	t.Logf("1000 addresses, max_targets %d, idle_close 1s: %d answered 200, %d refused 503, at most %d pools held; all closed %v after the loop; goroutines %d -> %d, fds %d -> %d",
		maxTargets, codes[http.StatusOK], codes[http.StatusServiceUnavailable], most, time.Since(start).Round(10*time.Millisecond),
		base.Goroutines, after.Goroutines, base.FDs, after.FDs)
}
