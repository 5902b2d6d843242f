package collector

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/pool"
	"github.com/poolwatch/poolwatch/scrape"
)

// textWriter is a collector with a text exposition.
type textWriter interface {
	prometheus.Collector
	WriteText(*Text) error
}

// canonical sorts the sample lines of each family of a text exposition,
// the one thing Text does not do as expfmt does (the registry sorts series
// by label values).
func canonical(text string) string {
	var out, samples []string
	flush := func() {
		slices.Sort(samples)
		out = append(out, samples...)
		samples = samples[:0]
	}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# HELP ") || (strings.HasPrefix(line, "# TYPE ") && (len(out) == 0 || !strings.HasPrefix(out[len(out)-1], "# HELP "))) {
			flush()
		}
		if strings.HasPrefix(line, "#") {
			out = append(out, line)
			continue
		}
		samples = append(samples, line)
	}
	flush()
	return strings.Join(out, "\n") + "\n"
}

// registryText is what the registry and expfmt make of cs in format.
func registryText(t *testing.T, format expfmt.Format, cs ...prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	return buf.String()
}

// textOf is what Text makes of cs.
func textOf(t *testing.T, cs ...textWriter) string {
	t.Helper()
	txt := NewText()
	for _, c := range cs {
		require.NoError(t, c.WriteText(txt))
	}
	var buf bytes.Buffer
	_, err := txt.WriteTo(&buf)
	require.NoError(t, err)
	return buf.String()
}

func requireSameText(t *testing.T, cs ...textWriter) {
	t.Helper()
	pcs := make([]prometheus.Collector, len(cs))
	for i, c := range cs {
		pcs[i] = c
	}
	want := registryText(t, expfmt.NewFormat(expfmt.TypeTextPlain), pcs...)
	require.NotEmpty(t, want)
	require.Equal(t, canonical(want), canonical(textOf(t, cs...)))
}

// goldenRounds are the rounds of every golden file of this package.
func goldenRounds(t *testing.T) map[string][]*scrape.Result {
	crossChecked := applicationRound(t, "psycopg2-status.json", "application/json", "")
	crossChecked.Unaccounted = []scrape.Unaccounted{{Pool: "default", Value: 3}}
	rounds := map[string][]*scrape.Result{
		"pgbouncer":          {pgbouncerTarget()},
		"pgbouncer_complete": {pgbouncerCompleteTarget()},
		"postgres":           {postgresTarget()},
		"down":               {downTarget()},
		"refused":            {refusedTarget()},
		"odyssey":            {odysseyTarget()},
		"pgpool":             {pgpoolTarget()},
		"crosscheck":         {crossChecked},
		"pgxpool":            {applicationRound(t, "pgxpool.prom", "text/plain; version=0.0.4", "db")},
		"hikaricp":           {applicationRound(t, "hikaricp-micrometer.prom", "text/plain; version=0.0.4", "")},
		"opentelemetry":      {applicationRound(t, "opentelemetry.prom", "text/plain", "")},
		"psycopg-pool":       {applicationRound(t, "psycopg-pool-stats.json", "application/json", "")},
	}
	var all []*scrape.Result
	for name, rs := range rounds {
		for _, r := range rs {
			renamed := *r // the application rounds share a target name
			renamed.Target = name
			all = append(all, &renamed)
		}
	}
	rounds["all, several static label sets"] = all
	return rounds
}

func TestText_MatchesTheRegistryAndExpfmtForEveryGoldenRound(t *testing.T) {
	for name, rounds := range goldenRounds(t) {
		t.Run(name, func(t *testing.T) {
			requireSameText(t, NewTargets(rounds))
		})
	}
	t.Run("probe pools", func(t *testing.T) {
		requireSameText(t, NewProbePools([]scrape.ProbePool{
			{Target: "bouncer-1", Labels: map[string]string{"env": "prod"}, Stats: pool.Stats{Max: 2, Open: 1, Idle: 1, AcquireRetries: 3}},
			{Target: "orders-db", Stats: pool.Stats{Min: 1, Max: 2, Open: 2, InUse: 1, NewConnections: 2}},
		}))
	})
	t.Run("address probes", func(t *testing.T) {
		requireSameText(t, NewAddressProbes(scrape.AddressProbes{Pools: 3, MaxPools: 100,
			Refused: map[string]uint64{"not_allowed": 2, "invalid": 0, "max_targets": 5}}))
	})
	t.Run("together", func(t *testing.T) {
		requireSameText(t, NewTargets([]*scrape.Result{pgbouncerTarget(), postgresTarget()}),
			NewProbePools([]scrape.ProbePool{{Target: "bouncer-1", Labels: map[string]string{"env": "prod"}}}),
			NewAddressProbes(scrape.AddressProbes{Pools: 1, MaxPools: 2}))
	})
}

