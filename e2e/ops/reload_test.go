package ops_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	reloadOK     = "poolwatch_config_last_reload_successful"
	reloadTS     = "poolwatch_config_last_reload_success_timestamp_seconds"
	newConns     = "poolwatch_probe_pool_new_connections_total"
	targetUp     = "poolwatch_target_up"
	settle       = 10 * time.Second // bound for anything that happens "a moment later"
	onePoolOfOne = "    probe_pool: {max_connections: 1}\n"
)

func configOf(targets ...string) string {
	return "targets:\n" + strings.Join(targets, "")
}

// wantTargets fails the test unless the agent's series carry exactly these
// target names, each with up 1.
func wantTargets(t *testing.T, m testenv.Metrics, names ...string) {
	t.Helper()
	slices.Sort(names)
	if got := m.Targets(); !slices.Equal(got, names) {
		t.Fatalf("targets on /metrics: got %v, want %v", got, names)
	}
	for _, n := range names {
		if up := m.Must(t, targetUp, "target", n); up != 1 {
			t.Fatalf("%s{target=%q} = %v, want 1", targetUp, n, up)
		}
	}
}

func TestReload_SIGHUPAndPOSTBothReloadAndGETIsRefused(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	a := pgTarget("a", pg, "pw-a", "")
	pw := testenv.StartPoolwatch(t, configOf(a), lifecycle)
	wantTargets(t, pw.Scrape(t), "a")

	// SIGHUP: asynchronous, so poll until the new target shows.
	replaceFile(t, pw.ConfigPath, configOf(a, pgTarget("b", pg, "pw-b", "")))
	pw.Signal(t, syscall.SIGHUP)
	eventually(t, settle, "target b after SIGHUP", func() (bool, string) {
		got := pw.Scrape(t).Targets()
		return slices.Equal(got, []string{"a", "b"}), fmt.Sprint(got)
	})
	wantTargets(t, pw.Scrape(t), "a", "b")

	// POST: synchronous, so the very next scrape has the new configuration.
	replaceFile(t, pw.ConfigPath, configOf(a, pgTarget("c", pg, "pw-c", "")))
	code, body := reload(t, pw)
	if code != http.StatusOK || strings.TrimSpace(body) != "Reloaded" {
		t.Fatalf("POST /-/reload: %d %q, want 200 \"Reloaded\"", code, body)
	}
	m := pw.Scrape(t)
	wantTargets(t, m, "a", "c")
	if v := m.Must(t, reloadOK); v != 1 {
		t.Fatalf("%s = %v after a good reload, want 1", reloadOK, v)
	}

	// GET (and any method but POST/PUT) changes nothing and says why.
	replaceFile(t, pw.ConfigPath, configOf(a))
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		req, err := http.NewRequest(method, pw.URL+"/-/reload", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s /-/reload: %v", method, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("%s /-/reload: status %d, want 405", method, resp.StatusCode)
		}
		if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "POST") {
			t.Fatalf("%s /-/reload: Allow %q, want it to name POST", method, allow)
		}
	}
	wantTargets(t, pw.Scrape(t), "a", "c")
	pw.StopAndCheck(t, monPassword)
}

// By default (no --web.enable-lifecycle) POST /-/reload is refused with 403
// and changes nothing; SIGHUP reloads all the same.
func TestReload_OverHTTPIsOffByDefaultAndSIGHUPStillWorks(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	a := pgTarget("a", pg, "pw-a", "")
	pw := testenv.StartPoolwatch(t, configOf(a))
	wantTargets(t, pw.Scrape(t), "a")

	replaceFile(t, pw.ConfigPath, configOf(a, pgTarget("b", pg, "pw-b", "")))
	code, body := reload(t, pw)
	if code != http.StatusForbidden || !strings.Contains(body, "--web.enable-lifecycle") {
		t.Fatalf("POST /-/reload without --web.enable-lifecycle: %d %q, want 403 naming the flag", code, body)
	}
	wantTargets(t, pw.Scrape(t), "a")

	pw.Signal(t, syscall.SIGHUP)
	eventually(t, settle, "target b after SIGHUP", func() (bool, string) {
		got := pw.Scrape(t).Targets()
		return slices.Equal(got, []string{"a", "b"}), fmt.Sprint(got)
	})
	pw.StopAndCheck(t, monPassword)
}

