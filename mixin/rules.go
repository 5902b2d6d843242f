package mixin

import (
	"fmt"
	"strings"
)

// Names of the recording rules. They do not depend on the Config, so the
// shipped dashboards work against the Short variant's rules too.
const (
	RecordUtilization     = "target_pool:poolwatch_pool_utilization:ratio"
	RecordInUseSmoothed   = "target_pool:poolwatch_pool_in_use_connections:avg_over_time"
	RecordInUseForecast   = "target_pool:poolwatch_pool_in_use_connections:predict_linear"
	RecordMaxStable       = "target_pool:poolwatch_pool_max_connections:stable"
	RecordForecastUtilize = "target_pool:poolwatch_pool_forecast_utilization:ratio"
	// RecordQueueing is 1 while clients wait for a connection of the pool
	// and 0 while none does, at every rule evaluation: its avg_over_time is
	// the share of the time clients were queueing.
	RecordQueueing = "target_pool:poolwatch_pool_waiting_clients:nonzero"
)

// Severities, as Alertmanager routes them: critical pages, warning opens a
// ticket.
const (
	SeverityCritical = "critical"
	SeverityWarning  = "warning"
)

// Values of the reason label that tells PoolExhausted's rules apart
// (Prometheus would otherwise hold two alerts with the same labels).
const (
	// ReasonAllInUse: no free connection, by the definition of the pool's
	// kind (see Rules), or the agent itself refused a slot of that pool.
	ReasonAllInUse = "all_in_use"
	// ReasonLongWait: clients queue and the oldest has waited too long.
	ReasonLongWait = "long_wait"
	// ReasonAcquireTimeouts: the pool reports acquire timeouts or refusals
	// (poolwatch_pool_acquire_timeouts_total) in every recent window.
	ReasonAcquireTimeouts = "acquire_timeouts"
	// ReasonRefused: the server or pooler refuses the agent a connection
	// for a limit other than its slots (a role or database limit); the
	// refusal label says which.
	ReasonRefused = "refused"
)

// Refusal reasons of poolwatch_target_connection_refused that mean the
// slots of a pool are full: the server's (PostgreSQL, pool "server") or
// PgBouncer's client side (max_client_conn, pool "clients"). While the
// agent is refused, the target's pool series are gone; the refusal keeps
// PoolExhausted{reason="all_in_use"} of that pool firing with the same
// labels, so it neither resolves nor pages twice.
const (
	refusedServerSlots  = "server_slots|reserved_slots"
	refusedClientsSlots = "pgbouncer_max_client_conn"
)

// Pool names the rules single out (scrape.PoolServer, scrape.PoolClients,
// and the Pgpool-II children pool of the pgpool kind).
const (
	poolServer   = "server"
	poolClients  = "clients"
	poolChildren = "children"
)

// Labels that the alerts add for Alertmanager's grouping and inhibition
// (alertmanager.yml.example): every pool alert but the leak ones carries the
// PgBouncer database of its pool (from poolwatch_pool_info; absent where
// there is none), and the leak alerts carry the upstream (from
// poolwatch_target_upstream_info, or the target itself).
const (
	LabelDatabase = "database"
	LabelUpstream = "upstream"
	// LabelRefusal carries the refusal reason of
	// PoolExhausted{reason="refused"}.
	LabelRefusal = "refusal"
)

// Alert names. They are a contract with Alertmanager routes, silences and
// the runbook anchors: do not rename them.
const (
	AlertPoolExhausted          = "PoolExhausted"
	AlertPoolNearExhaustion     = "PoolNearExhaustion"
	AlertPoolExhaustionForecast = "PoolExhaustionForecast"
	AlertPoolClientsWaiting     = "PoolClientsWaiting"
	AlertPoolConnectionLeak     = "PoolConnectionLeak"
	AlertPoolUnaccounted        = "PoolUnaccountedConnections"
	AlertTargetDown             = "PoolwatchTargetDown"
	AlertTargetQueryFailing     = "PoolwatchTargetQueryFailing"
	AlertProbeDown              = "PoolwatchProbeDown"
	AlertLimitedVisibility      = "PoolwatchLimitedVisibility"
	AlertReloadFailed           = "PoolwatchConfigReloadFailed"
	AlertPoolsDropped           = "PoolwatchPoolsDropped"
	AlertProbePoolLeak          = "PoolwatchProbePoolLeak"
	AlertProbeRetriesHigh       = "PoolwatchProbeRetriesHigh"
	AlertPoolwatchDown          = "PoolwatchDown"
)

