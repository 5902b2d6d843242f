package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// The comparison with prometheus-community/pgbouncer_exporter ("the peer"):
// both exporters in front of the same PgBouncer 1.18, scraped in
// alternating blocks as Prometheus scrapes them, with the floor measured in
// between. `make bench` runs it; bench/out/compare.md is its report, which
// docs/performance.md quotes.
const (
	peerModule  = "github.com/prometheus-community/pgbouncer_exporter"
	peerVersion = "v0.12.1"

	// promAccept and promUserAgent are what Prometheus 2.42 (Debian 12's)
	// sends on every scrape, with Accept-Encoding: gzip.
	promAccept    = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	promUserAgent = "Prometheus/2.42.0"
)

// The console commands of a poolwatch round against PgBouncer 1.18 (scrape's
// bouncerCommands, SHOW USERS being skipped before 1.23): the floor's round
// sends the same ones.
var floorCommands = []string{"SHOW POOLS", "SHOW DATABASES", "SHOW CONFIG", "SHOW LISTS", "SHOW STATS", "SHOW MEM"}

// envInts reads a comma-separated list of integers from the environment.
func envInts(b *testing.B, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		out = append(out, n)
	}
	return out
}

func envInt(b *testing.B, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		return envInts(b, name, nil)[0]
	}
	return def
}

// buildPeer fetches the peer's module through the module proxy and builds
// it inside the module's directory (a plain `go install` of it is refused
// here), once per machine: the binary is kept in the user cache directory.
func buildPeer(b *testing.B) string {
	b.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(cache, "poolwatch-bench", "pgbouncer_exporter-"+peerVersion)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	dl := exec.Command("go", "mod", "download", "-json", peerModule+"@"+peerVersion)
	dl.Dir = b.TempDir() // outside this module: no go.mod is changed
	raw, err := dl.Output()
	if err != nil {
		b.Fatalf("go mod download %s@%s: %v", peerModule, peerVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(raw, &mod); err != nil || mod.Dir == "" {
		b.Fatalf("go mod download: no module directory in %s", raw)
	}
	build := exec.Command("go", "build", "-o", out, ".")
	build.Dir = mod.Dir
	if msg, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", peerModule, err, msg)
	}
	return out
}

// raiseOpenFiles raises this process's soft open-files limit to its hard
// limit, explicitly, so that the PgBouncer it starts inherits it (Go
// restores the original soft limit in children otherwise): 1,000 pools
// need more than 1,024 descriptors.
func raiseOpenFiles(b *testing.B) uint64 {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	return lim.Cur
}

// cpuNanos is a process's CPU time so far, in nanoseconds: the sum of its
// threads' run time in /proc/PID/task/*/schedstat (nanosecond resolution,
// where /proc/PID/stat counts 10 ms ticks).
func cpuNanos(b *testing.B, pid int) int64 {
	b.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no schedstat for pid %d: %v", pid, err)
	}
	var sum int64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just exited
		}
		f := strings.Fields(string(raw))
		n, _ := strconv.ParseInt(f[0], 10, 64)
		sum += n
	}
	return sum
}

// memKB reads a field of /proc/PID/status: VmRSS (now) or VmHWM (peak).
func memKB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(field + `:\s+(\d+) kB`).FindSubmatch(raw)
	if m == nil {
		b.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	v, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return v
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:3], " ")
}

// exporter is one side of the comparison: a process serving /metrics.
type exporter struct {
	name string
	url  string
	pid  int
}

// scraper scrapes as Prometheus does: keep-alive, gzip accepted, the
// timeout header.
type scraper struct{ client *http.Client }

func newScraper() *scraper {
	return &scraper{client: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DisableCompression:  true, // Accept-Encoding is set by hand; the body is read as sent
			MaxIdleConnsPerHost: 64,
		},
	}}
}

