package mixin

import (
	"bytes"
	"encoding/json"
)

// A minimal model of Grafana dashboard JSON (schemaVersion 39): only the
// fields the poolwatch dashboards set. Field order is the JSON order, and
// maps are written with sorted keys, so rendering is deterministic. The
// conformance module decodes the rendered JSON strictly into
// grafana-foundation-sdk's types (conformance/grafana).

// schemaVersion is the Grafana dashboard schema the files are written for
// (Grafana 10.x); newer Grafana migrates it on import.
const schemaVersion = 39

// Dashboard is one Grafana dashboard.
type Dashboard struct {
	Annotations   AnnotationList `json:"annotations"`
	Description   string         `json:"description"`
	Editable      bool           `json:"editable"`
	GraphTooltip  int            `json:"graphTooltip"`
	ID            *int           `json:"id"`
	Links         []Link         `json:"links"`
	Panels        []Panel        `json:"panels"`
	Refresh       string         `json:"refresh"`
	SchemaVersion int            `json:"schemaVersion"`
	Tags          []string       `json:"tags"`
	Templating    Templating     `json:"templating"`
	Time          TimeRange      `json:"time"`
	Timepicker    struct{}       `json:"timepicker"`
	Timezone      string         `json:"timezone"`
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	Version       int            `json:"version"`
}

// AnnotationList is the dashboard's annotation queries (none but Grafana's
// built-in one).
type AnnotationList struct {
	List []map[string]any `json:"list"`
}

// Link is a dashboard link.
type Link struct {
	AsDropdown  bool     `json:"asDropdown"`
	Icon        string   `json:"icon"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
	Tags        []string `json:"tags"`
	TargetBlank bool     `json:"targetBlank"`
	Title       string   `json:"title"`
	Tooltip     string   `json:"tooltip"`
	Type        string   `json:"type"`
}

// Templating holds the dashboard variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a dashboard variable: the datasource, or a label_values query.
type Variable struct {
	AllValue    string         `json:"allValue,omitempty"`
	Current     map[string]any `json:"current"`
	Datasource  *DatasourceRef `json:"datasource,omitempty"`
	Definition  string         `json:"definition,omitempty"`
	Description string         `json:"description,omitempty"`
	Hide        int            `json:"hide"`
	IncludeAll  bool           `json:"includeAll"`
	Label       string         `json:"label"`
	Multi       bool           `json:"multi"`
	Name        string         `json:"name"`
	Options     []any          `json:"options"`
	Query       string         `json:"query"`
	Refresh     int            `json:"refresh"`
	Regex       string         `json:"regex"`
	Sort        int            `json:"sort,omitempty"`
	Type        string         `json:"type"`
}

// TimeRange is the dashboard's default time range.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// DatasourceRef points at a datasource; poolwatch always uses the
// ${datasource} variable.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Panel is one dashboard panel, or a row (Type "row"), which only has a
// title, a position and an id.
type Panel struct {
	Datasource      *DatasourceRef   `json:"datasource,omitempty"`
	Description     string           `json:"description"`
	FieldConfig     FieldConfig      `json:"fieldConfig"`
	GridPos         GridPos          `json:"gridPos"`
	ID              int              `json:"id"`
	Options         map[string]any   `json:"options"`
	Targets         []Target         `json:"targets"`
	Title           string           `json:"title"`
	Transformations []Transformation `json:"transformations,omitempty"`
	Type            string           `json:"type"`
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// FieldConfig is a panel's field configuration.
type FieldConfig struct {
	Defaults  FieldDefaults `json:"defaults"`
	Overrides []Override    `json:"overrides"`
}

// FieldDefaults are the defaults of every field of a panel.
type FieldDefaults struct {
	Color      map[string]any `json:"color,omitempty"`
	Custom     map[string]any `json:"custom,omitempty"`
	Decimals   *int           `json:"decimals,omitempty"`
	Links      []DataLink     `json:"links,omitempty"`
	Mappings   []any          `json:"mappings"`
	Max        *float64       `json:"max,omitempty"`
	Min        *float64       `json:"min,omitempty"`
	NoValue    string         `json:"noValue,omitempty"`
	Thresholds Thresholds     `json:"thresholds"`
	Unit       string         `json:"unit"`
}

// DataLink is a link from a value to another dashboard.
type DataLink struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

// Thresholds colour values.
type Thresholds struct {
	Mode  string          `json:"mode"`
	Steps []ThresholdStep `json:"steps"`
}

// ThresholdStep is one threshold; the first has a null value (base).
type ThresholdStep struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"`
}

// Override changes properties of the fields a matcher selects.
type Override struct {
	Matcher    Matcher    `json:"matcher"`
	Properties []Property `json:"properties"`
}

// Matcher selects fields.
type Matcher struct {
	ID      string `json:"id"`
	Options string `json:"options"`
}

// Property is one overridden property.
type Property struct {
	ID    string `json:"id"`
	Value any    `json:"value"`
}

// Transformation is a panel data transformation.
type Transformation struct {
	ID      string         `json:"id"`
	Options map[string]any `json:"options"`
}

// Target is one PromQL query of a panel.
type Target struct {
	Datasource   *DatasourceRef `json:"datasource,omitempty"`
	Editor       string         `json:"editorMode"`
	Expr         string         `json:"expr"`
	Format       string         `json:"format"`
	Instant      bool           `json:"instant"`
	LegendFormat string         `json:"legendFormat"`
	Range        bool           `json:"range"`
	RefID        string         `json:"refId"`

	// MayBeEmpty marks a query that filters for trouble (firing alerts,
	// errors that may never happen): it is allowed to return nothing.
	MayBeEmpty bool `json:"-"`
}

// rowJSON is a row's JSON: an expanded row, whose panels follow it at the
// top level of the dashboard, so its own panel list is empty.
type rowJSON struct {
	Collapsed bool    `json:"collapsed"`
	GridPos   GridPos `json:"gridPos"`
	ID        int     `json:"id"`
	Panels    []Panel `json:"panels"`
	Title     string  `json:"title"`
	Type      string  `json:"type"`
}

// MarshalJSON writes a row in a row's shape and any other panel as it is.
func (p Panel) MarshalJSON() ([]byte, error) {
	type plain Panel // no MarshalJSON: no recursion
	var v any = plain(p)
	if p.Type == "row" {
		v = rowJSON{GridPos: p.GridPos, ID: p.ID, Panels: []Panel{}, Title: p.Title, Type: p.Type}
	}
	// As RenderDashboards' encoder: "&" and "<" stay as they are.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