// TestText_MatchesExpfmtForRandomRounds: names with quotes, backslashes,
// newlines and non-ASCII letters, and values expfmt writes specially.
func TestText_MatchesExpfmtForRandomRounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 14)) //nolint:gosec // G404: a fixed seed, so that a failure repeats
	names := []string{"app", `q"uote`, `back\slash`, "new\nline", "ünïcødé", "", "db/*", "a,b", "x=y", "{}"}
	values := []float64{0, 1, -1, 2.5, 1e-9, 12345678901234, math.Inf(1), math.Inf(-1), math.NaN(), 0.1 + 0.2, math.Copysign(0, -1)}
	pick := func() float64 { return values[rng.IntN(len(values))] }
	opt := func() scrape.Optional {
		if rng.IntN(3) == 0 {
			return scrape.Optional{}
		}
		return scrape.Some(pick())
	}
	for i := range 50 {
		var rounds []*scrape.Result
		for target := range 1 + rng.IntN(3) {
			r := &scrape.Result{
				Target: fmt.Sprintf("t%d-%s", target, names[rng.IntN(len(names))]), Kind: "pgbouncer", Version: names[rng.IntN(len(names))],
				Labels:       map[string]string{"env": names[rng.IntN(len(names))]},
				ScrapeErrors: map[string]float64{"show_pools": pick(), names[rng.IntN(len(names))]: pick()},
			}
			for p := range rng.IntN(6) {
				pl := scrape.Pool{Name: fmt.Sprintf("p%d%s", p, names[rng.IntN(len(names))]), Database: names[rng.IntN(len(names))],
					User: names[rng.IntN(len(names))], Mode: "transaction", Min: opt(), Max: opt(), Reserve: opt(), Open: pick(), InUse: pick(),
					Waiting: opt(), MaxWaitSeconds: opt(), Leaked: pick(), OldestLeakSeconds: pick(), NoLeakDetection: rng.IntN(2) == 0,
					States: []scrape.StateCount{{Side: scrape.SideClient, State: "cl_active", Count: pick()}, {Side: scrape.SideServer, State: "sv_idle", Count: pick()}}}
				r.Pools = append(r.Pools, pl)
				r.Databases = append(r.Databases, scrape.DatabaseState{Name: pl.Name, Paused: rng.IntN(2) == 0})
				r.Stats = append(r.Stats, scrape.DatabaseStats{Database: pl.Name, Transactions: pick(), SentBytes: opt()})
			}
			r.Lists = []scrape.ListCount{{List: "used_clients", Items: pick()}, {List: "used_clients", Items: 7}}
			rounds = append(rounds, r)
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { requireSameText(t, NewTargets(rounds)) })
	}
}

// TestText_AgentMetricsFromARegistryJoinInNameOrderForEveryEscapingScheme:
// the agent's own metrics are gathered and encoded by expfmt; with them,
// the whole answer is what the registry and expfmt would write in the
// negotiated format, whatever its escaping scheme.
func TestText_AgentMetricsFromARegistryJoinInNameOrderForEveryEscapingScheme(t *testing.T) {
	agent := prometheus.NewRegistry()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "poolwatch_build_info", Help: "Build.", ConstLabels: prometheus.Labels{"version": "1"}})
	build.Set(1)
	agent.MustRegister(build, collectors.NewGoCollector())
	targets := NewTargets([]*scrape.Result{pgbouncerTarget(), postgresTarget()})
	probes := NewProbePools([]scrape.ProbePool{{Target: "bouncer-1"}})

	for _, scheme := range []model.EscapingScheme{model.UnderscoreEscaping, model.DotsEscaping, model.ValueEncodingEscaping, model.NoEscaping} {
		t.Run(scheme.String(), func(t *testing.T) {
			format := expfmt.NewFormat(expfmt.TypeTextPlain).WithEscapingScheme(scheme)
			mfs, err := agent.Gather()
			require.NoError(t, err)
			txt := NewText()
			require.NoError(t, targets.WriteText(txt))
			require.NoError(t, probes.WriteText(txt))
			require.NoError(t, txt.AddGathered(mfs, format))
			var got bytes.Buffer
			_, err = txt.WriteTo(&got)
			require.NoError(t, err)

			// The same, gathered together (Go metrics are not read twice in
			// the same instant: compare their names and the rest exactly).
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(targets, probes)
			all, err := prometheus.Gatherers{agent, reg}.Gather()
			require.NoError(t, err)
			want := registryTextOfFamilies(t, format, all)
			require.Equal(t, familyNames(want), familyNames(got.String()))
			require.Equal(t, canonical(withoutGo(want)), canonical(withoutGo(got.String())))
		})
	}
}