// get scrapes url once and returns the compressed body.
func (s *scraper) get(b *testing.B, url string) []byte {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Accept", promAccept)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", promUserAgent)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
	resp, err := s.client.Do(req)
	if err != nil {
		b.Error(err)
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Errorf("GET %s: status %d, %v", url, resp.StatusCode, err)
		return nil
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		b.Errorf("GET %s: not gzipped (Content-Encoding %q)", url, resp.Header.Get("Content-Encoding"))
	}
	return body
}

func gunzip(b *testing.B, body []byte) []byte {
	b.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// seriesCount counts the samples of a text exposition.
func seriesCount(raw []byte) int {
	n := 0
	for line := range bytes.SplitSeq(raw, []byte("\n")) {
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}

// block is one block of sequential scrapes of one exporter.
type block struct {
	cpu       time.Duration // process CPU over the block
	latencies []time.Duration
	bytes     int // compressed size of the last answer
	raw       []byte
}

func (bl block) cpuPerScrape() float64 {
	return float64(bl.cpu) / float64(len(bl.latencies)) / 1e6
}

func (bl block) p50() float64 { return percentile(bl.latencies, 0.5) }

func scrapeBlock(b *testing.B, s *scraper, e exporter, n int) block {
	b.Helper()
	bl := block{latencies: make([]time.Duration, 0, n)}
	cpu0 := cpuNanos(b, e.pid)
	var last []byte
	for range n {
		start := time.Now()
		last = s.get(b, e.url)
		bl.latencies = append(bl.latencies, time.Since(start))
	}
	bl.cpu = time.Duration(cpuNanos(b, e.pid) - cpu0)
	bl.bytes = len(last)
	bl.raw = gunzip(b, last)
	return bl
}

// percentile of ds in milliseconds (nearest rank).
func percentile(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	return float64(s[int(p*float64(len(s)-1)+0.5)]) / 1e6
}

// stat is a median with its spread over runs.
type stat struct{ med, lo, hi float64 }

func statOf(vs []float64) stat {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{med: med, lo: s[0], hi: s[n-1]}
}

func (s stat) String() string {
	return fmt.Sprintf("%s (%s–%s)", num3(s.med), num3(s.lo), num3(s.hi))
}

// num3 formats with three significant digits.
func num3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// floorRound is the floor's console part: the round's commands sent at
// once (one network round trip) on a held connection, their rows read and
// dropped.
func floorRound(b *testing.B, c *pgconn.PgConn) {
	b.Helper()
	fe := c.Frontend()
	for _, q := range floorCommands {
		fe.SendQuery(&pgproto3.Query{String: q})
	}
	if err := fe.Flush(); err != nil {
		b.Fatal(err)
	}
	for ready := 0; ready < len(floorCommands); {
		msg, err := c.ReceiveMessage(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			ready++
		case *pgproto3.ErrorResponse:
			b.Fatalf("floor round: %s", m.Message)
		}
	}
}

// constSeries is a collector of fixed samples as const metrics: the
// floor's gather builds the same series the agent exposes, the way any
// client_golang exporter does.
type constSeries struct {
	families []*dto.MetricFamily
	descs    [][]*prometheus.Desc // per family, per sample
}

func newConstSeries(raw []byte) *constSeries {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		panic(err)
	}
	c := &constSeries{}
	for _, mf := range fams {
		c.families = append(c.families, mf)
		var ds []*prometheus.Desc
		for _, m := range mf.Metric {
			names := make([]string, 0, len(m.Label))
			for _, l := range m.Label {
				names = append(names, l.GetName())
			}
			ds = append(ds, prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil))
		}
		c.descs = append(c.descs, ds)
	}
	return c
}

func (*constSeries) Describe(chan<- *prometheus.Desc) {}

