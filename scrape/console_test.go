package scrape

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden result files in testdata")

// goldenText renders a Result as stable text for golden files: every
// field the collector reads.
func goldenText(res *Result) string {
	var b strings.Builder
	opt := func(o Optional) string {
		if !o.Valid {
			return "absent"
		}
		return fmt.Sprint(o.Value)
	}
	fmt.Fprintf(&b, "kind %s version %q up %v dropped %d\n", res.Kind, res.Version, res.Up(), res.PoolsDropped)
	for _, e := range res.Errors {
		fmt.Fprintf(&b, "error %s\n", e.Query)
	}
	for _, p := range res.Pools {
		leaks := fmt.Sprintf("leaked=%v oldest=%v", p.Leaked, p.OldestLeakSeconds)
		if p.NoLeakDetection {
			leaks = "leaks=absent"
		}
		fmt.Fprintf(&b, "pool %s database=%q user=%q mode=%q min=%s max=%s reserve=%s open=%v in_use=%v waiting=%s max_wait=%s %s\n",
			p.Name, p.Database, p.User, p.Mode, opt(p.Min), opt(p.Max), opt(p.Reserve), p.Open, p.InUse, opt(p.Waiting), opt(p.MaxWaitSeconds), leaks)
		for _, st := range p.States {
			fmt.Fprintf(&b, "  %s %s %v\n", st.Side, st.State, st.Count)
		}
	}
	for _, n := range res.Nodes {
		fmt.Fprintf(&b, "node %s address=%s status=%s role=%s up=%v\n", n.Name, n.Address, n.Status, n.Role, n.Up)
	}
	for _, l := range res.Leaks {
		fmt.Fprintf(&b, "leak %+v\n", l)
	}
	return b.String()
}

// compareGoldenResult compares res with testdata/<dir>/result.golden (with
// -update, rewrites it).
func compareGoldenResult(t *testing.T, dir string, res *Result) {
	t.Helper()
	path := filepath.Join("testdata", dir, "result.golden")
	got := goldenText(res)
	if *updateGolden {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(want), got)
}

func consoleFixtureRound(kind config.Kind, dir string, sent *[]string) *Result {
	s := newConsole(config.Target{Kind: kind, LeakThreshold: time.Minute})
	r := &consoleRound{cfg: s.cfg}
	s.collect(context.Background(), fixtureConsoleNoTB(dir, sent), nil, r)
	return r.result()
}

// fixtureConsoleNoTB is fixtureConsole for callers without a testing.TB
// (the fuzzer's).
func fixtureConsoleNoTB(dir string, sent *[]string) console {
	return func(_ context.Context, sql string, mapFn func(rowSource) error) error {
		name := strings.ToLower(strings.ReplaceAll(sql, " ", "_"))
		if sent != nil {
			*sent = append(*sent, name)
		}
		b, err := os.ReadFile(filepath.Join("testdata", dir, name+".txt"))
		if err != nil {
			return err
		}
		return mapFn(parseTable(string(b)))
	}
}

func TestConsoleRound_PgCatRowsMatchGolden(t *testing.T) {
	var sent []string
	res := consoleFixtureRound(config.KindPgCat, "pgcat", &sent)
	compareGoldenResult(t, "pgcat", res)
	assert.Equal(t, []string{"show_version", "show_pools", "show_databases"}, sent)
	p := poolByName(t, res, "appdb/app")
	assert.Equal(t, Some(10), p.Max, "pool_size 5 on each of its two addresses")
	assert.Equal(t, 10.0, p.InUse)
	assert.Equal(t, Some(3), p.Waiting)
	assert.InDelta(t, 2.25, p.MaxWaitSeconds.Value, 1e-9)
	assert.True(t, p.NoLeakDetection)
	assert.Equal(t, "1.1.1", res.Version)
}

func TestConsoleRound_OdysseyRowsMatchGolden(t *testing.T) {
	var sent []string
	res := consoleFixtureRound(config.KindOdyssey, "odyssey", &sent)
	compareGoldenResult(t, "odyssey", res)
	assert.Equal(t, []string{"show_version", "show_pools", "show_databases"}, sent)
	p := poolByName(t, res, "appdb/app")
	assert.Equal(t, Some(8), p.Max)
	assert.Equal(t, 8.0, p.Open)
	assert.Equal(t, Some(4), p.Waiting)
	assert.False(t, p.MaxWaitSeconds.Valid, "maxwait is a constant 0 in Odyssey's source")
	assert.False(t, poolByName(t, res, "reports/analyst").Max.Valid, "pool_size 0 is unlimited")
	for _, st := range p.States {
		assert.NotContains(t, []string{"used", "tested", "login"}, st.State, "constant columns are not states")
	}
	assert.Equal(t, "1.3", res.Version)
}

func TestConsoleRound_OldOdysseyWithoutShowVersionSkipsShowDatabases(t *testing.T) {
	var sent []string
	res := consoleFixtureRound(config.KindOdyssey, "odyssey-old", &sent)
	compareGoldenResult(t, "odyssey-old", res)
	assert.True(t, res.Up(), "SHOW VERSION is a probe, not a failed query: %v", res.Errors)
	assert.Equal(t, []string{"show_version", "show_pools"}, sent)
	assert.Equal(t, "", res.Version)
}

func TestConsoleRound_DetectsThePoolerFromShowVersion(t *testing.T) {
	// Configured as odyssey, answering as PgCat: PgCat's mapping (maxwait
	// is a measurement there).
	res := consoleFixtureRound(config.KindOdyssey, "pgcat", nil)
	assert.Equal(t, "1.1.1", res.Version)
	assert.InDelta(t, 2.25, poolByName(t, res, "appdb/app").MaxWaitSeconds.Value, 1e-9)
	assert.Equal(t, config.KindOdyssey, res.Kind, "the kind stays the configured one")
	// And the other way round.
	res = consoleFixtureRound(config.KindPgCat, "odyssey", nil)
	assert.Equal(t, "1.3", res.Version)
	assert.False(t, poolByName(t, res, "appdb/app").MaxWaitSeconds.Valid)

	d, v := detectDialect(config.KindPgCat, "PgBouncer 1.18.0")
	assert.Equal(t, config.KindPgCat, d.kind, "an unknown answer keeps the configured kind")
	assert.Empty(t, v)
}

func TestConsoleRound_AsksShowVersionOncePerConnection(t *testing.T) {
	s := newConsole(config.Target{Kind: config.KindOdyssey})
	pc := &pgconn.PgConn{}
	var sent []string
	for range 2 {
		r := &consoleRound{cfg: s.cfg}
		s.collect(context.Background(), fixtureConsoleNoTB("odyssey-old", &sent), pc, r)
	}
	assert.Equal(t, []string{"show_version", "show_pools", "show_pools"}, sent)
}

func TestMapConsolePools_RequiresDatabaseAndUser(t *testing.T) {
	_, err := mapConsolePools(parseTable("user|cl_active\nu|1"), pgcatDialect)
	require.ErrorIs(t, err, errMissingColumn)
	_, err = mapConsoleDatabases(parseTable("pool_size\n1"))
	require.ErrorIs(t, err, errMissingColumn)
}
