package mixin

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Matchers every dashboard query carries (dashboard-linter: every selector
// filters on $job and $instance). Pool dashboards also filter on $target,
// and the detail dashboard on exactly one target and pool. Single-value
// variables use = rather than =~, because Grafana does not regex-escape a
// single value and pool names such as "app/*" contain regex characters.
//
// On the pool dashboards $job and $instance are those of the pool series:
// the agent and its address in the simple mode, the /probe job and the
// target's name in the multi-target mode. On the self-monitoring dashboard
// they are the agent's, which in the multi-target mode are not those of the
// target series: there, the target series (poolwatch_target_*) filter on a
// second job variable, $target_job, and on $target instead of $instance
// (targetSeriesMatchers).
const (
	agentMatchers  = `job=~"$job", instance=~"$instance"`
	poolMatchers   = `job=~"$job", instance=~"$instance", target=~"$target"`
	detailMatchers = `job=~"$job", instance=~"$instance", target="$target", pool="$pool"`
	// probePoolMatchers select the agent's own per-target series (its
	// probe pools), which are always on the agent's metrics path.
	probePoolMatchers = `job=~"$job", instance=~"$instance", target=~"$target"`
	// targetSeriesMatchers select target series on the self-monitoring
	// dashboard, in either mode.
	targetSeriesMatchers = `job=~"$target_job", target=~"$target"`
)

var datasource = &DatasourceRef{Type: "prometheus", UID: "${datasource}"}

// Dashboards returns the three poolwatch dashboards for c: the pool health
// overview, the pool detail and the agent's self-monitoring.
func Dashboards(c Config) []Dashboard {
	return []Dashboard{overview(c), poolDetail(c), selfMonitoring(c)}
}

// DashboardFile returns the path, relative to the repository root, of a
// dashboard's JSON file.
func DashboardFile(d Dashboard) string {
	return "dashboards/" + d.UID + ".json"
}

// RenderDashboards renders every dashboard as JSON in the format of
// jsonnet's std.manifestJsonEx (manifest.go), keyed by its path relative to
// the repository root.
func RenderDashboards(c Config) (map[string][]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	out := make(map[string][]byte)
	for _, d := range Dashboards(c) {
		b, err := manifestDashboard(d)
		if err != nil {
			return nil, fmt.Errorf("encode dashboard %s: %w", d.UID, err)
		}
		out[DashboardFile(d)] = b
	}
	return out, nil
}

func newDashboard(c Config, uid, title, description string, vars []Variable, rows ...gridRow) Dashboard {
	return Dashboard{
		Annotations: AnnotationList{List: []map[string]any{{
			"builtIn":    1,
			"datasource": map[string]any{"type": "grafana", "uid": "-- Grafana --"},
			"enable":     true,
			"hide":       true,
			"iconColor":  "rgba(0, 211, 255, 1)",
			"name":       "Annotations & Alerts",
			"type":       "dashboard",
		}}},
		Description:  description + " Generated from mixin/ in the poolwatch repository: do not edit by hand.",
		Editable:     false,
		GraphTooltip: 1,
		Links: []Link{{
			AsDropdown: true, Icon: "external link", IncludeVars: true, KeepTime: true,
			Tags: []string{c.DashboardTags[0]}, Title: "poolwatch dashboards", Type: "dashboards",
		}},
		Panels:        grid(rows...),
		Refresh:       c.DashboardRefresh,
		SchemaVersion: schemaVersion,
		Tags:          append([]string(nil), c.DashboardTags...),
		Templating:    Templating{List: vars},
		Time:          TimeRange{From: c.DashboardTimeFrom, To: "now"},
		Timezone:      "",
		Title:         title,
		UID:           c.DashboardUIDPrefix + uid,
		Version:       1,
	}
}

// gridRow is one row of panels of equal height; widths default to an equal
// share of the 24 columns. A gridRow with a title is a collapsible row
// header instead (section).
type gridRow struct {
	h      int
	panels []Panel
	title  string
}

func row(h int, panels ...Panel) gridRow { return gridRow{h: h, panels: panels} }

// section starts a collapsible row of the dashboard: the panels after it,
// up to the next section, fold under it.
func section(title string) gridRow { return gridRow{title: title} }

// grid lays rows out top to bottom and numbers the panels.
func grid(rows ...gridRow) []Panel {
	var out []Panel
	y, id := 0, 1
	for _, r := range rows {
		if r.title != "" {
			out = append(out, Panel{Type: "row", Title: r.title, ID: id, GridPos: GridPos{H: 1, W: 24, X: 0, Y: y}})
			id++
			y++
			continue
		}
		x := 0
		for i, p := range r.panels {
			if p.GridPos.W == 0 {
				p.GridPos.W = 24 / len(r.panels)
				if i == len(r.panels)-1 {
					p.GridPos.W = 24 - x
				}
			}
			p.GridPos.H, p.GridPos.X, p.GridPos.Y = r.h, x, y
			p.ID = id
			id++
			x += p.GridPos.W
			out = append(out, p)
		}
		y += r.h
	}
	return out
}

// width sets a panel's width in grid columns.
func width(w int, p Panel) Panel {
	p.GridPos.W = w
	return p
}

// noSelection is a variable's current value before Grafana picks one: the
// first value, or the default data source.
func noSelection() map[string]any { return map[string]any{"text": "", "value": ""} }

// allSelected is a multi-select variable's current value All.
func allSelected() map[string]any {
	return map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}}
}

