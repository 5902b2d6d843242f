package scrape

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
)

// The application scraper is tested here on the real libraries' recorded
// expositions (testdata/expositions, see testdata/README.md), served by a
// real HTTP server; application_live_test.go runs the libraries themselves.

// appTarget is an application target of url as config.Load makes it.
func appTarget(url string) config.Target {
	return config.Target{
		Name: "orders-api", Kind: config.KindApplication, URL: url, Format: config.FormatAuto,
		HTTPClient: promconfig.DefaultHTTPClientConfig, ScrapeTimeout: 5 * time.Second, MaxPools: 1000,
		BodySizeLimit: 10 << 20, Labels: map[string]string{},
	}
}

func readExposition(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "expositions", name))
	require.NoError(t, err)
	return b
}

// serve serves body with Content-Type ct ("" sends none: Go would sniff
// one, so an explicit application/octet-stream stands for "no telling
// type").
func serve(t testing.TB, ct string, body []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if ct == "" {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func scrapeApp(t testing.TB, tg config.Target) *Result {
	t.Helper()
	s, err := New(tg)
	require.NoError(t, err)
	sc, ok := s.(SelfContained)
	require.True(t, ok, "an application scraper needs no probe pool")
	t.Cleanup(sc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), tg.ScrapeTimeout)
	defer cancel()
	return s.Scrape(ctx, nil)
}

const textCT = "text/plain; version=0.0.4; charset=utf-8"

func TestApplication_MapsEveryRecordedDialect(t *testing.T) {
	for _, tc := range []struct {
		file, ct, poolLabel string
		want                Pool
	}{
		{file: "database-sql.prom", ct: textCT + "; escaping=underscores",
			want: Pool{Name: "orders", Max: Some(5), Open: 2, InUse: 1}},
		{file: "pgxpool.prom", ct: textCT, poolLabel: "db",
			want: Pool{Name: "orders", Max: Some(5), Open: 2, InUse: 1, AcquireTimeouts: Some(0)}},
		{file: "pgxpool.prom", ct: textCT,
			want: Pool{Name: DefaultPoolName, Max: Some(5), Open: 2, InUse: 1, AcquireTimeouts: Some(0)}},
		{file: "opentelemetry.prom", ct: "text/plain",
			want: Pool{Name: "127.0.0.1:46365/postgres", Open: 3, InUse: 1, Waiting: Some(0)}},
		{file: "opentelemetry-old-names.prom", ct: "text/plain",
			want: Pool{Name: "orders-node", Max: Some(5), Open: 3, InUse: 1, Waiting: Some(0)}},
		{file: "hikaricp-micrometer.prom", ct: textCT,
			want: Pool{Name: "HikariPool-1", Min: Some(2), Max: Some(5), Open: 5, InUse: 3, Waiting: Some(0), AcquireTimeouts: Some(1)}},
		{file: "hikaricp-prometheus-tracker.prom", ct: textCT,
			want: Pool{Name: "HikariPool-1", Min: Some(2), Max: Some(5), Open: 5, InUse: 3, Waiting: Some(0), AcquireTimeouts: Some(1)}},
		{file: "psycopg2-status.json", ct: "application/json",
			want: Pool{Name: DefaultPoolName, Min: Some(2), Max: Some(10), Open: 4, InUse: 4, AcquireTimeouts: Some(0)}},
		{file: "psycopg-pool-stats.json", ct: "application/json",
			want: Pool{Name: "orders", Min: Some(2), Max: Some(4), Open: 4, InUse: 1, Waiting: Some(0), AcquireTimeouts: Some(1)}},
	} {
		for _, ct := range []string{tc.ct, ""} {
			t.Run(tc.file+"/content-type="+ct, func(t *testing.T) {
				tg := appTarget(serve(t, ct, readExposition(t, tc.file)).URL + "/metrics")
				tg.PoolLabel = tc.poolLabel
				res := scrapeApp(t, tg)
				require.Empty(t, res.Errors)
				assert.Equal(t, config.KindApplication, res.Kind)
				tc.want.NoLeakDetection = true
				assert.Equal(t, []Pool{tc.want}, res.Pools)
			})
		}
	}
}

func TestApplication_FormatNamedInTheConfigWins(t *testing.T) {
	body := readExposition(t, "psycopg2-status.json")
	tg := appTarget(serve(t, textCT, body).URL)
	tg.Format = config.FormatJSON
	res := scrapeApp(t, tg)
	require.Empty(t, res.Errors, "format: json reads JSON served as text/plain")
	require.Len(t, res.Pools, 1)

	tg = appTarget(serve(t, "application/json", readExposition(t, "database-sql.prom")).URL)
	tg.Format = config.FormatPrometheus
	res = scrapeApp(t, tg)
	require.Empty(t, res.Errors)
	require.Equal(t, "orders", res.Pools[0].Name)
}

// TestApplication_OpenMetricsIsReadByExpfmt serves a recorded exposition
// as client_golang's own OpenMetrics encoder writes it.
func TestApplication_OpenMetricsIsReadByExpfmt(t *testing.T) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(readExposition(t, "hikaricp-micrometer.prom")))
	require.NoError(t, err)
	var buf bytes.Buffer
	format := expfmt.NewFormat(expfmt.TypeOpenMetrics)
	enc := expfmt.NewEncoder(&buf, format)
	for _, name := range []string{"hikaricp_connections", "hikaricp_connections_active", "hikaricp_connections_idle",
		"hikaricp_connections_timeout_total", "hikaricp_connections_max"} {
		require.NoError(t, enc.Encode(fams[name]))
	}
	_, err = expfmt.FinalizeOpenMetrics(&buf)
	require.NoError(t, err)
	require.Contains(t, buf.String(), "# TYPE hikaricp_connections_timeout counter\nhikaricp_connections_timeout_total{pool=\"HikariPool-1\"} 1.0\n")
	require.Contains(t, buf.String(), "# EOF")

	res := scrapeApp(t, appTarget(serve(t, string(format), buf.Bytes()).URL))
	require.Empty(t, res.Errors)
	require.Equal(t, []Pool{{Name: "HikariPool-1", Max: Some(5), Open: 5, InUse: 3, AcquireTimeouts: Some(1), NoLeakDetection: true}}, res.Pools)
}

