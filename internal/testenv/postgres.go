package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// PostgresOptions configures a throwaway cluster (see launch.PostgresOptions).
type PostgresOptions = launch.PostgresOptions

// AdminApplicationName is the application_name of testenv's own superuser
// connections; CountBackends never counts them unless asked.
const AdminApplicationName = launch.AdminApplicationName

// adminTimeout bounds one administrative query.
const adminTimeout = 30 * time.Second

// Postgres is a throwaway PostgreSQL 15 cluster (launch.Postgres: Host, Port,
// DSN, Addr...) with test helpers that fail tb on error. testenv's own
// connections are gone from the server (their backends have exited) by the
// time a helper returns, so they never take a slot a test counts.
type Postgres struct {
	*launch.Postgres
}

// StartPostgres starts a throwaway cluster for tb (see launch.StartPostgres)
// and registers a cleanup that stops it and removes its directory. It fails
// the test with the server log's tail when the server does not come up,
// and as Require does when PostgreSQL is not installed.
func StartPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	Require(tb, "postgres")
	p, err := launch.StartPostgres(opts)
	if err != nil {
		tb.Fatalf("start postgres: %v", err)
	}
	closeOnCleanup(tb, "postgres", p)
	return &Postgres{p}
}

// Stop stops the server and keeps its data directory; Start brings it back
// on the same port. Stopping a stopped server does nothing.
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()
	if err := p.Postgres.Stop(); err != nil {
		tb.Fatal(err)
	}
}

// Start starts a stopped server on the same port as before and waits until
// it accepts logins. Starting a running server does nothing. It fails the
// test if the port was taken in the meantime.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()
	if err := p.Postgres.Start(); err != nil {
		tb.Fatal(err)
	}
}

// Restart is Stop then Start.
func (p *Postgres) Restart(tb testing.TB) {
	tb.Helper()
	p.Stop(tb)
	p.Start(tb)
}

// AdminConn returns a superuser connection to the "postgres" database over
// the unix socket, closed on cleanup. application_name is
// AdminApplicationName. Use it from one goroutine at a time.
func (p *Postgres) AdminConn(tb testing.TB) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	c, err := p.ConnectAdmin(ctx, "postgres")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = launch.CloseConn(ctx, c)
	})
	return c
}

// Exec runs sql as the superuser in the "postgres" database on a fresh
// connection, failing the test on error.
func (p *Postgres) Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if err := p.Postgres.Exec(ctx, sql, args...); err != nil {
		tb.Fatal(err)
	}
}

// QueryInt runs a one-row, one-column query as the superuser and returns
// the value as int64 (the column must be an integer type, or numeric without
// fraction).
func (p *Postgres) QueryInt(tb testing.TB, sql string, args ...any) int64 {
	tb.Helper()
	n, err := p.queryInt(sql, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func (p *Postgres) queryInt(sql string, args ...any) (n int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	c, err := p.ConnectAdmin(ctx, "postgres")
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := launch.CloseConn(ctx, c); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("superuser query %q: %w", sql, err)
	}
	return n, nil
}

// CreateDatabase creates a database (name quoted as an identifier).
func (p *Postgres) CreateDatabase(tb testing.TB, name string) {
	tb.Helper()
	p.Exec(tb, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// CreateRole creates a role with a password (none when empty) and extra
// CREATE ROLE options, e.g. "LOGIN", "IN ROLE pg_monitor", "CONNECTION
// LIMIT 5". Attributes are SQL, spliced verbatim. The password never
// appears in a failure.
func (p *Postgres) CreateRole(tb testing.TB, name, password string, attrs ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if err := p.Postgres.CreateRole(ctx, name, password, attrs...); err != nil {
		tb.Fatal(err)
	}
}

const backendsWhere = `backend_type = 'client backend' AND application_name = $1 AND pid <> pg_backend_pid()`

// CountBackends returns how many client backends in pg_stat_activity have
// this application_name (testenv's own query connection excluded).
func (p *Postgres) CountBackends(tb testing.TB, applicationName string) int {
	tb.Helper()
	return int(p.QueryInt(tb, `SELECT count(*) FROM pg_stat_activity WHERE `+backendsWhere, applicationName))
}

// WaitBackends polls CountBackends every 20 ms until cond holds and returns
// that count. On timeout it fails the test with the last count (and last
// error, if the server could not be queried). Backends leave
// pg_stat_activity a moment after their client goes away: use this, never a
// sleep.
func (p *Postgres) WaitBackends(tb testing.TB, applicationName string, cond func(n int) bool, timeout time.Duration) int {
	tb.Helper()
	last := -1
	Eventually(tb, timeout, 20*time.Millisecond, func() (bool, string) {
		n, err := p.queryInt(`SELECT count(*) FROM pg_stat_activity WHERE `+backendsWhere, applicationName)
		if err != nil {
			return false, fmt.Sprintf("backends with application_name %q: last count %d, last error %v", applicationName, last, err)
		}
		last = int(n)
		return cond(last), fmt.Sprintf("backends with application_name %q: last count %d", applicationName, last)
	})
	return last
}

// TerminateBackends calls pg_terminate_backend on every client backend with
// this application_name and returns how many were signalled. The backends
// are gone from pg_stat_activity only a moment later (see WaitBackends).
func (p *Postgres) TerminateBackends(tb testing.TB, applicationName string) int {
	tb.Helper()
	return int(p.QueryInt(tb, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE `+backendsWhere, applicationName))
}
