package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/jackc/pgx/v5/pgconn"
)

// PgBouncerOptions configures a throwaway PgBouncer.
type PgBouncerOptions struct {
	// PoolMode is pool_mode; "" means "transaction".
	PoolMode string
	// Pool settings; 0 leaves PgBouncer's default (default_pool_size 20,
	// min_pool_size 0, reserve_pool_size 0, max_client_conn 100,
	// max_db_connections 0 = unlimited).
	DefaultPoolSize, MinPoolSize, ReservePoolSize, MaxClientConn, MaxDBConnections int
	// Databases is the [databases] section: name -> connection string
	// fragment, e.g. "dbname=appdb pool_size=3 reserve_pool=0". host and port
	// of the Postgres are prepended unless the fragment sets them. Without
	// user= in the fragment, PgBouncer logs in to PostgreSQL as the client's
	// user with that user's password from Users, so the role must exist in
	// PostgreSQL with the same password (see Postgres.CreateRole).
	Databases map[string]string
	// Users is userlist.txt: user -> plaintext password. auth_type is
	// scram-sha-256: clients must present the right password, and PgBouncer
	// can log in to PostgreSQL (which uses SCRAM over TCP) with it.
	Users map[string]string
	// AdminUsers and StatsUsers are admin_users and stats_users. launch
	// always adds its own admin user (PgBouncer.AdminUser) for AdminQuery.
	AdminUsers, StatsUsers []string
	// Extra holds more [pgbouncer] settings; they override everything else,
	// including launch's defaults (server_login_retry = 1).
	Extra map[string]string
}

// PgBouncer is a throwaway PgBouncer 1.18, running in the foreground as a
// child of this process. Its methods are safe for concurrent use; Stop,
// Start and Close are serialized.
type PgBouncer struct {
	Host          string // always "127.0.0.1"
	Port          int    // TCP port, the same across Stop/Start
	Dir           string // temp root: pgbouncer.ini, userlist.txt, pgbouncer.log, unix socket
	ConfigPath    string
	LogPath       string
	AdminUser     string // launch's console user, always in admin_users
	AdminPassword string // random per instance

	pg   *Postgres
	opts PgBouncerOptions
	server
}

const (
	pgbStartBudget = 30 * time.Second
	pgbStopGrace   = 10 * time.Second
	// pgbAdminUser is the console user launch adds to every instance.
	pgbAdminUser = "testenv_admin"
)