func TestApplication_FailuresSayWhichTargetAndWhat(t *testing.T) {
	goOnly := func() []byte {
		var b bytes.Buffer
		for _, l := range strings.SplitAfter(string(readExposition(t, "database-sql.prom")), "\n") {
			if !strings.Contains(l, "go_sql_") {
				b.WriteString(l)
			}
		}
		return b.Bytes()
	}()
	// Both trackers at once (hikaricp_connections, which they share, once).
	var twoTrackers []byte
	twoTrackers = append(twoTrackers, readExposition(t, "hikaricp-micrometer.prom")...)
	for _, l := range strings.SplitAfter(string(readExposition(t, "hikaricp-prometheus-tracker.prom")), "\n") {
		if !strings.Contains(l, "hikaricp_connections ") && !strings.Contains(l, "hikaricp_connections{") {
			twoTrackers = append(twoTrackers, l...)
		}
	}
	for _, tc := range []struct {
		name, ct string
		body     []byte
		query    string
		msg      []string
	}{
		{"no pool metrics", textCT, goOnly, QueryParse, []string{
			`target "orders-api" (http://`, "no connection pool metrics in the exposition",
			"go_sql_in_use_connections (database/sql (DBStatsCollector))", "pgxpool_acquired_conns", "db_client_connection_count"}},
		{"malformed", textCT, []byte("hikaricp_connections_active{pool=\"a\" 3\n"), QueryParse, []string{"parse the exposition"}},
		{"empty", "", nil, QueryParse, []string{"empty response"}},
		{"json garbage", "application/json", []byte(`{"in_use": "many", "idle": 1}`), QueryParse, []string{`"in_use": must be a number, not "many"`}},
		{"json without in_use", "application/json", []byte(`{"minconn": 1, "maxconn": 5, "idle": 1}`), QueryParse, []string{`no "in_use"`}},
		{"json truncated", "application/json", []byte(`{"in_use": 1,`), QueryParse, []string{"parse the JSON status document"}},
		{"two trackers name one pool", textCT, twoTrackers, QueryParse, []string{`pool "HikariPool-1" is reported by two libraries`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := scrapeApp(t, appTarget(serve(t, tc.ct, tc.body).URL))
			require.Len(t, res.Errors, 1)
			assert.Equal(t, tc.query, res.Errors[0].Query)
			for _, m := range tc.msg {
				assert.Contains(t, res.Errors[0].Error(), m)
			}
			assert.False(t, res.Up())
			assert.Empty(t, res.Pools)
		})
	}
}

