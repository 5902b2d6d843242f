// Package collector turns poolwatch's model (scrape.Result, one round of a
// target, and scrape.ProbePool, a probe pool snapshot) into Prometheus
// metrics, as the agent returns them. It knows no SQL.
//
// Collectors here are built for one request from snapshots taken before
// Collect: Collect only converts, it never queries. Their series depend on
// what the targets returned, so they are unchecked collectors (Describe
// sends nothing).
package collector

import (
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolwatch/poolwatch/scrape"
)

// namespace prefixes every metric name.
const namespace = "poolwatch"

// Targets collects the target and pool series of a set of rounds.
type Targets struct {
	rounds []*scrape.Result
	// descs[i] are the descriptors of rounds[i], built once.
	descs []*targetDescs
}

// NewTargets returns a collector of the series of rounds, one per target.
// It only reads them; they must not be modified afterwards.
func NewTargets(rounds []*scrape.Result) *Targets {
	c := &Targets{rounds: rounds, descs: make([]*targetDescs, len(rounds))}
	shared := map[string]*targetDescs{}
	for i, r := range rounds {
		// Targets with the same static labels share their descriptors:
		// thousands of targets, most with the same labels, would
		// otherwise build thousands of identical sets per request.
		k := labelsKey(r.Labels)
		if shared[k] == nil {
			shared[k] = newTargetDescs(r.Labels)
		}
		c.descs[i] = shared[k]
	}
	return c
}

