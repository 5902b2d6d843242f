// Package mixin is the single source of poolwatch's Prometheus rules and
// Grafana dashboards: a monitoring mixin written in Go instead of jsonnet.
//
// Config plays the part of a jsonnet mixin's _config object: every selector,
// threshold, `for:` duration, forecast window and dashboard setting lives
// there and nowhere else. Default is what ships in alerts/ and dashboards/;
// Short is the same rules with durations of seconds, for the end-to-end test
// and the demo. Rendering is deterministic: the same Config always yields
// byte-identical files, so a test can compare the committed files with a fresh
// render.
//
// To change a threshold, edit Default (or pass a modified Config to Generate)
// and run `make mixin`, which runs `go run ./mixin/cmd/mixin -out .`.
package mixin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config holds every tunable of the rules and dashboards. The zero value is
// not usable: start from Default or Short and change fields.
type Config struct {
	// PoolSelector selects the series that describe targets and their pools
	// (poolwatch_pool_*, poolwatch_target_*, poolwatch_pgbouncer_*). In the
	// simple mode these come from the agent's metrics path; in the /probe mode
	// they come from the probe job, which is a different scrape job. It is a
	// comma-separated list of PromQL label matchers without braces, for
	// example `job="poolwatch"`. Empty means no matcher.
	PoolSelector string
	// AgentSelector selects the agent's own series (poolwatch_probe_pool_*,
	// poolwatch_build_info, poolwatch_config_*, process and Go metrics) and
	// its `up`. It must use equality matchers only if PoolwatchDown's
	// absent() branch (AlertWhenNotScraped) is to carry the job label.
	AgentSelector string
	// ProbeSelector selects the `up` series of the /probe scrape job (the
	// multi-target mode of prometheus.yml.example, where relabelling makes
	// `instance` the target's name). PoolwatchProbeDown fires on it.
	ProbeSelector string

	// RuleInterval is the evaluation interval of the rule groups. Zero
	// leaves it to Prometheus' global evaluation_interval.
	RuleInterval time.Duration

	// ExhaustedRatio is the utilization (in use / max) at which a pool
	// counts as exhausted. 1 means every connection is in use.
	ExhaustedRatio float64
	// ExhaustedFor is how long utilization must stay at ExhaustedRatio or
	// above before PoolExhausted fires.
	ExhaustedFor time.Duration
	// ExhaustedWaitSeconds is the longest client wait, in seconds, above
	// which a pool with waiting clients counts as exhausted.
	ExhaustedWaitSeconds float64
	// ExhaustedWaitFor is how long that wait must persist.
	ExhaustedWaitFor time.Duration

	// NearExhaustionRatio is the utilization above which PoolNearExhaustion
	// fires after NearExhaustionFor.
	NearExhaustionRatio float64
	NearExhaustionFor   time.Duration

	// ForecastSmoothing is the avg_over_time window that smooths in-use
	// connections before the linear forecast.
	ForecastSmoothing time.Duration
	// ForecastWindow is the history predict_linear fits, and the window over
	// which max must have been stable for the forecast to count.
	ForecastWindow time.Duration
	// ForecastHorizon is how far ahead the forecast looks.
	ForecastHorizon time.Duration
	// ForecastMinRatio guards the forecast: it fires only while the current
	// utilization is above this (so an almost empty pool's noise is
	// ignored) and below ExhaustedRatio (an exhausted pool is PoolExhausted's
	// business).
	ForecastMinRatio float64
	// ForecastFor is the `for:` of PoolExhaustionForecast.
	ForecastFor time.Duration

	// TimeWeightedWindow is the rate() window of the time-weighted
	// utilization of PgBouncer's transaction-mode databases
	// (timeweighted.go): the mean busy fraction over that window, from
	// SHOW STATS total_xact_time. At least two scrape intervals.
	TimeWeightedWindow time.Duration

	// Sustained queueing, gaps allowed: PoolClientsWaiting fires when
	// clients have been waiting in at least ClientsWaitingRatio of the
	// rule evaluations of the last ClientsWaitingWindow, and in at least one
	// of the last ClientsWaitingGap (so it resolves at most that long after
	// the queue is gone), for ClientsWaitingFor. Queueing without a break
	// therefore fires after about ClientsWaitingRatio × ClientsWaitingWindow
	// + ClientsWaitingFor; one zero sample does not reset it.
	ClientsWaitingWindow time.Duration
	ClientsWaitingRatio  float64
	ClientsWaitingGap    time.Duration
	ClientsWaitingFor    time.Duration
	// AcquireTimeoutsWindow is the window over which acquire timeouts and
	// refusals reported by a pool (poolwatch_pool_acquire_timeouts_total)
	// are counted; PoolExhausted{reason="acquire_timeouts"} fires when some
	// happened in every such window for AcquireTimeoutsFor. A For longer
	// than the window ignores one short burst.
	AcquireTimeoutsWindow time.Duration
	AcquireTimeoutsFor    time.Duration
	// LeakFor is how long leaked connections must stay above 0.
	LeakFor time.Duration
	// UnaccountedFor is how long an application must count connections in
	// use that no server sees (poolwatch_pool_unaccounted_connections > 0).
	// It absorbs the normal lag between a backend dying and the
	// application's pool noticing, plus the offset between the scrapes of
	// the application and of the server.
	UnaccountedFor time.Duration
	// TargetDownFor is how long the agent must see none of a target's pools
	// (poolwatch_target_up 0 and no pool series) before PoolwatchTargetDown.
	TargetDownFor time.Duration
	// QueryFailingWindow and QueryFailingFor: PoolwatchTargetQueryFailing
	// fires when one query of a target failed in every QueryFailingWindow
	// for QueryFailingFor while the target's pools were still seen.
	QueryFailingWindow time.Duration
	QueryFailingFor    time.Duration
	// ProbeDownFor is how long a /probe scrape must fail (up 0 in the
	// ProbeSelector job) before PoolwatchProbeDown.
	ProbeDownFor time.Duration
	// LimitedVisibilityFor is how long a postgres target must report that
	// the agent's role cannot see every connection.
	LimitedVisibilityFor time.Duration
	// PoolsDroppedFor is how long max_pools must have dropped pools of a
	// target (at some point in every 10m window) before
	// PoolwatchPoolsDropped.
	PoolsDroppedFor time.Duration
	// ReloadFailedFor is how long the last configuration reload must have
	// failed before PoolwatchConfigReloadFailed.
	ReloadFailedFor time.Duration
	// ProbeLeakFor is how long the agent's probe pool must report a leak.
	ProbeLeakFor time.Duration
	// ProbeRetriesWindow is the window over which probe-pool acquire
	// retries are counted; ProbeRetriesThreshold is the count above which
	// that window is bad; ProbeRetriesFor is how long it must stay bad. A
	// single burst of retries keeps the window bad for ProbeRetriesWindow
	// only, so ProbeRetriesFor > ProbeRetriesWindow ignores one-off bursts.
	ProbeRetriesWindow    time.Duration
	ProbeRetriesThreshold float64
	ProbeRetriesFor       time.Duration
	// AgentDownFor is how long the agent must be unscraped or absent.
	AgentDownFor time.Duration
	// AlertWhenNotScraped adds PoolwatchDown's absent() branch: it then
	// also fires when Prometheus has no `up` series of the agent's job at
	// all. Off by default: a Prometheus that loads the shared rules but
	// does not scrape poolwatch would page forever. Turn it on where every
	// Prometheus that loads these rules must scrape poolwatch.
	AlertWhenNotScraped bool

	// RunbookURL is the address of docs/runbooks.md; each alert links to
	// RunbookURL + "#" + its anchor.
	RunbookURL string

	// DashboardTags are set on every dashboard; dashboards link to each
	// other through the first tag.
	DashboardTags []string
	// DashboardRefresh is the dashboards' auto-refresh, e.g. "30s".
	DashboardRefresh string
	// DashboardTimeFrom is the default time range start, e.g. "now-6h".
	DashboardTimeFrom string
	// DashboardTopK is how many series the overview's time series panels
	// draw at each moment (topk), the highest, so that a fleet of pools
	// stays readable.
	DashboardTopK int
	// DashboardUIDPrefix prefixes every dashboard uid.
	DashboardUIDPrefix string
	// Dashboard uids, without prefix; stable across renders.
	OverviewUID string
	DetailUID   string
	SelfUID     string
}

