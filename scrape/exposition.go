package scrape

import (
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// DefaultPoolName names the one pool of an exposition or a document that
// does not name it.
const DefaultPoolName = "default"

// A dialect is how one pool library's metrics name the pool model: which
// series gives each field. docs/metrics.md quotes every table below; keep
// the two in step. A field with no series stays absent.
type dialect struct {
	// name names the dialect in errors and docs.
	name string
	// poolLabel is the label naming the pool; "" when the library has none.
	poolLabel string
	// inUse, idle, open, waiting, min, max and timeouts are the series of
	// each field. inUse is what identifies the dialect.
	inUse, idle, open, waiting, min, max, timeouts series
	// maxZeroUnlimited: a max of 0 means unlimited, so absent.
	maxZeroUnlimited bool
}

// series is a metric name and, optionally, a label that must have a value.
type series struct {
	name, label, value string
}

func (s series) set() bool { return s.name != "" }

// dialects returns every dialect poolwatch reads, in the order errors list
// them.
//
// HikariCP's names are checked against its sources, repository
// brettwooldridge/HikariCP: Micrometer's in
// src/main/java/com/zaxxer/hikari/metrics/micrometer/MicrometerMetricsTracker.java
// at commit 1991355e6b20be04be2b2d9ff816c32c38937fd2 (hikaricp.connections,
// .active, .idle, .pending, .max, .min and the counter .timeout, tag pool,
// which Micrometer's Prometheus registry writes with _ and the counter with
// _total); its own Prometheus tracker in
// src/main/java/com/zaxxer/hikari/metrics/prometheus/HikariCPCollector.java
// at the same commit (gauges hikaricp_active_connections,
// hikaricp_idle_connections, hikaricp_pending_threads, hikaricp_connections,
// hikaricp_max_connections, hikaricp_min_connections, label pool) and
// PrometheusMetricsTracker.java at commit
// fe9477281d93736a249c3e2ef10f42ac2139a4ba (counter
// hikaricp_connection_timeout_total, label pool).
//
// database/sql: client_golang's collectors.NewDBStatsCollector (v1.25.0),
// constant label db_name; max 0 means unlimited. It has no waiting gauge
// (only go_sql_wait_count_total) and no timeouts.
//
// pgxpool: github.com/IBM/pgxpoolprometheus v1.1.3, which has no pool label
// of its own; canceled acquires (a context that ended, usually a timeout)
// are its acquire timeouts.
//
// OpenTelemetry: the database client pool conventions as the OpenTelemetry
// Prometheus exporter writes them (db.client.connection.* becomes
// db_client_connection_*, counters get _total, otel_scope_* labels are
// ignored), and the older db.client.connections.* names.
func dialects() []dialect {
	return []dialect{
		{
			name: "HikariCP (Micrometer)", poolLabel: "pool",
			inUse: series{name: "hikaricp_connections_active"}, idle: series{name: "hikaricp_connections_idle"},
			open: series{name: "hikaricp_connections"}, waiting: series{name: "hikaricp_connections_pending"},
			min: series{name: "hikaricp_connections_min"}, max: series{name: "hikaricp_connections_max"},
			timeouts: series{name: "hikaricp_connections_timeout_total"},
		},
		{
			name: "HikariCP (Prometheus tracker)", poolLabel: "pool",
			inUse: series{name: "hikaricp_active_connections"}, idle: series{name: "hikaricp_idle_connections"},
			open: series{name: "hikaricp_connections"}, waiting: series{name: "hikaricp_pending_threads"},
			min: series{name: "hikaricp_min_connections"}, max: series{name: "hikaricp_max_connections"},
			timeouts: series{name: "hikaricp_connection_timeout_total"},
		},
		{
			name: "database/sql (DBStatsCollector)", poolLabel: "db_name",
			inUse: series{name: "go_sql_in_use_connections"}, idle: series{name: "go_sql_idle_connections"},
			open: series{name: "go_sql_open_connections"}, max: series{name: "go_sql_max_open_connections"},
			maxZeroUnlimited: true,
		},
		{
			name:  "pgxpool (pgxpoolprometheus)",
			inUse: series{name: "pgxpool_acquired_conns"}, idle: series{name: "pgxpool_idle_conns"},
			open: series{name: "pgxpool_total_conns"}, max: series{name: "pgxpool_max_conns"},
			timeouts: series{name: "pgxpool_canceled_acquire_count"},
		},
		{
			name: "OpenTelemetry", poolLabel: "db_client_connection_pool_name",
			inUse:   series{name: "db_client_connection_count", label: "db_client_connection_state", value: "used"},
			idle:    series{name: "db_client_connection_count", label: "db_client_connection_state", value: "idle"},
			waiting: series{name: "db_client_connection_pending_requests"},
			min:     series{name: "db_client_connection_idle_min"}, max: series{name: "db_client_connection_max"},
			timeouts: series{name: "db_client_connection_timeouts_total"},
		},
		{
			name: "OpenTelemetry (older conventions)", poolLabel: "pool_name",
			inUse:   series{name: "db_client_connections_usage", label: "state", value: "used"},
			idle:    series{name: "db_client_connections_usage", label: "state", value: "idle"},
			waiting: series{name: "db_client_connections_pending_requests"},
			min:     series{name: "db_client_connections_idle_min"}, max: series{name: "db_client_connections_max"},
			timeouts: series{name: "db_client_connections_timeouts_total"},
		},
	}
}

// mapExposition parses a Prometheus text (or OpenMetrics 1.0) exposition
// with expfmt and maps the pools of every dialect found in it. poolLabel,
// when not empty, is the label that names the pools, whatever the dialect.
// It fails when the exposition does not parse, when no dialect is found,
// when a pool has no in-use count, when two series of one metric name the
// same pool, or when two dialects name the same pool.
func mapExposition(r io.Reader, contentType, poolLabel string) ([]Pool, error) {
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "application/openmetrics-text" {
		format = expfmt.NewFormat(expfmt.TypeOpenMetrics)
	}
	dec := expfmt.NewDecoder(r, format)
	fams := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse the exposition: %w", err)
		}
		fams[mf.GetName()] = mf
	}
	var pools []Pool
	owner := map[string]string{}
	found := false
	for _, d := range dialects() {
		if _, ok := fams[d.inUse.name]; !ok {
			continue
		}
		found = true
		ps, err := d.pools(fams, poolLabel)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if other, dup := owner[p.Name]; dup {
				return nil, fmt.Errorf("pool %q is reported by two libraries, %s and %s: set pool_label to a label that tells them apart", p.Name, other, d.name)
			}
			owner[p.Name] = d.name
		}
		pools = append(pools, ps...)
	}
	if !found {
		var looked []string
		for _, d := range dialects() {
			looked = append(looked, d.inUse.name+" ("+d.name+")")
		}
		return nil, fmt.Errorf("no connection pool metrics in the exposition (%d metric families): looked for %s", len(fams), strings.Join(looked, ", "))
	}
	return pools, nil
}