func (c *constSeries) Collect(ch chan<- prometheus.Metric) {
	for i, mf := range c.families {
		vt := prometheus.GaugeValue
		if mf.GetType() == dto.MetricType_COUNTER {
			vt = prometheus.CounterValue
		}
		for j, m := range mf.Metric {
			values := make([]string, 0, len(m.Label))
			for _, l := range m.Label {
				values = append(values, l.GetValue())
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			if m.Untyped != nil {
				v = m.GetUntyped().GetValue()
				vt = prometheus.UntypedValue
			}
			ch <- prometheus.MustNewConstMetric(c.descs[i][j], vt, v, values...)
		}
	}
}

// floorSample is one iteration of the floor: its console round, then
// client_golang's gather and text encoding, gzipped as promhttp does.
type floorSample struct{ round, gather, encode time.Duration }

func (f floorSample) total() time.Duration { return f.round + f.gather + f.encode }

func floorOnce(b *testing.B, c *pgconn.PgConn, reg *prometheus.Registry, gz *gzip.Writer) floorSample {
	b.Helper()
	t0 := time.Now()
	floorRound(b, c)
	t1 := time.Now()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	t2 := time.Now()
	gz.Reset(io.Discard)
	enc := expfmt.NewEncoder(gz, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			b.Fatal(err)
		}
	}
	if err := gz.Close(); err != nil {
		b.Fatal(err)
	}
	return floorSample{round: t1.Sub(t0), gather: t2.Sub(t1), encode: time.Since(t2)}
}

// scaleResult is what one scale reports.
type scaleResult struct {
	pools                 int
	loadBefore, loadAfter string
	runs                  int
	blockSize             int
	// per run
	pwCPU, peerCPU, floorCPU, pwP50, peerP50, floorP50, ratioCPU, ratioFloor []float64
	pwAll, peerAll                                                           []time.Duration
	floorAll                                                                 []floorSample
	pwSeries, peerSeries                                                     int
	pwBytes, peerBytes, pwRaw, peerRaw                                       int
	pwRSS, peerRSS, pwHWM, peerHWM                                           int64
	storm                                                                    *stormResult
}

type stormResult struct {
	scrapers, requests, rounds int
	wall                       time.Duration
	cpu                        time.Duration
	hwmKB                      int64
	latencies                  []time.Duration
}

// BenchmarkVersusPgbouncerExporter compares poolwatch with
// pgbouncer_exporter at 20, 200 and 1,000 pools (BENCH_POOLS), in
// BENCH_RUNS (5) alternating runs of BENCH_BLOCK (50) sequential scrapes
// each, with the floor measured in between, then the 20-scraper storm
// against poolwatch. Run it with -benchtime 1x: one iteration is the whole
// comparison. The report goes to bench/out/compare.md.
func BenchmarkVersusPgbouncerExporter(b *testing.B) {
	testenv.Require(b, "postgres", "pgbouncer")
	peer := buildPeer(b)
	nofile := raiseOpenFiles(b)
	scales := envInts(b, "BENCH_POOLS", []int{20, 200, 1000})
	runs := envInt(b, "BENCH_RUNS", 5)
	size := envInt(b, "BENCH_BLOCK", 50)
	stormScrapers, stormRequests := envInt(b, "BENCH_STORM_SCRAPERS", 20), envInt(b, "BENCH_STORM_REQUESTS", 25)
	maxPools := slices.Max(scales)

	pg := testenv.StartPostgres(b, testenv.PostgresOptions{MaxConnections: maxPools + 100})
	pg.CreateRole(b, monUser, monPass, "LOGIN")
	pg.CreateRole(b, appUser, appPass, "LOGIN")

	var results []*scaleResult
	for range b.N {
		results = results[:0]
		for _, pools := range scales {
			results = append(results, compareAt(b, pg, peer, pools, runs, size, stormScrapers, stormRequests))
		}
	}
	for _, r := range results {
		b.ReportMetric(statOf(r.ratioCPU).med, fmt.Sprintf("cpu-ratio-%d", r.pools))
		b.ReportMetric(statOf(r.ratioFloor).med, fmt.Sprintf("floor-ratio-%d", r.pools))
	}
	report := renderReport(results, nofile)
	if err := os.MkdirAll("out", 0o750); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("out", "compare.md"), []byte(report), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Log("\n" + report)
}

