package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PostgresOptions configures a throwaway cluster.
type PostgresOptions struct {
	// MaxConnections is max_connections; 0 means 100.
	MaxConnections int
	// SuperuserReserved is superuser_reserved_connections; 0 means
	// PostgreSQL's default 3, a negative value means 0.
	SuperuserReserved int
	// ExtraConf holds more settings, passed as -c key=value; they override
	// testenv's own (see StartPostgres).
	ExtraConf map[string]string
}

// Postgres is a throwaway PostgreSQL 15 cluster listening on Host:Port and
// on a unix socket in SocketDir. Its methods are safe for concurrent use;
// Stop, Start and Restart are serialized.
type Postgres struct {
	Host          string // always "127.0.0.1"
	Port          int    // TCP port, the same across Stop/Start
	Dir           string // temp root: data/, the unix socket and postgres.log
	DataDir       string // Dir/data
	SocketDir     string // unix socket directory (= Dir)
	LogPath       string // server log (stderr of postgres)
	SuperUser     string // "postgres"
	SuperPassword string // SuperPassword, for TCP logins as SuperUser

	opts PostgresOptions
	server
}

const (
	pgStartBudget = 60 * time.Second
	pgStopGrace   = 15 * time.Second
	adminTimeout  = 30 * time.Second
	// AdminApplicationName is the application_name of testenv's own
	// superuser connections; CountBackends never counts them unless asked.
	AdminApplicationName = "testenv-admin"
)

// StartPostgres starts a throwaway cluster for tb and registers a cleanup
// that stops it (SIGINT, then SIGKILL after 15 s) and removes its directory.
//
// The cluster is a copy of a template made by initdb once per process (see
// the package doc), so starting one costs a directory copy and a server
// start, typically well under a second. Settings, in this order of
// precedence: opts.ExtraConf, opts.MaxConnections/SuperuserReserved, then
// testenv's speed settings (fsync, synchronous_commit and full_page_writes
// off, shared_buffers=16MB, wal_level=minimal, autovacuum and jit off).
// pg_hba: trust over the unix socket, scram-sha-256 over TCP from loopback.
//
// It skips or fails (CI=true) the test when the binaries are missing, and
// fails it with the server log's tail when the server does not come up.
func StartPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	RequireBinaries(tb, "postgres")
	p, err := launchPostgres(opts)
	if err != nil {
		tb.Fatalf("start postgres: %v", err)
	}
	p.destroyOnCleanup(tb)
	return p
}

// LaunchPostgres is StartPostgres for TestMain: it returns the cluster and
// a stop function that stops the server and removes its directory (errors
// are printed to stderr; calling it twice is harmless). A missing binary
// gives an error wrapping ErrBinaryNotFound, so TestMain can decide between
// skipping and failing (see InCI).
func LaunchPostgres(opts PostgresOptions) (*Postgres, func(), error) {
	for _, b := range []string{"postgres", "initdb"} {
		if _, err := LookPath(b); err != nil {
			return nil, nil, err
		}
	}
	p, err := launchPostgres(opts)
	if err != nil {
		return nil, nil, err
	}
	return p, p.destroyOnce(), nil
}

func launchPostgres(opts PostgresOptions) (*Postgres, error) {
	r, err := serverUser()
	if err != nil {
		return nil, err
	}
	tmpl, err := templateDataDir(r)
	if err != nil {
		return nil, fmt.Errorf("prepare initdb template: %w", err)
	}
	dir, err := r.makeServerDir("pg")
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Host:          "127.0.0.1",
		Dir:           dir,
		DataDir:       filepath.Join(dir, "data"),
		SocketDir:     dir,
		LogPath:       filepath.Join(dir, "postgres.log"),
		SuperUser:     "postgres",
		SuperPassword: SuperPassword,
		opts:          opts,
	}
	p.server = server{
		name:         "postgres",
		port:         &p.Port,
		dir:          dir,
		logPath:      p.LogPath,
		run:          r,
		startBudget:  pgStartBudget,
		stopSignal:   syscall.SIGINT, // fast shutdown: sessions are terminated
		stopGrace:    pgStopGrace,
		bindFailures: []string{"could not bind", "could not create any TCP/IP sockets"},
		args:         func() ([]string, error) { return p.serverArgs(), nil },
		ready:        p.pingTCP, // a superuser login over TCP
	}
	if sock := filepath.Join(dir, ".s.PGSQL.65535"); len(sock) > 107 {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("unix socket path %s is too long: use a shorter TMPDIR", sock)
	}
	if err := r.copyTree(tmpl, p.DataDir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("copy template data dir: %w", err)
	}
	if err := p.startLocked(true); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// serverArgs returns the postgres command line.
