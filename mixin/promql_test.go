package mixin

import (
	"strings"
	"testing"
)

func TestExpandVariables_SubstitutesGrafanaVariables(t *testing.T) {
	vars := map[string]string{"job": "poolwatch", "instance": "127.0.0.1:9648", "pool": "app/*", "target": AllValue}
	cases := map[string]string{
		`rate(x{job=~"$job"}[$__rate_interval])`:             `rate(x{job=~"poolwatch"}[1m])`,
		`x{instance=~"$instance"}`:                           `x{instance=~"127\\.0\\.0\\.1:9648"}`,
		`x{instance="$instance"}`:                            `x{instance="127.0.0.1:9648"}`,
		`x{pool="$pool"}`:                                    `x{pool="app/*"}`,
		`x{pool=~"${pool}"}`:                                 `x{pool=~"app/\\*"}`,
		`x{pool !~ "${pool:regex}"}`:                         `x{pool !~ "app/\\*"}`,
		`x{target=~"$target"}`:                               `x{target=~".+"}`,
		`max_over_time(x[$__range]) offset $__interval`:      `max_over_time(x[1h]) offset 1m`,
		`label_values(x{job=~"$job", pool="$pool"}, target)`: `label_values(x{job=~"poolwatch", pool="app/*"}, target)`,
		`x{a="quoted \"$job\""}`:                             `x{a="quoted \"poolwatch\""}`,
	}
	for in, want := range cases {
		got, err := ExpandVariables(in, vars)
		if err != nil {
			t.Errorf("ExpandVariables(%s): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("ExpandVariables(%s)\n got %s\nwant %s", in, got, want)
		}
	}
}

func TestExpandVariables_LetsCallersOverrideBuiltins(t *testing.T) {
	got, err := ExpandVariables(`rate(x[$__rate_interval])`, map[string]string{"__rate_interval": "4s"})
	if err != nil || got != `rate(x[4s])` {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestExpandVariables_RejectsUnknownVariables(t *testing.T) {
	for _, in := range []string{`x{job=~"$nope"}`, `x{a="${}"}`, `x{a="$"}`, `x{a="unterminated}`} {
		if _, err := ExpandVariables(in, map[string]string{}); err == nil {
			t.Errorf("ExpandVariables(%s) succeeded", in)
		}
	}
}

func TestSelectors_FindsSelectorsAndSkipsEverythingElse(t *testing.T) {
	expr := `sum by (target, pool) (rate(a_total{job=~"$job", x="}{"}[$__rate_interval]))
/ on(target) group_left(pool) count without (le) (b) > bool 0.5e3 and ignoring(x) {__name__="c"}
or topk(10, d{y="1"} offset 5m) unless absent(e) or label_replace(f, "dst", "$1", "src", "(.*)") # comment g`
	sels, err := Selectors(expr)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sels {
		got = append(got, s.Name+"{"+s.Matchers+"}")
	}
	want := []string{`a_total{job=~"$job", x="}{"}`, `b{}`, `{__name__="c"}`, `d{y="1"}`, `e{}`, `f{}`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Selectors:\n got %v\nwant %v", got, want)
	}
	if sels[0].Offset != strings.Index(expr, "a_total") {
		t.Errorf("offset of a_total = %d", sels[0].Offset)
	}
}

func TestMetricNames_AreSortedAndUnique(t *testing.T) {
	got, err := MetricNames(`b + a - b{x="y"} / avg_over_time(c[5m])`)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "a,b,c" {
		t.Errorf("MetricNames = %v", got)
	}
}

func TestMetricNames_RejectsUnbalancedExpressions(t *testing.T) {
	for _, in := range []string{`a{x="y"`, `rate(a[5m)`, `a{x="y}`} {
		if _, err := MetricNames(in); err == nil {
			t.Errorf("MetricNames(%s) succeeded", in)
		}
	}
}