// Default returns the configuration of the shipped rules and dashboards.
func Default() Config {
	return Config{
		PoolSelector:  `job=~"poolwatch|poolwatch-probe"`,
		AgentSelector: `job="poolwatch"`,
		ProbeSelector: `job="poolwatch-probe"`,

		ExhaustedRatio:       1,
		ExhaustedFor:         2 * time.Minute,
		ExhaustedWaitSeconds: 10,
		ExhaustedWaitFor:     time.Minute,

		NearExhaustionRatio: 0.85,
		NearExhaustionFor:   10 * time.Minute,

		ForecastSmoothing: 5 * time.Minute,
		ForecastWindow:    time.Hour,
		ForecastHorizon:   30 * time.Minute,
		ForecastMinRatio:  0.5,
		ForecastFor:       15 * time.Minute,

		TimeWeightedWindow: time.Minute,

		ClientsWaitingWindow:  10 * time.Minute,
		ClientsWaitingRatio:   0.4,
		ClientsWaitingGap:     2 * time.Minute,
		ClientsWaitingFor:     time.Minute,
		AcquireTimeoutsWindow: 2 * time.Minute,
		AcquireTimeoutsFor:    3 * time.Minute,
		LeakFor:               10 * time.Minute,
		UnaccountedFor:        time.Minute,
		TargetDownFor:         5 * time.Minute,
		QueryFailingWindow:    5 * time.Minute,
		QueryFailingFor:       10 * time.Minute,
		ProbeDownFor:          5 * time.Minute,
		LimitedVisibilityFor:  10 * time.Minute,
		ReloadFailedFor:       5 * time.Minute,
		PoolsDroppedFor:       15 * time.Minute,
		ProbeLeakFor:          5 * time.Minute,
		ProbeRetriesWindow:    5 * time.Minute,
		ProbeRetriesThreshold: 0,
		ProbeRetriesFor:       10 * time.Minute,
		AgentDownFor:          5 * time.Minute,

		RunbookURL: "https://github.com/poolwatch/poolwatch/blob/main/docs/runbooks.md",

		DashboardTags:      []string{"poolwatch"},
		DashboardRefresh:   "30s",
		DashboardTimeFrom:  "now-6h",
		DashboardTopK:      10,
		DashboardUIDPrefix: "poolwatch-",
		OverviewUID:        "overview",
		DetailUID:          "pool-detail",
		SelfUID:            "self",
	}
}