func registryTextOfFamilies(t *testing.T, format expfmt.Format, mfs []*dto.MetricFamily) string {
	t.Helper()
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	return buf.String()
}

// familyNames lists the families of a text exposition, sorted.
func familyNames(text string) []string {
	var names []string
	for _, line := range strings.Split(text, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names = append(names, strings.Fields(name)[0])
		}
	}
	slices.Sort(names)
	return names
}

// withoutGo drops the go_* families, whose values move between reads.
func withoutGo(text string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "# HELP go_") && !strings.HasPrefix(line, "# TYPE go_") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestText_WritesFamiliesInNameOrder(t *testing.T) {
	txt := textOf(t, NewTargets([]*scrape.Result{pgbouncerTarget()}), NewProbePools([]scrape.ProbePool{{Target: "bouncer-1"}}))
	var names []string
	for _, line := range strings.Split(txt, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names = append(names, strings.Fields(name)[0])
		}
	}
	require.NotEmpty(t, names)
	assert.True(t, slices.IsSorted(names), names)
}

// TestText_RefusesWhatTheRegistryWouldReject: a label value that is not
// UTF-8, two pools or databases of one name, one target twice. The
// registry reports each; Text refuses, so that the caller gathers through
// the registry.
func TestText_RefusesWhatTheRegistryWouldReject(t *testing.T) {
	cases := map[string]func(r *scrape.Result){
		"pool name not UTF-8": func(r *scrape.Result) { r.Pools[0].Name = "bad\xffname" },
		"user not UTF-8":      func(r *scrape.Result) { r.Pools[0].User = "\xc3" },
		"two pools, one name": func(r *scrape.Result) { r.Pools[1].Name = r.Pools[0].Name },
		"two databases":       func(r *scrape.Result) { r.Databases[1].Name = r.Databases[0].Name },
		"two stats rows":      func(r *scrape.Result) { r.Stats = append(r.Stats, r.Stats[0]) },
		"a state twice": func(r *scrape.Result) {
			r.Pools[0].States = []scrape.StateCount{{Side: scrape.SideClient, State: "cl_active"}, {Side: scrape.SideClient, State: "cl_active"}}
		},
		"static label value not UTF-8": func(r *scrape.Result) { r.Labels = map[string]string{"env": "\xff"} },
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			r := pgbouncerTarget()
			spoil(r)
			c := NewTargets([]*scrape.Result{r})
			err := c.WriteText(NewText())
			require.ErrorIs(t, err, errNotTextSafe)
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			_, gatherErr := reg.Gather()
			require.Error(t, gatherErr, "the registry rejects it too")
		})
	}
	t.Run("one target twice", func(t *testing.T) {
		c := NewTargets([]*scrape.Result{pgbouncerTarget(), pgbouncerTarget()})
		require.ErrorIs(t, c.WriteText(NewText()), errNotTextSafe)
	})
}

func TestText_AGatheredFamilyThatAlsoComesFromACollectorIsAClash(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewTargets([]*scrape.Result{postgresTarget()}))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	txt := NewText()
	require.NoError(t, NewTargets([]*scrape.Result{pgbouncerTarget()}).WriteText(txt))
	require.ErrorIs(t, txt.AddGathered(mfs, expfmt.NewFormat(expfmt.TypeTextPlain)), errFamilyClash)
}

func TestText_ResetKeepsNothingOfTheLastAnswer(t *testing.T) {
	txt := NewText()
	require.NoError(t, NewTargets([]*scrape.Result{pgbouncerTarget()}).WriteText(txt))
	txt.Reset()
	require.NoError(t, NewProbePools([]scrape.ProbePool{{Target: "orders-db"}}).WriteText(txt))
	var buf bytes.Buffer
	_, err := txt.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, canonical(registryText(t, expfmt.NewFormat(expfmt.TypeTextPlain), NewProbePools([]scrape.ProbePool{{Target: "orders-db"}}))), canonical(buf.String()))
}
