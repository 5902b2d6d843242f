package testenv

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

var updateFixtures = flag.Bool("update", false, "rewrite testdata/pgbouncer-1.18-*.txt from the live PgBouncer")

// showCommands are the console commands whose columns are recorded in
// testdata/pgbouncer-1.18-columns.txt and whose rows are recorded in
// testdata/pgbouncer-1.18-show-<name>.txt.
var showCommands = []string{"POOLS", "CLIENTS", "SERVERS", "DATABASES", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "LISTS", "USERS", "CONFIG", "VERSION"}

const columnsFile = "testdata/pgbouncer-1.18-columns.txt"

// startAppBouncer creates role app_<n> and database db_<n> on the shared
// cluster and a PgBouncer in front with the given pool size for that db.
func startAppBouncer(t *testing.T, poolSize int, extra map[string]string) (b *PgBouncer, user, pw, db string) {
	t.Helper()
	pg := sharedPG(t)
	Require(t, "pgbouncer")
	user, pw, db = uniqueName(t, "app"), "app-pw", uniqueName(t, "appdb")
	pg.CreateRole(t, user, pw, "LOGIN")
	pg.CreateDatabase(t, db)
	b = StartPgBouncer(t, pg, PgBouncerOptions{
		Databases:  map[string]string{db: fmt.Sprintf("dbname=%s pool_size=%d reserve_pool=0", db, poolSize)},
		Users:      map[string]string{user: pw, "stats": "stats-pw"},
		StatsUsers: []string{"stats"},
		Extra:      extra,
	})
	return b, user, pw, db
}

// poolRow returns the SHOW POOLS row of db/user as column -> value.
func poolRow(t *testing.T, b *PgBouncer, db, user string) map[string]string {
	t.Helper()
	for _, r := range b.Show(t, "SHOW POOLS").Records() {
		if r["database"] == db && r["user"] == user {
			return r
		}
	}
	return nil
}

// waitPool polls SHOW POOLS until cond holds for the db/user row.
func waitPool(t *testing.T, b *PgBouncer, db, user string, timeout time.Duration, what string, cond func(r map[string]string) bool) map[string]string {
	t.Helper()
	var r map[string]string
	Eventually(t, timeout, 20*time.Millisecond, func() (bool, string) {
		r = poolRow(t, b, db, user)
		return r != nil && cond(r), fmt.Sprintf("SHOW POOLS %s/%s: %s not reached; last row %v", db, user, what, r)
	})
	return r
}

func TestPgBouncer_PoolOfThreeQueuesTwoOfFiveClients(t *testing.T) {
	b, user, pw, db := startAppBouncer(t, 3, map[string]string{"stats_period": "1"})
	pg := sharedPG(t)

	// Some finished transactions first, so the stats have non-zero values.
	c := connect(t, b.DSN(user, pw, db)+"&application_name=warmup")
	for i := 0; i < 5; i++ {
		var n int
		require.NoError(t, c.QueryRow(context.Background(), "SELECT $1::int", i).Scan(&n))
		require.Equal(t, i, n)
	}
	require.NoError(t, c.Close(context.Background()))

	h := HoldTransactions(t, b.DSN(user, pw, db), 5, "holder")
	row := waitPool(t, b, db, user, 10*time.Second, "cl_active=3 cl_waiting=2", func(r map[string]string) bool {
		return r["cl_active"] == "3" && r["cl_waiting"] == "2"
	})
	require.Equal(t, "3", row["sv_active"])
	require.Equal(t, "transaction", row["pool_mode"])
	// The pool counts a client as active once it is linked to a server; the
	// client reads its answer a moment later.
	h.WaitHeld(t, 3, 5*time.Second)
	require.Equal(t, 3, h.Held())
	require.Empty(t, h.Errors())
	// PgBouncer 1.18 passes application_name on to the server connections.
	require.Equal(t, 3, pg.WaitBackends(t, "holder", func(n int) bool { return n == 3 }, 5*time.Second))

	clients := b.Show(t, "SHOW CLIENTS")
	var waiting, active int
	for _, r := range clients.Records() {
		if r["database"] != db {
			continue
		}
		require.Equal(t, "holder", r["application_name"])
		_, err := time.Parse("2006-01-02 15:04:05 MST", r["request_time"])
		require.NoError(t, err, "request_time %q", r["request_time"])
		_, err = time.Parse("2006-01-02 15:04:05 MST", r["connect_time"])
		require.NoError(t, err, "connect_time %q", r["connect_time"])
		switch r["state"] {
		case "active":
			active++
			require.NotEmpty(t, r["link"])
		case "waiting":
			waiting++
			require.Empty(t, r["link"])
		}
	}
	require.Equal(t, 3, active)
	require.Equal(t, 2, waiting)

	if *updateFixtures {
		// Let the waiters wait a whole second, so wait/maxwait are non-zero.
		waitPool(t, b, db, user, 5*time.Second, "maxwait >= 1", func(r map[string]string) bool {
			n, _ := strconv.Atoi(r["maxwait"])
			return n >= 1
		})
		recordFixtures(t, b)
	} else {
		checkColumns(t, b)
	}

	h.Release()
	row = waitPool(t, b, db, user, 10*time.Second, "cl_waiting=0 cl_active=0", func(r map[string]string) bool {
		return r["cl_waiting"] == "0" && r["cl_active"] == "0"
	})
	require.Equal(t, "0", row["sv_active"])
	require.Equal(t, 5, h.Held(), "the queued two got through once the first three committed")
	require.Empty(t, h.Errors())
}