// bouncerWithPools starts a PgBouncer with that many databases, each with
// one pool listed (a client has logged in to it), and no server connection
// left open.
func bouncerWithPools(b *testing.B, pg *testenv.Postgres, pools int) *testenv.PgBouncer {
	b.Helper()
	ctx := context.Background()
	dbs := make(map[string]string, pools)
	for i := range pools {
		dbs[fmt.Sprintf("db%04d", i)] = "dbname=postgres"
	}
	pgb := testenv.StartPgBouncer(b, pg, testenv.PgBouncerOptions{
		Users:         map[string]string{monUser: monPass, appUser: appPass},
		StatsUsers:    []string{monUser},
		Databases:     dbs,
		MaxClientConn: 500,
		Extra: map[string]string{
			// The peer's lib/pq sends extra_float_digits.
			"ignore_startup_parameters": "extra_float_digits",
			// The warm-up's server connections close soon after.
			"server_idle_timeout": "2",
		},
	})
	for name := range dbs {
		c, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", pgb.Host, pgb.Port, appUser, appPass, name))
		if err != nil {
			b.Fatal(err)
		}
		_ = c.Close(ctx)
	}
	testenv.Eventually(b, 60*time.Second, 200*time.Millisecond, func() (bool, string) {
		n := len(pgb.Show(b, "SHOW SERVERS").Records())
		return n == 0, fmt.Sprintf("%d server connections of the warm-up still open", n)
	})
	if got := len(pgb.Show(b, "SHOW POOLS").Records()); got < pools {
		b.Fatalf("PgBouncer lists %d pools, want at least %d", got, pools)
	}
	return pgb
}

// consoleDSN is the DSN of pgb's console for the monitoring user.
func consoleDSN(pgb *testenv.PgBouncer) string {
	return fmt.Sprintf("postgres://%s:%s@%s:%d/pgbouncer?sslmode=disable", monUser, monPass, pgb.Host, pgb.Port)
}