// labelsKey identifies a set of static labels.
func labelsKey(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// Describe sends nothing: the collector is unchecked.
func (*Targets) Describe(chan<- *prometheus.Desc) {}

// Collect sends every series of every target.
func (c *Targets) Collect(ch chan<- prometheus.Metric) {
	for i, r := range c.rounds {
		collectTarget(ch, c.descs[i], r)
	}
}

// targetDescs are the descriptors of one target's series. The static labels
// are constant labels, so they differ between targets.
type targetDescs struct {
	up, duration, info, errors, dropped, refused                     *prometheus.Desc
	min, max, reserve, open, inUse, waiting, maxWait, leaked, oldest *prometheus.Desc
	poolInfo                                                         *prometheus.Desc
	paused, disabled, transactions, queries, clientWait              *prometheus.Desc
	clientStates, serverStates                                       *prometheus.Desc
	nodeUp, nodeInfo                                                 *prometheus.Desc
	bouncer                                                          *bouncerDescs
	acquireTimeouts, unaccounted                                     *prometheus.Desc
	// Alerting: the agent's view and the link to the server behind.
	limited, upstream *prometheus.Desc
}

func newTargetDescs(static map[string]string) *targetDescs {
	cl := prometheus.Labels(static)
	tl := []string{"target"}
	pl := []string{"target", "pool"}
	dl := []string{"target", "database"}
	nd := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, cl)
	}
	return &targetDescs{
		up:       nd("target_up", "1 when every query of this scrape of the target succeeded, else 0.", tl),
		duration: nd("target_scrape_duration_seconds", "How long this scrape of the target took.", tl),
		info:     nd("target_info", "Always 1; the kind and server version of the target.", []string{"target", "kind", "version"}),
		errors:   nd("target_scrape_errors_total", "Failed queries against the target, by query.", []string{"target", "query"}),
		dropped:  nd("target_pools_dropped", "Pools of the target not exported because of max_pools.", tl),
		refused:  nd("target_connection_refused", "1 when the target refused the agent a connection for lack of slots this scrape, by reason; else 0.", []string{"target", "reason"}),

		min:      nd("pool_min_connections", "The pool's floor: PgBouncer min_pool_size, or the declared minimum. Absent where there is none.", pl),
		max:      nd("pool_max_connections", "The pool's ceiling: PgBouncer pool_size, the server's usable slots, or the declared maximum. Absent when unlimited.", pl),
		reserve:  nd("pool_reserve_connections", "Connections in reserve beyond the maximum: PgBouncer reserve_pool, or PostgreSQL superuser_reserved_connections + reserved_connections.", pl),
		open:     nd("pool_open_connections", "Connections that exist and count against the pool's maximum.", pl),
		inUse:    nd("pool_in_use_connections", "Connections working for a client.", pl),
		waiting:  nd("pool_waiting_clients", "Clients queued for a connection. Absent where the pool has no queue.", pl),
		maxWait:  nd("pool_max_wait_seconds", "Age of the oldest queued client. Absent where the pool has no queue.", pl),
		leaked:   nd("pool_leaked_connections", "Connections held past the leak threshold with no activity.", pl),
		oldest:   nd("pool_oldest_leak_seconds", "How long the oldest leaked connection has been held; 0 when there is none.", pl),
		poolInfo: nd("pool_info", "Always 1; metadata of the pool for joins.", []string{"target", "pool", "kind", "database", "user", "mode"}),

		acquireTimeouts: nd("pool_acquire_timeouts_total", "Requests for a connection that timed out or were refused, as the application's pool reports them. Absent where the pool does not report them.", pl),
		unaccounted:     nd("pool_unaccounted_connections", "Connections the application counts in use that the server does not see at all: max(0, in use - seen as the application on the servers of seen_as). Absent without seen_as or when a side is unknown.", pl),

		paused:       nd("pgbouncer_database_paused", "1 when the PgBouncer database is paused.", dl),
		disabled:     nd("pgbouncer_database_disabled", "1 when the PgBouncer database is disabled.", dl),
		transactions: nd("pgbouncer_transactions_total", "Transactions pooled by PgBouncer for the database (SHOW STATS total_xact_count).", dl),
		queries:      nd("pgbouncer_queries_total", "Queries pooled by PgBouncer for the database (SHOW STATS total_query_count).", dl),
		clientWait:   nd("pgbouncer_client_wait_seconds_total", "Time clients spent waiting for a server connection (SHOW STATS total_wait_time), credited when a waiting client is served.", dl),

		limited:  nd("target_limited_visibility", "1 when the agent's role cannot see other roles' connections (no pg_monitor), so every count is too low; postgres only, absent when the round could not tell.", tl),
		upstream: nd("target_upstream_info", "Always 1; the postgres target whose server this target's connections end on (the target itself on postgres, the upstream key elsewhere).", []string{"target", "upstream"}),

		clientStates: nd("pool_client_connections", "Client connections of the pool by state, as the pooler reports them (PgBouncer cl_*, Pgpool-II child states).", []string{"target", "pool", "state"}),
		serverStates: nd("pool_server_connections", "Server connections of the pool by state, as the pooler reports them (PgBouncer sv_*).", []string{"target", "pool", "state"}),
		nodeUp:       nd("pgpool_node_up", "1 when Pgpool-II uses the backend node (SHOW POOL_NODES status up or waiting), 0 when it is down, unused or quarantined.", []string{"target", "node"}),
		nodeInfo:     nd("pgpool_node_info", "Always 1; the backend node's address and role (SHOW POOL_NODES).", []string{"target", "node", "address", "role"}),
		bouncer:      newBouncerDescs(nd),
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func collectTarget(ch chan<- prometheus.Metric, d *targetDescs, r *scrape.Result) {
	name, kind := r.Target, string(r.Kind)
	gauge(ch, d.up, boolValue(r.Up()), name)
	gauge(ch, d.duration, r.Duration.Seconds(), name)
	queries := make([]string, 0, len(r.ScrapeErrors))
	for q := range r.ScrapeErrors {
		queries = append(queries, q)
	}
	sort.Strings(queries)
	for _, q := range queries {
		counter(ch, d.errors, r.ScrapeErrors[q], name, q)
	}
	if r.Version != "" {
		gauge(ch, d.info, 1, name, kind, r.Version)
	}
	gauge(ch, d.dropped, float64(r.PoolsDropped), name)
	if limited, ok := r.Visibility(); ok {
		gauge(ch, d.limited, boolValue(limited), name)
	}
	if r.Upstream != "" {
		gauge(ch, d.upstream, 1, name, r.Upstream)
	}
	refused := r.Refused()
	for _, reason := range scrape.RefusalReasons(r.Kind) {
		gauge(ch, d.refused, boolValue(reason == refused), name, reason)
	}
	for _, p := range r.Pools {
		optionalGauge(ch, d.min, p.Min, name, p.Name)
		optionalGauge(ch, d.max, p.Max, name, p.Name)
		optionalGauge(ch, d.reserve, p.Reserve, name, p.Name)
		gauge(ch, d.open, p.Open, name, p.Name)
		gauge(ch, d.inUse, p.InUse, name, p.Name)
		optionalGauge(ch, d.waiting, p.Waiting, name, p.Name)
		optionalGauge(ch, d.maxWait, p.MaxWaitSeconds, name, p.Name)
		if !p.NoLeakDetection {
			gauge(ch, d.leaked, p.Leaked, name, p.Name)
			gauge(ch, d.oldest, p.OldestLeakSeconds, name, p.Name)
		}
		gauge(ch, d.poolInfo, 1, name, p.Name, kind, p.Database, p.User, p.Mode)
		for _, st := range p.States {
			desc := d.serverStates
			if st.Side == scrape.SideClient {
				desc = d.clientStates
			}
			gauge(ch, desc, st.Count, name, p.Name, st.State)
		}
		if p.AcquireTimeouts.Valid {
			counter(ch, d.acquireTimeouts, p.AcquireTimeouts.Value, name, p.Name)
		}
	}
	for _, u := range r.Unaccounted {
		gauge(ch, d.unaccounted, u.Value, name, u.Pool)
	}
	for _, db := range r.Databases {
		gauge(ch, d.paused, boolValue(db.Paused), name, db.Name)
		gauge(ch, d.disabled, boolValue(db.Disabled), name, db.Name)
	}
	for _, s := range r.Stats {
		counter(ch, d.transactions, s.Transactions, name, s.Database)
		counter(ch, d.queries, s.Queries, name, s.Database)
		counter(ch, d.clientWait, s.ClientWaitSeconds, name, s.Database)
	}
	d.bouncer.collect(ch, name, r)
	for _, n := range r.Nodes {
		gauge(ch, d.nodeUp, boolValue(n.Up), name, n.Name)
		gauge(ch, d.nodeInfo, 1, name, n.Name, n.Address, n.Role)
	}
}

func optionalGauge(ch chan<- prometheus.Metric, d *prometheus.Desc, o scrape.Optional, labels ...string) {
	if o.Valid {
		gauge(ch, d, o.Value, labels...)
	}
}

// ProbePools collects the agent's own probe pool series.
type ProbePools struct {
	pools []scrape.ProbePool
	// descs[i] are the descriptors of pools[i], built once.
	descs []*probeDescs
}

type probeDescs struct {
	min, max, open, inUse, idle, leaked, retries, errors, healthFailures, newConns *prometheus.Desc
}

func newProbeDescs(static map[string]string) *probeDescs {
	cl := prometheus.Labels(static)
	nd := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "probe_pool", name), help, []string{"target"}, cl)
	}
	return &probeDescs{
		min:            nd("min_connections", "Configured minimum of the agent's probe pool."),
		max:            nd("max_connections", "Configured maximum of the agent's probe pool."),
		open:           nd("open_connections", "Connections the probe pool holds or is dialling."),
		inUse:          nd("in_use_connections", "Probe pool connections acquired now."),
		idle:           nd("idle_connections", "Probe pool connections idle in the pool."),
		leaked:         nd("leaked_connections", "Probe pool connections held past probe_pool.leak_threshold."),
		retries:        nd("acquire_retries_total", "Acquire attempts made after a failed first attempt."),
		errors:         nd("acquire_errors_total", "Acquires that ended without a healthy connection."),
		healthFailures: nd("health_check_failures_total", "Failed or timed-out health checks of probe pool connections."),
		newConns:       nd("new_connections_total", "Connections the probe pool established."),
	}
}