func (p *Postgres) serverArgs() []string {
	conf := map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"shared_buffers":     "16MB",
		"wal_level":          "minimal",
		"max_wal_senders":    "0",
		"autovacuum":         "off",
		"jit":                "off",
		"huge_pages":         "off",
		"logging_collector":  "off",
		"log_line_prefix":    "%m [%p] %q%u@%d/%a ",
		"max_connections":    "100",
	}
	if p.opts.MaxConnections > 0 {
		conf["max_connections"] = strconv.Itoa(p.opts.MaxConnections)
	}
	switch {
	case p.opts.SuperuserReserved > 0:
		conf["superuser_reserved_connections"] = strconv.Itoa(p.opts.SuperuserReserved)
	case p.opts.SuperuserReserved < 0:
		conf["superuser_reserved_connections"] = "0"
	}
	for k, v := range p.opts.ExtraConf {
		conf[k] = v
	}
	// Fixed: these make the cluster what this package promises.
	conf["listen_addresses"] = p.Host
	conf["unix_socket_directories"] = p.SocketDir
	conf["port"] = strconv.Itoa(p.Port)

	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"-D", p.DataDir}
	for _, k := range keys {
		args = append(args, "-c", k+"="+conf[k])
	}
	return args
}

// pingTCP logs in over TCP as the superuser with its password.
func (p *Postgres) pingTCP(ctx context.Context) error {
	cfg, err := pgconn.ParseConfig(p.DSN(p.SuperUser, p.SuperPassword, "postgres"))
	if err != nil {
		return fmt.Errorf("parse superuser DSN: %w", err)
	}
	cfg.RuntimeParams["application_name"] = AdminApplicationName
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// Stop stops the server and keeps its data directory; Start brings it back
// on the same port. Stopping a stopped server does nothing.
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()
	p.stopOrFail(tb)
}

// Start starts a stopped server on the same port as before and waits until
// it accepts logins. Starting a running server does nothing. It fails the
// test if the port was taken in the meantime.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()
	p.startOrFail(tb)
}

// Restart is Stop then Start.
func (p *Postgres) Restart(tb testing.TB) {
	tb.Helper()
	p.Stop(tb)
	p.Start(tb)
}

// Running reports whether the server process is up (it may still be
// starting or stopping).
func (p *Postgres) Running() bool { return p.running() }

// PostmasterPID returns the pid of the running postmaster, or 0.
func (p *Postgres) PostmasterPID() int { return p.runningPID() }

// Addr returns "127.0.0.1:port".
func (p *Postgres) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// DSN returns a TCP URL for pgx or libpq:
// postgres://user:password@127.0.0.1:port/db?sslmode=disable. An empty
// password leaves it out. Append more parameters with "&k=v".
func (p *Postgres) DSN(user, password, db string) string {
	return buildDSN(p.Host, p.Port, user, password, db, nil)
}

func buildDSN(host string, port int, user, password, db string, params url.Values) string {
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/" + db}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	q := url.Values{"sslmode": {"disable"}}
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// adminConfig is the superuser over the unix socket (trust).
func (p *Postgres) adminConfig(db string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host='%s' port=%d user=postgres dbname='%s' sslmode=disable application_name=%s",
		p.SocketDir, p.Port, strings.ReplaceAll(db, "'", `\'`), AdminApplicationName))
	if err != nil {
		return nil, fmt.Errorf("build admin connection config: %w", err)
	}
	return cfg, nil
}