// dialectPool gathers one pool's fields while a dialect is mapped.
type dialectPool struct {
	inUse, idle, open, waiting, min, max, timeouts Optional
}

// pools maps the dialect's series in fams into pools.
func (d dialect) pools(fams map[string]*dto.MetricFamily, poolLabel string) ([]Pool, error) {
	label := d.poolLabel
	if poolLabel != "" {
		label = poolLabel
	}
	byName := map[string]*dialectPool{}
	var order []string
	fields := []struct {
		s   series
		set func(p *dialectPool, v Optional)
	}{
		{d.inUse, func(p *dialectPool, v Optional) { p.inUse = v }},
		{d.idle, func(p *dialectPool, v Optional) { p.idle = v }},
		{d.open, func(p *dialectPool, v Optional) { p.open = v }},
		{d.waiting, func(p *dialectPool, v Optional) { p.waiting = v }},
		{d.min, func(p *dialectPool, v Optional) { p.min = v }},
		{d.max, func(p *dialectPool, v Optional) { p.max = v }},
		{d.timeouts, func(p *dialectPool, v Optional) { p.timeouts = v }},
	}
	for _, f := range fields {
		if !f.s.set() {
			continue
		}
		mf, ok := fams[f.s.name]
		if !ok {
			continue
		}
		seen := map[string]bool{}
		for _, m := range mf.GetMetric() {
			if f.s.label != "" && labelValue(m, f.s.label) != f.s.value {
				continue
			}
			name := DefaultPoolName
			if label != "" {
				if v := labelValue(m, label); v != "" {
					name = v
				}
			}
			if seen[name] {
				return nil, duplicateSeriesError(d, f.s, mf, label, name)
			}
			seen[name] = true
			p := byName[name]
			if p == nil {
				p = &dialectPool{}
				byName[name] = p
				order = append(order, name)
			}
			f.set(p, metricValue(m))
		}
	}
	sort.Strings(order)
	pools := make([]Pool, 0, len(order))
	for _, name := range order {
		p := byName[name]
		if !p.inUse.Valid {
			return nil, fmt.Errorf("%s: pool %q has no in-use count (%s)", d.name, name, d.inUse.describe())
		}
		if d.maxZeroUnlimited && p.max.Valid && p.max.Value == 0 {
			p.max = Optional{}
		}
		open := p.open
		if !open.Valid && p.idle.Valid {
			open = Some(p.inUse.Value + p.idle.Value)
		}
		if !open.Valid {
			return nil, fmt.Errorf("%s: pool %q has neither an open nor an idle count", d.name, name)
		}
		pools = append(pools, Pool{
			Name: name, Min: p.min, Max: p.max, Open: open.Value, InUse: p.inUse.Value,
			Waiting: p.waiting, AcquireTimeouts: p.timeouts,
		})
	}
	return pools, nil
}

func (s series) describe() string {
	if s.label == "" {
		return s.name
	}
	return fmt.Sprintf("%s{%s=%q}", s.name, s.label, s.value)
}

// duplicateSeriesError explains two series of one metric for one pool: the
// pool label is missing or does not tell them apart.
func duplicateSeriesError(d dialect, s series, mf *dto.MetricFamily, label, name string) error {
	names := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != s.label && !strings.HasPrefix(l.GetName(), "otel_scope_") {
				names[l.GetName()] = true
			}
		}
	}
	seen := make([]string, 0, len(names))
	for n := range names {
		seen = append(seen, n)
	}
	sort.Strings(seen)
	by := "no pool label"
	if label != "" {
		by = "pool label " + label
	}
	return fmt.Errorf("%s: %s has several series for pool %q (%s): set pool_label to the label that names the pool (labels seen: %s)",
		d.name, s.describe(), name, by, strings.Join(seen, ", "))
}

// labelValue returns the value of m's label name, "" when it has none.
func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// metricValue is m's value whatever its type (OpenMetrics counters and
// untyped series included); absent when it is not a finite number.
func metricValue(m *dto.Metric) Optional {
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		v = m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	default:
		return Optional{}
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Optional{}
	}
	return Some(v)
}