func datasourceVariable() Variable {
	return Variable{
		Current: noSelection(), Hide: 0, Label: "Data source", Name: "datasource",
		Options: []any{}, Query: "prometheus", Refresh: 1, Type: "datasource",
	}
}

// filtersVariable is the ad-hoc filters variable: label filters that
// Grafana adds to every query of the dashboard, to pick a cluster, an
// environment or any static label the targets carry.
func filtersVariable() Variable {
	return Variable{
		Current: noSelection(), Datasource: datasource, Label: "Filters", Name: "filters",
		Description: "Label filters applied to every query, e.g. cluster, env or any static label of the targets.",
		Options:     []any{}, Type: "adhoc",
	}
}

// queryVariable is a label_values variable. multi variables follow
// dashboard-linter: multi-select with an All value of ".+".
func queryVariable(name, label, query string, multi bool) Variable {
	v := Variable{
		Current:    noSelection(),
		Datasource: datasource,
		Definition: query,
		Label:      label,
		Name:       name,
		Options:    []any{},
		Query:      query,
		Refresh:    2,
		Sort:       1,
		Type:       "query",
	}
	if multi {
		v.Multi, v.IncludeAll, v.AllValue = true, true, ".+"
		v.Current = allSelected()
	}
	return v
}

// jobInstanceVariables returns the job and instance variables, with job's
// values taken from metric restricted by sel.
func jobInstanceVariables(metric, sel string) []Variable {
	return []Variable{
		queryVariable("job", "Job", fmt.Sprintf("label_values(%s, job)", selector(metric, sel)), true),
		queryVariable("instance", "Instance", fmt.Sprintf("label_values(%s, instance)", selector(metric, `job=~"$job"`)), true),
	}
}

// allOfValues makes a multi-select variable's All the list of its values,
// as Grafana does without a custom all value, instead of AllValue.
func allOfValues(v Variable) Variable {
	v.AllValue = ""
	return v
}

func withDescription(v Variable, description string) Variable {
	v.Description = description
	return v
}

func thresholds(steps ...ThresholdStep) Thresholds {
	return Thresholds{Mode: "absolute", Steps: steps}
}

func step(color string, v *float64) ThresholdStep { return ThresholdStep{Color: color, Value: v} }

func f64(v float64) *float64 { return &v }

func greenOnly() Thresholds { return thresholds(step("green", nil)) }

func panel(typ, title, description, unit string, targets []Target, options map[string]any) Panel {
	for i := range targets {
		targets[i].RefID = string(rune('A' + i))
		targets[i].Datasource = datasource
		targets[i].Editor = "code"
	}
	return Panel{
		Datasource:  datasource,
		Description: description,
		FieldConfig: FieldConfig{
			Defaults:  FieldDefaults{Mappings: []any{}, Thresholds: greenOnly(), Unit: unit},
			Overrides: []Override{},
		},
		Options: options,
		Targets: targets,
		Title:   title,
		Type:    typ,
	}
}

