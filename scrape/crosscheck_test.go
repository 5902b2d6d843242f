package scrape

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

// app is an application target at url with seen_as entries.
func app(name, url string, seen ...config.SeenAs) config.Target {
	t := appTarget(url)
	t.Name = name
	for i := range seen {
		if seen[i].Compare == "" {
			seen[i].Compare = config.CompareAuto
		}
	}
	t.SeenAs = seen
	return t
}

func appRound(name string, pools ...Pool) *Result {
	return &Result{Target: name, Kind: config.KindApplication, Pools: pools}
}

func serverRound(name string, sees ...ApplicationConnections) *Result {
	return &Result{Target: name, Kind: config.KindPostgres, Applications: sees}
}

func sees(glob string, total float64, byAddr map[string]float64) ApplicationConnections {
	if byAddr == nil {
		byAddr = map[string]float64{}
	}
	return ApplicationConnections{ApplicationName: glob, Total: total, ByAddress: byAddr}
}

var ordersOnPG = config.SeenAs{Target: "pg", ApplicationName: "orders-api*"}

func TestCrossCheck_OneInstanceAgainstItsServer(t *testing.T) {
	a := app("orders-api", "http://orders.internal:8080/status", ordersOnPG)
	for _, tc := range []struct {
		name        string
		inUse, open float64
		seen        float64
		want        float64
	}{
		{"the founding leak: counted in use, dead on the server", 4, 4, 1, 3},
		{"a quiet, correct application", 0, 2, 2, 0},
		{"idle connections the server sees are no excess", 1, 5, 5, 0},
		{"the server sees more (another process with that name)", 2, 2, 6, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := appRound("orders-api", Pool{Name: "main", Open: tc.open, InUse: tc.inUse})
			got := CrossCheck(a, res, map[string]*Result{"pg": serverRound("pg", sees("orders-api*", tc.seen, nil))}, nil)
			assert.Equal(t, []Unaccounted{{Pool: "main", Value: tc.want}}, got)
		})
	}
}

func TestCrossCheck_UnknownSidesLeaveItOut(t *testing.T) {
	a := app("orders-api", "http://10.0.0.7:8080/status", ordersOnPG)
	res := appRound("orders-api", Pool{Name: "main", Open: 3, InUse: 3})
	pg := serverRound("pg", sees("orders-api*", 0, nil))
	limited := serverRound("pg", sees("orders-api*", 0, nil))
	limited.LimitedVisibility = true
	failed := appRound("orders-api")
	failed.Errors = []QueryError{{Query: QueryHTTP, Err: errors.New("refused")}}

	assert.Nil(t, CrossCheck(a, failed, map[string]*Result{"pg": pg}, nil), "the application's round failed")
	assert.Nil(t, CrossCheck(a, res, map[string]*Result{}, nil), "no round of the server")
	assert.Nil(t, CrossCheck(a, res, map[string]*Result{"pg": serverRound("pg")}, nil), "the server could not count")
	assert.Nil(t, CrossCheck(a, res, map[string]*Result{"pg": limited}, nil), "a role that cannot see other roles' backends sees too few")
	named := app("orders-api", "http://10.0.0.7:8080/status", config.SeenAs{Target: "pg", ApplicationName: "orders-api*", Pool: "reports"})
	assert.Nil(t, CrossCheck(named, res, map[string]*Result{"pg": pg}, nil), "no pool of the name seen_as gives")
}

func TestCrossCheck_PoolLabel(t *testing.T) {
	pg := map[string]*Result{"pg": serverRound("pg", sees("orders-api*", 1, nil), sees("reports-*", 0, nil))}
	two := appRound("orders-api", Pool{Name: "read", Open: 2, InUse: 2}, Pool{Name: "write", Open: 1, InUse: 1})

	all := app("orders-api", "http://orders.internal/status", ordersOnPG)
	assert.Equal(t, []Unaccounted{{Pool: AllPools, Value: 2}}, CrossCheck(all, two, pg, nil), "every pool together against the server")

	split := app("orders-api", "http://orders.internal/status",
		config.SeenAs{Target: "pg", ApplicationName: "orders-api*", Pool: "read"},
		config.SeenAs{Target: "pg", ApplicationName: "reports-*", Pool: "write"})
	assert.Equal(t, []Unaccounted{{Pool: "read", Value: 1}, {Pool: "write", Value: 1}}, CrossCheck(split, two, pg, nil))
}

// TestCrossCheck_EntriesOfOnePoolAddUp: an application reaching the
// database through two PgBouncers is seen half on each.
func TestCrossCheck_EntriesOfOnePoolAddUp(t *testing.T) {
	a := app("orders-api", "http://orders.internal/status",
		config.SeenAs{Target: "bouncer-a", ApplicationName: "orders-api"},
		config.SeenAs{Target: "bouncer-b", ApplicationName: "orders-api"})
	res := appRound("orders-api", Pool{Name: "main", Open: 6, InUse: 6})
	rounds := map[string]*Result{
		"bouncer-a": serverRound("bouncer-a", sees("orders-api", 3, nil)),
		"bouncer-b": serverRound("bouncer-b", sees("orders-api", 2, nil)),
	}
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 1}}, CrossCheck(a, res, rounds, nil))
}

