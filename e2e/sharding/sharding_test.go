package sharding

import (
	"crypto/md5" //nolint:gosec // Prometheus' hashmod uses MD5; this reproduces it, nothing more
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// exampleDir is examples/sharding/, the configuration under test.
var exampleDir = filepath.Join("..", "..", "examples", "sharding")

const (
	// shards is the number of agent replicas in the example.
	shards = 2
	// settleBudget bounds each wait for Prometheus, the agents or the
	// servers to reach the state a check expects.
	settleBudget = 30 * time.Second
	// pollEvery is the interval of those waits.
	pollEvery = 100 * time.Millisecond
)

// exampleTarget is a target of the example's agent configuration.
type exampleTarget struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
}

// loadExample reads the example's agent targets and its file_sd names.
func loadExample(t *testing.T) ([]exampleTarget, []string) {
	t.Helper()
	var agentCfg struct {
		Targets []exampleTarget `yaml:"targets"`
	}
	readYAML(t, filepath.Join(exampleDir, "poolwatch.yml"), &agentCfg)
	var groups []struct {
		Targets []string `yaml:"targets"`
	}
	readYAML(t, filepath.Join(exampleDir, "targets", "poolwatch.yml"), &groups)
	var names []string
	for _, g := range groups {
		names = append(names, g.Targets...)
	}
	if len(agentCfg.Targets) == 0 || len(names) == 0 {
		t.Fatalf("example lists %d agent targets and %d file_sd targets; want some of each", len(agentCfg.Targets), len(names))
	}
	return agentCfg.Targets, names
}

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	b, err := os.ReadFile(path) //nolint:gosec // a file of the repository
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

// hashmodShard is Prometheus' hashmod relabel action applied to one label
// value: the last 8 bytes of its MD5 sum, as a big-endian uint64, modulo m.
// The test uses it as the independent prediction of each target's shard.
func hashmodShard(value string, m uint64) int {
	sum := md5.Sum([]byte(value))                    //nolint:gosec // see the import
	return int(binary.BigEndian.Uint64(sum[8:]) % m) //nolint:gosec // m is the shard count, so the remainder fits an int
}

// eventually is testenv.Eventually every pollEvery, for a check that
// returns why it does not hold yet.
func eventually(t *testing.T, budget time.Duration, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, budget, pollEvery, func() (bool, string) {
		err := check()
		return err == nil, fmt.Sprintf("%s: last: %v", what, err)
	})
}

// mustReplace replaces old with repl in s and fails the test unless old
// occurred exactly n times, so a change in the example's shape shows here.
func mustReplace(t *testing.T, s, old, repl string, n int) string {
	t.Helper()
	if got := strings.Count(s, old); got != n {
		t.Fatalf("examples/sharding/prometheus.yml: %q occurs %d times, the test expects %d: update the test with the example", old, got, n)
	}
	return strings.ReplaceAll(s, old, repl)
}

