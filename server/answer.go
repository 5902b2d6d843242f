package server

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/poolwatch/poolwatch/collector"
	"github.com/poolwatch/poolwatch/scrape"
)

// This file builds the answers of the metrics path and of /probe: the
// target series from the rounds' model, the agent's own metrics from its
// registry, in the negotiated format and compression. It replaces
// promhttp's handler, whose behaviour it keeps (content negotiation, Vary,
// name[] filtering, errors: what was gathered is served, a 500 when
// nothing was), for two reasons:
//
//   - the text format, which Prometheus negotiates unless told otherwise,
//     is written straight from the model (collector.Text), without a
//     registry, a metric or a dto.MetricFamily per series, and without
//     checking every series twice (once in the request's registry, again
//     in prometheus.Gatherers);
//   - requests served by the same rounds share one answer (answerCache):
//     the metrics path is gathered, encoded and compressed once per round
//     and format, however many scrapers joined the round.

// answerKey is everything an answer's bytes depend on besides its rounds:
// the negotiated format (text, OpenMetrics or protobuf, with its escaping
// scheme), the compression and the name[] filter.
type answerKey struct {
	format   expfmt.Format
	encoding string
	names    string
}

// Content encodings offered, in promhttp's order of preference.
const (
	encodingIdentity = "identity"
	encodingGzip     = "gzip"
)

// negotiate returns the key of r's answer, as promhttp negotiates it.
func negotiate(r *http.Request) answerKey {
	k := answerKey{
		format:   expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...),
		encoding: negotiateEncoding(r.Header.Values("Accept-Encoding")),
	}
	if r.URL != nil {
		if names := r.URL.Query()["name[]"]; len(names) > 0 {
			names = slices.Clone(names)
			slices.Sort(names)
			k.names = strings.Join(slices.Compact(names), "\x00")
		}
	}
	return k
}

// negotiateEncoding picks the compression of an answer from the
// Accept-Encoding header values, as promhttp does: the offer (identity,
// then gzip) with the highest quality the client gives it, directly or
// through "*"; identity when the client accepts neither or the header is
// malformed.
func negotiateEncoding(values []string) string {
	best, bestQ := encodingIdentity, -1.0
	specs := parseAcceptEncoding(values)
	for _, offer := range []string{encodingIdentity, encodingGzip} {
		for _, s := range specs {
			if s.q > bestQ && (s.value == "*" || s.value == offer) {
				best, bestQ = offer, s.q
			}
		}
	}
	if bestQ == 0 {
		return encodingIdentity // nothing acceptable: promhttp falls back too
	}
	return best
}

type encodingSpec struct {
	value string
	q     float64
}

// parseAcceptEncoding reads "gzip, deflate;q=0.5, *;q=0". A clause with a
// parameter other than q, or a q that is not a number between 0 and 1, is
// skipped.
func parseAcceptEncoding(values []string) []encodingSpec {
	var specs []encodingSpec
	for _, v := range values {
		for clause := range strings.SplitSeq(v, ",") {
			value, params, _ := strings.Cut(clause, ";")
			s := encodingSpec{value: strings.ToLower(strings.TrimSpace(value)), q: 1}
			if s.value == "" {
				continue
			}
			if params = strings.TrimSpace(params); params != "" {
				qs, ok := strings.CutPrefix(params, "q=")
				q, err := strconv.ParseFloat(strings.TrimSpace(qs), 64)
				if !ok || err != nil || q < 0 || q > 1 {
					continue
				}
				s.q = q
			}
			specs = append(specs, s)
		}
	}
	return specs
}

// answer is one built answer: its bytes, encoded and compressed, or the
// error that left nothing to serve. ready is closed once it is built.
type answer struct {
	ready chan struct{}
	key   answerKey
	body  []byte
	err   error
}

// sources are what an answer is built from: the target series of the
// rounds, the probe pools and probes by address (metrics path only), and
// the agent's own registry (metrics path only).
type sources struct {
	targets *collector.Targets
	probes  *collector.ProbePools
	address *collector.AddressProbes
	agent   prometheus.Gatherer
}