// NewProbePools returns a collector of ps's series. ps must not be modified
// afterwards.
func NewProbePools(ps []scrape.ProbePool) *ProbePools {
	c := &ProbePools{pools: ps, descs: make([]*probeDescs, len(ps))}
	shared := map[string]*probeDescs{}
	for i, p := range ps {
		k := labelsKey(p.Labels)
		if shared[k] == nil {
			shared[k] = newProbeDescs(p.Labels)
		}
		c.descs[i] = shared[k]
	}
	return c
}

// Describe sends nothing: the collector is unchecked.
func (*ProbePools) Describe(chan<- *prometheus.Desc) {}

// Collect sends every probe pool's series.
func (c *ProbePools) Collect(ch chan<- prometheus.Metric) {
	for i, p := range c.pools {
		d, s := c.descs[i], p.Stats
		gauge(ch, d.min, float64(s.Min), p.Target)
		gauge(ch, d.max, float64(s.Max), p.Target)
		gauge(ch, d.open, float64(s.Open), p.Target)
		gauge(ch, d.inUse, float64(s.InUse), p.Target)
		gauge(ch, d.idle, float64(s.Idle), p.Target)
		gauge(ch, d.leaked, float64(s.Leaked), p.Target)
		counter(ch, d.retries, float64(s.AcquireRetries), p.Target)
		counter(ch, d.errors, float64(s.AcquireErrors), p.Target)
		counter(ch, d.healthFailures, float64(s.HealthCheckFailures), p.Target)
		counter(ch, d.newConns, float64(s.NewConnections), p.Target)
	}
}
