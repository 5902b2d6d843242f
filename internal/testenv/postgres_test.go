package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/launch"
)

func TestStartPostgres_ChecksPasswordsOverTCP(t *testing.T) {
	pg := sharedPG(t)
	role := uniqueName(t, "pwcheck")
	pg.CreateRole(t, role, "right'pw", "LOGIN")

	c := connect(t, pg.DSN(role, "right'pw", "postgres"))
	var user string
	require.NoError(t, c.QueryRow(context.Background(), "SELECT current_user").Scan(&user))
	require.Equal(t, role, user)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, pg.DSN(role, "wrong-secret-pw", "postgres"))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "28P01", pgErr.Code, "invalid_password")
	require.NotContains(t, err.Error(), "wrong-secret-pw")

	// The superuser has a known password for TCP too.
	su := connect(t, pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres"))
	var super bool
	require.NoError(t, su.QueryRow(context.Background(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super))
	require.True(t, super)
}

// The slots are counted exactly: every connection testenv opened before the
// holders (the start's readiness check, the settings read here, CreateRole)
// is gone from the server, its backend exited, by the time the holders
// connect. Before that was so, a backend still exiting took a slot on a
// loaded machine, and one holder too many was refused ("4 of 5 held").
func TestStartPostgres_AppliesOptionsAndRejectsClientsBeyondUsableSlots(t *testing.T) {
	start := time.Now()
	pg := StartPostgres(t, PostgresOptions{MaxConnections: 7, SuperuserReserved: 2, ExtraConf: map[string]string{"work_mem": "8MB"}})
	t.Logf("own cluster started in %v", time.Since(start))

	show := func(name string) string {
		var v string
		ctx := context.Background()
		c, err := pg.ConnectAdmin(ctx, "postgres")
		require.NoError(t, err)
		require.NoError(t, c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v))
		require.NoError(t, launch.CloseConn(ctx, c))
		return v
	}
	require.Equal(t, "7", show("max_connections"))
	require.Equal(t, "2", show("superuser_reserved_connections"))
	require.Equal(t, "8MB", show("work_mem"))
	require.Equal(t, "off", show("fsync"))
	require.Equal(t, "127.0.0.1", show("listen_addresses"))

	pg.CreateRole(t, "app", "pw", "LOGIN")
	h := HoldTransactions(t, pg.DSN("app", "pw", "postgres"), 6, "exhaust")
	h.WaitHeld(t, 5, 10*time.Second)
	require.Equal(t, 5, h.Held(), "7 max_connections - 2 reserved = 5 usable")
	errs := h.Errors()
	require.Len(t, errs, 1)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, errs[0], &pgErr)
	require.Equal(t, "53300", pgErr.Code, "too_many_connections")
	require.Equal(t, 5, pg.WaitBackends(t, "exhaust", func(n int) bool { return n == 5 }, 5*time.Second))
	require.Equal(t, int64(5), pg.QueryInt(t, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'exhaust' AND state = 'idle in transaction'"))

	h.Release()
	pg.WaitBackends(t, "exhaust", func(n int) bool { return n == 0 }, 5*time.Second)
}

func TestPostgres_RestartComesBackOnTheSamePortWithData(t *testing.T) {
	pg := StartPostgres(t, PostgresOptions{})
	port := pg.Port
	pg.CreateRole(t, "app", "pw", "LOGIN")
	pg.CreateDatabase(t, "appdb")
	pg.Exec(t, "ALTER DATABASE appdb OWNER TO app")
	b := StartPgBouncer(t, pg, PgBouncerOptions{
		Databases: map[string]string{"appdb": "dbname=appdb"},
		Users:     map[string]string{"app": "pw"},
	})

	ctx := context.Background()
	direct := connect(t, pg.DSN("app", "pw", "appdb"))
	_, err := direct.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	require.NoError(t, err)
	pooled := connect(t, b.DSN("app", "pw", "appdb"))
	_, err = pooled.Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	start := time.Now()
	pg.Stop(t)
	require.False(t, pg.Running())
	_, err = direct.Exec(ctx, "SELECT 1")
	require.Error(t, err, "a session does not survive the stop")
	pg.Start(t)
	t.Logf("stop+start took %v", time.Since(start))
	require.True(t, pg.Running())
	require.Equal(t, port, pg.Port)

	again := connect(t, pg.DSN("app", "pw", "appdb"))
	var v int
	require.NoError(t, again.QueryRow(ctx, "SELECT v FROM kept").Scan(&v))
	require.Equal(t, 42, v)

	// PgBouncer notices its dead server connection and logs in again
	// (server_login_retry = 1 s): poll until a pooled query succeeds.
	v = 0
	Eventually(t, 15*time.Second, 50*time.Millisecond, func() (bool, string) {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := pooled.QueryRow(qctx, "SELECT v FROM kept").Scan(&v)
		if err != nil && pooled.IsClosed() {
			pooled = connect(t, b.DSN("app", "pw", "appdb"))
		}
		return err == nil, fmt.Sprintf("pooled query after the restart: %v", err)
	})
	require.Equal(t, 42, v)

	pg.Restart(t)
	require.Equal(t, port, pg.Port)
}

func TestPostgres_CountsWaitsForAndTerminatesBackendsByApplicationName(t *testing.T) {
	pg := sharedPG(t)
	app := uniqueName(t, "cwt")
	dsn := pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres") + "&application_name=" + app
	conns := []*pgx.Conn{connect(t, dsn), connect(t, dsn), connect(t, dsn)}
	require.Equal(t, 3, pg.CountBackends(t, app))
	require.Equal(t, 3, pg.WaitBackends(t, app, func(n int) bool { return n == 3 }, 5*time.Second))
	require.Equal(t, 0, pg.CountBackends(t, app+"-other"))

	require.Equal(t, 3, pg.TerminateBackends(t, app))
	require.Equal(t, 0, pg.WaitBackends(t, app, func(n int) bool { return n == 0 }, 5*time.Second))
	for _, c := range conns {
		_, err := c.Exec(context.Background(), "SELECT 1")
		require.Error(t, err, "a terminated session is gone")
	}
	require.Equal(t, 0, pg.TerminateBackends(t, app))
}

func TestPostgres_TerminateIdleBackendsKillsOnlyIdleSessionsOfTheNamedApplications(t *testing.T) {
	pg := sharedPG(t)
	app, other := uniqueName(t, "tib"), uniqueName(t, "tib-other")
	dsn := func(name string) string {
		return pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres") + "&application_name=" + name
	}
	idle, inTx, otherIdle := connect(t, dsn(app)), connect(t, dsn(app)), connect(t, dsn(other))
	ctx := context.Background()
	_, err := inTx.Exec(ctx, "BEGIN")
	require.NoError(t, err)
	_, err = inTx.Exec(ctx, "SELECT 1") // idle in transaction: not idle
	require.NoError(t, err)
	pg.WaitBackends(t, app, func(n int) bool { return n == 2 }, 5*time.Second)

	n, err := pg.TerminateIdleBackends(ctx, app, "nobody-uses-this")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, 1, pg.WaitBackends(t, app, func(n int) bool { return n == 1 }, 5*time.Second))
	_, err = idle.Exec(ctx, "SELECT 1")
	require.Error(t, err, "the idle session is gone")
	_, err = inTx.Exec(ctx, "COMMIT")
	require.NoError(t, err, "the session in a transaction lives")
	_, err = otherIdle.Exec(ctx, "SELECT 1")
	require.NoError(t, err, "another application's idle session lives")
}