// exposer is one of the collectors of sources: a prometheus.Collector that
// also writes its series straight into a collector.Text.
type exposer interface {
	prometheus.Collector
	WriteText(t *collector.Text) error
}

// collectors returns the collectors src holds, in the order targets,
// probes, address; the agent's own registry is not among them.
func (src sources) collectors() []exposer {
	var cs []exposer
	if src.targets != nil {
		cs = append(cs, src.targets)
	}
	if src.probes != nil {
		cs = append(cs, src.probes)
	}
	if src.address != nil {
		cs = append(cs, src.address)
	}
	return cs
}

// builder builds answers with reused buffers. It is safe for concurrent
// use.
type builder struct {
	texts sync.Pool // *collector.Text
	gzips sync.Pool // *gzip.Writer
	// logf logs an error as promhttp's ErrorLog would, debugf at debug
	// level.
	logf, debugf func(msg string, err error)
}

// build builds the answer for key from src into a.
func (b *builder) build(a *answer, src sources) {
	defer close(a.ready)
	var buf bytes.Buffer
	w, closeW := b.compressor(&buf, a.key.encoding)
	if err := b.encode(w, a.key, src); err != nil {
		closeW()
		a.err = err
		return
	}
	closeW()
	a.body = buf.Bytes()
}

// compressor returns the writer of an answer in encoding and the function
// that finishes it.
func (b *builder) compressor(buf *bytes.Buffer, encoding string) (interface{ Write([]byte) (int, error) }, func()) {
	if encoding != encodingGzip {
		return buf, func() {}
	}
	gz, _ := b.gzips.Get().(*gzip.Writer)
	if gz == nil {
		// The fastest level: at 1,000 pools it compresses 2.5 MB of text
		// in about a third of the time of the default level, for about a
		// fifth more bytes (docs/performance.md).
		gz, _ = gzip.NewWriterLevel(buf, gzip.BestSpeed)
	} else {
		gz.Reset(buf)
	}
	return gz, func() {
		_ = gz.Close()
		gz.Reset(nil)
		b.gzips.Put(gz)
	}
}

// encode writes src's series to w: straight from the model in the text
// format, through a registry otherwise (or when the model holds what the
// registry's checks would reject, which the registry then reports).
func (b *builder) encode(w interface{ Write([]byte) (int, error) }, key answerKey, src sources) error {
	if collector.TextFormat(key.format) && key.names == "" {
		txt, _ := b.texts.Get().(*collector.Text)
		if txt == nil {
			txt = collector.NewText()
		}
		defer b.texts.Put(txt)
		txt.Reset()
		err := b.fillText(txt, key, src)
		if err == nil {
			_, err = txt.WriteTo(w)
			return err
		}
		// The registry reports what the model holds that it rejects.
		b.debugf("text exposition refused, serving through the registry", err)
	}
	mfs, err := b.gather(src)
	if err != nil {
		b.logf("error gathering metrics", err)
		if len(mfs) == 0 {
			return err
		}
	}
	if key.names != "" {
		keep := strings.Split(key.names, "\x00")
		mfs = slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return !slices.Contains(keep, mf.GetName()) })
	}
	enc := expfmt.NewEncoder(w, key.format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			b.logf("error encoding and sending metric family", err)
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			b.logf("error encoding and sending metric family", err)
		}
	}
	return nil
}

// errAgentGather marks a failed gather of the agent's own registry: the
// registry path then reports it as promhttp would.
var errAgentGather = errors.New("the agent's own metrics")

// fillText writes src into txt.
func (b *builder) fillText(txt *collector.Text, key answerKey, src sources) error {
	for _, w := range src.collectors() {
		if err := w.WriteText(txt); err != nil {
			return err
		}
	}
	if src.agent == nil {
		return nil
	}
	mfs, err := src.agent.Gather()
	if err != nil {
		return fmt.Errorf("%w: %w", errAgentGather, err)
	}
	return txt.AddGathered(mfs, key.format)
}