func TestApplication_HTTPFailures(t *testing.T) {
	status := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer status.Close()
	res := scrapeApp(t, appTarget(status.URL+"/metrics?token=S3cret"))
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryHTTP, res.Errors[0].Query)
	assert.Contains(t, res.Errors[0].Error(), "HTTP status 503 Service Unavailable")
	assert.Contains(t, res.Errors[0].Error(), "/metrics?token=xxxxx", "the query string's values are redacted")
	assert.NotContains(t, res.Errors[0].Error(), "S3cret")

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	res = scrapeApp(t, appTarget(closed.URL+"/metrics?token=S3cret"))
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryHTTP, res.Errors[0].Query)
	assert.Contains(t, res.Errors[0].Error(), "connection refused")
	assert.NotContains(t, res.Errors[0].Error(), "S3cret", "Go's url.Error quotes the URL: not ours")
}

// TestApplication_HungEndpointCostsItsTimeoutOnly: the round ends at its
// deadline with an HTTP error, and the request is cancelled on the server.
func TestApplication_HungEndpointCostsItsTimeoutOnly(t *testing.T) {
	var cancelled atomic.Bool
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", textCT)
		_, _ = w.Write([]byte("# HELP hikaricp_connections_active Active connections\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // never finishes the body
		cancelled.Store(true)
	}))
	defer hung.Close()
	tg := appTarget(hung.URL)
	tg.ScrapeTimeout = 300 * time.Millisecond
	res := scrapeApp(t, tg)
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryHTTP, res.Errors[0].Query)
	assert.Contains(t, res.Errors[0].Error(), "context deadline exceeded")
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		return cancelled.Load(), "the server never saw the request go away"
	})
}

// TestApplication_HugeResponsesAreRefused sends 50 MB three ways: with a
// Content-Length (refused before reading), chunked (refused at the limit)
// and gzip-compressed to a few kB (the limit counts decompressed bytes).
func TestApplication_HugeResponsesAreRefused(t *testing.T) {
	const size = 50 << 20
	line := []byte("# a comment line that a client could send for ever to fill the agent's memory.......\n")
	// Written 64 KiB at a time: 85-byte writes made the chunked case too slow
	// under the race detector on a loaded machine to pass the limit before
	// the scrape timeout.
	block := bytes.Repeat(line, 64<<10/len(line))
	var sent atomic.Int64
	write := func(w http.ResponseWriter) {
		for n := 0; n < size; n += len(block) {
			m, err := w.Write(block)
			sent.Add(int64(m))
			if err != nil {
				return
			}
		}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	for n := 0; n < size; n += len(line) {
		_, _ = zw.Write(line)
	}
	require.NoError(t, zw.Close())
	require.Less(t, gz.Len(), 1<<20)

	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		msg     string
	}{
		{"content-length", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "52428800")
			write(w)
		}, "Content-Length 52428800 bytes is over body_size_limit 10MiB, refused unread"},
		{"chunked", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", textCT)
			write(w)
		}, "over body_size_limit 10MiB, refused"},
		{"gzip", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", textCT)
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gz.Bytes())
		}, "over body_size_limit 10MiB, refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent.Store(0)
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			res := scrapeApp(t, appTarget(srv.URL))
			require.Len(t, res.Errors, 1)
			assert.Equal(t, QueryHTTP, res.Errors[0].Query)
			assert.ErrorIs(t, res.Errors[0], ErrTooLarge)
			assert.Contains(t, res.Errors[0].Error(), tc.msg)
		})
	}
}