func TestWaitBackends_FailsWithTheLastCountOnTimeout(t *testing.T) {
	pg := sharedPG(t)
	f := &fakeTB{TB: t}
	got := pg.WaitBackends(f, "nobody-uses-this", func(n int) bool { return n == 1 }, 100*time.Millisecond)
	require.True(t, f.failed)
	require.Equal(t, 0, got)
	require.Contains(t, f.msg, "last count 0")
}

func TestStartPostgres_CleanupStopsTheServerAndRemovesItsDir(t *testing.T) {
	Require(t, "postgres")
	var pid int
	var dir string
	var port int
	t.Run("owner", func(t *testing.T) {
		pg := StartPostgres(t, PostgresOptions{})
		pid, dir, port = pg.PostmasterPID(), pg.Dir, pg.Port
		require.NotZero(t, pid)
	})
	require.True(t, processGone(pid), "postmaster %d still running after cleanup", pid)
	_, err := os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	require.Error(t, err)
}

// processGone reports whether pid has exited (a zombie counts as exited).
func processGone(pid int) bool { return !launch.PIDAlive(pid) }

func TestStartPostgres_ServerDiesWhenTheTestProcessIsKilled(t *testing.T) {
	Require(t, "postgres", "pgbouncer")
	if os.Getenv(crashHelperEnv) == "1" {
		pg := StartPostgres(t, PostgresOptions{})
		b := StartPgBouncer(t, pg, PgBouncerOptions{})
		fmt.Printf("READY %d %d %s %d\n", pg.PostmasterPID(), pg.Port, pg.Dir, b.PID())
		time.Sleep(60 * time.Second) // the parent kills us long before
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStartPostgres_ServerDiesWhenTheTestProcessIsKilled$", "-test.count=1") //nolint:gosec // re-runs this test binary
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	lines := make(chan string, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				lines <- sc.Text()
				break
			}
		}
		_, _ = bufio.NewReader(out).WriteTo(discard{}) // drain until the child dies
	}()
	var ready string
	select {
	case ready = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatal("helper process did not start postgres within 60 s")
	}
	f := strings.Fields(ready)
	require.Len(t, f, 5, ready)
	pmPID, _ := strconv.Atoi(f[1])
	port, _ := strconv.Atoi(f[2])
	dir := f[3]
	bouncerPID, _ := strconv.Atoi(f[4])
	require.False(t, processGone(pmPID))
	require.False(t, processGone(bouncerPID))

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed = true
	_ = cmd.Wait()
	for range lines {
	}

	Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return processGone(pmPID) && processGone(bouncerPID),
			fmt.Sprintf("survived their test process: postmaster %d: %v, pgbouncer %d: %v", pmPID, !processGone(pmPID), bouncerPID, !processGone(bouncerPID))
	})
	Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil, fmt.Sprintf("something still listens on the dead cluster's port %d", port)
	})

	// The crashed process's directory is left behind; the next sweep takes it.
	_, err = os.Stat(dir)
	require.NoError(t, err)
	require.Contains(t, launch.SweepStale(os.TempDir()), dir)
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestCreateRole_DoesNotLeakThePasswordInErrors(t *testing.T) {
	pg := sharedPG(t)
	role := uniqueName(t, "dup")
	pg.CreateRole(t, role, "s3cret-value", "LOGIN")
	f := &fakeTB{TB: t}
	pg.CreateRole(f, role, "s3cret-value", "LOGIN") // already exists
	require.True(t, f.failed)
	require.Contains(t, f.msg, "already exists")
	require.NotContains(t, f.msg, "s3cret-value")
}