func timeseries(title, description, unit string, targets ...Target) Panel {
	p := panel("timeseries", title, description, unit, targets, map[string]any{
		"legend":  map[string]any{"calcs": []string{"lastNotNull", "max"}, "displayMode": "table", "placement": "bottom", "showLegend": true},
		"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
	})
	p.FieldConfig.Defaults.Color = map[string]any{"mode": "palette-classic"}
	p.FieldConfig.Defaults.Custom = map[string]any{"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1, "showPoints": "never", "spanNulls": false}
	p.FieldConfig.Defaults.Min = f64(0)
	return p
}

func stat(title, description, unit string, t Target) Panel {
	p := panel("stat", title, description, unit, []Target{t}, map[string]any{
		"colorMode":   "value",
		"graphMode":   "area",
		"justifyMode": "auto",
		"orientation": "auto",
		"reduceOptions": map[string]any{
			"calcs": []string{"lastNotNull"}, "fields": "", "values": false,
		},
		"percentChangeColorMode": "standard",
		"showPercentChange":      false,
		"textMode":               "auto",
		"wideLayout":             true,
	})
	return p
}

func table(title, description, unit string, targets ...Target) Panel {
	return panel("table", title, description, unit, targets, map[string]any{
		"cellHeight": "sm",
		"footer":     map[string]any{"countRows": false, "fields": "", "reducer": []string{"sum"}, "show": false},
		"frameIndex": 0,
		"showHeader": true,
	})
}

// rangeQuery is a time-series query.
func rangeQuery(expr, legend string) Target {
	return Target{Expr: expr, Format: "time_series", LegendFormat: legend, Range: true}
}

// instantQuery is an instant query formatted as a table.
func instantQuery(expr string) Target {
	return Target{Expr: expr, Format: "table", Instant: true, LegendFormat: "__auto"}
}

// statQuery is an instant query for a stat panel.
func statQuery(expr, legend string) Target {
	return Target{Expr: expr, Format: "time_series", Instant: true, LegendFormat: legend}
}

func maybeEmpty(t Target) Target {
	t.MayBeEmpty = true
	return t
}

// withThresholds sets a panel's thresholds; a time series panel also draws
// them, as dashed lines.
func withThresholds(p Panel, t Thresholds) Panel {
	p.FieldConfig.Defaults.Thresholds = t
	if p.Type == "timeseries" {
		p.FieldConfig.Defaults.Custom["thresholdsStyle"] = map[string]any{"mode": "dashed"}
	}
	return p
}

// topk keeps the c.DashboardTopK highest series of expr, for time series
// panels that would otherwise draw every pool.
func topk(c Config, expr string) string {
	return fmt.Sprintf("topk(%d, %s)", c.DashboardTopK, expr)
}

func withOverride(p Panel, field string, props ...Property) Panel {
	p.FieldConfig.Overrides = append(p.FieldConfig.Overrides, Override{
		Matcher:    Matcher{ID: "byName", Options: field},
		Properties: props,
	})
	return p
}

func withNoValue(p Panel, s string) Panel {
	p.FieldConfig.Defaults.NoValue = s
	return p
}

func withTransformations(p Panel, t ...Transformation) Panel {
	p.Transformations = append(p.Transformations, t...)
	return p
}

func utilizationThresholds(c Config) Thresholds {
	return thresholds(step("green", nil), step("orange", f64(c.NearExhaustionRatio)), step("red", f64(c.ExhaustedRatio)))
}

// nonZeroRed colours counts of 1 or more red: targets down, waiting
// clients, leaks.
func nonZeroRed() Thresholds {
	return thresholds(step("green", nil), step("red", f64(1)))
}

// upMappings shows 1 as up and 0 as down.
func upMappings(p Panel) Panel {
	p.FieldConfig.Defaults.Mappings = []any{map[string]any{
		"type": "value",
		"options": map[string]any{
			"0": map[string]any{"color": "red", "index": 1, "text": "down"},
			"1": map[string]any{"color": "green", "index": 0, "text": "up"},
		},
	}}
	return p
}

func q(metric, matchers string) string { return selector(metric, matchers) }

// rate returns the per-second rate of a counter over Grafana's rate interval.
func rate(metric, matchers string) string {
	return fmt.Sprintf("rate(%s[$__rate_interval])", q(metric, matchers))
}

// detailLink opens the pool detail dashboard for a table row.
func detailLink(c Config) DataLink {
	return DataLink{
		Title: "Pool detail",
		URL: "/d/" + c.DashboardUIDPrefix + c.DetailUID + "?${__url_time_range}&var-datasource=${datasource}" +
			"&var-job=${__data.fields.job}&var-instance=${__data.fields.instance}" +
			"&var-target=${__data.fields.target}&var-pool=${__data.fields.pool}",
	}
}

func overview(c Config) Dashboard {
	m := poolMatchers
	util := q(RecordUtilization, m)
	// The variables come from poolwatch_target_up, which every target has
	// whether it is up or not: in the multi-target mode, where the instance
	// is the target, a target that has been down for the whole time range
	// (no pool series) can still be picked.
	vars := append([]Variable{datasourceVariable()}, jobInstanceVariables("poolwatch_target_up", c.PoolSelector)...)
	vars = append(vars, queryVariable("target", "Target",
		`label_values(poolwatch_target_up{job=~"$job", instance=~"$instance"}, target)`, true), filtersVariable())

	worst := table("Pools, worst first",
		"Every pool of every selected target, sorted by utilization (in use / max; empty for pools without a max). Click a pool for its detail.",
		"short",
		instantQuery(util),
		instantQuery(q("poolwatch_pool_in_use_connections", m)),
		instantQuery(q("poolwatch_pool_max_connections", m)),
		instantQuery(q("poolwatch_pool_waiting_clients", m)),
		instantQuery(q("poolwatch_pool_max_wait_seconds", m)),
		instantQuery(q("poolwatch_pool_leaked_connections", m)),
	)
	worst = withTransformations(worst,
		Transformation{ID: "merge", Options: map[string]any{}},
		Transformation{ID: "organize", Options: map[string]any{
			"excludeByName": map[string]any{"Time": true, "__name__": true},
			"renameByName": map[string]any{
				"Value #A": "Utilization", "Value #B": "In use", "Value #C": "Max",
				"Value #D": "Waiting clients", "Value #E": "Longest wait", "Value #F": "Leaked",
			},
		}},
		Transformation{ID: "sortBy", Options: map[string]any{"fields": map[string]any{}, "sort": []any{map[string]any{"desc": true, "field": "Utilization"}}}},
	)
	worst = withOverride(worst, "Utilization",
		Property{ID: "unit", Value: "percentunit"},
		Property{ID: "thresholds", Value: utilizationThresholds(c)},
		Property{ID: "custom.cellOptions", Value: map[string]any{"type": "color-background"}})
	worst = withOverride(worst, "Longest wait", Property{ID: "unit", Value: "s"},
		Property{ID: "thresholds", Value: thresholds(step("green", nil), step("red", f64(c.ExhaustedWaitSeconds)))},
		Property{ID: "custom.cellOptions", Value: map[string]any{"type": "color-text"}})
	worst = withOverride(worst, "Leaked", Property{ID: "thresholds", Value: nonZeroRed()},
		Property{ID: "custom.cellOptions", Value: map[string]any{"type": "color-text"}})
	worst = withOverride(worst, "pool", Property{ID: "links", Value: []DataLink{detailLink(c)}})

	forecast := table("Pools forecast to exhaust",
		fmt.Sprintf("The 10 pools with the highest forecast utilization %s ahead (linear trend of the last %s of smoothed in-use connections, against a max that did not change). 100%% or more means the pool is on course to run dry; PoolExhaustionForecast fires when that lasts %s while utilization is above %s but the pool is not yet exhausted.",
			promDuration(c.ForecastHorizon), promDuration(c.ForecastWindow), promDuration(c.ForecastFor), percent(c.ForecastMinRatio)),
		"percentunit",
		instantQuery(fmt.Sprintf("sort_desc(topk(10, %s))", q(RecordForecastUtilize, m))),
	)
	forecast = withThresholds(forecast, utilizationThresholds(c))
	forecast = withTransformations(forecast, Transformation{ID: "organize", Options: map[string]any{
		"excludeByName": map[string]any{"Time": true, "__name__": true},
		"renameByName":  map[string]any{"Value": "Forecast utilization in " + promDuration(c.ForecastHorizon)},
	}})
	forecast = withOverride(forecast, "pool", Property{ID: "links", Value: []DataLink{detailLink(c)}})

	firing := table("Firing pool alerts",
		"poolwatch alerts that are firing now for the selected jobs, instances and targets (the ALERTS series of Prometheus). Empty is good.",
		"none",
		maybeEmpty(instantQuery(`ALERTS{alertstate="firing", alertname=~"Pool.*", job=~"$job", instance=~"$instance", target=~"$target"}`)),
	)
	firing = withTransformations(firing, Transformation{ID: "organize", Options: map[string]any{
		"excludeByName": map[string]any{"Time": true, "Value": true, "__name__": true, "alertstate": true},
		"indexByName":   map[string]any{"alertname": 0, "severity": 1, "target": 2, "pool": 3},
	}})

	return newDashboard(c, c.OverviewUID, "poolwatch / Pool health overview",
		"Every connection pool of every target watched by poolwatch: how full, who waits, what leaks, what will run dry.",
		vars,
		section("Now"),
		row(4,
			stat("Targets", "Targets reporting.", "none", statQuery(fmt.Sprintf("count(%s)", q("poolwatch_target_up", m)), "")),
			withThresholds(stat("Targets down", "Targets whose last scrape failed (poolwatch_target_up == 0).", "none",
				statQuery(fmt.Sprintf("count(%s == 0) or vector(0)", q("poolwatch_target_up", m)), "")), nonZeroRed()),
			stat("Pools", "Pools reported by the selected targets.", "none", statQuery(fmt.Sprintf("count(%s)", q("poolwatch_pool_info", m)), "")),
			withThresholds(stat("Pools above "+percent(c.NearExhaustionRatio), "Pools whose utilization is above the PoolNearExhaustion threshold.", "none",
				statQuery(fmt.Sprintf("count(%s > %s) or vector(0)", util, formatFloat(c.NearExhaustionRatio)), "")), nonZeroRed()),
			withThresholds(stat("Waiting clients now", "Clients queued for a connection, over every pool (PgBouncer only).", "none",
				statQuery(fmt.Sprintf("sum(%s) or vector(0)", q("poolwatch_pool_waiting_clients", m)), "")), nonZeroRed()),
			withThresholds(stat("Leaked connections now", "Connections held past their target's leak threshold with no activity, over every pool.", "none",
				statQuery(fmt.Sprintf("sum(%s)", q("poolwatch_pool_leaked_connections", m)), "")), nonZeroRed()),
		),
		section("Worst pools and forecasts"),
		row(10, worst),
		row(8, width(14, forecast), width(10, firing)),
		section("Over time"),
		row(8,
			withThresholds(timeseries("Utilization", fmt.Sprintf("In use / max, per pool: the %d highest at each moment. Pools without a max (unlimited) have none. The dashed lines are the PoolNearExhaustion and PoolExhausted thresholds.", c.DashboardTopK), "percentunit",
				rangeQuery(topk(c, util), "{{target}} {{pool}}")), utilizationThresholds(c)),
			withThresholds(timeseries("Waiting clients", fmt.Sprintf("Clients queued for a connection, per pool (PgBouncer cl_waiting): the %d highest at each moment.", c.DashboardTopK), "short",
				rangeQuery(topk(c, q("poolwatch_pool_waiting_clients", m)), "{{target}} {{pool}}")), nonZeroRed()),
		),
		row(8,
			withThresholds(timeseries("Longest wait", fmt.Sprintf("Age of the oldest queued client, per pool (PgBouncer maxwait, microsecond precision): the %d highest at each moment. The dashed line is PoolExhausted's wait threshold.", c.DashboardTopK), "s",
				rangeQuery(topk(c, q("poolwatch_pool_max_wait_seconds", m)), "{{target}} {{pool}}")), thresholds(step("green", nil), step("red", f64(c.ExhaustedWaitSeconds)))),
			withThresholds(timeseries("Leaked connections", fmt.Sprintf("Connections held past the leak threshold with no activity, per pool: the %d highest at each moment.", c.DashboardTopK), "short",
				rangeQuery(topk(c, q("poolwatch_pool_leaked_connections", m)), "{{target}} {{pool}}")), nonZeroRed()),
		),
		section("Application pools"),
		row(8,
			withNoValue(timeseries("Application pools in use",
				fmt.Sprintf("Connections in use per application pool (application_pools of postgres targets, and application targets), the %d highest at each moment, against the max each declares. Empty where no application pool is declared.", c.DashboardTopK), "short",
				maybeEmpty(rangeQuery(topk(c, q("poolwatch_pool_in_use_connections", m)+" and on(job, instance, target, pool) "+q("poolwatch_pool_info", m+`, kind=~"postgres|application", pool!="server"`)), "{{target}} {{pool}} in use")),
				maybeEmpty(rangeQuery(q("poolwatch_pool_max_connections", m)+" and on(job, instance, target, pool) "+q("poolwatch_pool_info", m+`, kind=~"postgres|application", pool!="server"`), "{{target}} {{pool}} max"))),
				"no application pools"),
		),
		section("PgBouncer"),
		row(8,
			timeseries("PgBouncer client wait time", fmt.Sprintf("Seconds clients spent waiting for a server connection, per second, per PgBouncer database (SHOW STATS total_wait_time). PgBouncer credits it only when a waiting client is finally served, so it lags live queueing: the waiting-clients and max-wait panels show queueing as it happens. The %d highest at each moment.", c.DashboardTopK), "s",
				rangeQuery(topk(c, rate("poolwatch_pgbouncer_client_wait_seconds_total", m)), "{{target}} {{database}}")),
			timeseries("PgBouncer transactions", fmt.Sprintf("Transactions per second, per PgBouncer database (SHOW STATS total_xact_count): the %d busiest at each moment.", c.DashboardTopK), "ops",
				rangeQuery(topk(c, rate("poolwatch_pgbouncer_transactions_total", m)), "{{target}} {{database}}")),
			timeseries("PgBouncer databases paused or disabled", "1 while a PgBouncer database is PAUSEd or DISABLEd: its clients wait or are refused whatever the pool sizes.", "none",
				rangeQuery(q("poolwatch_pgbouncer_database_paused", m), "{{target}} {{database}} paused"),
				rangeQuery(q("poolwatch_pgbouncer_database_disabled", m), "{{target}} {{database}} disabled")),
		),
	)
}

func poolDetail(c Config) Dashboard {
	m := detailMatchers
	vars := append([]Variable{datasourceVariable()}, jobInstanceVariables("poolwatch_pool_info", c.PoolSelector)...)
	vars = append(vars,
		queryVariable("target", "Target", `label_values(poolwatch_pool_info{job=~"$job", instance=~"$instance"}, target)`, false),
		queryVariable("pool", "Pool", `label_values(poolwatch_pool_info{job=~"$job", instance=~"$instance", target="$target"}, pool)`, false),
		filtersVariable(),
	)
	inUse := q("poolwatch_pool_in_use_connections", m)
	open := q("poolwatch_pool_open_connections", m)

	conns := timeseries("Connections",
		"In use, open and idle connections (idle = open - in use) against the pool's min and max. A pool can exceed max by its reserve (poolwatch_pool_reserve_connections): PgBouncer's reserve_pool, or a PostgreSQL server's superuser_reserved_connections + reserved_connections slots. min is kept topped up only while the pool has clients.",
		"short",
		rangeQuery(inUse, "in use"),
		rangeQuery(open, "open"),
		rangeQuery(open+" - "+inUse, "idle"),
		rangeQuery(q("poolwatch_pool_min_connections", m), "min"),
		rangeQuery(q("poolwatch_pool_max_connections", m), "max"),
	)
	conns = withOverride(conns, "max", Property{ID: "color", Value: map[string]any{"fixedColor": "red", "mode": "fixed"}},
		Property{ID: "custom.lineStyle", Value: map[string]any{"dash": []int{10, 10}, "fill": "dash"}},
		Property{ID: "custom.fillOpacity", Value: 0})
	conns = withOverride(conns, "min", Property{ID: "color", Value: map[string]any{"fixedColor": "blue", "mode": "fixed"}},
		Property{ID: "custom.lineStyle", Value: map[string]any{"dash": []int{10, 10}, "fill": "dash"}},
		Property{ID: "custom.fillOpacity", Value: 0})

	forecast := timeseries("Forecast",
		fmt.Sprintf("In-use connections smoothed over %s, their linear forecast %s ahead (trend of the last %s), and max where it stayed the same over that window. PoolExhaustionForecast fires when the forecast reaches max for %s while utilization is above %s but the pool is not yet exhausted.",
			promDuration(c.ForecastSmoothing), promDuration(c.ForecastHorizon), promDuration(c.ForecastWindow), promDuration(c.ForecastFor), percent(c.ForecastMinRatio)),
		"short",
		rangeQuery(q(RecordInUseSmoothed, m), "in use (smoothed)"),
		rangeQuery(q(RecordInUseForecast, m), "forecast in "+promDuration(c.ForecastHorizon)),
		rangeQuery(q(RecordMaxStable, m), "max (stable)"),
	)
	forecast = withOverride(forecast, "max (stable)", Property{ID: "color", Value: map[string]any{"fixedColor": "red", "mode": "fixed"}},
		Property{ID: "custom.fillOpacity", Value: 0})
	forecast = withOverride(forecast, "forecast in "+promDuration(c.ForecastHorizon),
		Property{ID: "custom.lineStyle", Value: map[string]any{"dash": []int{4, 4}, "fill": "dash"}})

	info := table("Pool info", "What the pool is: kind of target, database, user and pool mode.", "none",
		instantQuery(q("poolwatch_pool_info", m)))
	info = withTransformations(info, Transformation{ID: "organize", Options: map[string]any{
		"excludeByName": map[string]any{"Time": true, "Value": true, "__name__": true},
	}})
	alerts := table("Firing alerts of this target",
		"poolwatch alerts firing now for the selected target: this pool's, the target's own (PoolwatchTargetDown) and its other pools'. Empty is good.", "none",
		maybeEmpty(instantQuery(`ALERTS{alertstate="firing", job=~"$job", instance=~"$instance", target="$target"}`)))
	alerts = withTransformations(alerts, Transformation{ID: "organize", Options: map[string]any{
		"excludeByName": map[string]any{"Time": true, "Value": true, "__name__": true, "alertstate": true},
		"indexByName":   map[string]any{"alertname": 0, "severity": 1, "pool": 2},
	}})

	return newDashboard(c, c.DetailUID, "poolwatch / Pool detail",
		"One pool of one target over time: connections against min and max, waiting clients, leaks and the exhaustion forecast.",
		vars,
		section("Now"),
		row(4,
			withNoValue(withThresholds(stat("Utilization now", "In use / max now. No value: the pool has no max (unlimited).", "percentunit",
				statQuery(q(RecordUtilization, m), "")), utilizationThresholds(c)), "no max"),
			stat("In use now", "Connections working for a client now.", "none", statQuery(inUse, "")),
			withNoValue(stat("Max now", "The pool's ceiling. No value: unlimited.", "none", statQuery(q("poolwatch_pool_max_connections", m), "")), "unlimited"),
			withNoValue(withThresholds(stat("Waiting clients now", "Clients queued for a connection now (PgBouncer only).", "none",
				statQuery(q("poolwatch_pool_waiting_clients", m), "")), nonZeroRed()), "n/a"),
			withNoValue(withThresholds(stat("Longest wait now", "Age of the oldest queued client now (PgBouncer only).", "s",
				statQuery(q("poolwatch_pool_max_wait_seconds", m), "")), thresholds(step("green", nil), step("red", f64(c.ExhaustedWaitSeconds)))), "n/a"),
			withThresholds(stat("Leaked connections now", "Connections held past the leak threshold with no activity now.", "none",
				statQuery(q("poolwatch_pool_leaked_connections", m), "")), nonZeroRed()),
		),
		section("Connections over time"),
		row(9, conns),
		section("Queue and leaks"),
		row(8,
			withThresholds(timeseries("Waiting clients", "Clients queued for a connection (PgBouncer cl_waiting). PostgreSQL has no queue: there is no such series for postgres targets.", "short",
				rangeQuery(q("poolwatch_pool_waiting_clients", m), "waiting")), nonZeroRed()),
			withThresholds(timeseries("Longest wait", "Age of the oldest queued client (PgBouncer maxwait and maxwait_us).", "s",
				rangeQuery(q("poolwatch_pool_max_wait_seconds", m), "longest wait")), thresholds(step("green", nil), step("red", f64(c.ExhaustedWaitSeconds)))),
		),
		row(8,
			withThresholds(timeseries("Leaked connections", "Connections held past the target's leak threshold with no activity: idle in transaction, or a PgBouncer client holding a server with no query in flight. The agent's log names each culprit.", "short",
				rangeQuery(q("poolwatch_pool_leaked_connections", m), "leaked")), nonZeroRed()),
			timeseries("Oldest leak age", "How long the oldest leaked connection has been held; 0 when there is none.", "s",
				rangeQuery(q("poolwatch_pool_oldest_leak_seconds", m), "oldest leak")),
		),
		section("Forecast and alerts"),
		row(9, width(16, forecast), width(8, info)),
		row(6, alerts),
	)
}

func selfMonitoring(c Config) Dashboard {
	a := agentMatchers
	pp := probePoolMatchers
	ts := targetSeriesMatchers
	vars := append([]Variable{datasourceVariable()}, jobInstanceVariables("poolwatch_build_info", c.AgentSelector)...)
	vars = append(vars,
		withDescription(queryVariable("target_job", "Target job",
			fmt.Sprintf("label_values(%s, job)", selector("poolwatch_target_up", c.PoolSelector)), true),
			"The scrape job of the target series (poolwatch_target_*): the agent's job in the simple mode, the /probe job in the multi-target mode, where their instance is the target's name rather than the agent."),
		// All is the list of the selected agents' targets rather than .+, so
		// that the target series, which cannot filter on the agent's
		// instance, stay those of the selected agents.
		withDescription(allOfValues(queryVariable("target", "Target",
			`label_values(poolwatch_probe_pool_max_connections{job=~"$job", instance=~"$instance"}, target)`, true)),
			"The targets configured on the selected agents (those they keep a probe pool for)."),
		filtersVariable(),
	)
	build := stat("Version", "The running poolwatch version (poolwatch_build_info).", "none", statQuery(q("poolwatch_build_info", a), "{{version}}"))
	build.Options["textMode"] = "name"
	build.Options["graphMode"] = "none"

	reload := stat("Config reload", "Whether the last configuration reload succeeded.", "none", statQuery(q("poolwatch_config_last_reload_successful", a), ""))
	reload.FieldConfig.Defaults.Mappings = []any{map[string]any{
		"type": "value",
		"options": map[string]any{
			"0": map[string]any{"color": "red", "index": 1, "text": "failed"},
			"1": map[string]any{"color": "green", "index": 0, "text": "ok"},
		},
	}}

	return newDashboard(c, c.SelfUID, "poolwatch / Self-monitoring",
		"The poolwatch agent itself: its probe pools (in use, leaks, retries), whether it reaches its targets and how long that takes, and its memory and CPU. Job and Instance pick the agents; the target panels read the Target job (in the multi-target mode, the /probe job).",
		vars,
		section("Agent health"),
		row(4,
			upMappings(stat("Agent", "Whether Prometheus scrapes the agent (up).", "none", statQuery(fmt.Sprintf("min(%s)", q("up", a)), ""))),
			build,
			reload,
			stat("Last successful reload", "When the configuration was last loaded successfully.", "dateTimeFromNow",
				statQuery(fmt.Sprintf("max(%s) * 1000", q("poolwatch_config_last_reload_success_timestamp_seconds", a)), "")),
			withThresholds(stat("Targets down", "Targets whose last scrape failed (poolwatch_target_up == 0 under the Target job).", "none",
				statQuery(fmt.Sprintf("count(%s == 0) or vector(0)", q("poolwatch_target_up", ts)), "")), nonZeroRed()),
			withThresholds(stat("Probe connections leaked", "The agent's own connections held past probe_pool.leak_threshold. Anything but 0 is a poolwatch bug.", "none",
				statQuery(fmt.Sprintf("sum(%s)", q("poolwatch_probe_pool_leaked_connections", pp)), "")), nonZeroRed()),
		),
		section("Probe pools"),
		row(8,
			timeseries("Probe pool connections", "The agent's own connections to each target: in use (during a scrape), open, and the probe pool's max. A healthy idle agent shows 0 in use.", "short",
				rangeQuery(q("poolwatch_probe_pool_in_use_connections", pp), "{{target}} in use"),
				rangeQuery(q("poolwatch_probe_pool_open_connections", pp), "{{target}} open"),
				rangeQuery(q("poolwatch_probe_pool_max_connections", pp), "{{target}} max")),
			withThresholds(timeseries("Probe pool leaked connections", "The agent's own connections held past probe_pool.leak_threshold, per target. Must stay 0.", "short",
				rangeQuery(q("poolwatch_probe_pool_leaked_connections", pp), "{{target}}")), nonZeroRed()),
			timeseries("Probe pool retries and errors", "Per target, per second: acquire retries (a health check failed and the connection was replaced), acquisitions that failed for good, health-check failures and new connections.", "ops",
				rangeQuery(rate("poolwatch_probe_pool_acquire_retries_total", pp), "{{target}} retries"),
				rangeQuery(rate("poolwatch_probe_pool_acquire_errors_total", pp), "{{target}} errors"),
				rangeQuery(rate("poolwatch_probe_pool_health_check_failures_total", pp), "{{target}} health-check failures"),
				rangeQuery(rate("poolwatch_probe_pool_new_connections_total", pp), "{{target}} new connections")),
		),
		section("Targets"),
		row(8,
			upMappings(timeseries("Target up", "1 when every query of the last scrape of the target succeeded.", "none",
				rangeQuery(q("poolwatch_target_up", ts), "{{target}}"))),
			timeseries("Target scrape duration", "How long each scrape of each target took. It is bounded by the target's scrape_timeout.", "s",
				rangeQuery(q("poolwatch_target_scrape_duration_seconds", ts), "{{target}}")),
			timeseries("Target scrape errors", "Failed queries per second, per target and query. Empty while no query has failed.", "ops",
				maybeEmpty(rangeQuery(rate("poolwatch_target_scrape_errors_total", ts), "{{target}} {{query}}"))),
			timeseries("Pools dropped", "Pools dropped by the per-target max_pools cap, per target. Must stay 0.", "short",
				rangeQuery(q("poolwatch_target_pools_dropped", ts), "{{target}}")),
		),
		section("Process"),
		row(8,
			timeseries("Agent scrape duration", "How long Prometheus took to scrape the agent's metrics path.", "s",
				rangeQuery(q("scrape_duration_seconds", a), "{{instance}} scrape")),
			timeseries("Memory", "Resident memory of the agent process.", "bytes",
				rangeQuery(q("process_resident_memory_bytes", a), "{{instance}} resident")),
			timeseries("CPU", "CPU used by the agent process (1 = one core).", "percentunit",
				rangeQuery(rate("process_cpu_seconds_total", a), "{{instance}}")),
			timeseries("Goroutines and open files", "Goroutines and open file descriptors of the agent: both must stay flat when targets fail.", "short",
				rangeQuery(q("go_goroutines", a), "{{instance}} goroutines"),
				rangeQuery(q("process_open_fds", a), "{{instance}} open fds")),
		),
	)
}

// PanelQuery is one query of one dashboard panel, as the dashboard stores it
// (with Grafana variables).
type PanelQuery struct {
	DashboardUID   string
	DashboardTitle string
	PanelTitle     string
	RefID          string
	Expr           string
	Instant        bool
	// MayBeEmpty: the query filters for trouble and may return nothing.
	MayBeEmpty bool
}

// String names the query for test output.
func (q PanelQuery) String() string {
	return fmt.Sprintf("%s / %s / %s", q.DashboardTitle, q.PanelTitle, q.RefID)
}

// PanelQueries lists every query of every panel of the dashboards for c, in
// dashboard and panel order.
func PanelQueries(c Config) []PanelQuery {
	var out []PanelQuery
	for _, d := range Dashboards(c) {
		for _, p := range d.Panels {
			for _, t := range p.Targets {
				out = append(out, PanelQuery{
					DashboardUID: d.UID, DashboardTitle: d.Title, PanelTitle: p.Title,
					RefID: t.RefID, Expr: t.Expr, Instant: t.Instant, MayBeEmpty: t.MayBeEmpty,
				})
			}
		}
	}
	return out
}

// VariableSelectors lists the series selector inside every label_values()
// variable query of the dashboards for c, keyed by "dashboard uid/variable".
func VariableSelectors(c Config) (map[string]string, error) {
	return variableParts(c, func(selector, _ string) string { return selector })
}

// VariableLabels lists the label every label_values() variable of the
// dashboards for c takes its values from, keyed like VariableSelectors. It
// is the variable's name, except for a variable that reads the same label
// as another: $target_job takes the values of job.
func VariableLabels(c Config) (map[string]string, error) {
	return variableParts(c, func(_, label string) string { return label })
}

// variableParts returns part(selector, label) of every label_values()
// variable of the dashboards for c, keyed by "dashboard uid/variable".
func variableParts(c Config, part func(selector, label string) string) (map[string]string, error) {
	out := make(map[string]string)
	for _, d := range Dashboards(c) {
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			sel, label, err := splitLabelValues(v.Query)
			if err != nil {
				return nil, fmt.Errorf("dashboard %s variable %s: %w", d.UID, v.Name, err)
			}
			out[d.UID+"/"+v.Name] = part(sel, label)
		}
	}
	return out, nil
}

// splitLabelValues splits a variable query label_values(selector, label).
func splitLabelValues(query string) (selector, label string, err error) {
	s, ok := strings.CutPrefix(query, "label_values(")
	i := strings.LastIndex(s, ",")
	if !ok || i < 0 || !strings.HasSuffix(s, ")") {
		return "", "", fmt.Errorf("query %q is not label_values(selector, label)", query)
	}
	label = strings.TrimSpace(strings.TrimSuffix(s[i+1:], ")"))
	if label == "" {
		return "", "", fmt.Errorf("query %q names no label", query)
	}
	return strings.TrimSpace(s[:i]), label, nil
}

// Queries returns every PromQL expression of the mixin for c, with Grafana
// variables left in place: the rule expressions, the panel queries and the
// selectors of the dashboard variables. Feed it to CheckMetricNames with the
// agent's real output.
func Queries(c Config) ([]string, error) {
	var out []string
	for _, g := range Rules(c) {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	for _, q := range PanelQueries(c) {
		out = append(out, q.Expr)
	}
	sels, err := VariableSelectors(c)
	if err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(sels)) {
		out = append(out, sels[k])
	}
	return out, nil
}
