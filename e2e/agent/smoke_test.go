package agent_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	monUser = "mon"
	monPass = "Mon-S3cret-pw"
	appUser = "app"
	appPass = "App-S3cret-pw"
)

// waitMetric polls path until re matches, and returns the match.
func waitMetric(t *testing.T, pw *testenv.Poolwatch, path string, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	var m []string
	testenv.Eventually(t, timeout, 100*time.Millisecond, func() (bool, string) {
		code, body := pw.Get(t, path)
		require.Equal(t, 200, code)
		m = re.FindStringSubmatch(body)
		return m != nil, fmt.Sprintf("%s never matched %s; last body:\n%s", path, re, body)
	})
	return m
}

func TestAgent_CountsALeakedTransactionEverywhereAndNamesTheCulprit(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, monUser, monPass, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(t, appUser, appPass, "LOGIN")
	pg.CreateDatabase(t, "appdb")
	pgb := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{
		Users:      map[string]string{monUser: monPass, appUser: appPass},
		StatsUsers: []string{monUser},
		Databases:  map[string]string{"appdb": "dbname=appdb pool_size=3"},
	})
	cfg := fmt.Sprintf(`
defaults:
  leak_threshold: 2s
targets:
  - name: pg
    kind: postgres
    dsn: %s
    application_pools:
      - name: checkout
        application_name: "checkout-*"
        max_connections: 10
  - name: bouncer
    kind: pgbouncer
    dsn: %s
`, pg.DSN(monUser, monPass, "postgres"), pgb.DSN(monUser, monPass, "pgbouncer"))
	pw := testenv.StartPoolwatch(t, cfg)

	// A client opens a transaction through PgBouncer and goes idle in it.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgb.DSN(appUser, appPass, "appdb")+"&application_name=checkout-worker-7")
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "BEGIN")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	leaked := func(target, pool string, n int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`poolwatch_pool_leaked_connections\{pool="%s",target="%s"\} %d\n`, regexp.QuoteMeta(pool), target, n))
	}
	// Counted on the PgBouncer pool, and on PostgreSQL in the server pool
	// and in the application's own pool.
	for _, tp := range [][2]string{{"bouncer", "appdb/app"}, {"pg", "server"}, {"pg", "checkout"}} {
		waitMetric(t, pw, "/metrics", leaked(tp[0], tp[1], 1), 20*time.Second)
	}
	logs := pw.Logs()
	require.Regexp(t, `msg="leaked connection" pool=appdb/app application_name=checkout-worker-7 user=app database=appdb client_addr=127\.0\.0\.1:\d+ pid=\d+ held_for=\d+s`, logs)
	require.Regexp(t, `target=pg msg="leaked connection" pool=checkout application_name=checkout-worker-7 user=app database=appdb client_addr=127\.0\.0\.1:\d+ pid=\d+ held_for=\d+s query_keyword=SELECT`, logs)
	require.NotContains(t, logs, "last_query", "no query text without log_query_text")
	require.Equal(t, 1, strings.Count(logs, "pool=appdb/app application_name=checkout-worker-7"), "logged once")

	// It leaves the count when it commits.
	_, err = conn.Exec(ctx, "COMMIT")
	require.NoError(t, err)
	for _, tp := range [][2]string{{"bouncer", "appdb/app"}, {"pg", "server"}, {"pg", "checkout"}} {
		waitMetric(t, pw, "/metrics", leaked(tp[0], tp[1], 0), 20*time.Second)
	}
}