func compareAt(b *testing.B, pg *testenv.Postgres, peerBin string, pools, runs, size, stormScrapers, stormRequests int) *scaleResult {
	b.Helper()
	ctx := context.Background()
	pgb := bouncerWithPools(b, pg, pools)

	consoleDSN := consoleDSN(pgb)
	pw := testenv.StartPoolwatch(b, fmt.Sprintf("targets:\n  - name: bouncer\n    kind: pgbouncer\n    dsn: %s\n    max_pools: %d\n", consoleDSN, pools+10))
	peerPort := testenv.FreePort(b)
	peerCmd := exec.Command(peerBin, "--pgBouncer.connectionString="+consoleDSN, fmt.Sprintf("--web.listen-address=127.0.0.1:%d", peerPort), "--log.level=warn") //nolint:gosec // the binary buildPeer built
	peerCmd.Stdout, peerCmd.Stderr = io.Discard, io.Discard
	peerCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := peerCmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = peerCmd.Process.Kill(); _ = peerCmd.Wait() })

	s := newScraper()
	ours := exporter{name: "poolwatch", url: pw.URL + "/metrics", pid: pw.PID()}
	theirs := exporter{name: "pgbouncer_exporter", url: fmt.Sprintf("http://127.0.0.1:%d/metrics", peerPort), pid: peerCmd.Process.Pid}
	testenv.Eventually(b, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		resp, err := http.Get(theirs.url)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	for range 10 {
		s.get(b, ours.url)
		s.get(b, theirs.url)
	}

	// The floor: a held console connection and the agent's own series.
	fc, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=pgbouncer sslmode=disable", pgb.Host, pgb.Port, monUser, monPass))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = fc.Close(ctx) }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newConstSeries(gunzip(b, s.get(b, ours.url))))
	gz := gzip.NewWriter(io.Discard)
	self := os.Getpid()

	res := &scaleResult{pools: pools, loadBefore: loadAvg(), runs: runs, blockSize: size}
	for run := range runs {
		order := []exporter{ours, theirs}
		if run%2 == 1 {
			order = []exporter{theirs, ours}
		}
		var got [2]block
		for _, e := range order {
			bl := scrapeBlock(b, s, e, size)
			if e.name == ours.name {
				got[0] = bl
			} else {
				got[1] = bl
			}
		}
		runtime.GC()
		cpu0 := cpuNanos(b, self)
		var fl []time.Duration
		for range size {
			f := floorOnce(b, fc, reg, gz)
			fl = append(fl, f.total())
			res.floorAll = append(res.floorAll, f)
		}
		floorCPU := float64(cpuNanos(b, self)-cpu0) / float64(size) / 1e6

		res.pwCPU = append(res.pwCPU, got[0].cpuPerScrape())
		res.peerCPU = append(res.peerCPU, got[1].cpuPerScrape())
		res.floorCPU = append(res.floorCPU, floorCPU)
		res.pwP50 = append(res.pwP50, got[0].p50())
		res.peerP50 = append(res.peerP50, got[1].p50())
		res.floorP50 = append(res.floorP50, percentile(fl, 0.5))
		res.ratioCPU = append(res.ratioCPU, got[0].cpuPerScrape()/got[1].cpuPerScrape())
		res.ratioFloor = append(res.ratioFloor, got[0].p50()/percentile(fl, 0.5))
		res.pwAll = append(res.pwAll, got[0].latencies...)
		res.peerAll = append(res.peerAll, got[1].latencies...)
		res.pwSeries, res.peerSeries = seriesCount(got[0].raw), seriesCount(got[1].raw)
		res.pwBytes, res.peerBytes = got[0].bytes, got[1].bytes
		res.pwRaw, res.peerRaw = len(got[0].raw), len(got[1].raw)
	}
	res.pwRSS, res.peerRSS = memKB(b, ours.pid, "VmRSS"), memKB(b, theirs.pid, "VmRSS")
	res.pwHWM, res.peerHWM = memKB(b, ours.pid, "VmHWM"), memKB(b, theirs.pid, "VmHWM")
	if stormScrapers > 0 {
		res.storm = storm(b, s, ours, stormScrapers, stormRequests)
	}
	res.loadAfter = loadAvg()
	return res
}

// roundRE finds the duration of the round an answer was built from: each
// round has its own.
var roundRE = regexp.MustCompile(`(?m)^poolwatch_target_scrape_duration_seconds\{[^}]*\} (\S+)$`)

