package scrape

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
)

// appSeen returns what res counted for glob.
func appSeen(res *Result, glob string) (ApplicationConnections, bool) {
	for _, ac := range res.Applications {
		if ac.ApplicationName == glob {
			return ac, true
		}
	}
	return ApplicationConnections{}, false
}

// TestCrossCheck_Live_ServersCountConnectionsByApplicationAndAddress: the
// server side of the cross-check against a real PostgreSQL and PgBouncer.
// 2 orders-api connections straight to PostgreSQL and 5 through a
// transaction-mode PgBouncer whose pool has 3 servers (2 clients wait):
// PostgreSQL sees its 2 (and PgBouncer's 3 server connections, which carry
// the application_name of the client that opened them), PgBouncer all 5
// clients, waiting ones included, every one from 127.0.0.1.
func TestCrossCheck_Live_ServersCountConnectionsByApplicationAndAddress(t *testing.T) {
	pg, b := liveBouncer(t, "pool_size=3 reserve_pool=0", testenv.PgBouncerOptions{})
	globs := []string{"billing", "orders-*"}
	ps := newPostgres(config.Target{LeakThreshold: time.Hour, Applications: globs})
	pq := newConnPerDo(t, pg.DSN("monitor", statsPassword, "postgres"), pgx.QueryExecModeCacheStatement)
	bs := newPgBouncer(config.Target{LeakThreshold: time.Hour, Applications: globs})
	bq := consoleQuerier(t, b)

	// Nothing yet: every glob is counted, at zero.
	res := pollScrape(t, bs, bq, "pgbouncer counts zero", func(r *Result) bool { return len(r.Applications) == 2 })
	require.Empty(t, res.Errors)
	assert.Equal(t, []ApplicationConnections{sees("billing", 0, nil), sees("orders-*", 0, nil)}, res.Applications,
		"SHOW CLIENTS runs for the cross-check even when no leak is possible; the agent's console client is not counted")

	direct := testenv.HoldTransactions(t, pg.DSN("app", appPassword, "appdb"), 2, "orders-api")
	direct.WaitHeld(t, 2, livePollTimeout)
	pooled := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 5, "orders-api")
	pooled.WaitHeld(t, 3, livePollTimeout)

	res = pollScrape(t, bs, bq, "pgbouncer sees 5 orders-api clients", func(r *Result) bool {
		ac, ok := appSeen(r, "orders-*")
		return ok && ac.Total == 5
	})
	ac, _ := appSeen(res, "orders-*")
	assert.Equal(t, sees("orders-*", 5, map[string]float64{"127.0.0.1": 5}), ac)

	res = pollScrape(t, ps, pq, "postgres sees 2 direct + 3 server connections", func(r *Result) bool {
		ac, ok := appSeen(r, "orders-*")
		return ok && ac.Total == 5
	})
	require.Empty(t, res.Errors)
	ac, _ = appSeen(res, "orders-*")
	assert.Equal(t, sees("orders-*", 5, map[string]float64{"127.0.0.1": 5}), ac)
	billing, _ := appSeen(res, "billing")
	assert.Equal(t, sees("billing", 0, nil), billing)

	pooled.Release()
	direct.Release()
	pollScrape(t, bs, bq, "pgbouncer sees none again", func(r *Result) bool {
		ac, ok := appSeen(r, "orders-*")
		return ok && ac.Total == 0
	})
}
