package scrape

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

func TestGlobToLike_EscapesLikeMetacharacters(t *testing.T) {
	for glob, like := range map[string]string{
		"billing-*":   "billing-%",
		"app?":        "app_",
		"100%_sure":   `100\%\_sure`,
		`back\slash*`: `back\\slash%`,
		"":            "",
		"*":           "%",
		"ünïcode-?":   "ünïcode-_",
	} {
		assert.Equal(t, like, globToLike(glob), glob)
	}
}

func TestPostgresFill_MapsServerAndApplicationPools(t *testing.T) {
	reserved := int64(2)
	s := newPostgres(config.Target{
		LeakThreshold: time.Second,
		ApplicationPools: []config.ApplicationPool{
			{Name: "billing", ApplicationName: "billing-*", MinConnections: intp(2), MaxConnections: intp(10)},
			{Name: "reports", ApplicationName: "rep?", User: "ro_*", Database: "dw"},
			{Name: "billing", ApplicationName: "*"}, // a duplicate name: the first wins
		},
	})
	row := &activityRow{
		maxConnections: 100, superuserReserved: 3, reserved: &reserved,
		open: 12, leaked: 2, oldest: 42.5,
		appsJSON: `[{"pool":"billing","open":5,"in_use":3,"leaked":2,"oldest":42.5}]`,
		leaksJSON: `[
 {"pool":"billing","application_name":"billing-api","usename":"app","datname":"orders","client_addr":"10.0.0.5","client_port":51000,
  "pid":4242,"xact_start":"2026-11-26 05:00:00.123456+00","idle_s":42.5,"xact_s":50.25,
  "query_id":"-8512345678901234567","keyword":"UPDATE","query":"UPDATE t SET x = 'secret'"},
 {"pool":null,"application_name":"","usename":"app","datname":"orders","client_addr":null,"client_port":-1,
  "pid":4243,"xact_start":"2026-11-26 05:00:10+00","idle_s":7,"xact_s":null,"query_id":null,"keyword":"ALTER","query":null}]`,
	}
	res := &Result{Kind: config.KindPostgres}
	require.NoError(t, s.fill(res, row))
	assert.Equal(t, []Pool{
		{Name: "billing", Min: Some(2), Max: Some(10), Open: 5, InUse: 3, Leaked: 2, OldestLeakSeconds: 42.5},
		{Name: "reports", Database: "dw", User: "ro_*"},
		{Name: "server", Max: Some(95), Reserve: Some(5), Open: 12, InUse: 12, Leaked: 2, OldestLeakSeconds: 42.5},
	}, res.Pools)
	assert.Equal(t, []Leak{
		{
			ID: "4242@2026-11-26 05:00:00.123456+00", Pool: "billing", ApplicationName: "billing-api",
			User: "app", Database: "orders", ClientAddr: "10.0.0.5:51000", PID: 4242,
			Age: 42500 * time.Millisecond, TransactionAge: 50250 * time.Millisecond,
			QueryKeyword: "UPDATE", QueryID: "-8512345678901234567", Query: "UPDATE t SET x = '***'",
		},
		{
			ID: "4243@2026-11-26 05:00:10+00", Pool: "server", User: "app", Database: "orders",
			ClientAddr: "[local]", PID: 4243, Age: 7 * time.Second, QueryKeyword: "ALTER",
		},
	}, res.Leaks)
}

func TestPostgresFill_ReservedConnectionsAbsentOn15(t *testing.T) {
	s := newPostgres(config.Target{})
	res := &Result{}
	require.NoError(t, s.fill(res, &activityRow{maxConnections: 20, superuserReserved: 3, open: 1, appsJSON: "[]", leaksJSON: "[]"}))
	assert.Equal(t, []Pool{{Name: "server", Max: Some(17), Reserve: Some(3), Open: 1, InUse: 1}}, res.Pools)
	assert.Empty(t, res.Leaks)
}

func TestPostgresFill_BadJSONIsAnError(t *testing.T) {
	s := newPostgres(config.Target{})
	err := s.fill(&Result{}, &activityRow{appsJSON: "{", leaksJSON: "[]"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "application pool counts")
}

func TestPostgresFill_CapsPoolsKeepingServer(t *testing.T) {
	var aps []config.ApplicationPool
	for _, n := range []string{"a", "b", "z"} {
		aps = append(aps, config.ApplicationPool{Name: n, ApplicationName: n})
	}
	s := newPostgres(config.Target{ApplicationPools: aps, MaxPools: 2})
	res := &Result{}
	require.NoError(t, s.fill(res, &activityRow{maxConnections: 10, appsJSON: "[]", leaksJSON: "[]"}))
	assert.Equal(t, []string{"a", "server"}, names(res.Pools))
	assert.Equal(t, 2, res.PoolsDropped)
}

func TestTruncate_CutsOnRuneBoundaries(t *testing.T) {
	assert.Equal(t, "abc", truncate("abc", 5))
	assert.Equal(t, "ab", truncate("abc", 2))
	assert.Equal(t, "éé", truncate("ééé", 2))
	long := strings.Repeat("x", 300)
	assert.Len(t, truncate(long, MaxQueryLength), MaxQueryLength)
}

func TestSeconds_ClampsNonsense(t *testing.T) {
	assert.Equal(t, time.Duration(0), seconds(-1))
	assert.Equal(t, time.Duration(0), seconds(nan()))
	assert.Equal(t, time.Duration(1<<63-1), seconds(1e300))
	assert.Equal(t, 1500*time.Millisecond, seconds(1.5))
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestDocsQuoteTheActivitySQLVerbatim(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(doc), "```sql\n")
	require.True(t, ok, "docs/metrics.md has no sql block")
	quoted, _, ok := strings.Cut(after, "```")
	require.True(t, ok)
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	assert.Equal(t, norm(activitySQL), norm(quoted), "docs/metrics.md must quote activitySQL")
}