// RuleFile is a Prometheus rule file.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of a rule file.
type RuleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record set) or an alerting rule (Alert set).
type Rule struct {
	Record string `yaml:"record,omitempty"`
	Alert  string `yaml:"alert,omitempty"`
	Expr   string `yaml:"expr"`
	For    string `yaml:"for,omitempty"`
	// KeepFiringFor keeps a firing alert firing that long after its
	// condition ends (Prometheus 2.42 and later).
	KeepFiringFor string            `yaml:"keep_firing_for,omitempty"`
	Labels        map[string]string `yaml:"labels,omitempty"`
	Annotations   *Annotations      `yaml:"annotations,omitempty"`
}

// Annotations are the annotations every poolwatch alert carries.
type Annotations struct {
	// Summary is static and ends with a period.
	Summary string `yaml:"summary"`
	// Description is a template naming the target, and the pool where there
	// is one.
	Description string `yaml:"description"`
	// RunbookURL points at the alert's section of docs/runbooks.md.
	RunbookURL string `yaml:"runbook_url"`
}

// selector returns metric{matchers}, joining the non-empty matcher lists.
func selector(metric string, matchers ...string) string {
	var parts []string
	for _, m := range matchers {
		if m = strings.TrimSpace(m); m != "" {
			parts = append(parts, m)
		}
	}
	if len(parts) == 0 {
		return metric
	}
	return metric + "{" + strings.Join(parts, ", ") + "}"
}

// RunbookAnchor returns the docs/runbooks.md anchor of an alert: GitHub
// lower-cases headings, so the heading "## PoolExhausted" is #poolexhausted.
func RunbookAnchor(alert string) string {
	return strings.ToLower(alert)
}

// Label sets on which the rules join a pool's series with its target's or
// with poolwatch_pool_info. Every series of one scrape shares job, instance
// and the static labels, so these identify a target and a pool.
const (
	onTarget = "on(job, instance, target)"
	onPool   = "on(job, instance, target, pool)"
)