// StartPgBouncer starts PgBouncer in front of pg and returns once its admin
// console answers SHOW VERSION; Close stops it (SIGTERM, then SIGKILL after
// 10 s) and removes its directory.
//
// Settings written besides the options: listen_addr 127.0.0.1, a random
// port, unix_socket_dir = Dir, auth_type scram-sha-256, no logfile (the log
// is stderr, captured in LogPath), and server_login_retry = 1 instead of 15
// so that a PostgreSQL restart does not stall tests for 15 s (override in
// Extra). ignore_startup_parameters is left empty: pgx sends no
// extra_float_digits, and 1.18 handles application_name natively (it
// reaches PostgreSQL's pg_stat_activity on the linked server connection).
// Any other startup parameter (lib/pq's extra_float_digits, a
// statement_timeout runtime parameter) is refused with "unsupported startup
// parameter" by pooled databases and the console alike, unless listed in
// Extra["ignore_startup_parameters"].
func StartPgBouncer(pg *Postgres, opts PgBouncerOptions) (*PgBouncer, error) {
	if err := checkDependency("pgbouncer"); err != nil {
		return nil, err
	}
	r, err := serverUser()
	if err != nil {
		return nil, err
	}
	if _, ok := opts.Users[pgbAdminUser]; ok {
		return nil, fmt.Errorf("user %q is reserved for launch", pgbAdminUser)
	}
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("generate admin password: %w", err)
	}
	dir, err := r.makeServerDir("pgb")
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{
		Host:          "127.0.0.1",
		Dir:           dir,
		ConfigPath:    filepath.Join(dir, "pgbouncer.ini"),
		LogPath:       filepath.Join(dir, "pgbouncer.log"),
		AdminUser:     pgbAdminUser,
		AdminPassword: hex.EncodeToString(pw),
		pg:            pg,
		opts:          opts,
	}
	b.server = server{
		name:         "pgbouncer",
		port:         &b.Port,
		dir:          dir,
		logPath:      b.LogPath,
		run:          r,
		startBudget:  pgbStartBudget,
		stopSignal:   syscall.SIGTERM, // clients are disconnected
		stopGrace:    pgbStopGrace,
		stopExitCode: 1, // PgBouncer 1.18 exits with status 1 on SIGTERM.
		bindFailures: []string{"Address already in use"},
		args:         b.writeConfig,
		ready: func(ctx context.Context) error {
			_, err := b.AdminQuery(ctx, "SHOW VERSION")
			return err
		},
	}
	if err := r.writeFile(filepath.Join(dir, "userlist.txt"), []byte(b.userlist()), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := b.startLocked(true); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

// quoteUserlist quotes a userlist.txt field: double quotes, doubled inside.
func quoteUserlist(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (b *PgBouncer) userlist() string {
	var sb strings.Builder
	users := map[string]string{b.AdminUser: b.AdminPassword}
	for u, p := range b.opts.Users {
		users[u] = p
	}
	for _, u := range slices.Sorted(maps.Keys(users)) {
		fmt.Fprintf(&sb, "%s %s\n", quoteUserlist(u), quoteUserlist(users[u]))
	}
	return sb.String()
}

// hasKey reports whether a libpq-style fragment sets key.
func hasKey(fragment, key string) bool {
	for _, f := range strings.Fields(fragment) {
		if k, _, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}

// config renders pgbouncer.ini.
func (b *PgBouncer) config() string {
	var sb strings.Builder
	sb.WriteString("; written by poolwatch internal/launch\n[databases]\n")
	for _, name := range slices.Sorted(maps.Keys(b.opts.Databases)) {
		frag := b.opts.Databases[name]
		var prefix []string
		if !hasKey(frag, "host") {
			prefix = append(prefix, "host="+b.pg.Host)
		}
		if !hasKey(frag, "port") {
			prefix = append(prefix, "port="+strconv.Itoa(b.pg.Port))
		}
		fmt.Fprintf(&sb, "%s = %s\n", name, strings.TrimSpace(strings.Join(append(prefix, frag), " ")))
	}
	poolMode := b.opts.PoolMode
	if poolMode == "" {
		poolMode = "transaction"
	}
	set := map[string]string{
		"listen_addr":        b.Host,
		"listen_port":        strconv.Itoa(b.Port),
		"unix_socket_dir":    b.Dir,
		"auth_type":          "scram-sha-256",
		"auth_file":          filepath.Join(b.Dir, "userlist.txt"),
		"admin_users":        strings.Join(append([]string{b.AdminUser}, b.opts.AdminUsers...), ", "),
		"pool_mode":          poolMode,
		"server_login_retry": "1",
	}
	if len(b.opts.StatsUsers) > 0 {
		set["stats_users"] = strings.Join(b.opts.StatsUsers, ", ")
	}
	for k, v := range map[string]int{
		"default_pool_size":  b.opts.DefaultPoolSize,
		"min_pool_size":      b.opts.MinPoolSize,
		"reserve_pool_size":  b.opts.ReservePoolSize,
		"max_client_conn":    b.opts.MaxClientConn,
		"max_db_connections": b.opts.MaxDBConnections,
	} {
		if v != 0 {
			set[k] = strconv.Itoa(v)
		}
	}
	maps.Copy(set, b.opts.Extra)
	set["listen_port"] = strconv.Itoa(b.Port) // the port is launch's
	sb.WriteString("\n[pgbouncer]\n")
	writeSettings(&sb, set)
	return sb.String()
}

// writeSettings writes set into sb as "key = value" lines sorted by key,
// the form of pgbouncer.ini and pgpool.conf. Values are written as they
// are: quoting is the caller's.
func writeSettings(sb *strings.Builder, set map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(sb, "%s = %s\n", k, set[k])
	}
}

// writeConfig writes pgbouncer.ini for the current port and returns the
// pgbouncer command line.
func (b *PgBouncer) writeConfig() ([]string, error) {
	if err := b.run.writeFile(b.ConfigPath, []byte(b.config()), 0o600); err != nil {
		return nil, err
	}
	return []string{b.ConfigPath}, nil
}

// Running reports whether the PgBouncer process is up.
func (b *PgBouncer) Running() bool { return b.running() }

// PID returns the pid of the running PgBouncer, or 0.
func (b *PgBouncer) PID() int { return b.runningPID() }

// Addr returns "127.0.0.1:port".
func (b *PgBouncer) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// DSN returns a pgx URL for a pooled database or, with db "pgbouncer", the
// admin console:
//
//	postgres://user:pw@127.0.0.1:port/db?sslmode=disable&default_query_exec_mode=simple_protocol
//
// default_query_exec_mode=simple_protocol is needed for both: the console
// speaks only the simple query protocol, and 1.18 in transaction mode has no
// prepared-statement support. The parameter is pgx's own (pgx removes it
// before connecting); libpq, lib/pq and psql reject it, so give them
// RawDSN. An empty password leaves it out.
func (b *PgBouncer) DSN(user, password, db string) string {
	return buildDSN(b.Host, b.Port, user, password, db, url.Values{"default_query_exec_mode": {"simple_protocol"}})
}

// RawDSN is DSN without default_query_exec_mode, for libpq-style clients.
func (b *PgBouncer) RawDSN(user, password, db string) string {
	return buildDSN(b.Host, b.Port, user, password, db, nil)
}

// ShowResult is the text-format result of an admin console command.
type ShowResult struct {
	Columns []string
	// TypeOIDs are the PostgreSQL type OIDs PgBouncer declares per column
	// (25 text, 20 int8, 23 int4, 1700 numeric, 1184 timestamptz...).
	TypeOIDs []uint32
	// Rows hold the raw text values; nil is SQL NULL.
	Rows [][]*string
}

// Col returns the index of a column, or -1.
func (r *ShowResult) Col(name string) int {
	for i, c := range r.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

// Records returns the rows as column -> value maps (NULL as "").
func (r *ShowResult) Records() []map[string]string {
	out := make([]map[string]string, 0, len(r.Rows))
	for _, row := range r.Rows {
		m := make(map[string]string, len(row))
		for i, v := range row {
			if v != nil {
				m[r.Columns[i]] = *v
			} else {
				m[r.Columns[i]] = ""
			}
		}
		out = append(out, m)
	}
	return out
}

// AdminQuery logs in to the console as AdminUser over TCP, runs one command
// with the simple protocol ("SHOW POOLS", "PAUSE appdb", "RELOAD") and
// returns the rows of its last result.
func (b *PgBouncer) AdminQuery(ctx context.Context, cmd string) (*ShowResult, error) {
	cfg, err := pgconn.ParseConfig(b.RawDSN(b.AdminUser, b.AdminPassword, "pgbouncer"))
	if err != nil {
		return nil, fmt.Errorf("parse console DSN: %w", err)
	}
	return simpleQuery(ctx, cfg, "pgbouncer console", cmd)
}
