// Package fleet is the end-to-end test of examples/probe-by-address/: one
// poolwatch agent that knows no target, in front of two PostgreSQL 15
// servers and one PgBouncer 1.18 (internal/testenv), each known only to
// Prometheus' file_sd list, scraped through /probe?target=HOST:PORT/DB with
// the example's own prometheus.yml (addresses and intervals changed) and the
// short rules of mixin/.
//
// It shows that service discovery alone drives the agent: every discovered
// database is scraped, the dashboards' variables and panels find them, an
// alert fires for one that is down, and an address outside the allow-list
// is refused with 403 before any connection.
//
// A missing postgres, pgbouncer or prometheus fails the test (unless
// POOLWATCH_TEST_SKIP names it, outside CI; see internal/testenv).
package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

var exampleDir = filepath.Join("..", "..", "examples", "probe-by-address")

const (
	settleBudget = 45 * time.Second
	pollEvery    = 200 * time.Millisecond
	monUser      = "poolwatch"
	monPassword  = "Fleet-S3cret-pw"
)

func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, settleBudget, pollEvery, func() (bool, string) {
		err := check()
		return err == nil, fmt.Sprintf("%s: last: %v", what, err)
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path) //nolint:gosec // a file of the repository or the test's temp dir
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mustReplace replaces old with repl in s and fails unless old occurs
// exactly n times, so that a change of the example shows here.
func mustReplace(t *testing.T, s, old, repl string, n int) string {
	t.Helper()
	if got := strings.Count(s, old); got != n {
		t.Fatalf("examples/probe-by-address: %q occurs %d times, the test expects %d: update the test with the example", old, got, n)
	}
	return strings.ReplaceAll(s, old, repl)
}

// sdGroup is one group of a file_sd list.
type sdGroup struct {
	Targets []string          `yaml:"targets"`
	Labels  map[string]string `yaml:"labels"`
}

func TestExample_ConfigsAreValid(t *testing.T) {
	testenv.Require(t, "prometheus")
	promtool, err := testenv.LookPath("promtool")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", filepath.Join(exampleDir, "prometheus.yml")).CombinedOutput() //nolint:gosec // promtool from LookPath
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check config examples/probe-by-address/prometheus.yml: %v\n%s", err, out)
	}
	dir := t.TempDir()
	cfg := mustReplace(t, readFile(t, filepath.Join(exampleDir, "poolwatch.yml")), "/run/secrets/poolwatch", filepath.Join(dir, "pw"), 1)
	writeFile(t, filepath.Join(dir, "pw"), "example-password\n")
	writeFile(t, filepath.Join(dir, "poolwatch.yml"), cfg)
	out, err = exec.Command(testenv.BuildPoolwatch(t), "check-config", "--config.file="+filepath.Join(dir, "poolwatch.yml")).CombinedOutput() //nolint:gosec // the binary built for the test
	if err != nil || !strings.HasSuffix(string(out), ": OK, 0 targets\n") {
		t.Errorf("check-config of the example: %v: %q", err, out)
	}
	var groups []sdGroup
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(exampleDir, "targets", "databases.yml"))), &groups); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, g := range groups {
		kinds[g.Labels["__param_kind"]] += len(g.Targets)
	}
	if kinds["postgres"] != 2 || kinds["pgbouncer"] != 1 || len(kinds) != 2 {
		t.Errorf("targets/databases.yml: %v targets by __param_kind, want 2 postgres and 1 pgbouncer", kinds)
	}
}