// Rules returns the rule groups for c: the recording rules first, then the
// alerts. Every alert keeps all labels of the series it is computed from
// (job, instance, target, pool and any static labels): the only aggregation
// is `max without(reason)` over the refusal gauge, which folds two refusal
// reasons of one target into one series; joins match on the labels that
// identify a target or a pool and add labels (database, upstream), never
// drop them. PoolwatchDown's optional absent() branch has no series to take
// labels from.
//
// PoolExhausted is "exhaustion that hurts", per kind of pool (the runbook
// has the table):
//   - no visible queue (a PostgreSQL target's pools, application pools,
//     Pgpool-II's children, PgBouncer's client side): every slot in use, or
//     the agent itself refused a slot of the server or client side;
//   - a queue (PgBouncer, PgCat, Odyssey pools): every connection in use
//     and clients waiting, or for a DATABASE/* cap, the cap reached while
//     clients of that database wait; or the oldest client waiting long;
//   - any pool that reports acquire timeouts: timeouts in every window;
//   - a refusal of the agent for a role or database limit.
//
// A session-mode PgBouncer pool full with nobody waiting is its normal
// state: no PoolExhausted, and no PoolNearExhaustion either (the forecast
// and the queueing warnings still apply).
func Rules(c Config) []RuleGroup {
	p := c.PoolSelector
	a := c.AgentSelector
	interval := ""
	if c.RuleInterval > 0 {
		interval = promDuration(c.RuleInterval)
	}
	inUse := selector("poolwatch_pool_in_use_connections", p)
	maxConns := selector("poolwatch_pool_max_connections", p)
	waiting := selector("poolwatch_pool_waiting_clients", p)
	window := promDuration(c.ForecastWindow)
	info := func(matchers ...string) string {
		return selector("poolwatch_pool_info", append([]string{p}, matchers...)...)
	}
	// withDatabase adds the PgBouncer database of each pool to expr's
	// series (poolwatch_pool_info has it; "" drops the label).
	withDatabase := func(expr string) string {
		return "(\n" + indent(expr) + "\n)\n* " + onPool + " group_left(database)\n" + info()
	}

	recording := RuleGroup{
		Name:     "poolwatch.rules",
		Interval: interval,
		Rules: []Rule{
			{
				// Unlimited pools have no max series, and a max of 0 is
				// treated the same way: no ceiling, so no utilization.
				Record: RecordUtilization,
				Expr:   inUse + "\n/\n(" + maxConns + " > 0)",
			},
			{
				Record: RecordInUseSmoothed,
				Expr:   fmt.Sprintf("avg_over_time(%s[%s])", inUse, promDuration(c.ForecastSmoothing)),
			},
			{
				Record: RecordInUseForecast,
				Expr: fmt.Sprintf("predict_linear(%s[%s], %d)",
					selector(RecordInUseSmoothed, p), window, int64(c.ForecastHorizon.Seconds())),
			},
			{
				// max as it has been for the whole window, only when it did
				// not change (a resize makes the forecast meaningless).
				Record: RecordMaxStable,
				Expr: fmt.Sprintf("min_over_time(%[1]s[%[2]s]) > 0\nand\nmax_over_time(%[1]s[%[2]s]) == min_over_time(%[1]s[%[2]s])",
					maxConns, window),
			},
			{
				Record: RecordForecastUtilize,
				Expr:   selector(RecordInUseForecast, p) + "\n/\n" + selector(RecordMaxStable, p),
			},
			{
				// Pools with no queue have no waiting series, hence none
				// of this either.
				Record: RecordQueueing,
				Expr:   waiting + " > bool 0",
			},
		},
	}

	ann := func(alert, summary, description string) *Annotations {
		return &Annotations{
			Summary:     summary,
			Description: description,
			RunbookURL:  c.RunbookURL + "#" + RunbookAnchor(alert),
		}
	}
	sev := func(s string) map[string]string { return map[string]string{"severity": s} }
	exhausted := func(reason string) map[string]string {
		return map[string]string{"severity": SeverityCritical, "reason": reason}
	}
	util := selector(RecordUtilization, p)
	full := fmt.Sprintf("%s >= %s", util, formatFloat(c.ExhaustedRatio))
	refused := func(reasons string) string {
		return selector("poolwatch_target_connection_refused", p, `reason=~"`+reasons+`"`) + " == 1"
	}
	pool := "pool {{ $labels.pool }} on target {{ $labels.target }}"
	agent := "poolwatch {{ $labels.instance }}"

	// PoolExhausted{reason="all_in_use"}: the branches, each a set of
	// (target, pool) series; see Rules' doc comment.
	noQueueFull := "(" + full + ")\n* " + onPool + " group_left(database)\n(\n" + indent(strings.Join([]string{
		info(`kind=~"postgres|application"`),
		info(`kind="pgpool"`, `pool="`+poolChildren+`"`),
		info(`kind=~"pgbouncer|pgcat|odyssey"`, `pool="`+poolClients+`"`),
	}, "\nor\n")) + "\n)"
	queueFull := "(" + full + ")\n* " + onPool + " group_left(database)\n" + info() +
		"\nand " + onPool + "\n" + waiting + " > 0"
	capFull := "(" + full + ")\n* " + onPool + " group_left(database)\n" + info(`pool=~".+/[*]"`) +
		"\nand on(job, instance, target, database)\n(\n" + indent("("+waiting+" > 0)\n* "+onPool+" group_left(database)\n"+info()) + "\n)"
	refusedFull := fmt.Sprintf("label_replace(max without(reason) (%s), \"pool\", %q, \"target\", \".*\")\nor\nlabel_replace(max without(reason) (%s), \"pool\", %q, \"target\", \".*\")",
		refused(refusedServerSlots), poolServer, refused(refusedClientsSlots), poolClients)
	allInUse := strings.Join([]string{"(\n" + indent(noQueueFull) + "\n)", "(\n" + indent(queueFull) + "\n)",
		"(\n" + indent(capFull) + "\n)", "(\n" + indent(refusedFull) + "\n)"}, "\nor\n")

	refusedOther := fmt.Sprintf("label_replace(\n  label_replace(\n    label_replace(%s, %q, \"$1\", \"reason\", \"(.*)\"),\n    \"pool\", %q, \"target\", \".*\"\n  ),\n  \"pool\", %q, \"reason\", \"pgbouncer_.*\"\n)",
		selector("poolwatch_target_connection_refused", p, `reason!~"`+refusedServerSlots+"|"+refusedClientsSlots+`"`)+" == 1",
		LabelRefusal, poolServer, poolClients)

	// withUpstream adds the upstream label to expr's series: the target
	// named by poolwatch_target_upstream_info, else the target itself.
	withUpstream := func(expr string) string {
		return "(\n" + indent(expr) + "\n)\n* " + onTarget + " group_left(upstream)\n" +
			selector("poolwatch_target_upstream_info", p) +
			"\nor " + onPool + "\nlabel_replace(\n" + indent(expr) + ",\n  \"upstream\", \"$1\", \"target\", \"(.*)\"\n)"
	}

	// A target is blind when the agent sees none of its pools: it cannot
	// connect, or the one query of a postgres target fails.
	targetUp := selector("poolwatch_target_up", p)
	blind := targetUp + " == 0\nunless " + onTarget + "\n" + info()

	poolwatchDown := fmt.Sprintf("%[1]s == 0\nor\n(%[1]s == 1 unless on(job, instance) %[2]s)", selector("up", a), selector("poolwatch_build_info", a))
	if c.AlertWhenNotScraped {
		poolwatchDown += "\nor\nabsent(" + selector("up", a) + ")"
	}

	alerts := RuleGroup{
		Name:     "poolwatch.alerts",
		Interval: interval,
		Rules: []Rule{
			{
				Alert: AlertPoolExhausted,
				Expr:  allInUse,
				For:   promDuration(c.ExhaustedFor),
				// As long as PoolClientsWaiting may go on firing after the
				// queue is gone (ClientsWaitingGap), so that the inhibition
				// of alertmanager.yml.example covers it to the end; it also
				// keeps one sample without a queue from resolving the page
				// and paging again.
				KeepFiringFor: promDuration(c.ClientsWaitingGap),
				Labels:        exhausted(ReasonAllInUse),
				Annotations: ann(AlertPoolExhausted, "A connection pool is exhausted.",
					fmt.Sprintf("%s has had no free connection for more than %s (in use / max {{ $value | humanizePercentage }}): the next client is refused or blocks, or clients queue.",
						capitalize(pool), promDuration(c.ExhaustedFor))),
			},
			{
				Alert: AlertPoolExhausted,
				Expr: withDatabase(fmt.Sprintf("%s > %s\nand\n%s > 0",
					selector("poolwatch_pool_max_wait_seconds", p), formatFloat(c.ExhaustedWaitSeconds), waiting)),
				For:           promDuration(c.ExhaustedWaitFor),
				KeepFiringFor: promDuration(c.ClientsWaitingGap),
				Labels:        exhausted(ReasonLongWait),
				Annotations: ann(AlertPoolExhausted, "A connection pool is exhausted.",
					fmt.Sprintf("Clients of %s have been queueing for a connection for more than %s; the oldest has waited {{ $value | humanizeDuration }} (threshold %s).",
						pool, promDuration(c.ExhaustedWaitFor), formatFloat(c.ExhaustedWaitSeconds)+"s")),
			},
			{
				Alert: AlertPoolExhausted,
				Expr: withDatabase(fmt.Sprintf("increase(%s[%s]) > 0",
					selector("poolwatch_pool_acquire_timeouts_total", p), promDuration(c.AcquireTimeoutsWindow))),
				For:    promDuration(c.AcquireTimeoutsFor),
				Labels: exhausted(ReasonAcquireTimeouts),
				Annotations: ann(AlertPoolExhausted, "A connection pool is exhausted.",
					fmt.Sprintf("Callers of %s have been failing to get a connection in time in every %s for more than %s ({{ $value | humanize }} acquire timeouts or refusals in the last %s).",
						pool, promDuration(c.AcquireTimeoutsWindow), promDuration(c.AcquireTimeoutsFor), promDuration(c.AcquireTimeoutsWindow))),
			},
			{
				Alert:  AlertPoolExhausted,
				Expr:   refusedOther,
				For:    promDuration(c.ExhaustedFor),
				Labels: exhausted(ReasonRefused),
				Annotations: ann(AlertPoolExhausted, "A connection pool is exhausted.",
					fmt.Sprintf("Target {{ $labels.target }} has refused poolwatch's own connection for more than %s ({{ $labels.refusal }}): pool {{ $labels.pool }} turns clients away, and poolwatch cannot see the target.",
						promDuration(c.ExhaustedFor))),
			},
			{
				Alert: AlertPoolNearExhaustion,
				// Not for session-mode pools: there every connected client
				// holds a server connection, so a correctly sized pool sits
				// near 100%. Their trouble is queueing (PoolClientsWaiting)
				// and the trend (PoolExhaustionForecast).
				Expr: fmt.Sprintf("(%s > %s)\n* %s group_left(database)\n%s",
					util, formatFloat(c.NearExhaustionRatio), onPool, info(`mode!="session"`)),
				For:    promDuration(c.NearExhaustionFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolNearExhaustion, "A connection pool is nearly exhausted.",
					fmt.Sprintf("%s has used more than %s of its max connections for more than %s (now {{ $value | humanizePercentage }}).",
						capitalize(pool), percent(c.NearExhaustionRatio), promDuration(c.NearExhaustionFor))),
			},
			{
				Alert: AlertPoolExhaustionForecast,
				// Guarded by the current utilization: above ForecastMinRatio
				// (an almost empty pool's trend is noise) and below
				// ExhaustedRatio (an exhausted pool is PoolExhausted's, and a
				// flat series at max forecasts max give or take a rounding
				// error).
				Expr: withDatabase(fmt.Sprintf("%s >= %s\nand\n(%s > %s < %s)",
					selector(RecordForecastUtilize, p), formatFloat(c.ExhaustedRatio),
					util, formatFloat(c.ForecastMinRatio), formatFloat(c.ExhaustedRatio))),
				For:    promDuration(c.ForecastFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolExhaustionForecast, "A connection pool is forecast to run out of connections.",
					fmt.Sprintf("At the trend of the last %s, %s will need {{ $value | humanizePercentage }} of its max connections within %s.",
						window, pool, promDuration(c.ForecastHorizon))),
			},
			{
				Alert: AlertPoolClientsWaiting,
				// The share of evaluations with clients waiting, so that a
				// gap of one sample does not reset the alert; the second
				// operand ends it within ClientsWaitingGap of the last wait;
				// the third waits until the pool has been watched for a
				// whole window (PgBouncer lists a pool from its first
				// client on, which often queues for a moment).
				Expr: withDatabase(fmt.Sprintf("avg_over_time(%[1]s[%[2]s]) >= %[3]s\nand\nmax_over_time(%[1]s[%[4]s]) == 1\nand\n%[1]s offset %[2]s",
					selector(RecordQueueing, p), promDuration(c.ClientsWaitingWindow), formatFloat(c.ClientsWaitingRatio),
					promDuration(c.ClientsWaitingGap))),
				For:    promDuration(c.ClientsWaitingFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolClientsWaiting, "Clients are queueing for a pooled connection.",
					fmt.Sprintf("Clients of %s have been waiting for a connection {{ $value | humanizePercentage }} of the last %s (threshold %s), and within the last %s.",
						pool, promDuration(c.ClientsWaitingWindow), percent(c.ClientsWaitingRatio), promDuration(c.ClientsWaitingGap))),
			},
			{
				Alert:  AlertPoolConnectionLeak,
				Expr:   withUpstream(selector("poolwatch_pool_leaked_connections", p) + " > 0"),
				For:    promDuration(c.LeakFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolConnectionLeak, "Connections are held with no activity past the leak threshold.",
					fmt.Sprintf("{{ $value }} connection(s) of %s have been held idle in a transaction past the target's leak threshold for more than %s (server: {{ $labels.upstream }}).",
						pool, promDuration(c.LeakFor))),
			},
			{
				Alert:  AlertPoolUnaccounted,
				Expr:   withUpstream(selector("poolwatch_pool_unaccounted_connections", p) + " > 0"),
				For:    promDuration(c.UnaccountedFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertPoolUnaccounted, "An application counts connections in use that no server sees.",
					fmt.Sprintf("The application's %s has counted {{ $value }} connection(s) in use that the server does not see for more than %s: its pool is losing slots to dead connections and will run dry.",
						pool, promDuration(c.UnaccountedFor))),
			},
			{
				Alert: AlertTargetDown,
				// A refusal is PoolExhausted's (all_in_use or refused).
				Expr:   blind + "\nunless " + onTarget + "\n" + selector("poolwatch_target_connection_refused", p) + " == 1",
				For:    promDuration(c.TargetDownFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertTargetDown, "poolwatch cannot see a target.",
					fmt.Sprintf("%s has seen no pool of target {{ $labels.target }} for more than %s: it cannot connect, or the target's main query fails. No pool alert of this target can fire.",
						agent, promDuration(c.TargetDownFor))),
			},
			{
				Alert: AlertTargetQueryFailing,
				// While the agent still sees the target's pools: a blind
				// target is PoolwatchTargetDown's.
				Expr: fmt.Sprintf("increase(%s[%s]) > 0\nand %s\npresent_over_time(%s[%s])",
					selector("poolwatch_target_scrape_errors_total", p), promDuration(c.QueryFailingWindow),
					onTarget, info(), promDuration(c.QueryFailingWindow)),
				For:    promDuration(c.QueryFailingFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertTargetQueryFailing, "A query of poolwatch against a target keeps failing.",
					fmt.Sprintf("Query {{ $labels.query }} of %s against target {{ $labels.target }} has failed in every %s for more than %s ({{ $value | humanize }} failures in the last %s); the target's metrics from that query are missing.",
						agent, promDuration(c.QueryFailingWindow), promDuration(c.QueryFailingFor), promDuration(c.QueryFailingWindow))),
			},
			{
				Alert: AlertProbeDown,
				// Any cause: a timeout, an unknown target name, the agent
				// behind the job gone. prometheus.yml.example's relabelling
				// makes instance the target's name.
				Expr:   fmt.Sprintf("label_replace(%s == 0, \"target\", \"$1\", \"instance\", \"(.*)\")", selector("up", c.ProbeSelector)),
				For:    promDuration(c.ProbeDownFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertProbeDown, "Prometheus cannot scrape a target through /probe.",
					fmt.Sprintf("Prometheus has failed to scrape /probe for target {{ $labels.target }} (job {{ $labels.job }}) for more than %s: a timeout, a target name the agent does not know, or no agent answering. No alert about this target can fire from this job.",
						promDuration(c.ProbeDownFor))),
			},
			{
				Alert:  AlertLimitedVisibility,
				Expr:   selector("poolwatch_target_limited_visibility", p) + " == 1",
				For:    promDuration(c.LimitedVisibilityFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertLimitedVisibility, "poolwatch's role cannot see every connection of a target.",
					fmt.Sprintf("%s connects to target {{ $labels.target }} as a role that cannot see other roles' connections, and has for more than %s: every count and leak of that target is too low. Fix: GRANT pg_monitor TO that role.",
						agent, promDuration(c.LimitedVisibilityFor))),
			},
			{
				Alert: AlertPoolsDropped,
				// max_over_time bridges rounds in which the cut did not bite
				// (gaps under 10m): a cut that comes and goes is still a
				// cut. The window is shorter than the for, so one cut round
				// alone never fires.
				Expr:   "max_over_time(" + selector("poolwatch_target_pools_dropped", p) + "[10m]) > 0",
				For:    promDuration(c.PoolsDroppedFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolsDropped, "poolwatch drops pools of a target because of max_pools.",
					fmt.Sprintf("%s has dropped pools of target {{ $labels.target }} (max_pools) for more than %s ({{ $value }} at most in the last 10m): their series are missing, and so are their alerts. Raise max_pools, or pin the pools that matter with pinned_pools; if the extra pools are PgBouncer auto-databases a client created, find the client.",
						agent, promDuration(c.PoolsDroppedFor))),
			},
			{
				Alert:  AlertReloadFailed,
				Expr:   selector("poolwatch_config_last_reload_successful", a) + " == 0",
				For:    promDuration(c.ReloadFailedFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertReloadFailed, "poolwatch failed to reload its configuration.",
					fmt.Sprintf("The last configuration reload of %s failed more than %s ago and it still runs the previous configuration: changes since are not in effect. The agent's log says which file, line and key.",
						agent, promDuration(c.ReloadFailedFor))),
			},
			{
				Alert:  AlertProbePoolLeak,
				Expr:   selector("poolwatch_probe_pool_leaked_connections", a) + " > 0",
				For:    promDuration(c.ProbeLeakFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertProbePoolLeak, "poolwatch's own probe pool is leaking connections.",
					fmt.Sprintf("The probe pool of %s for target {{ $labels.target }} has held {{ $value }} connection(s) past its leak threshold for more than %s; the agent holds connections the target needs (at most the probe pool's max).",
						agent, promDuration(c.ProbeLeakFor))),
			},
			{
				Alert: AlertProbeRetriesHigh,
				Expr: fmt.Sprintf("increase(%s[%s]) > %s",
					selector("poolwatch_probe_pool_acquire_retries_total", a),
					promDuration(c.ProbeRetriesWindow), formatFloat(c.ProbeRetriesThreshold)),
				For:    promDuration(c.ProbeRetriesFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertProbeRetriesHigh, "poolwatch's probe pool keeps retrying connections.",
					fmt.Sprintf("The probe pool of %s for target {{ $labels.target }} has kept retrying acquisitions for more than %s ({{ $value | humanize }} retries in the last %s); its health checks keep failing.",
						agent, promDuration(c.ProbeRetriesFor), promDuration(c.ProbeRetriesWindow))),
			},
			{
				// up == 0: scraped and failing. up == 1 without build info:
				// something answers that is not poolwatch. With
				// AlertWhenNotScraped, absent(up): not scraped at all. Either
				// way every other poolwatch alert is blind.
				Alert:  AlertPoolwatchDown,
				Expr:   poolwatchDown,
				For:    promDuration(c.AgentDownFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertPoolwatchDown, "poolwatch is down or not scraped.",
					fmt.Sprintf("{{ if $labels.instance }}Prometheus has failed to scrape poolwatch {{ $labels.instance }} (job {{ $labels.job }}), or what answers there is not poolwatch,{{ else }}No poolwatch series have been scraped{{ with $labels.job }} for job {{ . }}{{ end }}{{ end }} for more than %s. While poolwatch is down no other poolwatch alert can fire.",
						promDuration(c.AgentDownFor))),
			},
		},
	}
	return []RuleGroup{recording, alerts}
}

// indent indents every line of s by two spaces.
func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// capitalize upper-cases the first letter of s.
func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// RecordingRuleNames returns the names of every recording rule, in file
// order.
func RecordingRuleNames() []string {
	var names []string
	for _, g := range Rules(Default()) {
		for _, r := range g.Rules {
			if r.Record != "" {
				names = append(names, r.Record)
			}
		}
	}
	return names
}

// RenderRules renders the rule file for c as YAML, with a header saying how
// it was generated.
func RenderRules(c Config, variant string) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return encodeRules(Rules(c), variant)
}

// rulesHeader is the comment RenderRules' file starts with.
func rulesHeader(variant string) string {
	return fmt.Sprintf("# Generated by `go run ./mixin/cmd/mixin -variant %s` from mixin/. DO NOT EDIT.\n", variant) +
		"# To change a threshold or duration, edit mixin/config.go and run `make mixin`.\n"
}

// encodeRules renders groups as a rule file with RenderRules' header, in
// the format of jsonnet's std.manifestYamlDoc (manifest.go).
func encodeRules(groups []RuleGroup, variant string) ([]byte, error) {
	b, err := manifestRuleFile(rulesHeader(variant), groups)
	if err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	return b, nil
}
