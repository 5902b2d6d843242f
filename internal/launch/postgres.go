package launch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	// launch's own (see StartPostgres).
	ExtraConf map[string]string
}

// Postgres is a throwaway PostgreSQL 15 cluster listening on Host:Port and
// on a unix socket in SocketDir. Its methods are safe for concurrent use;
// Stop, Start and Close are serialized.
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
	// AdminApplicationName is the application_name of the superuser
	// connections opened here (readiness checks, ConnectAdmin).
	AdminApplicationName = "testenv-admin"
)

// StartPostgres starts a throwaway cluster and returns once it accepts
// logins; Close stops it (SIGINT, then SIGKILL after 15 s) and removes its
// directory.
//
// The cluster is a copy of a template made by initdb once per process (see
// the package doc), so starting one costs a directory copy and a server
// start, typically well under a second. Settings, in this order of
// precedence: opts.ExtraConf, opts.MaxConnections/SuperuserReserved, then
// the speed settings (fsync, synchronous_commit and full_page_writes off,
// shared_buffers=16MB, wal_level=minimal, autovacuum and jit off).
// pg_hba: trust over the unix socket, scram-sha-256 over TCP from loopback.
//
// When the server does not come up, the error holds its log's tail.
func StartPostgres(opts PostgresOptions) (*Postgres, error) {
	if err := checkDependency("postgres"); err != nil {
		return nil, err
	}
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

	args := []string{"-D", p.DataDir}
	for _, k := range slices.Sorted(maps.Keys(conf)) {
		args = append(args, "-c", k+"="+conf[k])
	}
	return args
}

// pingTCP logs in over TCP as the superuser with its password, and waits
// until that session's backend has exited: a started cluster has every
// slot free.
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
	pid := int(c.PID())
	return errors.Join(c.Close(ctx), waitExit(ctx, pid))
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

// ConnectAdmin connects as the superuser to db over the unix socket
// (trust), with application_name AdminApplicationName. Close the
// connection with CloseConn.
func (p *Postgres) ConnectAdmin(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host='%s' port=%d user=postgres dbname='%s' sslmode=disable application_name=%s",
		p.SocketDir, p.Port, strings.ReplaceAll(db, "'", `\'`), AdminApplicationName))
	if err != nil {
		return nil, fmt.Errorf("build admin connection config: %w", err)
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect as superuser over the unix socket (port %d): %w", p.Port, err)
	}
	return c, nil
}

// CloseConn closes c, a connection to a server on this machine, and waits,
// within ctx, until its backend process has exited. A closed connection's
// backend goes away a moment after the client: until it has, it holds one
// of max_connections' slots, and a test that counts slots sees one too
// many.
func CloseConn(ctx context.Context, c *pgx.Conn) error {
	pid := int(c.PgConn().PID())
	err := c.Close(ctx)
	if werr := waitExit(ctx, pid); werr != nil {
		err = errors.Join(err, fmt.Errorf("backend %d: %w", pid, werr))
	}
	return err
}

// waitExit polls every 2 ms until pid has exited or ctx is done.
func waitExit(ctx context.Context, pid int) error {
	for pidAlive(pid) {
		t := time.NewTimer(2 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("still running: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Exec runs sql as the superuser in the "postgres" database on a connection
// of its own, closed (its backend gone) before it returns.
func (p *Postgres) Exec(ctx context.Context, sql string, args ...any) (err error) {
	c, err := p.ConnectAdmin(ctx, "postgres")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, CloseConn(ctx, c)) }()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("superuser exec %q: %w", sql, err)
	}
	return nil
}

// TerminateIdleBackends calls pg_terminate_backend, as the superuser, on
// every client backend that is idle (state 'idle': between transactions,
// not in one) and whose application_name is one of names, and returns how
// many it signalled. This is the fault of a database that drops idle
// sessions (idle_session_timeout, a failover, an operator): a pool holding
// those connections finds them dead at its next checkout. The backends
// leave pg_stat_activity a moment after the call returns.
func (p *Postgres) TerminateIdleBackends(ctx context.Context, names ...string) (n int, err error) {
	c, err := p.ConnectAdmin(ctx, "postgres")
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, CloseConn(ctx, c)) }()
	const q = `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'idle' AND application_name = ANY($1) AND pid <> pg_backend_pid()`
	if err := c.QueryRow(ctx, q, names).Scan(&n); err != nil {
		return 0, fmt.Errorf("terminate idle backends of %q: %w", names, err)
	}
	return n, nil
}

// CreateRole creates a role with a password (none when empty) and extra
// CREATE ROLE options, e.g. "LOGIN", "IN ROLE pg_monitor", "CONNECTION
// LIMIT 5". Attributes are SQL, spliced verbatim. The password never
// appears in the error.
func (p *Postgres) CreateRole(ctx context.Context, name, password string, attrs ...string) error {
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
	if err := p.Exec(ctx, sql); err != nil {
		// The error quotes the statement, which holds the password.
		return fmt.Errorf("create role %q: %w", name, redact(err, password))
	}
	return nil
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
