package collector

import (
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/poolwatch/poolwatch/scrape"
)

// thousandPools is one PgBouncer round with 1,000 pools.
func thousandPools() []*scrape.Result {
	pools := make([]scrape.Pool, 1000)
	for i := range pools {
		pools[i] = scrape.Pool{
			Name: fmt.Sprintf("db%04d/app", i), Database: fmt.Sprintf("db%04d", i), User: "app", Mode: "transaction",
			Min: scrape.Some(1), Max: scrape.Some(20), Reserve: scrape.Some(5), Open: 12, InUse: 7,
			Waiting: scrape.Some(0), MaxWaitSeconds: scrape.Some(0), Leaked: 0,
		}
	}
	return []*scrape.Result{{Target: "bouncer", Kind: "pgbouncer", Labels: map[string]string{"env": "prod"},
		Version: "1.18.0", Pools: pools,
		ScrapeErrors: map[string]float64{"show_pools": 0}}}
}

// BenchmarkTargets_Collect1000Pools measures Collect alone.
func BenchmarkTargets_Collect1000Pools(b *testing.B) {
	c := NewTargets(thousandPools())
	b.ReportAllocs()
	for b.Loop() {
		ch := make(chan prometheus.Metric, 16384)
		c.Collect(ch)
		close(ch)
		for range ch {
		}
	}
}

// BenchmarkTargets_GatherAndEncode1000Pools measures what a request pays:
// a registry per request, Gather and text encoding.
func BenchmarkTargets_GatherAndEncode1000Pools(b *testing.B) {
	ts := thousandPools()
	b.ReportAllocs()
	for b.Loop() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(NewTargets(ts))
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkTargets_Text1000Pools measures what a request that negotiates
// the text format pays for the same series: Text, written (no registry, no
// dto.MetricFamily).
func BenchmarkTargets_Text1000Pools(b *testing.B) {
	ts := thousandPools()
	txt := NewText()
	b.ReportAllocs()
	for b.Loop() {
		txt.Reset()
		if err := NewTargets(ts).WriteText(txt); err != nil {
			b.Fatal(err)
		}
		if _, err := txt.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