func TestCrossCheck_Replicas(t *testing.T) {
	a := app("orders-a", "http://10.0.0.7:8080/status", ordersOnPG)
	b := app("orders-b", "http://10.0.0.8:8080/status", ordersOnPG)
	configs := map[string]config.Target{"orders-a": a, "orders-b": b}
	ra := appRound("orders-a", Pool{Name: "main", Open: 3, InUse: 3})
	rb := appRound("orders-b", Pool{Name: "main", Open: 2, InUse: 2})

	// The server shows each instance's connections by its address: per
	// instance, so the leak is on orders-a alone.
	byInstance := map[string]*Result{"orders-a": ra, "orders-b": rb,
		"pg": serverRound("pg", sees("orders-api*", 3, map[string]float64{"10.0.0.7": 1, "10.0.0.8": 2}))}
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 2}}, CrossCheck(a, ra, byInstance, configs))
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 0}}, CrossCheck(b, rb, byInstance, configs))

	// A connection from an address no target has (NAT, a sidecar, an
	// instance not configured): the addresses do not identify the
	// instances, so the sum of both against the total, on both.
	unknownAddr := map[string]*Result{"orders-a": ra, "orders-b": rb,
		"pg": serverRound("pg", sees("orders-api*", 4, map[string]float64{"10.0.0.7": 1, "10.0.0.8": 2, "10.9.9.9": 1}))}
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 1}}, CrossCheck(a, ra, unknownAddr, configs))
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 1}}, CrossCheck(b, rb, unknownAddr, configs))

	// Over a Unix socket the server shows no address at all: the total.
	unix := map[string]*Result{"orders-a": ra, "orders-b": rb, "pg": serverRound("pg", sees("orders-api*", 3, nil))}
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 2}}, CrossCheck(a, ra, unix, configs))

	// compare: instance trusts the address even then.
	forced := app("orders-a", "http://10.0.0.7:8080/status", config.SeenAs{Target: "pg", ApplicationName: "orders-api*", Compare: config.CompareInstance})
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 2}}, CrossCheck(forced, ra, unknownAddr, configs))

	// compare: total never splits by address.
	total := app("orders-a", "http://10.0.0.7:8080/status", config.SeenAs{Target: "pg", ApplicationName: "orders-api*", Compare: config.CompareTotal})
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 2}}, CrossCheck(total, ra, byInstance, configs))

	// Against the total, a replica whose round failed makes the sum unknown.
	down := appRound("orders-b")
	down.Errors = []QueryError{{Query: QueryHTTP, Err: errors.New("refused")}}
	assert.Nil(t, CrossCheck(a, ra, map[string]*Result{"orders-a": ra, "orders-b": down,
		"pg": serverRound("pg", sees("orders-api*", 3, nil))}, configs))

	// Two replicas on one host (one address) cannot be told apart.
	c := app("orders-c", "http://10.0.0.7:9090/status", ordersOnPG)
	rc := appRound("orders-c", Pool{Name: "main", Open: 1, InUse: 1})
	sameHost := map[string]*Result{"orders-a": ra, "orders-c": rc,
		"pg": serverRound("pg", sees("orders-api*", 2, map[string]float64{"10.0.0.7": 2}))}
	assert.Equal(t, []Unaccounted{{Pool: "main", Value: 2}}, CrossCheck(a, ra, sameHost, map[string]config.Target{"orders-a": a, "orders-c": c}))
}

func TestCrossCheckPeers(t *testing.T) {
	a := app("orders-a", "http://10.0.0.7/s", ordersOnPG, config.SeenAs{Target: "bouncer", ApplicationName: "orders-api", Pool: "write"})
	b := app("orders-b", "http://10.0.0.8/s", ordersOnPG)
	other := app("billing", "http://10.0.0.9/s", config.SeenAs{Target: "pg", ApplicationName: "billing"})
	servers, replicas := CrossCheckPeers(a, []config.Target{a, b, other, {Name: "pg", Kind: config.KindPostgres}})
	require.Equal(t, []string{"bouncer", "pg"}, servers)
	require.Equal(t, []string{"orders-b"}, replicas)
}

func TestGlobRegexp_MatchesLikeConfigGlobs(t *testing.T) {
	for glob, cases := range map[string]map[string]bool{
		"orders-api*": {"orders-api": true, "orders-api-7f9c": true, "orders-ap": false, "xorders-api": false},
		"report-?":    {"report-1": true, "report-12": false, "report-": false},
		"a.b(c)[d]%_": {"a.b(c)[d]%_": true, "aXb(c)[d]%_": false},
		"*":           {"": true, "anything\nat all": true},
	} {
		re := globRegexp(glob)
		for s, want := range cases {
			assert.Equal(t, want, re.MatchString(s), "%q ~ %q", s, glob)
		}
	}
}

func TestCanonicalIP(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1", "::ffff:10.0.0.7": "10.0.0.7", "[::1]": "::1", "fe80::1%eth0": "fe80::1"} {
		got, ok := canonicalIP(in)
		require.True(t, ok, in)
		require.Equal(t, want, got)
	}
	for _, in := range []string{"", "unix", "orders.internal"} {
		_, ok := canonicalIP(in)
		require.False(t, ok, in)
	}
}

func TestDocsQuoteTheApplicationsSQLVerbatim(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	require.NoError(t, err)
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for _, block := range strings.Split(string(doc), "```sql\n")[1:] {
		quoted, _, _ := strings.Cut(block, "```")
		if strings.Contains(quoted, "AS g(app_like, ord)") {
			assert.Equal(t, norm(applicationsSQL), norm(quoted), "docs/metrics.md must quote applicationsSQL")
			return
		}
	}
	t.Fatal("docs/metrics.md does not quote applicationsSQL")
}