func (p *Postgres) connectAdmin(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := p.adminConfig(db)
	if err != nil {
		return nil, err
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect as superuser over the unix socket (port %d): %w", p.Port, err)
	}
	return c, nil
}

// AdminConn returns a superuser connection to the "postgres" database over
// the unix socket, closed on cleanup. application_name is
// AdminApplicationName. Use it from one goroutine at a time.
func (p *Postgres) AdminConn(tb testing.TB) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	c, err := p.connectAdmin(ctx, "postgres")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// Exec runs sql as the superuser in the "postgres" database on a fresh
// connection, failing the test on error.
func (p *Postgres) Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	if err := p.exec(sql, args...); err != nil {
		tb.Fatal(err)
	}
}

func (p *Postgres) exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	c, err := p.connectAdmin(ctx, "postgres")
	if err != nil {
		return err
	}
	defer func() { _ = c.Close(ctx) }()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("superuser exec %q: %w", sql, err)
	}
	return nil
}

// QueryInt runs a one-row, one-column query as the superuser and returns
// the value as int64 (the column must be an integer type, or numeric without
// fraction).
func (p *Postgres) QueryInt(tb testing.TB, sql string, args ...any) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	c, err := p.connectAdmin(ctx, "postgres")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = c.Close(ctx) }()
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		tb.Fatalf("superuser query %q: %v", sql, err)
	}
	return n
}

// CreateDatabase creates a database (name quoted as an identifier).
func (p *Postgres) CreateDatabase(tb testing.TB, name string) {
	tb.Helper()
	p.Exec(tb, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// CreateRole creates a role with a password (none when empty) and extra
// CREATE ROLE options, e.g. "LOGIN", "IN ROLE pg_monitor", "CONNECTION
// LIMIT 5". Attributes are SQL, spliced verbatim.
func (p *Postgres) CreateRole(tb testing.TB, name, password string, attrs ...string) {
	tb.Helper()
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize()
	if password != "" || len(attrs) > 0 {
		sql += " WITH"
	}
	if password != "" {
		sql += " PASSWORD " + quoteLiteral(password)
	}
	for _, a := range attrs {
		sql += " " + a
	}
	if err := p.exec(sql); err != nil {
		// The error quotes the statement, which holds the password.
		tb.Fatalf("create role %q: %v", name, redact(err, password))
	}
}

// quoteLiteral quotes s as a standard SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

type redactedError struct{ msg string }

func (e redactedError) Error() string { return e.msg }

// redact removes secret from err's message.
func redact(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	return redactedError{strings.ReplaceAll(err.Error(), quoteLiteral(secret), "'[REDACTED]'")}
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
	deadline := time.Now().Add(timeout)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	last, lastErr := -1, error(nil)
	for polls := 0; ; polls++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if conn == nil {
			conn, lastErr = p.connectAdmin(ctx, "postgres")
		}
		if conn != nil {
			var n int
			lastErr = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE `+backendsWhere, applicationName).Scan(&n)
			if lastErr != nil {
				_ = conn.Close(ctx)
				conn = nil
			} else {
				last = n
				if cond(n) {
					cancel()
					return n
				}
			}
		}
		cancel()
		if !time.Now().Before(deadline) {
			tb.Fatalf("backends with application_name %q: condition not met within %v after %d polls; last count %d, last error %v",
				applicationName, timeout, polls+1, last, lastErr)
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TerminateBackends calls pg_terminate_backend on every client backend with
// this application_name and returns how many were signalled. The backends
// are gone from pg_stat_activity only a moment later (see WaitBackends).
func (p *Postgres) TerminateBackends(tb testing.TB, applicationName string) int {
	tb.Helper()
	return int(p.QueryInt(tb, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE `+backendsWhere, applicationName))
}
