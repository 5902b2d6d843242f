package mixin

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Names of the recording rules. They do not depend on the Config, so the
// shipped dashboards work against the Short variant's rules too.
const (
	RecordUtilization     = "target_pool:poolwatch_pool_utilization:ratio"
	RecordInUseSmoothed   = "target_pool:poolwatch_pool_in_use_connections:avg_over_time"
	RecordInUseForecast   = "target_pool:poolwatch_pool_in_use_connections:predict_linear"
	RecordMaxStable       = "target_pool:poolwatch_pool_max_connections:stable"
	RecordForecastUtilize = "target_pool:poolwatch_pool_forecast_utilization:ratio"
)

// Severities, as Alertmanager routes them: critical pages, warning opens a
// ticket.
const (
	SeverityCritical = "critical"
	SeverityWarning  = "warning"
)

// Values of the reason label that tells PoolExhausted's two rules apart
// (Prometheus rejects two rules with the same name and labels).
const (
	ReasonAllInUse = "all_in_use"
	ReasonLongWait = "long_wait"
)

// Alert names. They are a contract with Alertmanager routes, silences and
// the runbook anchors: do not rename them.
const (
	AlertPoolExhausted          = "PoolExhausted"
	AlertPoolNearExhaustion     = "PoolNearExhaustion"
	AlertPoolExhaustionForecast = "PoolExhaustionForecast"
	AlertPoolClientsWaiting     = "PoolClientsWaiting"
	AlertPoolConnectionLeak     = "PoolConnectionLeak"
	AlertTargetDown             = "PoolwatchTargetDown"
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
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations *Annotations      `yaml:"annotations,omitempty"`
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

// Rules returns the rule groups for c: the recording rules first, then the
// alerts. Every alert keeps all labels of the series it is computed from
// (job, instance, target, pool and any static labels): no rule aggregates
// them away, and binary operators match on all labels. The one exception is
// PoolwatchDown's absent() branch, which has no series to take labels from
// and is suppressed with `unless on()` while any agent is scraped and down.
func Rules(c Config) []RuleGroup {
	p := c.PoolSelector
	a := c.AgentSelector
	interval := ""
	if c.RuleInterval > 0 {
		interval = promDuration(c.RuleInterval)
	}
	inUse := selector("poolwatch_pool_in_use_connections", p)
	maxConns := selector("poolwatch_pool_max_connections", p)
	window := promDuration(c.ForecastWindow)

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
	util := selector(RecordUtilization, p)
	pool := "pool {{ $labels.pool }} on target {{ $labels.target }}"
	agent := "poolwatch {{ $labels.instance }}"

	alerts := RuleGroup{
		Name:     "poolwatch.alerts",
		Interval: interval,
		Rules: []Rule{
			{
				Alert:  AlertPoolExhausted,
				Expr:   fmt.Sprintf("%s >= %s", util, formatFloat(c.ExhaustedRatio)),
				For:    promDuration(c.ExhaustedFor),
				Labels: map[string]string{"severity": SeverityCritical, "reason": ReasonAllInUse},
				Annotations: ann(AlertPoolExhausted, "A connection pool is exhausted.",
					fmt.Sprintf("Every connection of %s has been in use for more than %s (utilization {{ $value | humanizePercentage }}); new clients queue or fail.",
						pool, promDuration(c.ExhaustedFor))),
			},
			{
				Alert: AlertPoolExhausted,
				Expr: fmt.Sprintf("%s > %s\nand\n%s > 0",
					selector("poolwatch_pool_max_wait_seconds", p), formatFloat(c.ExhaustedWaitSeconds),
					selector("poolwatch_pool_waiting_clients", p)),
				For:    promDuration(c.ExhaustedWaitFor),
				Labels: map[string]string{"severity": SeverityCritical, "reason": ReasonLongWait},
				Annotations: ann(AlertPoolExhausted, "A connection pool is exhausted.",
					fmt.Sprintf("Clients of %s have been queueing for a connection for more than %s; the oldest has waited {{ $value | humanizeDuration }} (threshold %s).",
						pool, promDuration(c.ExhaustedWaitFor), formatFloat(c.ExhaustedWaitSeconds)+"s")),
			},
			{
				Alert:  AlertPoolNearExhaustion,
				Expr:   fmt.Sprintf("%s > %s", util, formatFloat(c.NearExhaustionRatio)),
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
				Expr: fmt.Sprintf("%s >= %s\nand\n(%s > %s < %s)",
					selector(RecordForecastUtilize, p), formatFloat(c.ExhaustedRatio),
					util, formatFloat(c.ForecastMinRatio), formatFloat(c.ExhaustedRatio)),
				For:    promDuration(c.ForecastFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolExhaustionForecast, "A connection pool is forecast to run out of connections.",
					fmt.Sprintf("At the trend of the last %s, %s will need {{ $value | humanizePercentage }} of its max connections within %s.",
						window, pool, promDuration(c.ForecastHorizon))),
			},
			{
				Alert:  AlertPoolClientsWaiting,
				Expr:   selector("poolwatch_pool_waiting_clients", p) + " > 0",
				For:    promDuration(c.ClientsWaitingFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolClientsWaiting, "Clients are queueing for a pooled connection.",
					fmt.Sprintf("Clients of %s have been waiting for a connection for more than %s; {{ $value }} waiting now.",
						pool, promDuration(c.ClientsWaitingFor))),
			},
			{
				Alert:  AlertPoolConnectionLeak,
				Expr:   selector("poolwatch_pool_leaked_connections", p) + " > 0",
				For:    promDuration(c.LeakFor),
				Labels: sev(SeverityWarning),
				Annotations: ann(AlertPoolConnectionLeak, "Connections are held with no activity past the leak threshold.",
					fmt.Sprintf("{{ $value }} connection(s) of %s have been held idle in a transaction past the target's leak threshold for more than %s.",
						pool, promDuration(c.LeakFor))),
			},
			{
				Alert:  AlertTargetDown,
				Expr:   selector("poolwatch_target_up", p) + " == 0",
				For:    promDuration(c.TargetDownFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertTargetDown, "poolwatch cannot query a target.",
					fmt.Sprintf("%s has failed to query target {{ $labels.target }} for more than %s; the target's pool metrics are missing or incomplete.",
						agent, promDuration(c.TargetDownFor))),
			},
			{
				Alert:  AlertProbePoolLeak,
				Expr:   selector("poolwatch_probe_pool_leaked_connections", a) + " > 0",
				For:    promDuration(c.ProbeLeakFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertProbePoolLeak, "poolwatch's own probe pool is leaking connections.",
					fmt.Sprintf("The probe pool of %s for target {{ $labels.target }} has held {{ $value }} connection(s) past its leak threshold for more than %s; the agent is broken and holds connections the target needs.",
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
				// up == 0: scraped and failing. absent(up): not scraped at
				// all (the job vanished from service discovery). absent(build
				// info) while no up is 0: something answers that is not
				// poolwatch. Either way every other poolwatch alert is blind.
				Alert: AlertPoolwatchDown,
				Expr: fmt.Sprintf("%[1]s == 0\nor\nabsent(%[1]s)\nor\n(absent(%[2]s) unless on() (%[1]s == 0))",
					selector("up", a), selector("poolwatch_build_info", a)),
				For:    promDuration(c.AgentDownFor),
				Labels: sev(SeverityCritical),
				Annotations: ann(AlertPoolwatchDown, "poolwatch is down or not scraped.",
					fmt.Sprintf("{{ if $labels.instance }}Prometheus has failed to scrape poolwatch {{ $labels.instance }} (job {{ $labels.job }}){{ else }}No poolwatch series have been scraped{{ with $labels.job }} for job {{ . }}{{ end }}{{ end }} for more than %s. While poolwatch is down no other poolwatch alert can fire.",
						promDuration(c.AgentDownFor))),
			},
		},
	}
	return []RuleGroup{recording, alerts}
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
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Generated by `go run ./mixin/cmd/mixin -variant %s` from mixin/. DO NOT EDIT.\n", variant)
	buf.WriteString("# To change a threshold or duration, edit mixin/config.go and run `make mixin`.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(RuleFile{Groups: Rules(c)}); err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	return buf.Bytes(), nil
}
