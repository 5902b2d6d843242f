package testenv

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one parsed text exposition (a /metrics answer): family name ->
// family.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics parses body, the text exposition format with UTF-8 names;
// an error fails tb, showing the body.
func ParseMetrics(tb testing.TB, body string) Metrics {
	tb.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		tb.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return Metrics(mfs)
}

// Scrape GETs /metrics of a plain-HTTP agent with optional header pairs
// (see Get) and parses it; a status other than 200 fails tb.
func (p *Poolwatch) Scrape(tb testing.TB, header ...string) Metrics {
	tb.Helper()
	code, body := p.Get(tb, "/metrics", header...)
	if code != http.StatusOK {
		tb.Fatalf("GET /metrics: status %d\n%s", code, body)
	}
	return ParseMetrics(tb, body)
}

// Find returns the series of family name whose labels include every pair
// of kv ("target", "pg", "pool", "server"...), in the family's order; nil
// when the family is absent or none matches.
func (m Metrics) Find(name string, kv ...string) []*dto.Metric {
	mf, ok := m[name]
	if !ok {
		return nil
	}
	var out []*dto.Metric
	for _, s := range mf.GetMetric() {
		if HasLabels(s, kv...) {
			out = append(out, s)
		}
	}
	return out
}

// Get returns the value of the series of family name whose labels include
// every pair of kv (see Find). ok is false when no series matches; more than
// one match, or a series that is not a gauge, counter or untyped, fails tb.
func (m Metrics) Get(tb testing.TB, name string, kv ...string) (v float64, ok bool) {
	tb.Helper()
	ms := m.Find(name, kv...)
	switch len(ms) {
	case 0:
		return 0, false
	case 1:
	default:
		tb.Fatalf("%s%v: %d series match, want at most 1", name, kv, len(ms))
	}
	switch {
	case ms[0].GetGauge() != nil:
		return ms[0].GetGauge().GetValue(), true
	case ms[0].GetCounter() != nil:
		return ms[0].GetCounter().GetValue(), true
	case ms[0].GetUntyped() != nil:
		return ms[0].GetUntyped().GetValue(), true
	}
	tb.Fatalf("%s%v: not a gauge, counter or untyped series", name, kv)
	return 0, false
}

// Must is Get, failing tb when the series is absent.
func (m Metrics) Must(tb testing.TB, name string, kv ...string) float64 {
	tb.Helper()
	v, ok := m.Get(tb, name, kv...)
	if !ok {
		tb.Fatalf("series %s%v is absent", name, kv)
	}
	return v
}

// SeriesOf counts the series, of every family, that carry target=name.
func (m Metrics) SeriesOf(name string) int {
	n := 0
	for _, mf := range m {
		n += len(m.Find(mf.GetName(), "target", name))
	}
	return n
}

// Values returns the values of label in family name's series, in the
// family's order; series without the label add nothing.
func (m Metrics) Values(name, label string) []string {
	var out []string
	for _, s := range m[name].GetMetric() {
		for _, lp := range s.GetLabel() {
			if lp.GetName() == label {
				out = append(out, lp.GetValue())
			}
		}
	}
	return out
}

// Targets returns the sorted set of values of the target label over every
// series of every family.
func (m Metrics) Targets() []string {
	set := map[string]bool{}
	for _, mf := range m {
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "target" {
					set[lp.GetValue()] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// HasLabels reports whether s carries every label pair of kv (name, value,
// name, value...); a trailing odd name is ignored.
func HasLabels(s *dto.Metric, kv ...string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range s.GetLabel() {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// StopAndCheck stops the agent (see Stop; a no-op if it already exited)
// and fails tb unless it exited with status 0 and its whole log shows no
// data race and none of secrets (each reported by its length only).
func (p *Poolwatch) StopAndCheck(tb testing.TB, secrets ...string) {
	tb.Helper()
	p.Stop(tb)
	if err := p.ExitErr(); err != nil {
		tb.Errorf("the agent exited with %v, want status 0", err)
	}
	logs := p.Logs()
	if strings.Contains(logs, "DATA RACE") {
		tb.Errorf("the agent reported a data race:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			tb.Errorf("the agent's log contains a password (%d bytes)", len(s))
		}
	}
}

// MainWithoutRaceExitSleep is a TestMain: it adds atexit_sleep_ms=0 to
// GORACE, so that a -race build of the agent started by the tests does not
// sleep 1 s at exit (shutdown timings then measure the agent), runs the
// tests and exits with their status. Race reports are still printed, and a
// race still makes the agent exit with status 66, which StopAndCheck
// catches. It exits with status 2 if GORACE cannot be set.
func MainWithoutRaceExitSleep(m *testing.M) {
	if err := os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")); err != nil {
		fmt.Fprintln(os.Stderr, "set GORACE:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}
