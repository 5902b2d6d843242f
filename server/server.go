// Package server is poolwatch's HTTP surface: the metrics path, /probe, the
// landing page, health and readiness, and /-/reload.
package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/collector"
)

// Options configure the handler.
type Options struct {
	Agent *agent.Agent
	// Gatherer serves the agent-wide metrics: build info, reload status, Go
	// and process collectors.
	Gatherer prometheus.Gatherer
	// TelemetryPath is the metrics path, "/metrics" by default.
	TelemetryPath string
	// ScrapeTimeoutOffset is subtracted from Prometheus'
	// X-Prometheus-Scrape-Timeout-Seconds to leave time to answer.
	ScrapeTimeoutOffset time.Duration
	// MetricsTargets puts every target's series on the metrics path. Turn it
	// off when Prometheus scrapes the targets through /probe.
	MetricsTargets bool
	// Reload reloads the configuration; POST /-/reload calls it when
	// EnableLifecycle is set.
	Reload func() error
	// EnableLifecycle serves POST /-/reload (--web.enable-lifecycle). When
	// false, /-/reload answers 403 and reloads nothing, as Prometheus'
	// lifecycle API does; SIGHUP still reloads.
	EnableLifecycle bool
	// Ready reports whether the agent has a configuration and serves.
	Ready  func() bool
	Logger log.Logger
	// Version is shown on the landing page.
	Version string
}

// New returns the agent's HTTP handler.
func New(o Options) (http.Handler, error) {
	if o.TelemetryPath == "" {
		o.TelemetryPath = "/metrics"
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	s := &server{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc(o.TelemetryPath, s.metrics)
	mux.HandleFunc("/probe", s.probe)
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "Healthy")
	})
	mux.HandleFunc("/-/ready", s.ready)
	mux.HandleFunc("/-/reload", s.reload)
	if o.TelemetryPath != "/" {
		mux.HandleFunc("/", s.landing)
	}
	return mux, nil
}

// maxBudgetSeconds is the largest X-Prometheus-Scrape-Timeout-Seconds
// taken as a budget (a day); a larger value is ignored like a bad one.
const maxBudgetSeconds = 86400

type server struct {
	o Options
	// metricsCost and probeCost are the answer costs of the metrics path
	// and of /probe (reserve.go).
	metricsCost, probeCost answerCost
}

// budget derives the request's scrape budget from Prometheus' header, minus
// the offset. Without the header, only the targets' own timeouts apply. The
// budget bounds how long this request waits, never a round (agent.Scrape):
// any client can send the header.
func (s *server) budget(r *http.Request) (context.Context, context.CancelFunc) {
	h := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds")
	if h == "" {
		return context.WithCancel(r.Context())
	}
	secs, err := strconv.ParseFloat(h, 64)
	// NaN, infinities and values past time.Duration's range are not a
	// budget.
	if err != nil || !(secs > 0) || secs > maxBudgetSeconds {
		level.Debug(s.o.Logger).Log("msg", "ignoring bad scrape timeout header", "value", h)
		return context.WithCancel(r.Context())
	}
	d := time.Duration(secs*float64(time.Second)) - s.o.ScrapeTimeoutOffset
	if d <= 0 {
		d = time.Duration(secs * float64(time.Second))
	}
	return context.WithTimeout(r.Context(), d)
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.budget(r)
	defer cancel()
	ctx, cancelWait := s.metricsCost.waitContext(ctx)
	defer cancelWait()
	reg := prometheus.NewRegistry()
	if s.o.MetricsTargets {
		reg.MustRegister(collector.NewTargets(s.o.Agent.Scrape(ctx, s.o.Agent.Names())))
	}
	// Taken after the round, so the round's own connections are back.
	reg.MustRegister(collector.NewProbePools(s.o.Agent.ProbePools()))
	s.addressMetrics(reg)
	s.serve(w, r, s.metricsCost.gatherer(prometheus.Gatherers{s.o.Gatherer, reg}))
}

func (s *server) probe(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("target")
	if r.URL.Query().Has("auth_module") {
		s.probeAddress(w, r) // /probe?target=HOST:PORT/DB&kind=KIND&auth_module=NAME
		return
	}
	if name == "" {
		http.Error(w, "the target parameter is missing: use /probe?target=NAME with a configured target name", http.StatusBadRequest)
		return
	}
	if !s.o.Agent.Has(name) {
		msg := fmt.Sprintf("unknown target %q: it is not in the configuration", name)
		if s.o.Agent.AddressProbesEnabled() {
			msg += "; to probe an address, add &auth_module=NAME (and &kind=pgbouncer for a PgBouncer console)"
		}
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	ctx, cancel := s.budget(r)
	defer cancel()
	ctx, cancelWait := s.probeCost.waitContext(ctx)
	defer cancelWait()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.NewTargets(s.o.Agent.Scrape(ctx, []string{name})))
	s.serve(w, r, s.probeCost.gatherer(reg))
}

func (s *server) serve(w http.ResponseWriter, r *http.Request, g prometheus.Gatherer) {
	promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s.o.Logger},
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(w, r)
}

func (s *server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.o.Ready != nil && !s.o.Ready() {
		http.Error(w, "Not ready: no configuration loaded", http.StatusServiceUnavailable)
		return
	}
	_, _ = fmt.Fprintln(w, "Ready")
}

func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	if !s.o.EnableLifecycle {
		http.Error(w, "Lifecycle API is not enabled: start poolwatch with --web.enable-lifecycle to reload over HTTP, or send it SIGHUP.", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "use POST to reload the configuration", http.StatusMethodNotAllowed)
		return
	}
	if s.o.Reload == nil {
		http.Error(w, "reload is not available", http.StatusNotImplemented)
		return
	}
	if err := s.o.Reload(); err != nil {
		http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = fmt.Fprintln(w, "Reloaded")
}

// promLogger adapts go-kit's logger to promhttp's error log.
type promLogger struct{ l log.Logger }

func (p promLogger) Println(v ...any) {
	level.Error(p.l).Log("msg", "metrics handler error", "err", fmt.Sprint(v...))
}