func TestProbeByAddress_ServiceDiscoveryAloneDrivesTheAgent(t *testing.T) {
	testenv.Require(t, "postgres", "pgbouncer", "prometheus")
	var pgs [2]*testenv.Postgres
	for i := range pgs {
		pgs[i] = testenv.StartPostgres(t, testenv.PostgresOptions{})
		pgs[i].CreateRole(t, monUser, monPassword, "LOGIN", "IN ROLE pg_monitor")
	}
	pgb := testenv.StartPgBouncer(t, pgs[0], testenv.PgBouncerOptions{
		Users:      map[string]string{monUser: monPassword},
		StatsUsers: []string{monUser},
		Databases:  map[string]string{"postgres": "dbname=postgres"},
	})
	// A client of PgBouncer's pool postgres/poolwatch, so that the pool exists.
	client, err := pgx.Connect(t.Context(), pgb.DSN(monUser, monPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(context.Background()) })
	down := fmt.Sprintf("127.0.0.1:%d/postgres", testenv.FreePort(t)) // allowed, nothing listens
	outside := fmt.Sprintf("localhost:%d/postgres", pgs[1].Port)      // a real server, not allowed
	addrs := map[string]string{                                       // the example's address -> the test's
		"db-1.internal:5432/postgres":         pgs[0].Addr() + "/postgres",
		"db-2.internal:5432/postgres":         pgs[1].Addr() + "/postgres",
		"pgbouncer-1.internal:6432/pgbouncer": pgb.Addr() + "/pgbouncer",
	}

	// The agent runs the example's configuration: no target, one auth
	// module, an allow-list of 127.0.0.1 instead of the example's names.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pw"), monPassword+"\n")
	cfg := readFile(t, filepath.Join(exampleDir, "poolwatch.yml"))
	cfg = mustReplace(t, cfg, "/run/secrets/poolwatch", filepath.Join(dir, "pw"), 1)
	cfg = mustReplace(t, cfg, "sslmode: verify-full", "sslmode: disable", 1)
	cfg = mustReplace(t, cfg, `allowed_targets: ["db-*.internal:5432", "pgbouncer-*.internal:6432"]`, `allowed_targets: ["127.0.0.1:*"]`, 1)
	pw := testenv.StartPoolwatch(t, cfg)

	// An address outside the allow-list: 403, a clear reason, no connection.
	code, body := pw.Get(t, "/probe?target="+outside+"&auth_module=monitoring")
	wantMsg := fmt.Sprintf("address not allowed: localhost:%d matches none of probe.allowed_targets (127.0.0.1:*)", pgs[1].Port)
	if code != 403 || strings.TrimSpace(body) != wantMsg {
		t.Fatalf("probe of %s: %d %q, want 403 %q", outside, code, body, wantMsg)
	}
	if n := pgs[1].CountBackends(t, "poolwatch"); n != 0 {
		t.Fatalf("the refused probe opened %d connections", n)
	}

	// Prometheus: the example's config, the test's addresses, 1 s intervals,
	// the short rules; the example's file_sd list with the test's addresses,
	// plus a database that is down and one outside the allow-list.
	promDir := t.TempDir()
	var rules string
	rules, err = mixin.WriteShortRules(promDir)
	if err != nil {
		t.Fatal(err)
	}
	prom := readFile(t, filepath.Join(exampleDir, "prometheus.yml"))
	prom = mustReplace(t, prom, "poolwatch.example.internal:9648", pw.Addr, 2)
	prom = mustReplace(t, prom, "scrape_interval: 15s", "scrape_interval: 1s\n  evaluation_interval: 1s", 1)
	prom = mustReplace(t, prom, "scrape_timeout: 10s", "scrape_timeout: 900ms", 1)
	prom = mustReplace(t, prom, "../../alerts/poolwatch.rules.yml", rules, 1)
	var groups []sdGroup
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(exampleDir, "targets", "databases.yml"))), &groups); err != nil {
		t.Fatal(err)
	}
	for i, g := range groups {
		for j, a := range g.Targets {
			served, ok := addrs[a]
			if !ok {
				t.Fatalf("targets/databases.yml lists %s, which the test does not serve", a)
			}
			groups[i].Targets[j] = served
		}
	}
	groups = append(groups, sdGroup{Targets: []string{down, outside}, Labels: map[string]string{"__param_kind": "postgres"}})
	sd, err := yaml.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(promDir, "targets", "databases.yml"), string(sd))
	promd := testenv.StartPrometheus(t, testenv.PrometheusOptions{Dir: promDir, Config: prom})
	api := testenv.PromAPI{URL: promd.URL, Timeout: 10 * time.Second}
	start := time.Now()

	served := []string{addrs["db-1.internal:5432/postgres"], addrs["db-2.internal:5432/postgres"], addrs["pgbouncer-1.internal:6432/pgbouncer"]}
	slices.Sort(served)
	eventually(t, "every discovered database up through /probe", func() error {
		up, err := api.Vector(t.Context(), `poolwatch_target_up{job="poolwatch-probe"} == 1`)
		if err != nil {
			return err
		}
		var got []string
		for _, s := range up {
			if s.Metric["instance"] != s.Metric["target"] {
				return fmt.Errorf("series %v: instance is not the address", s.Metric)
			}
			if s.Metric["env"] != "prod" {
				return fmt.Errorf("series %v: the defaults' labels are missing", s.Metric)
			}
			got = append(got, s.Metric["target"])
		}
		slices.Sort(got)
		if !slices.Equal(got, served) {
			return fmt.Errorf("up targets %v, want %v", got, served)
		}
		return nil
	})
	t.Logf("3 databases known only to file_sd up through /probe %.1fs after Prometheus started", time.Since(start).Seconds())

	// The address outside the allow-list is a failed scrape, with the reason.
	// Prometheus scrapes each target on its own schedule, so this one may
	// not have been scraped yet when the others are up.
	eventually(t, "the scrape of the address outside the allow-list to fail with 403", func() error {
		active, _, err := api.Targets(t.Context())
		if err != nil {
			return err
		}
		for _, at := range active {
			if at.Labels["instance"] != outside {
				continue
			}
			if at.Health != "down" || !strings.Contains(at.LastError, "403") {
				return fmt.Errorf("scrape of %s: health %s, last error %q, want down with 403", outside, at.Health, at.LastError)
			}
			return nil
		}
		return fmt.Errorf("Prometheus has no scrape of %s", outside)
	})

	// The shipped alerts work on addresses known only to service
	// discovery: the down database pages.
	eventually(t, "PoolwatchTargetDown firing for the down address", func() error {
		v, err := api.Vector(t.Context(), fmt.Sprintf(`ALERTS{alertname="PoolwatchTargetDown", alertstate="firing", target=%q}`, down))
		if err != nil {
			return err
		}
		if len(v) != 1 {
			return fmt.Errorf("%d firing alerts", len(v))
		}
		return nil
	})

	checkDashboards(t, api, served)

	// The agent holds one probe pool per allowed address it was asked about.
	code, body = pw.Get(t, "/metrics")
	if code != 200 || !strings.Contains(body, "poolwatch_probe_address_pools 4\n") {
		t.Errorf("agent /metrics: %d, want poolwatch_probe_address_pools 4 (3 served + 1 down)\n%s", code, grepLines(body, "poolwatch_probe_address"))
	}
	for _, a := range append(served, down) {
		if !strings.Contains(body, fmt.Sprintf(`poolwatch_probe_pool_max_connections{env="prod",target=%q} 2`, a)) {
			t.Errorf("agent /metrics has no probe pool for %s", a)
		}
	}
}