// Short returns Default with every duration cut to seconds, for the
// end-to-end test and `make demo`, where Prometheus scrapes and evaluates
// every second. Thresholds, selectors, names and dashboards are unchanged.
func Short() Config {
	c := Default()
	c.RuleInterval = time.Second
	c.ExhaustedFor = 5 * time.Second
	c.ExhaustedWaitSeconds = 2
	c.ExhaustedWaitFor = 5 * time.Second
	c.NearExhaustionFor = 10 * time.Second
	c.ForecastSmoothing = 5 * time.Second
	c.ForecastWindow = time.Minute
	c.ForecastHorizon = time.Minute
	c.ForecastFor = 10 * time.Second
	c.TimeWeightedWindow = 5 * time.Second
	c.ClientsWaitingWindow = 20 * time.Second
	c.ClientsWaitingGap = 3 * time.Second
	c.ClientsWaitingFor = 2 * time.Second
	c.AcquireTimeoutsWindow = 5 * time.Second
	c.AcquireTimeoutsFor = 8 * time.Second
	c.LeakFor = 5 * time.Second
	c.UnaccountedFor = 5 * time.Second
	c.TargetDownFor = 10 * time.Second
	c.QueryFailingWindow = 5 * time.Second
	c.QueryFailingFor = 10 * time.Second
	c.ProbeDownFor = 5 * time.Second
	c.LimitedVisibilityFor = 5 * time.Second
	c.ReloadFailedFor = 2 * time.Second
	c.PoolsDroppedFor = 5 * time.Second
	c.ProbeLeakFor = 5 * time.Second
	c.ProbeRetriesWindow = 10 * time.Second
	c.ProbeRetriesFor = 15 * time.Second
	c.AgentDownFor = 10 * time.Second
	c.DashboardRefresh = "5s"
	c.DashboardTimeFrom = "now-15m"
	return c
}

// Variant returns the named configuration: "default" or "short".
func Variant(name string) (Config, error) {
	switch name {
	case "default":
		return Default(), nil
	case "short":
		return Short(), nil
	default:
		return Config{}, fmt.Errorf("unknown mixin variant %q (want default or short)", name)
	}
}