// storm sends scrapers concurrent scrapers, requests each, at poolwatch and
// counts the rounds they were served from.
func storm(b *testing.B, s *scraper, e exporter, scrapers, requests int) *stormResult {
	b.Helper()
	var mu sync.Mutex
	bodies := map[uint64][]byte{} // distinct answers, by hash
	var latencies []time.Duration
	cpu0 := cpuNanos(b, e.pid)
	start := time.Now()
	var wg sync.WaitGroup
	for range scrapers {
		wg.Go(func() {
			for range requests {
				t := time.Now()
				body := s.get(b, e.url)
				d := time.Since(t)
				h := fnv.New64a()
				_, _ = h.Write(body)
				mu.Lock()
				latencies = append(latencies, d)
				if _, ok := bodies[h.Sum64()]; !ok {
					bodies[h.Sum64()] = body
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r := &stormResult{scrapers: scrapers, requests: scrapers * requests, wall: time.Since(start),
		cpu: time.Duration(cpuNanos(b, e.pid) - cpu0), hwmKB: memKB(b, e.pid, "VmHWM"), latencies: latencies}
	rounds := map[string]bool{}
	for _, body := range bodies {
		m := roundRE.FindSubmatch(gunzip(b, body))
		if m == nil {
			b.Fatal("storm: an answer without poolwatch_target_scrape_duration_seconds")
		}
		rounds[string(m[1])] = true
	}
	r.rounds = len(rounds)
	return r
}

func renderReport(results []*scaleResult, nofile uint64) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# poolwatch vs %s %s\n\n", peerModule, peerVersion)
	fmt.Fprintf(&sb, "%s, %s, %d CPUs, open-files limit %d. Medians over runs, (min–max) in brackets; CPU and latency in ms per scrape.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), runtime.NumCPU(), nofile)
	sb.WriteString("| pools | load before → after | poolwatch CPU | peer CPU | ratio | poolwatch p50 | peer p50 | floor p50 | poolwatch / floor | floor CPU |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&sb, "| %d | %s → %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.pools, r.loadBefore, r.loadAfter,
			statOf(r.pwCPU), statOf(r.peerCPU), statOf(r.ratioCPU), statOf(r.pwP50), statOf(r.peerP50), statOf(r.floorP50), statOf(r.ratioFloor), statOf(r.floorCPU))
	}
	sb.WriteString("\nLatency over all runs (ms), series and bytes of one answer (gzip / raw), memory (MB):\n\n")
	sb.WriteString("| pools | exporter | p50 | p90 | p99 | series | bytes gzip | bytes raw | RSS | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&sb, "| %d | poolwatch | %s | %s | %s | %d | %d | %d | %.1f | %.1f |\n", r.pools,
			num3(percentile(r.pwAll, .5)), num3(percentile(r.pwAll, .9)), num3(percentile(r.pwAll, .99)), r.pwSeries, r.pwBytes, r.pwRaw, float64(r.pwRSS)/1024, float64(r.pwHWM)/1024)
		fmt.Fprintf(&sb, "| %d | pgbouncer_exporter | %s | %s | %s | %d | %d | %d | %.1f | %.1f |\n", r.pools,
			num3(percentile(r.peerAll, .5)), num3(percentile(r.peerAll, .9)), num3(percentile(r.peerAll, .99)), r.peerSeries, r.peerBytes, r.peerRaw, float64(r.peerRSS)/1024, float64(r.peerHWM)/1024)
	}
	sb.WriteString("\nThe floor, its parts (ms, medians over all iterations): the console round (the round's commands at once on a held connection), client_golang's Gather of the agent's series as const metrics, text encoding with gzip:\n\n")
	sb.WriteString("| pools | round | gather | encode + gzip | total |\n|---|---|---|---|---|\n")
	for _, r := range results {
		var round, gather, encode, total []time.Duration
		for _, f := range r.floorAll {
			round, gather, encode, total = append(round, f.round), append(gather, f.gather), append(encode, f.encode), append(total, f.total())
		}
		fmt.Fprintf(&sb, "| %d | %s | %s | %s | %s |\n", r.pools, num3(percentile(round, .5)), num3(percentile(gather, .5)), num3(percentile(encode, .5)), num3(percentile(total, .5)))
	}
	sb.WriteString("\nThe storm: concurrent scrapers against poolwatch alone; its CPU per round against the CPU of one sequential scrape (one scrape, one round):\n\n")
	sb.WriteString("| pools | scrapers × requests | rounds | wall | agent CPU | CPU per round | / sequential scrape | p50 | p99 | peak RSS (MB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		st := r.storm
		if st == nil {
			continue
		}
		perRound := float64(st.cpu) / float64(st.rounds) / 1e6
		fmt.Fprintf(&sb, "| %d | %d × %d | %d | %.2f s | %.0f ms | %s | %.2f | %s | %s | %.1f |\n", r.pools, st.scrapers, st.requests/st.scrapers, st.rounds,
			st.wall.Seconds(), float64(st.cpu)/1e6, num3(perRound), perRound/statOf(r.pwCPU).med,
			num3(percentile(st.latencies, .5)), num3(percentile(st.latencies, .99)), float64(st.hwmKB)/1024)
	}
	return sb.String()
}