// checkColumns asserts that the live console columns are the recorded ones.
func checkColumns(t *testing.T, b *PgBouncer) {
	t.Helper()
	version := b.Show(t, "SHOW VERSION").Rows[0][0]
	if version == nil || !strings.HasPrefix(*version, "PgBouncer 1.18.") {
		t.Logf("PgBouncer is %v, not 1.18: recorded columns not compared", version)
		return
	}
	want, err := os.ReadFile(columnsFile)
	require.NoError(t, err)
	require.Equal(t, string(want), renderColumns(t, b), "columns differ from %s (go test -run TestPgBouncer_PoolOfThree -update rewrites it)", columnsFile)
}

var typeNames = map[uint32]string{16: "bool", 20: "int8", 21: "int2", 23: "int4", 25: "text", 700: "float4", 701: "float8", 1043: "varchar", 1114: "timestamp", 1184: "timestamptz", 1700: "numeric"}

func renderColumns(t *testing.T, b *PgBouncer) string {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("# PgBouncer 1.18 admin console: result columns in order, as sent by the live server.\n")
	sb.WriteString("# Written by internal/testenv TestPgBouncer_PoolOfThreeQueuesTwoOfFiveClients -update.\n")
	sb.WriteString("# Lines: <command><TAB>column,...  then  types<TAB><command><TAB>column:type,... (type = declared PostgreSQL type)\n")
	var types strings.Builder
	for _, cmd := range showCommands {
		r := b.Show(t, "SHOW "+cmd)
		fmt.Fprintf(&sb, "SHOW %s\t%s\n", cmd, strings.Join(r.Columns, ","))
		typed := make([]string, len(r.Columns))
		for i, c := range r.Columns {
			name, ok := typeNames[r.TypeOIDs[i]]
			if !ok {
				name = fmt.Sprintf("oid%d", r.TypeOIDs[i])
			}
			typed[i] = c + ":" + name
		}
		fmt.Fprintf(&types, "types\tSHOW %s\t%s\n", cmd, strings.Join(typed, ","))
	}
	return sb.String() + types.String()
}

// recordFixtures writes the columns file and one rows file per command.
func recordFixtures(t *testing.T, b *PgBouncer) {
	t.Helper()
	require.NoError(t, os.MkdirAll("testdata", 0o755))                                //nolint:gosec // a source-tree directory
	require.NoError(t, os.WriteFile(columnsFile, []byte(renderColumns(t, b)), 0o644)) //nolint:gosec // a source-tree file
	for _, cmd := range showCommands {
		r := b.Show(t, "SHOW "+cmd)
		var sb strings.Builder
		sb.WriteString(strings.Join(r.Columns, "\t") + "\n")
		for _, row := range r.Rows {
			vals := make([]string, len(row))
			for i, v := range row {
				if v == nil {
					vals[i] = `\N`
				} else {
					vals[i] = copyEscape(*v)
				}
			}
			sb.WriteString(strings.Join(vals, "\t") + "\n")
		}
		path := filepath.Join("testdata", "pgbouncer-1.18-show-"+strings.ToLower(cmd)+".txt")
		require.NoError(t, os.WriteFile(path, []byte(sb.String()), 0o644)) //nolint:gosec // a source-tree file
		t.Logf("wrote %s (%d rows)", path, len(r.Rows))
	}
}