// Validate reports the first inconsistency in c: a non-positive duration, a
// ratio out of range, or a missing uid or runbook address.
func (c Config) Validate() error {
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"ExhaustedFor", c.ExhaustedFor},
		{"ExhaustedWaitFor", c.ExhaustedWaitFor},
		{"NearExhaustionFor", c.NearExhaustionFor},
		{"ForecastSmoothing", c.ForecastSmoothing},
		{"ForecastWindow", c.ForecastWindow},
		{"ForecastHorizon", c.ForecastHorizon},
		{"ForecastFor", c.ForecastFor},
		{"TimeWeightedWindow", c.TimeWeightedWindow},
		{"ClientsWaitingWindow", c.ClientsWaitingWindow},
		{"ClientsWaitingGap", c.ClientsWaitingGap},
		{"ClientsWaitingFor", c.ClientsWaitingFor},
		{"AcquireTimeoutsWindow", c.AcquireTimeoutsWindow},
		{"AcquireTimeoutsFor", c.AcquireTimeoutsFor},
		{"LeakFor", c.LeakFor},
		{"UnaccountedFor", c.UnaccountedFor},
		{"TargetDownFor", c.TargetDownFor},
		{"QueryFailingWindow", c.QueryFailingWindow},
		{"QueryFailingFor", c.QueryFailingFor},
		{"ProbeDownFor", c.ProbeDownFor},
		{"LimitedVisibilityFor", c.LimitedVisibilityFor},
		{"ReloadFailedFor", c.ReloadFailedFor},
		{"PoolsDroppedFor", c.PoolsDroppedFor},
		{"ProbeLeakFor", c.ProbeLeakFor},
		{"ProbeRetriesWindow", c.ProbeRetriesWindow},
		{"ProbeRetriesFor", c.ProbeRetriesFor},
		{"AgentDownFor", c.AgentDownFor},
	}
	for _, d := range durations {
		if d.d <= 0 {
			return fmt.Errorf("mixin config: %s must be positive, is %s", d.name, d.d)
		}
		if d.d%time.Second != 0 {
			return fmt.Errorf("mixin config: %s must be whole seconds, is %s", d.name, d.d)
		}
	}
	if c.RuleInterval < 0 || c.RuleInterval%time.Second != 0 {
		return fmt.Errorf("mixin config: RuleInterval must be zero or whole seconds, is %s", c.RuleInterval)
	}
	if c.ForecastWindow < 2*c.ForecastSmoothing {
		return fmt.Errorf("mixin config: ForecastWindow (%s) must be at least twice ForecastSmoothing (%s)", c.ForecastWindow, c.ForecastSmoothing)
	}
	ratios := []struct {
		name string
		v    float64
	}{
		{"ExhaustedRatio", c.ExhaustedRatio},
		{"NearExhaustionRatio", c.NearExhaustionRatio},
		{"ForecastMinRatio", c.ForecastMinRatio},
		{"ClientsWaitingRatio", c.ClientsWaitingRatio},
	}
	for _, r := range ratios {
		if r.v <= 0 {
			return fmt.Errorf("mixin config: %s must be positive, is %v", r.name, r.v)
		}
	}
	if c.ClientsWaitingRatio > 1 {
		return fmt.Errorf("mixin config: ClientsWaitingRatio must be at most 1, is %v", c.ClientsWaitingRatio)
	}
	if c.ClientsWaitingGap > c.ClientsWaitingWindow {
		return fmt.Errorf("mixin config: ClientsWaitingGap (%s) must not exceed ClientsWaitingWindow (%s)", c.ClientsWaitingGap, c.ClientsWaitingWindow)
	}
	if c.ExhaustedWaitSeconds <= 0 {
		return fmt.Errorf("mixin config: ExhaustedWaitSeconds must be positive, is %v", c.ExhaustedWaitSeconds)
	}
	if c.ProbeRetriesThreshold < 0 {
		return fmt.Errorf("mixin config: ProbeRetriesThreshold must not be negative, is %v", c.ProbeRetriesThreshold)
	}
	if c.RunbookURL == "" {
		return errors.New("mixin config: RunbookURL is empty")
	}
	if c.OverviewUID == "" || c.DetailUID == "" || c.SelfUID == "" {
		return errors.New("mixin config: every dashboard needs a uid")
	}
	if len(c.DashboardTags) == 0 {
		return errors.New("mixin config: DashboardTags is empty")
	}
	if c.DashboardTopK <= 0 {
		return fmt.Errorf("mixin config: DashboardTopK must be positive, is %d", c.DashboardTopK)
	}
	return nil
}

// promDuration formats d the way Prometheus writes durations: "1h30m",
// "10m", "5s". d must be whole seconds.
func promDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	units := []struct {
		suffix string
		size   time.Duration
	}{
		{"d", 24 * time.Hour},
		{"h", time.Hour},
		{"m", time.Minute},
		{"s", time.Second},
	}
	for _, u := range units {
		if n := d / u.size; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteString(u.suffix)
			d -= n * u.size
		}
	}
	return b.String()
}

// formatFloat writes v in the shortest form that parses back to v.
func formatFloat(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// percent writes a ratio as a percentage for human text: 0.85 -> "85%".
func percent(v float64) string {
	return strconv.FormatFloat(v*100, 'g', -1, 64) + "%"
}
