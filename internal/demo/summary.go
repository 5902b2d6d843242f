package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// poolStat is one pool as poolwatch's /metrics shows it. A value poolwatch
// does not export for the pool (max of an unlimited pool, waiting clients
// on PostgreSQL) is NaN.
type poolStat struct {
	Target, Pool string
	InUse        float64
	Min, Max     float64
	Waiting      float64
	MaxWait      float64 // seconds
	Leaked       float64
}

// Utilization is in use / max, or NaN without a max.
func (p poolStat) Utilization() float64 {
	if math.IsNaN(p.Max) || p.Max <= 0 {
		return math.NaN()
	}
	return p.InUse / p.Max
}

// setPoolField stores the value of the pool gauge name in p, and reports
// whether name is one the summary reads.
func setPoolField(p *poolStat, name string, v float64) bool {
	switch name {
	case "poolwatch_pool_in_use_connections":
		p.InUse = v
	case "poolwatch_pool_min_connections":
		p.Min = v
	case "poolwatch_pool_max_connections":
		p.Max = v
	case "poolwatch_pool_waiting_clients":
		p.Waiting = v
	case "poolwatch_pool_max_wait_seconds":
		p.MaxWait = v
	case "poolwatch_pool_leaked_connections":
		p.Leaked = v
	default:
		return false
	}
	return true
}

// parsePools reads the pools out of a text exposition, sorted by target and
// pool. Pools appear once they have an in-use gauge.
func parsePools(r io.Reader) ([]poolStat, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	nan := math.NaN()
	pools := map[[2]string]*poolStat{}
	get := func(target, pool string) *poolStat {
		k := [2]string{target, pool}
		p, ok := pools[k]
		if !ok {
			p = &poolStat{Target: target, Pool: pool, InUse: nan, Min: nan, Max: nan, Waiting: nan, MaxWait: nan, Leaked: nan}
			pools[k] = p
		}
		return p
	}
	for name, mf := range families {
		if !setPoolField(&poolStat{}, name, 0) {
			continue
		}
		for _, m := range mf.GetMetric() {
			var target, pool string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "target":
					target = l.GetValue()
				case "pool":
					pool = l.GetValue()
				}
			}
			if target == "" || pool == "" {
				continue
			}
			setPoolField(get(target, pool), name, m.GetGauge().GetValue())
		}
	}
	out := make([]poolStat, 0, len(pools))
	for _, p := range pools {
		if !math.IsNaN(p.InUse) {
			out = append(out, *p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Pool < out[j].Pool
	})
	return out, nil
}

// httpGet GETs url. The demo only fetches addresses of the services it
// started on 127.0.0.1.
func httpGet(ctx context.Context, client *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil) //nolint:gosec // G704: a loopback address of the demo's own
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := client.Do(req) //nolint:gosec // G704: see above
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return resp, nil
}

// fetchPools GETs url (poolwatch's /metrics) and parses its pools.
func fetchPools(ctx context.Context, client *http.Client, url string) ([]poolStat, error) {
	resp, err := httpGet(ctx, client, url)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parsePools(resp.Body)
}

// formatPool renders one pool as one terminal line, e.g.
//
//	bouncer  shop/app     [##########]   3/3   100%  min 1  waiting 3  max wait  1.4s  leaked 0
//
// A value poolwatch does not export for the pool is shown as "-".
func formatPool(p poolStat) string {
	u := p.Utilization()
	pct, meter := "   -", strings.Repeat(" ", barWidth)
	if !math.IsNaN(u) {
		pct, meter = fmt.Sprintf("%3.0f%%", 100*u), bar(u)
	}
	wait := "-"
	if !math.IsNaN(p.MaxWait) {
		wait = fmt.Sprintf("%.1fs", p.MaxWait)
	}
	minimum := "-"
	if !math.IsNaN(p.Min) {
		minimum = num(p.Min)
	}
	line := fmt.Sprintf("%-8s %-12s [%s] %3s/%-3s %s  min %-2s waiting %-2s max wait %5s  leaked %s",
		p.Target, p.Pool, meter, num(p.InUse), num(p.Max), pct, minimum, num(p.Waiting), wait, num(p.Leaked))
	if p.Leaked > 0 {
		line += "  <- leak"
	}
	return line
}

const barWidth = 10

// bar draws a utilization between 0 and 1 (clamped) as barWidth cells.
func bar(u float64) string {
	n := int(math.Round(u * barWidth))
	n = max(0, min(barWidth, n))
	return strings.Repeat("#", n) + strings.Repeat(".", barWidth-n)
}

// num formats a gauge that holds a count: "3", or "-" when absent.
func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%g", v)
}