// copyEscape escapes a value like COPY's text format.
func copyEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`).Replace(s)
}

func TestPgBouncer_DSNWorksWithPgxForPooledDatabasesAndTheConsole(t *testing.T) {
	b, user, pw, db := startAppBouncer(t, 2, nil)
	pg := sharedPG(t)
	ctx := context.Background()

	// Pooled: arguments work (simple protocol interpolates them), and
	// application_name reaches PostgreSQL.
	c := connect(t, b.DSN(user, pw, db)+"&application_name=dsn-check")
	var got string
	require.NoError(t, c.QueryRow(ctx, "SELECT $1::text || current_user", "hi-").Scan(&got))
	require.Equal(t, "hi-"+user, got)
	tx, err := c.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&got))
	require.Equal(t, "dsn-check", got)
	require.Equal(t, 1, pg.CountBackends(t, "dsn-check"))
	require.NoError(t, tx.Rollback(ctx))

	// Console: as testenv's admin and as a stats user.
	for _, u := range [][2]string{{b.AdminUser, b.AdminPassword}, {"stats", "stats-pw"}} {
		cc := connect(t, b.DSN(u[0], u[1], "pgbouncer"))
		require.NoError(t, cc.QueryRow(ctx, "SHOW VERSION").Scan(&got))
		require.True(t, strings.HasPrefix(got, "PgBouncer "), got)
	}

	// Startup parameters other than the tracked ones (client_encoding,
	// DateStyle, TimeZone, standard_conforming_strings, application_name)
	// are refused unless listed in ignore_startup_parameters: lib/pq's
	// extra_float_digits, and statement_timeout as a runtime parameter.
	for _, param := range []string{"extra_float_digits", "statement_timeout"} {
		for _, target := range []string{db, "pgbouncer"} {
			cfg, err := pgconn.ParseConfig(b.RawDSN(user, pw, target))
			require.NoError(t, err)
			cfg.RuntimeParams[param] = "3"
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = pgconn.ConnectConfig(cctx, cfg)
			cancel()
			require.ErrorContains(t, err, "unsupported startup parameter: "+param, "%s on %s", param, target)
		}
	}

	// A wrong password is a real authentication error, without the password.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pgx.Connect(cctx, b.DSN(user, "not-the-password", db))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "08P01", pgErr.Code)
	require.Contains(t, pgErr.Message, "SASL authentication failed")
	require.NotContains(t, err.Error(), "not-the-password")
}

func TestPgBouncer_StopStartKeepsThePortAndAdminExecPauses(t *testing.T) {
	b, user, pw, db := startAppBouncer(t, 2, nil)
	port := b.Port
	ctx := context.Background()

	b.AdminExec(t, "PAUSE "+db)
	paused := func() string {
		for _, r := range b.Show(t, "SHOW DATABASES").Records() {
			if r["name"] == db {
				return r["paused"]
			}
		}
		return "missing"
	}
	require.Equal(t, "1", paused())
	b.AdminExec(t, "RESUME "+db)
	require.Equal(t, "0", paused())

	b.Stop(t)
	require.False(t, b.Running())
	b.Start(t)
	require.True(t, b.Running())
	require.Equal(t, port, b.Port)
	c := connect(t, b.DSN(user, pw, db))
	_, err := c.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
}

// PgBouncer 1.18 does not exit when its TCP port is taken: it logs
// "Address already in use" and runs on its unix socket alone. A start must
// see that at once, not wait out its 30 s budget for a server that will
// never answer on TCP.
func TestPgBouncer_StartOnATakenPortFailsAtOnce(t *testing.T) {
	b, _, _, _ := startAppBouncer(t, 2, nil)
	b.Stop(t)
	l, err := net.Listen("tcp", b.Addr())
	require.NoError(t, err)
	defer l.Close()

	start := time.Now()
	err = b.PgBouncer.Start()
	require.Error(t, err)
	require.Contains(t, err.Error(), "could not bind port")
	require.Less(t, time.Since(start), 10*time.Second)
	require.False(t, b.Running())
	t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), strings.SplitN(err.Error(), "\n", 2)[0])
}