func TestReload_KeepsTheConnectionsOfUnchangedTargets(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	keep := pgTarget("keep", pg, "pw-keep", onePoolOfOne)
	other := func(v string) string {
		return pgTarget("other", pg, "pw-other", onePoolOfOne+"    labels: {rev: \""+v+"\"}\n")
	}
	pw := testenv.StartPoolwatch(t, configOf(keep, other("1")), lifecycle)

	m := pw.Scrape(t)
	wantTargets(t, m, "keep", "other")
	keepPIDs := backendPIDs(t, pg, "pw-keep")
	otherPIDs := backendPIDs(t, pg, "pw-other")
	if len(keepPIDs) != 1 || len(otherPIDs) != 1 {
		t.Fatalf("backends after one scrape: keep %v, other %v; want one each (max_connections 1)", keepPIDs, otherPIDs)
	}
	keepNew := m.Must(t, newConns, "target", "keep")
	if keepNew != 1 {
		t.Fatalf("%s{target=keep} = %v after one scrape, want 1", newConns, keepNew)
	}

	// Change only "other" (a label), through POST.
	replaceFile(t, pw.ConfigPath, configOf(keep, other("2")))
	if code, body := reload(t, pw); code != http.StatusOK {
		t.Fatalf("POST /-/reload: %d %s", code, body)
	}
	// The changed target's pool is closed by the reload itself.
	pg.WaitBackends(t, "pw-other", func(n int) bool { return n == 0 }, settle)

	m = pw.Scrape(t)
	wantTargets(t, m, "keep", "other")
	if got := backendPIDs(t, pg, "pw-keep"); !slices.Equal(got, keepPIDs) {
		t.Fatalf("keep's backends after reloading another target: %v, want the same %v", got, keepPIDs)
	}
	if v := m.Must(t, newConns, "target", "keep"); v != keepNew {
		t.Fatalf("%s{target=keep} moved from %v to %v across a reload that did not change it", newConns, keepNew, v)
	}
	if got := backendPIDs(t, pg, "pw-other"); len(got) != 1 || got[0] == otherPIDs[0] {
		t.Fatalf("other's backends after its change: %v, want one new one (old %v)", got, otherPIDs)
	}
	if v := m.Must(t, newConns, "target", "other"); v != 1 {
		t.Fatalf("%s{target=other} = %v, want 1: a changed target gets a new pool", newConns, v)
	}
	if _, ok := m.Get(t, targetUp, "target", "other", "rev", "2"); !ok {
		t.Fatalf("other's series do not carry the new label rev=\"2\"")
	}

	// A SIGHUP with the file unchanged keeps every pool.
	ts := m.Must(t, reloadTS)
	otherPIDs = backendPIDs(t, pg, "pw-other")
	pw.Signal(t, syscall.SIGHUP)
	eventually(t, settle, "a newer reload timestamp after SIGHUP", func() (bool, string) {
		v := pw.Scrape(t).Must(t, reloadTS)
		return v > ts, fmt.Sprintf("%v (before: %v)", v, ts)
	})
	m = pw.Scrape(t)
	if got := backendPIDs(t, pg, "pw-keep"); !slices.Equal(got, keepPIDs) {
		t.Fatalf("keep's backends after an idempotent SIGHUP: %v, want %v", got, keepPIDs)
	}
	if got := backendPIDs(t, pg, "pw-other"); !slices.Equal(got, otherPIDs) {
		t.Fatalf("other's backends after an idempotent SIGHUP: %v, want %v", got, otherPIDs)
	}
	for _, n := range []string{"keep", "other"} {
		if v := m.Must(t, newConns, "target", n); v != 1 {
			t.Fatalf("%s{target=%s} = %v after an idempotent SIGHUP, want 1", newConns, n, v)
		}
	}
	pw.StopAndCheck(t, monPassword)
}