// gather gathers src through a registry: one consistency check per series
// (the request's registry's), the agent's own families merged in name
// order. Should a family come from both, prometheus.Gatherers merges them
// and reports what clashes.
func (b *builder) gather(src sources) ([]*dto.MetricFamily, error) {
	reg := prometheus.NewRegistry()
	for _, c := range src.collectors() {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if src.agent == nil {
		return reg.Gather()
	}
	own, ownErr := reg.Gather()
	agent, agentErr := src.agent.Gather()
	merged, clash := mergeFamilies(own, agent)
	if clash {
		return prometheus.Gatherers{src.agent, reg}.Gather()
	}
	return merged, errors.Join(ownErr, agentErr)
}

// mergeFamilies merges two lists of families sorted by name; clash is set
// when a name is in both.
func mergeFamilies(a, b []*dto.MetricFamily) (merged []*dto.MetricFamily, clash bool) {
	merged = make([]*dto.MetricFamily, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		switch c := strings.Compare(a[0].GetName(), b[0].GetName()); {
		case c == 0:
			return nil, true
		case c < 0:
			merged, a = append(merged, a[0]), a[1:]
		default:
			merged, b = append(merged, b[0]), b[1:]
		}
	}
	return append(append(merged, a...), b...), false
}

// write sends a built answer as promhttp would.
func (a *answer) write(w http.ResponseWriter) {
	if a.err != nil {
		http.Error(w, "An error has occurred while serving metrics:\n\n"+a.err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Add("Vary", "Accept")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Type", string(a.key.format))
	if a.key.encoding == encodingGzip {
		h.Set("Content-Encoding", encodingGzip)
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	_, _ = w.Write(a.body) //nolint:gosec // G705: an exposition under its own Content-Type (text, OpenMetrics or protobuf), never HTML
}

// maxGenerations bounds the answers an answerCache keeps: those of the
// last few sets of rounds.
const maxGenerations = 4

// answerCache shares the answers of the metrics path between requests
// served by the same rounds. A request that joins a round in flight gets
// that round's Result, the same pointer as every other request that joined
// it (agent.Scrape); requests whose rounds are all the same, pointer for
// pointer, get the same answer for the same key, built once by the first
// of them while the others wait for it. So the rounds' freshness rules are
// the answers': with min_scrape_interval 0, a request that comes after a
// round ended starts a new round and gets a new answer. What the answer
// holds besides the rounds (the probe pools' snapshot, the agent's own Go
// and process metrics) is that of its first request: up to one round old
// for the others (docs/performance.md). It is safe for concurrent use.
type answerCache struct {
	mu sync.Mutex
	// gens are the answers of the last sets of rounds, newest first.
	// Guarded by mu.
	gens []*generation
}

type generation struct {
	rounds  []*scrape.Result
	answers map[answerKey]*answer
}

// get returns the answer of rounds for key, and whether the caller must
// build it (it is new); otherwise it is being built or built, and the
// caller waits for a.ready.
func (c *answerCache) get(rounds []*scrape.Result, key answerKey) (a *answer, build bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.gens, func(g *generation) bool { return slices.Equal(g.rounds, rounds) })
	var g *generation
	if i >= 0 {
		g = c.gens[i]
		copy(c.gens[1:i+1], c.gens[:i])
	} else {
		g = &generation{rounds: rounds, answers: map[answerKey]*answer{}}
		if len(c.gens) < maxGenerations {
			c.gens = append(c.gens, nil)
		}
		copy(c.gens[1:], c.gens)
	}
	c.gens[0] = g
	if a := g.answers[key]; a != nil {
		return a, false
	}
	a = &answer{ready: make(chan struct{}), key: key}
	g.answers[key] = a
	return a, true
}

// newBuilder returns a builder that logs through s's logger.
func (s *server) newBuilder() *builder {
	return &builder{
		logf: func(msg string, err error) {
			level.Error(s.o.Logger).Log("msg", "metrics handler error", "err", msg+": "+err.Error())
		},
		debugf: func(msg string, err error) {
			level.Debug(s.o.Logger).Log("msg", msg, "err", err)
		},
	}
}

// timed builds a into cost: the answer's cost is what the next request
// with a budget reserves for answering (reserve.go).
func timed(cost *answerCost, b *builder, a *answer, src sources) {
	start := time.Now()
	b.build(a, src)
	cost.last.Store(int64(time.Since(start)))
}
