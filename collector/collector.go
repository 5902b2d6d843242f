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
	// descs[i] are the descriptors of rounds[i], built once; set holds
	// them all.
	descs []*targetDescs
	set   *familySet
}

// NewTargets returns a collector of the series of rounds, one per target.
// It only reads them; they must not be modified afterwards.
func NewTargets(rounds []*scrape.Result) *Targets {
	c := &Targets{rounds: rounds, descs: make([]*targetDescs, len(rounds)), set: newFamilySet()}
	shared := map[string]*targetDescs{}
	for i, r := range rounds {
		// Targets with the same static labels share their descriptors:
		// thousands of targets, most with the same labels, would
		// otherwise build thousands of identical sets per request.
		k := labelsKey(r.Labels)
		if shared[k] == nil {
			shared[k] = newTargetDescs(c.set, r.Labels)
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

// Collect sends every series of every target. A pool's series share their
// label pairs.
func (c *Targets) Collect(ch chan<- prometheus.Metric) {
	c.collect(&emitter{ch: ch})
}

// WriteText writes the series Collect sends into t (see Text). It returns
// an error, and writes nothing, when the rounds hold what the registry's
// checks would reject (a label value that is not UTF-8, two pools of one
// name): gather them through a registry then, which reports it.
func (c *Targets) WriteText(t *Text) error {
	return writeText(t, c.set, c)
}

func (c *Targets) collect(e *emitter) {
	for i, r := range c.rounds {
		collectTarget(e, c.descs[i], r)
	}
}

// targetDescs are the descriptors of one target's series. The static labels
// are constant labels, so they differ between targets.
type targetDescs struct {
	up, duration, info, errors, dropped, refused                     *family
	min, max, reserve, open, inUse, waiting, maxWait, leaked, oldest *family
	poolInfo                                                         *family
	paused, disabled, transactions, queries, clientWait              *family
	clientStates, serverStates                                       *family
	nodeUp, nodeInfo                                                 *family
	bouncer                                                          *bouncerDescs
	acquireTimeouts, unaccounted                                     *family
	// Alerting: the agent's view and the link to the server behind.
	limited, upstream *family
}

// newTargetDescs adds the families of targets with these static labels to
// set.
func newTargetDescs(set *familySet, static map[string]string) *targetDescs {
	tl := []string{"target"}
	pl := []string{"target", "pool"}
	dl := []string{"target", "database"}
	nd := func(name, help string, labels []string) *family {
		return set.add(prometheus.BuildFQName(namespace, "", name), help, isCounter(name), labels, static)
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

// isCounter tells a counter family by its name: _total is on counters
// only, and on every counter (docs/metrics.md).
func isCounter(name string) bool { return strings.HasSuffix(name, "_total") }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func collectTarget(e *emitter, d *targetDescs, r *scrape.Result) {
	name, kind := r.Target, string(r.Kind)
	e.gauge(d.up, boolValue(r.Up()), name)
	e.gauge(d.duration, r.Duration.Seconds(), name)
	queries := make([]string, 0, len(r.ScrapeErrors))
	for q := range r.ScrapeErrors {
		queries = append(queries, q)
	}
	sort.Strings(queries)
	for _, q := range queries {
		e.counter(d.errors, r.ScrapeErrors[q], name, q)
	}
	if r.Version != "" {
		e.gauge(d.info, 1, name, kind, r.Version)
	}
	e.gauge(d.dropped, float64(r.PoolsDropped), name)
	if limited, ok := r.Visibility(); ok {
		e.gauge(d.limited, boolValue(limited), name)
	}
	if r.Upstream != "" {
		e.gauge(d.upstream, 1, name, r.Upstream)
	}
	refused := r.Refused()
	for _, reason := range scrape.RefusalReasons(r.Kind) {
		e.gauge(d.refused, boolValue(reason == refused), name, reason)
	}
	for _, p := range r.Pools {
		optionalGauge(e, d.min, p.Min, name, p.Name)
		optionalGauge(e, d.max, p.Max, name, p.Name)
		optionalGauge(e, d.reserve, p.Reserve, name, p.Name)
		e.gauge(d.open, p.Open, name, p.Name)
		e.gauge(d.inUse, p.InUse, name, p.Name)
		optionalGauge(e, d.waiting, p.Waiting, name, p.Name)
		optionalGauge(e, d.maxWait, p.MaxWaitSeconds, name, p.Name)
		if !p.NoLeakDetection {
			e.gauge(d.leaked, p.Leaked, name, p.Name)
			e.gauge(d.oldest, p.OldestLeakSeconds, name, p.Name)
		}
		e.gauge(d.poolInfo, 1, name, p.Name, kind, p.Database, p.User, p.Mode)
		for _, st := range p.States {
			desc := d.serverStates
			if st.Side == scrape.SideClient {
				desc = d.clientStates
			}
			e.gauge(desc, st.Count, name, p.Name, st.State)
		}
		if p.AcquireTimeouts.Valid {
			e.counter(d.acquireTimeouts, p.AcquireTimeouts.Value, name, p.Name)
		}
	}
	for _, u := range r.Unaccounted {
		e.gauge(d.unaccounted, u.Value, name, u.Pool)
	}
	for _, db := range r.Databases {
		e.gauge(d.paused, boolValue(db.Paused), name, db.Name)
		e.gauge(d.disabled, boolValue(db.Disabled), name, db.Name)
	}
	for _, s := range r.Stats {
		e.counter(d.transactions, s.Transactions, name, s.Database)
		e.counter(d.queries, s.Queries, name, s.Database)
		e.counter(d.clientWait, s.ClientWaitSeconds, name, s.Database)
	}
	d.bouncer.collect(e, name, r)
	for _, n := range r.Nodes {
		e.gauge(d.nodeUp, boolValue(n.Up), name, n.Name)
		e.gauge(d.nodeInfo, 1, name, n.Name, n.Address, n.Role)
	}
}

func optionalGauge(e *emitter, f *family, o scrape.Optional, labels ...string) {
	if o.Valid {
		e.gauge(f, o.Value, labels...)
	}
}

// ProbePools collects the agent's own probe pool series.
type ProbePools struct {
	pools []scrape.ProbePool
	// descs[i] are the descriptors of pools[i], built once; set holds them
	// all.
	descs []*probeDescs
	set   *familySet
}

type probeDescs struct {
	min, max, open, inUse, idle, leaked, retries, errors, healthFailures, newConns *family
}

func newProbeDescs(set *familySet, static map[string]string) *probeDescs {
	nd := func(name, help string) *family {
		fq := prometheus.BuildFQName(namespace, "probe_pool", name)
		return set.add(fq, help, isCounter(fq), []string{"target"}, static)
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
	c := &ProbePools{pools: ps, descs: make([]*probeDescs, len(ps)), set: newFamilySet()}
	shared := map[string]*probeDescs{}
	for i, p := range ps {
		k := labelsKey(p.Labels)
		if shared[k] == nil {
			shared[k] = newProbeDescs(c.set, p.Labels)
		}
		c.descs[i] = shared[k]
	}
	return c
}

// Describe sends nothing: the collector is unchecked.
func (*ProbePools) Describe(chan<- *prometheus.Desc) {}

// Collect sends every probe pool's series.
func (c *ProbePools) Collect(ch chan<- prometheus.Metric) {
	c.collect(&emitter{ch: ch})
}

// WriteText writes the series Collect sends into t (see Targets.WriteText).
func (c *ProbePools) WriteText(t *Text) error {
	return writeText(t, c.set, c)
}

func (c *ProbePools) collect(e *emitter) {
	for i, p := range c.pools {
		d, s := c.descs[i], p.Stats
		e.gauge(d.min, float64(s.Min), p.Target)
		e.gauge(d.max, float64(s.Max), p.Target)
		e.gauge(d.open, float64(s.Open), p.Target)
		e.gauge(d.inUse, float64(s.InUse), p.Target)
		e.gauge(d.idle, float64(s.Idle), p.Target)
		e.gauge(d.leaked, float64(s.Leaked), p.Target)
		e.counter(d.retries, float64(s.AcquireRetries), p.Target)
		e.counter(d.errors, float64(s.AcquireErrors), p.Target)
		e.counter(d.healthFailures, float64(s.HealthCheckFailures), p.Target)
		e.counter(d.newConns, float64(s.NewConnections), p.Target)
	}
}