func TestReload_ClosesRemovedTargetsAndOpensNewOnes(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	keep := pgTarget("keep", pg, "pw-keep", "")
	pw := testenv.StartPoolwatch(t, configOf(keep, pgTarget("gone", pg, "pw-gone", "")), lifecycle)
	m := pw.Scrape(t)
	wantTargets(t, m, "gone", "keep")
	if n := pg.CountBackends(t, "pw-gone"); n < 1 {
		t.Fatalf("gone has %d backends after a scrape, want at least 1", n)
	}
	if m.SeriesOf("gone") < 10 {
		t.Fatalf("gone has only %d series before the reload", m.SeriesOf("gone"))
	}

	replaceFile(t, pw.ConfigPath, configOf(keep, pgTarget("fresh", pg, "pw-fresh", "")))
	if code, body := reload(t, pw); code != http.StatusOK {
		t.Fatalf("POST /-/reload: %d %s", code, body)
	}
	// Closed by the reload, before any scrape.
	pg.WaitBackends(t, "pw-gone", func(n int) bool { return n == 0 }, settle)
	if n := pg.CountBackends(t, "pw-fresh"); n != 0 {
		t.Fatalf("fresh has %d backends before its first scrape, want 0 (pools open on first use)", n)
	}

	m = pw.Scrape(t)
	wantTargets(t, m, "fresh", "keep")
	if n := m.SeriesOf("gone"); n != 0 {
		t.Fatalf("a removed target still has %d series on /metrics", n)
	}
	for _, name := range []string{newConns, "poolwatch_probe_pool_open_connections"} {
		if _, ok := m.Get(t, name, "target", "fresh"); !ok {
			t.Fatalf("%s{target=fresh} is absent after the reload", name)
		}
	}
	if v := m.Must(t, "poolwatch_pool_max_connections", "target", "fresh", "pool", "server"); v != 97 {
		t.Fatalf("fresh's server pool max = %v, want 97 (100 - 3 reserved)", v)
	}
	if n := pg.CountBackends(t, "pw-fresh"); n < 1 {
		t.Fatalf("fresh has %d backends after its first scrape, want at least 1", n)
	}
	// A removed target is unknown to /probe too.
	if code, _ := pw.Get(t, "/probe?target=gone"); code != http.StatusBadRequest {
		t.Fatalf("/probe?target=gone after removal: status %d, want 400", code)
	}
	pw.StopAndCheck(t, monPassword)
}

func TestReload_RejectsABadConfigAndKeepsTheOldOne(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	a, b := pgTarget("a", pg, "pw-a", ""), pgTarget("b", pg, "pw-b", "")
	pw := testenv.StartPoolwatch(t, configOf(a, b), lifecycle)
	m := pw.Scrape(t)
	wantTargets(t, m, "a", "b")
	if v := m.Must(t, reloadOK); v != 1 {
		t.Fatalf("%s = %v after start, want 1", reloadOK, v)
	}
	ts0 := m.Must(t, reloadTS)
	aPIDs := backendPIDs(t, pg, "pw-a")

	// Line 1 is "targets:", each target entry is three lines and the
	// unknown key is the fourth line of the second entry: line 8.
	replaceFile(t, pw.ConfigPath, configOf(a, b+"    bogus_key: 1\n"))
	code, body := reload(t, pw)
	if code != http.StatusInternalServerError {
		t.Fatalf("POST /-/reload with an unknown key: %d %q, want 500", code, body)
	}
	wantErr := pw.ConfigPath + ":8: targets[1].bogus_key: unknown key"
	if !strings.Contains(body, wantErr) {
		t.Fatalf("POST /-/reload body %q does not name the file, line and key (%q)", body, wantErr)
	}
	if strings.Contains(body, monPassword) {
		t.Fatalf("POST /-/reload body contains the password")
	}

	m = pw.Scrape(t)
	wantTargets(t, m, "a", "b") // the old configuration is in force
	if v := m.Must(t, reloadOK); v != 0 {
		t.Fatalf("%s = %v after a rejected reload, want 0", reloadOK, v)
	}
	if v := m.Must(t, reloadTS); v != ts0 {
		t.Fatalf("%s moved from %v to %v on a rejected reload", reloadTS, ts0, v)
	}
	if got := backendPIDs(t, pg, "pw-a"); !slices.Equal(got, aPIDs) {
		t.Fatalf("a's backends after a rejected reload: %v, want %v", got, aPIDs)
	}
	if code, _ := pw.Get(t, "/-/ready"); code != http.StatusOK {
		t.Fatalf("/-/ready after a rejected reload: %d, want 200", code)
	}

	// The same through SIGHUP: a second "reload failed" line, nothing else.
	pw.Signal(t, syscall.SIGHUP)
	eventually(t, settle, "a second reload failure logged after SIGHUP", func() (bool, string) {
		n := strings.Count(pw.Logs(), "config reload failed")
		return n == 2, fmt.Sprintf("%d failure lines", n)
	})
	m = pw.Scrape(t)
	wantTargets(t, m, "a", "b")
	if v := m.Must(t, reloadOK); v != 0 {
		t.Fatalf("%s = %v after a rejected SIGHUP reload, want 0", reloadOK, v)
	}

	// A good configuration again.
	replaceFile(t, pw.ConfigPath, configOf(a, pgTarget("c", pg, "pw-c", "")))
	if code, body := reload(t, pw); code != http.StatusOK {
		t.Fatalf("POST /-/reload with a good config: %d %s", code, body)
	}
	m = pw.Scrape(t)
	wantTargets(t, m, "a", "c")
	if v := m.Must(t, reloadOK); v != 1 {
		t.Fatalf("%s = %v after a good reload, want 1", reloadOK, v)
	}
	if v := m.Must(t, reloadTS); !(v > ts0) {
		t.Fatalf("%s = %v after a good reload, want it past %v", reloadTS, v, ts0)
	}
	pw.StopAndCheck(t, monPassword)
}