func TestApplication_CloseCancelsTheRoundInFlight(t *testing.T) {
	started := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}))
	defer hung.Close()
	s, err := New(appTarget(hung.URL))
	require.NoError(t, err)
	done := make(chan *Result)
	go func() { done <- s.Scrape(context.Background(), nil) }()
	<-started
	s.(SelfContained).Close()
	res := <-done
	require.Len(t, res.Errors, 1)
	assert.Contains(t, res.Errors[0].Error(), "target removed or changed by a reload")
}

func TestStatusJSON_Shapes(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []Pool
		err       string
	}{
		{name: "min and max, open from in use + idle",
			doc:  `{"min": 1, "max": 8, "in_use": 3, "idle": 2, "waiting": 4, "timeouts": 7, "app": "x"}`,
			want: []Pool{{Name: DefaultPoolName, Min: Some(1), Max: Some(8), Open: 5, InUse: 3, Waiting: Some(4), AcquireTimeouts: Some(7)}}},
		{name: "open given, null is absent",
			doc:  `{"name": "main", "maxconn": null, "in_use": 3, "open": 6}`,
			want: []Pool{{Name: "main", Open: 6, InUse: 3}}},
		{name: "several pools, sorted",
			doc: `{"pools": [{"name": "write", "maxconn": 10, "in_use": 2, "idle": 1},
			                 {"name": "read", "pool_min": 1, "pool_max": 4, "pool_size": 3, "pool_available": 3}]}`,
			want: []Pool{
				{Name: "read", Min: Some(1), Max: Some(4), Open: 3, InUse: 0, AcquireTimeouts: Some(0)},
				{Name: "write", Max: Some(10), Open: 3, InUse: 2},
			}},
		{name: "one pool in pools needs no name",
			doc:  `{"pools": [{"in_use": 1, "idle": 0}]}`,
			want: []Pool{{Name: DefaultPoolName, Open: 1, InUse: 1}}},
		{name: "both spellings", doc: `{"min": 1, "minconn": 1, "in_use": 1, "idle": 1}`, err: `both "minconn" and "min" are set`},
		{name: "negative", doc: `{"in_use": -1, "idle": 1}`, err: `"in_use": must not be negative, got -1`},
		{name: "no open", doc: `{"in_use": 1}`, err: `neither "idle" nor "open"`},
		{name: "unnamed among several", doc: `{"pools": [{"name": "a", "in_use": 1, "idle": 0}, {"in_use": 1, "idle": 0}]}`, err: `pools[1] has no "name"`},
		{name: "duplicate names", doc: `{"pools": [{"name": "a", "in_use": 1, "idle": 0}, {"name": "a", "in_use": 1, "idle": 0}]}`, err: `pools[1]: duplicate pool name "a"`},
		{name: "pools empty", doc: `{"pools": []}`, err: `"pools" is empty`},
		{name: "pools not a list", doc: `{"pools": {"a": 1}}`, err: `"pools" must be a list of objects`},
		{name: "psycopg shape and in_use", doc: `{"pool_size": 2, "pool_available": 1, "in_use": 1}`, err: `both psycopg_pool's "pool_size" and "in_use" are set`},
		{name: "a list, not an object", doc: `[1, 2]`, err: "parse the JSON status document"},
		{name: "null", doc: `null`, err: "null, not an object"},
		{name: "name not a string", doc: `{"name": 3, "in_use": 1, "idle": 0}`, err: `"name" must be a non-empty string`},
		{name: "huge number", doc: `{"in_use": 1e999, "idle": 0}`, err: "must be a finite number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools, err := mapStatusJSON(strings.NewReader(tc.doc))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, pools)
		})
	}
}

func TestExposition_SeveralSeriesOfOnePoolNeedPoolLabel(t *testing.T) {
	orders := string(readExposition(t, "pgxpool.prom"))
	billing := strings.ReplaceAll(orders, `db="orders"`, `db="billing"`)
	// Two registrations of the collector in one registry write each family
	// once with both series; concatenated, the text parser merges them too.
	body := []byte(orders + onlySamples(billing))

	_, err := mapExposition(bytes.NewReader(body), textCT, "")
	require.ErrorContains(t, err, `pgxpool (pgxpoolprometheus): pgxpool_acquired_conns has several series for pool "default" (no pool label): set pool_label to the label that names the pool (labels seen: db)`)

	pools, err := mapExposition(bytes.NewReader(body), textCT, "db")
	require.NoError(t, err)
	require.Len(t, pools, 2)
	assert.Equal(t, "billing", pools[0].Name)
	assert.Equal(t, "orders", pools[1].Name)
}