func TestShardingExample_ConfigsAreValidAndListTheSameTargets(t *testing.T) {
	testenv.Require(t, "prometheus")
	targets, sdNames := loadExample(t)

	promtool, err := testenv.LookPath("promtool")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", filepath.Join(exampleDir, "prometheus.yml")).CombinedOutput() //nolint:gosec // promtool from LookPath
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check config examples/sharding/prometheus.yml: %v\n%s", err, out)
	}

	// The file_sd names are exactly the agents' target names.
	var agentNames []string
	for _, tg := range targets {
		agentNames = append(agentNames, tg.Name)
	}
	sort.Strings(agentNames)
	sorted := append([]string(nil), sdNames...)
	sort.Strings(sorted)
	if strings.Join(sorted, ",") != strings.Join(agentNames, ",") {
		t.Errorf("targets/poolwatch.yml lists %v, poolwatch.yml configures %v: they must be the same", sorted, agentNames)
	}

	// Both shards get targets of both kinds, or the example shows nothing.
	kinds := map[int]map[string]int{}
	for _, tg := range targets {
		s := hashmodShard(tg.Name, shards)
		if kinds[s] == nil {
			kinds[s] = map[string]int{}
		}
		kinds[s][tg.Kind]++
	}
	for s := 0; s < shards; s++ {
		if kinds[s]["postgres"] == 0 || kinds[s]["pgbouncer"] == 0 {
			t.Errorf("shard %d gets %v of the example's targets; want at least one postgres and one pgbouncer target", s, kinds[s])
		}
	}

	// check-config accepts the agents' config once its password files exist.
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(exampleDir, "poolwatch.yml"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := regexp.MustCompile(`/run/secrets/([A-Za-z0-9_.-]+)`)
	for _, m := range secrets.FindAllStringSubmatch(string(cfg), -1) {
		if err := os.WriteFile(filepath.Join(dir, m[1]), []byte("example-password\n"), 0o600); err != nil { //nolint:gosec // a file in the test's temp dir
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "poolwatch.yml")
	if err := os.WriteFile(cfgPath, []byte(strings.ReplaceAll(string(cfg), "/run/secrets/", dir+"/")), 0o600); err != nil { //nolint:gosec // a file in the test's temp dir
		t.Fatal(err)
	}
	out, err = exec.Command(testenv.BuildPoolwatch(t), "check-config", "--config.file="+cfgPath).CombinedOutput() //nolint:gosec // the binary built for the test
	if want := fmt.Sprintf("%s: OK, %d targets\n", cfgPath, len(targets)); err != nil || string(out) != want {
		t.Errorf("check-config of examples/sharding/poolwatch.yml: %v: %q, want %q", err, out, want)
	}
}

// backend is a target of the test: one of the example's names, served by the
// test's PostgreSQL or PgBouncer, with a login of its own so the servers can
// tell its connections apart.
type backend struct {
	exampleTarget
	User, Password string
	Shard          int
}

func TestSharding_EachTargetIsScrapedOnceByTheAgentOfItsShard(t *testing.T) {
	testenv.Require(t, "postgres", "pgbouncer", "prometheus")
	targets, sdNames := loadExample(t)

	// Servers: one PostgreSQL and one PgBouncer hold all the targets; each
	// target logs in as its own user.
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	var backends []backend
	pgbUsers := map[string]string{}
	var statsUsers []string
	for _, tg := range targets {
		b := backend{
			exampleTarget: tg,
			User:          "pw_" + strings.ReplaceAll(tg.Name, "-", "_"),
			Password:      "secret-" + tg.Name,
			Shard:         hashmodShard(tg.Name, shards),
		}
		switch tg.Kind {
		case "postgres":
			pg.CreateRole(t, b.User, b.Password, "LOGIN", "IN ROLE pg_monitor")
		case "pgbouncer":
			pgbUsers[b.User] = b.Password
			statsUsers = append(statsUsers, b.User)
		default:
			t.Fatalf("example target %q has kind %q", tg.Name, tg.Kind)
		}
		backends = append(backends, b)
	}
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		Users:      pgbUsers,
		StatsUsers: statsUsers,
		Databases:  map[string]string{"postgres": "dbname=postgres"},
	})

	// Two agents share one configuration that lists every target.
	var cfg strings.Builder
	cfg.WriteString("defaults:\n  scrape_timeout: 5s\ntargets:\n")
	for _, b := range backends {
		dsn := pg.DSN(b.User, b.Password, "postgres")
		if b.Kind == "pgbouncer" {
			dsn = pgb.DSN(b.User, b.Password, "pgbouncer")
		}
		fmt.Fprintf(&cfg, "  - name: %s\n    kind: %s\n    dsn: %q\n", b.Name, b.Kind, dsn)
	}
	var agents [shards]*testenv.Poolwatch
	for i := range agents {
		agents[i] = testenv.StartPoolwatch(t, cfg.String(), "--no-metrics.targets")
	}

	// serverConns counts the connections each target's user holds on the
	// servers: PostgreSQL backends, PgBouncer console clients.
	serverConns := func(b backend) int {
		if b.Kind == "postgres" {
			return int(pg.QueryInt(t, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = $1`, b.User))
		}
		n := 0
		for _, c := range pgb.Show(t, "SHOW CLIENTS").Records() {
			if c["user"] == b.User && c["database"] == "pgbouncer" {
				n++
			}
		}
		return n
	}

	// Before Prometheus asks, no agent has connected to any target.
	for i, a := range agents {
		m := agentMetrics(t, a)
		for _, b := range backends {
			if v, ok := m.get("poolwatch_probe_pool_new_connections_total", b.Name); !ok || v != 0 {
				t.Fatalf("agent %d before any scrape: new connections to %s = %v (present %v), want 0", i, b.Name, v, ok)
			}
		}
	}
	for _, b := range backends {
		if n := serverConns(b); n != 0 {
			t.Fatalf("before any scrape, %s's user holds %d connections", b.Name, n)
		}
	}

	// Prometheus runs the example's config verbatim but for the agents'
	// addresses and a 1 s interval, with the example's file_sd list.
	promDir := t.TempDir()
	example, err := os.ReadFile(filepath.Join(exampleDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	promCfg := string(example)
	for i, a := range agents {
		promCfg = mustReplace(t, promCfg, fmt.Sprintf("poolwatch-%d.example.internal:9648", i), a.Addr, 2)
	}
	promCfg = mustReplace(t, promCfg, "scrape_interval: 15s", "scrape_interval: 1s", 1)
	promCfg = mustReplace(t, promCfg, "scrape_timeout: 10s", "scrape_timeout: 1s", 1)
	// The file_sd path is relative to the config: the list goes next to it.
	if n := strings.Count(promCfg, "files: ['targets/*.yml']"); n != shards {
		t.Fatalf("examples/sharding/prometheus.yml: %d probe jobs read targets/*.yml, the test expects %d", n, shards)
	}
	sd, err := os.ReadFile(filepath.Join(exampleDir, "targets", "poolwatch.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(promDir, "targets"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(promDir, "targets", "poolwatch.yml"), sd, 0o600); err != nil { //nolint:gosec // a file in the test's temp dir
		t.Fatal(err)
	}
	start := time.Now()
	prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{Dir: promDir, Config: promCfg})
	api := testenv.PromAPI{URL: prom.URL, Timeout: 10 * time.Second}

	// Every target is up, through the probe jobs, with job and instance
	// set as the shipped rules expect; both agents are up in the self job.
	eventually(t, settleBudget, "every target up through /probe", func() error {
		up, err := api.Vector(t.Context(), `poolwatch_target_up{job="poolwatch-probe"} == 1`)
		if err != nil {
			return err
		}
		seen := map[string]int{}
		for _, s := range up {
			if s.Metric["instance"] != s.Metric["target"] {
				return fmt.Errorf("series %v: instance is not the target name", s.Metric)
			}
			seen[s.Metric["target"]]++
		}
		for _, n := range sdNames {
			if seen[n] != 1 {
				return fmt.Errorf("target %s has %d up series, want 1 (all: %v)", n, seen[n], seen)
			}
		}
		if len(seen) != len(sdNames) {
			return fmt.Errorf("up series for %v, want exactly %v", seen, sdNames)
		}
		self, err := api.Vector(t.Context(), `up{job="poolwatch"} == 1`)
		if err != nil {
			return err
		}
		if len(self) != shards {
			return fmt.Errorf("%d agents up in job poolwatch, want %d", len(self), shards)
		}
		return nil
	})
	t.Logf("all %d targets up through %d agents %.1fs after Prometheus started", len(sdNames), shards, time.Since(start).Seconds())

	// Prometheus has exactly one scrape of each target, in the job of its
	// hashmod shard, pointed at that shard's agent; the other job dropped it.
	active, dropped, err := api.Targets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	scrapes := map[string]int{}
	for _, at := range active {
		if !strings.HasPrefix(at.ScrapePool, "poolwatch-probe-") {
			continue
		}
		name := at.Labels["instance"]
		scrapes[name]++
		shard := hashmodShard(name, shards)
		wantURL := fmt.Sprintf("http://%s/probe?target=%s", agents[shard].Addr, name)
		if at.ScrapePool != fmt.Sprintf("poolwatch-probe-%d", shard) || at.ScrapeURL != wantURL || at.Labels["job"] != "poolwatch-probe" || at.Health != "up" {
			t.Errorf("target %s: pool %s, URL %s, job %q, health %s (%s); want pool poolwatch-probe-%d, URL %s, job poolwatch-probe, up",
				name, at.ScrapePool, at.ScrapeURL, at.Labels["job"], at.Health, at.LastError, shard, wantURL)
		}
	}
	drops := map[string]int{}
	for _, dt := range dropped {
		if pool := dt.DiscoveredLabels["job"]; strings.HasPrefix(pool, "poolwatch-probe-") {
			name := dt.DiscoveredLabels["__address__"]
			drops[name]++
			if pool == fmt.Sprintf("poolwatch-probe-%d", hashmodShard(name, shards)) {
				t.Errorf("target %s was dropped by its own shard's job %s", name, pool)
			}
		}
	}
	for _, n := range sdNames {
		if scrapes[n] != 1 || drops[n] != shards-1 {
			t.Errorf("target %s: %d scrapes configured and %d dropped, want 1 and %d", n, scrapes[n], drops[n], shards-1)
		}
	}
	if len(scrapes) != len(sdNames) {
		t.Errorf("probe scrapes of %v, want exactly %v", scrapes, sdNames)
	}

	// The samples show one scrape per interval: a second scrape of the same
	// target would double the samples of its series.
	eventually(t, settleBudget, "5 s of samples for every target", func() error {
		counts, err := api.Vector(t.Context(), `count_over_time(poolwatch_target_up{job="poolwatch-probe"}[5s])`)
		if err != nil {
			return err
		}
		if len(counts) != len(sdNames) {
			return fmt.Errorf("%d series, want %d", len(counts), len(sdNames))
		}
		for _, c := range counts {
			if c.Value < 5 {
				return fmt.Errorf("target %s has %v samples in 5s so far", c.Metric["target"], c.Value)
			}
		}
		for _, c := range counts {
			if c.Value > 6 {
				t.Fatalf("target %s has %v samples in the last 5 s at a 1 s interval: scraped more than once", c.Metric["target"], c.Value)
			}
		}
		return nil
	})

	// The agents' own /metrics carries no target series, or the self job
	// would scrape every target once more through each agent.
	if self, err := api.Vector(t.Context(), `poolwatch_target_up{job="poolwatch"}`); err != nil || len(self) != 0 {
		t.Errorf("job poolwatch has target series %v (%v): the agents must run with --no-metrics.targets", self, err)
	}

	// The check docs/scaling.md gives for production: across the agents
	// (job poolwatch), each target's probe pool is open on one agent only.
	eventually(t, settleBudget, "one agent with open connections per target, in PromQL", func() error {
		holders, err := api.Vector(t.Context(), `count by (target) (poolwatch_probe_pool_open_connections{job="poolwatch"} > 0)`)
		if err != nil {
			return err
		}
		if len(holders) != len(sdNames) {
			return fmt.Errorf("%d targets with open probe pools, want %d: %v", len(holders), len(sdNames), holders)
		}
		for _, h := range holders {
			if h.Value != 1 {
				t.Fatalf("target %s has open probe pools on %v agents, want 1", h.Metric["target"], h.Value)
			}
		}
		return nil
	})

	// Each agent has connected to the targets of its shard only, and the
	// servers see exactly the connections the owning agent reports.
	eventually(t, settleBudget, "connections only from each target's own agent", func() error {
		var ms [shards]metrics
		for i, a := range agents {
			ms[i] = agentMetrics(t, a)
			if strings.Contains(ms[i].body, "poolwatch_target_up") {
				return fmt.Errorf("agent %d's /metrics has target series", i)
			}
		}
		for _, b := range backends {
			var owned float64
			for i := range agents {
				open, ok1 := ms[i].get("poolwatch_probe_pool_open_connections", b.Name)
				opened, ok2 := ms[i].get("poolwatch_probe_pool_new_connections_total", b.Name)
				if !ok1 || !ok2 {
					return fmt.Errorf("agent %d has no probe pool series for %s", i, b.Name)
				}
				if i == b.Shard {
					if open < 1 || opened < 1 {
						return fmt.Errorf("agent %d, owner of %s: %v open, %v opened; want at least 1 of each", i, b.Name, open, opened)
					}
					owned = open
					continue
				}
				if open != 0 || opened != 0 {
					t.Fatalf("agent %d connected to %s of shard %d: %v open, %v opened", i, b.Name, b.Shard, open, opened)
				}
			}
			if n := serverConns(b); float64(n) != owned {
				return fmt.Errorf("%s: the server sees %d connections of its user, its agent %d reports %v", b.Name, n, b.Shard, owned)
			}
		}
		return nil
	})
}

// metrics is an agent's /metrics body.
type metrics struct{ body string }

func agentMetrics(t *testing.T, a *testenv.Poolwatch) metrics {
	t.Helper()
	code, body := a.Get(t, "/metrics")
	if code != 200 {
		t.Fatalf("GET %s/metrics: %d\n%s", a.URL, code, body)
	}
	return metrics{body: body}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$`)

// get returns the value of the series name{target="target",...}; ok is
// false if there is none. More than one such series fails the lookup too.
func (m metrics) get(name, target string) (v float64, ok bool) {
	found := 0
	for _, line := range strings.Split(m.body, "\n") {
		s := sampleLine.FindStringSubmatch(line)
		if s == nil || s[1] != name || !hasLabel(s[2], "target", target) {
			continue
		}
		f, err := strconv.ParseFloat(s[3], 64)
		if err != nil {
			return 0, false
		}
		v = f
		found++
	}
	return v, found == 1
}

func hasLabel(labels, name, value string) bool {
	for _, kv := range strings.Split(labels, ",") {
		if kv == fmt.Sprintf("%s=%q", name, value) {
			return true
		}
	}
	return false
}