func TestReload_ConcurrentReloadsEndInOneConsistentState(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	a := pgTarget("a", pg, "pw-a", onePoolOfOne)
	withB := configOf(a, pgTarget("b", pg, "pw-b", onePoolOfOne))
	withC := configOf(a, pgTarget("c", pg, "pw-c", onePoolOfOne))
	pw := testenv.StartPoolwatch(t, withB, lifecycle)
	m := pw.Scrape(t)
	wantTargets(t, m, "a", "b")
	aPIDs := backendPIDs(t, pg, "pw-a")
	aNew := m.Must(t, newConns, "target", "a")

	// Two scrapers keep hitting /metrics through the whole storm, so pools
	// are used while reloads add and close them.
	stop := make(chan struct{})
	var scrapes, scrapeFails atomic.Int64
	var firstFail atomic.Value
	var scrapeWG sync.WaitGroup
	for range 2 {
		scrapeWG.Add(1)
		go func() {
			defer scrapeWG.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := request(http.DefaultClient, http.MethodGet, pw.URL+"/metrics")
				scrapes.Add(1)
				if err != nil || code != http.StatusOK {
					scrapeFails.Add(1)
					firstFail.CompareAndSwap(nil, fmt.Sprintf("status %d, err %v, body %.200q", code, err, body))
				}
			}
		}()
	}

	// Waves of concurrent POSTs and SIGHUPs; the file alternates between
	// b and c, and the last waves leave c in it.
	const waves, perWave = 6, 3
	var failures []string
	var mu sync.Mutex
	for w := 0; w < waves; w++ {
		if w%2 == 0 || w == waves-1 {
			replaceFile(t, pw.ConfigPath, withC)
		} else {
			replaceFile(t, pw.ConfigPath, withB)
		}
		var wg sync.WaitGroup
		for range perWave {
			wg.Add(2)
			go func() {
				defer wg.Done()
				code, body, err := request(http.DefaultClient, http.MethodPost, pw.URL+"/-/reload")
				if err != nil || code != http.StatusOK {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("POST: %d %q %v", code, body, err))
					mu.Unlock()
				}
			}()
			go func() {
				defer wg.Done()
				if err := syscall.Kill(pw.PID(), syscall.SIGHUP); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("SIGHUP: %v", err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// Let at least one scrape run against this wave's configuration.
		before := scrapes.Load()
		eventually(t, settle, "a scrape between waves", func() (bool, string) {
			return scrapes.Load() > before, fmt.Sprint(scrapes.Load())
		})
	}
	close(stop)
	scrapeWG.Wait()
	for _, f := range failures {
		t.Errorf("concurrent reload failed: %s", f)
	}
	if n := scrapeFails.Load(); n > 0 {
		t.Fatalf("%d of %d scrapes during the reloads failed; first: %v", n, scrapes.Load(), firstFail.Load())
	}

	// Every POST returned after its own reload; SIGHUPs may coalesce, so
	// wait until no more reloads come (two equal counts 200 ms apart) and
	// there is at least one per POST plus the start.
	loaded, before := 0, -1
	testenv.Eventually(t, settle, 200*time.Millisecond, func() (bool, string) {
		loaded = strings.Count(pw.Logs(), "config loaded")
		settled := loaded == before && loaded >= 1+waves*perWave
		before = loaded
		return settled, fmt.Sprintf("the reloads to settle: %d config loaded lines", loaded)
	})
	if loaded > 1+2*waves*perWave {
		t.Fatalf("%d successful loads for %d reload requests and the start", loaded, 2*waves*perWave)
	}
	if strings.Contains(pw.Logs(), "config reload failed") {
		t.Fatalf("a concurrent reload failed")
	}

	// One consistent end state: the file's.
	pg.WaitBackends(t, "pw-b", func(n int) bool { return n == 0 }, settle)
	m = pw.Scrape(t)
	wantTargets(t, m, "a", "c")
	if v := m.Must(t, reloadOK); v != 1 {
		t.Fatalf("%s = %v, want 1", reloadOK, v)
	}
	if got := backendPIDs(t, pg, "pw-a"); !slices.Equal(got, aPIDs) {
		t.Fatalf("a's backends after %d reloads that did not change it: %v, want %v", loaded-1, got, aPIDs)
	}
	if v := m.Must(t, newConns, "target", "a"); v != aNew {
		t.Fatalf("%s{target=a} moved from %v to %v across reloads that did not change it", newConns, aNew, v)
	}
	// c's current pool is one pool of one: at most one backend, however
	// many times c was added and removed.
	if got := backendPIDs(t, pg, "pw-c"); len(got) != 1 {
		t.Fatalf("c's backends: %v, want exactly one", got)
	}
	t.Logf("%d reload requests (%d POST, %d SIGHUP) in %d waves gave %d loads; %d scrapes ran meanwhile",
		2*waves*perWave, waves*perWave, waves*perWave, waves, loaded-1, scrapes.Load())
	pw.StopAndCheck(t, monPassword)
}

// TestReload_RemovingAHungTargetTakesEffectAtOnce removes a target whose
// round hangs on a blackholed server. Closing its pool waits for that
// round, bounded by --web.shutdown-timeout, and POST /-/reload answers only
// then; but scrapes see the new configuration at once and are not held up.
func TestReload_RemovingAHungTargetDoesNotBlockTheReload(t *testing.T) {
	const closeBound = 2 * time.Second
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)
	proxy := testenv.StartProxy(t, pg.Addr())
	holeDSN := monDSNVia(t, proxy, pg, "pw-hole")
	keep := pgTarget("keep", pg, "pw-keep", "")
	pw := testenv.StartPoolwatch(t, configOf(keep, fmt.Sprintf(`  - name: hole
    kind: postgres
    dsn: %s
    scrape_timeout: 30s
    probe_pool: {connect_timeout: 20s}
`, holeDSN)), "--web.shutdown-timeout="+closeBound.String(), lifecycle)
	wantTargets(t, pw.Scrape(t), "hole", "keep")

	// The hole's pooled connection and any new one now hang.
	proxy.FreezeExisting()
	proxy.Blackhole(true)
	hung := make(chan struct{})
	go func() {
		defer close(hung)
		_, _, _ = request(http.DefaultClient, http.MethodGet, pw.URL+"/metrics")
	}()
	eventually(t, settle, "the hole's round to reach the frozen connection", func() (bool, string) {
		return proxy.DroppedBytes() > 0, fmt.Sprintf("%d connections, %d bytes dropped", proxy.ActiveConns(), proxy.DroppedBytes())
	})

	// The reload does not wait for the hung pool: it closes in the
	// background, bounded by --web.shutdown-timeout.
	replaceFile(t, pw.ConfigPath, configOf(keep))
	start := time.Now()
	code, _, err := request(http.DefaultClient, http.MethodPost, pw.URL+"/-/reload")
	took := time.Since(start)
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST /-/reload: %d %v, want 200", code, err)
	}
	if took > time.Second {
		t.Fatalf("POST /-/reload took %v with a hung round on a removed target, want well under 1 s", took)
	}
	t.Logf("POST /-/reload answered after %v with a hung round on the removed target", took.Round(time.Millisecond))

	// Scrapes have the new configuration at once (with Prometheus' timeout
	// header, as a scrape that joined the hung round would wait for it).
	s := time.Now()
	code, body := pw.Get(t, "/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "1")
	if scrapeTook := time.Since(s); scrapeTook > time.Second {
		t.Errorf("a scrape right after the reload took %v", scrapeTook)
	}
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if got := testenv.ParseMetrics(t, body).Targets(); !slices.Equal(got, []string{"keep"}) {
		t.Fatalf("targets after the reload: %v, want [keep]", got)
	}
	// The removed pool's hung round is cancelled when the bound expires.
	waitLog(t, pw, "closing the probe pool of a removed target cancelled its queries", "target=hole")
	<-hung
	if m := pw.Scrape(t); m.Must(t, reloadOK) != 1 {
		t.Fatalf("%s != 1 after the reload", reloadOK)
	}
	pw.StopAndCheck(t, monPassword)
}
