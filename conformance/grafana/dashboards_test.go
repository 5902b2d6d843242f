// Package grafana checks the shipped dashboards against Grafana's own
// dashboard model: grafana-foundation-sdk's Go types, decoded strictly, so
// that a misspelled or misplaced field, a wrong type or a missing required
// field fails, which the mixin package's own checks (conventions, queries)
// cannot see.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/poolwatch/poolwatch/mixin"
)

func init() {
	// Panel options, field config and Prometheus queries decode into their
	// plugins' own types (timeseries, stat, table, prometheus), strictly.
	plugins.RegisterDefaultPlugins()
}

// noErrors turns the SDK's empty error list, which it returns as a non-nil
// error, into nil.
func noErrors(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

// strictDashboard is a dashboard decoded strictly: the SDK's model, and its
// panels and rows decoded one by one. (The SDK's nested strict decoders
// drop the values they decode because of the empty-error-list quirk above,
// while still reporting every error, so PanelOrRowPanel holds nothing.)
type strictDashboard struct {
	dashboard.Dashboard
	panels []*dashboard.Panel
	rows   []*dashboard.RowPanel
}

// decode decodes a dashboard's JSON strictly into the SDK's model.
func decode(raw []byte) (strictDashboard, error) {
	var d strictDashboard
	if err := noErrors(d.UnmarshalJSONStrict(raw)); err != nil {
		return d, err
	}
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return d, err
	}
	for i, p := range top.Panels {
		var kind struct{ Type string }
		if err := json.Unmarshal(p, &kind); err != nil {
			return d, err
		}
		if kind.Type == "row" {
			r := &dashboard.RowPanel{}
			if err := noErrors(r.UnmarshalJSONStrict(p)); err != nil {
				return d, fmt.Errorf("panels[%d]: %w", i, err)
			}
			d.rows = append(d.rows, r)
			continue
		}
		pn := &dashboard.Panel{}
		if err := noErrors(pn.UnmarshalJSONStrict(p)); err != nil {
			return d, fmt.Errorf("panels[%d]: %w", i, err)
		}
		d.panels = append(d.panels, pn)
	}
	return d, nil
}

func shippedDashboards(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "..", "dashboards", "*.json"))
	if err != nil || len(paths) != 3 {
		t.Fatalf("dashboards/*.json: %v %v", paths, err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p) //nolint:gosec // a file of the repository
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

func TestDashboards_DecodeStrictlyIntoGrafanasModel(t *testing.T) {
	for file, raw := range shippedDashboards(t) {
		d, err := decode(raw)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if d.Uid == nil || *d.Uid+".json" != file {
			t.Errorf("%s: uid %v", file, d.Uid)
		}
		// The SDK's strict decoders report errors but leave the nested
		// values unset (the same quirk): the errors are the check.
		rows, panels := len(d.rows), len(d.panels)
		if rows == 0 || panels == 0 {
			t.Errorf("%s: %d rows, %d panels", file, rows, panels)
		}
	}
}

// The strict decoding can fail: a field misspelled at each level the
// dashboards use is an error naming it.
func TestDashboards_AMisspelledFieldFailsTheStrictDecoding(t *testing.T) {
	raw := shippedDashboards(t)["poolwatch-overview.json"]
	for _, tc := range []struct{ from, to string }{
		{`"schemaVersion"`, `"schemaVersoin"`},        // the dashboard
		{`"gridPos"`, `"gridPosition"`},               // a panel
		{`"thresholdsStyle"`, `"thresholdStyle"`},     // a time series' field config
		{`"legendFormat"`, `"legendFmt"`},             // a Prometheus query
		{`"reduceOptions"`, `"reduceOption"`},         // a stat's options
		{`"collapsed": false`, `"collapse": false`},   // a row
		{`"includeAll": true`, `"includeAll": "yes"`}, // a type
	} {
		if !strings.Contains(string(raw), tc.from) {
			t.Fatalf("the overview has no %s: update the test", tc.from)
		}
		broken := strings.Replace(string(raw), tc.from, tc.to, 1)
		if _, err := decode([]byte(broken)); err == nil {
			t.Errorf("%s -> %s: decoded without error", tc.from, tc.to)
		}
	}
}

// What the Go generator renders for any configuration decodes too, the
// short variant included.
func TestDashboards_EveryVariantDecodesStrictly(t *testing.T) {
	for _, variant := range []string{"default", "short"} {
		c, err := mixin.Variant(variant)
		if err != nil {
			t.Fatal(err)
		}
		files, err := mixin.RenderDashboards(c)
		if err != nil {
			t.Fatal(err)
		}
		for path, raw := range files {
			if _, err := decode(raw); err != nil {
				t.Errorf("%s %s: %v", variant, path, err)
			}
		}
	}
}