// checkDashboards shows that the shipped dashboards find databases known
// only to service discovery: each variable offers them, and every panel
// of the overview and detail dashboards that is not a filter for trouble
// has data for them.
func checkDashboards(t *testing.T, api testenv.PromAPI, served []string) {
	t.Helper()
	c := mixin.Default()
	sels, err := mixin.VariableSelectors(c)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := mixin.VariableLabels(c)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"job": "poolwatch-probe", "instance": mixin.AllValue, "target_job": "poolwatch-probe", "target": mixin.AllValue}
	for _, key := range []string{"poolwatch-overview/target", "poolwatch-pool-detail/target"} {
		sel, err := mixin.ExpandVariables(sels[key], vars)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "variable "+key+" lists every discovered database", func() error {
			vals, err := api.LabelValues(t.Context(), sel, labels[key], time.Now().Add(-time.Minute), time.Now())
			if err != nil {
				return err
			}
			for _, a := range served {
				if !slices.Contains(vals, a) {
					return fmt.Errorf("%s offers %v, not %s", key, vals, a)
				}
			}
			return nil
		})
	}
	pgbTarget := served[slices.IndexFunc(served, func(s string) bool { return strings.HasSuffix(s, "/pgbouncer") })]
	for _, pq := range mixin.PanelQueries(c) {
		if pq.MayBeEmpty || strings.HasSuffix(pq.DashboardUID, "self") {
			continue
		}
		v := vars
		if strings.HasSuffix(pq.DashboardUID, "pool-detail") {
			// One pool that every panel of the detail dashboard describes:
			// a PgBouncer pool has a queue and a max.
			v = map[string]string{"job": "poolwatch-probe", "instance": mixin.AllValue, "target": pgbTarget, "pool": "postgres/" + monUser}
		}
		expr, err := mixin.ExpandVariables(pq.Expr, v)
		if err != nil {
			t.Fatalf("%s: %v", pq, err)
		}
		eventually(t, "panel "+pq.String()+" has data", func() error {
			res, err := api.Query(t.Context(), expr, time.Now())
			if err != nil {
				return err
			}
			if res.Len() == 0 {
				return fmt.Errorf("no data: %s", expr)
			}
			return nil
		})
	}
}

func grepLines(body, substr string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