// onlySamples drops the comment lines of an exposition.
func onlySamples(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

func TestExposition_NotANumberIsAbsent(t *testing.T) {
	body := strings.Replace(string(readExposition(t, "hikaricp-micrometer.prom")),
		`hikaricp_connections_max{pool="HikariPool-1",} 5.0`, `hikaricp_connections_max{pool="HikariPool-1",} NaN`, 1)
	pools, err := mapExposition(strings.NewReader(body), textCT, "")
	require.NoError(t, err)
	require.False(t, pools[0].Max.Valid)
}

func TestExposition_UnlimitedDatabaseSQLHasNoMax(t *testing.T) {
	body := strings.Replace(string(readExposition(t, "database-sql.prom")),
		`go_sql_max_open_connections{db_name="orders"} 5`, `go_sql_max_open_connections{db_name="orders"} 0`, 1)
	pools, err := mapExposition(strings.NewReader(body), textCT, "")
	require.NoError(t, err)
	require.Equal(t, Optional{}, pools[0].Max, "SetMaxOpenConns(0) is unlimited: absent, not 0")
}

func TestDetectFormat_SkipsLeadingWhiteSpace(t *testing.T) {
	res := scrapeApp(t, appTarget(serve(t, "", []byte("\n\t  "+string(readExposition(t, "psycopg2-status.json")))).URL))
	require.Empty(t, res.Errors)
}

// BenchmarkMapRecordedExposition maps each recorded exposition, as one
// round of an application target does after its GET.
func BenchmarkMapRecordedExposition(b *testing.B) {
	for _, tc := range []struct{ file, poolLabel string }{
		{"hikaricp-micrometer.prom", ""}, {"database-sql.prom", ""}, {"pgxpool.prom", "db"},
		{"opentelemetry.prom", ""}, {"psycopg-pool-stats.json", ""},
	} {
		body := readExposition(b, tc.file)
		b.Run(tc.file, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var err error
				if strings.HasSuffix(tc.file, ".json") {
					_, err = mapStatusJSON(bytes.NewReader(body))
				} else {
					_, err = mapExposition(bytes.NewReader(body), textCT, tc.poolLabel)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzMapApplicationResponse feeds arbitrary responses to both mappings:
// they must never panic, and every pool they return must be named and have
// finite, non-negative JSON counts. The seed corpus (every recorded
// exposition, plus edge cases) runs in `go test`.
func FuzzMapApplicationResponse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "expositions", "*"))
	require.NoError(f, err)
	for _, file := range files {
		b, err := os.ReadFile(file) //nolint:gosec // the seed files
		require.NoError(f, err)
		f.Add(b, "")
		f.Add(b, "db")
	}
	for _, s := range []string{"", "{", "{}", `{"pools":null}`, `{"pools":[null]}`, `{"in_use":1e308,"idle":1e308}`,
		"go_sql_in_use_connections NaN\n", "pgxpool_acquired_conns{db=\"\"} 1\npgxpool_acquired_conns 2\n",
		"# TYPE db_client_connection_count gauge\ndb_client_connection_count{db_client_connection_state=\"used\"} -1\n"} {
		f.Add([]byte(s), "")
	}
	f.Fuzz(func(t *testing.T, body []byte, poolLabel string) {
		check := func(pools []Pool, err error) {
			if err != nil {
				return
			}
			for _, p := range pools {
				if p.Name == "" {
					t.Fatalf("a pool without a name: %+v", p)
				}
			}
		}
		check(mapExposition(bytes.NewReader(body), textCT, poolLabel))
		pools, err := mapStatusJSON(bytes.NewReader(body))
		check(pools, err)
		for _, p := range pools {
			if p.InUse < 0 || p.Open < 0 {
				t.Fatalf("negative counts from JSON: %+v", p)
			}
		}
	})
}
