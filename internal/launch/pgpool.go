package launch

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// PgpoolOptions configures a throwaway Pgpool-II.
type PgpoolOptions struct {
	// NumInitChildren is num_init_children, the number of child processes
	// and so of concurrent clients; 0 means 4.
	NumInitChildren int
	// MaxPool is max_pool, the cached backend connections per child; 0
	// means 2.
	MaxPool int
	// Users are pool_passwd entries: user -> plaintext password (written as
	// TEXT entries). Each must be a PostgreSQL role with the same password:
	// Pgpool-II authenticates the client with it and then logs in to every
	// backend node with it. launch adds the superuser itself.
	Users map[string]string
	// Extra holds more pgpool.conf settings, written verbatim (quote string
	// values: "'on'" is not needed for booleans, "'x'" is for strings). They
	// override launch's own settings, except the ports and directories.
	Extra map[string]string
}

// Pgpool is a throwaway Pgpool-II 4.3, running in the foreground as a child
// of this process (`pgpool -n`), in front of one or more PostgreSQL
// clusters (its backend nodes, in order). Its methods are safe for
// concurrent use; Stop, Start and Close are serialized.
type Pgpool struct {
	Host       string // always "127.0.0.1"
	Port       int    // TCP port, the same across Stop/Start
	Dir        string // temp root: pgpool.conf, pool_hba.conf, pool_passwd, sockets, status file
	ConfigPath string
	LogPath    string

	backends []*Postgres
	opts     PgpoolOptions
	server
}

const (
	pgpoolStartBudget = 60 * time.Second
	pgpoolStopGrace   = 10 * time.Second
)

// StartPgpool starts Pgpool-II in front of backends (node 0, 1, ...) and
// returns once a superuser can run SHOW POOL_VERSION through it; Close stops
// it (SIGINT, fast shutdown: clients are disconnected; SIGKILL after 10 s)
// and removes its directory.
//
// Settings: backend_clustering_mode streaming_replication (the node that is
// not in recovery is the primary; the others show as standby), load
// balancing off, listen_addresses 127.0.0.1 on a random port, PCP on the
// unix socket only, every socket and file in Dir, pool_hba on with
// scram-sha-256 for TCP clients (pool_passwd holds TEXT passwords),
// health checks every second as the superuser (a node that stops is
// detached within about a second; a node that comes back stays detached
// until pcp_attach_node, as in production without auto_failback), and the
// status file discarded at every start (-D), so that a restart sees every
// node up.
func StartPgpool(backends []*Postgres, opts PgpoolOptions) (*Pgpool, error) {
	if err := checkDependency("pgpool"); err != nil {
		return nil, err
	}
	if len(backends) == 0 {
		return nil, fmt.Errorf("pgpool needs at least one backend")
	}
	r, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := r.makeServerDir("pgpool")
	if err != nil {
		return nil, err
	}
	p := &Pgpool{
		Host:       "127.0.0.1",
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "pgpool.conf"),
		LogPath:    filepath.Join(dir, "pgpool.log"),
		backends:   backends,
		opts:       opts,
	}
	p.server = server{
		name:         "pgpool",
		port:         &p.Port,
		dir:          dir,
		logPath:      p.LogPath,
		run:          r,
		startBudget:  pgpoolStartBudget,
		stopSignal:   syscall.SIGINT, // fast shutdown
		stopGrace:    pgpoolStopGrace,
		bindFailures: []string{"Address already in use"},
		args:         p.writeConfig,
		ready: func(ctx context.Context) error {
			_, err := p.Query(ctx, "SHOW POOL_VERSION")
			return err
		},
	}
	for name, data := range map[string]string{
		"pool_hba.conf": "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
		"pool_passwd":   p.poolPasswd(),
		"pcp.conf":      "",
	} {
		if err := r.writeFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := p.startLocked(true); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// poolPasswd renders pool_passwd: "user:TEXTpassword" lines.
func (p *Pgpool) poolPasswd() string {
	users := map[string]string{p.backends[0].SuperUser: p.backends[0].SuperPassword}
	for u, pw := range p.opts.Users {
		users[u] = pw
	}
	var sb strings.Builder
	for _, u := range slices.Sorted(maps.Keys(users)) {
		fmt.Fprintf(&sb, "%s:TEXT%s\n", u, users[u])
	}
	return sb.String()
}

// quoteConf quotes a pgpool.conf string value.
func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// config renders pgpool.conf.
func (p *Pgpool) config() string {
	children, maxPool := p.opts.NumInitChildren, p.opts.MaxPool
	if children <= 0 {
		children = 4
	}
	if maxPool <= 0 {
		maxPool = 2
	}
	su, pw := quoteConf(p.backends[0].SuperUser), quoteConf(p.backends[0].SuperPassword)
	set := map[string]string{
		"backend_clustering_mode":        "'streaming_replication'",
		"num_init_children":              strconv.Itoa(children),
		"max_pool":                       strconv.Itoa(maxPool),
		"child_life_time":                "0",
		"connection_life_time":           "0",
		"client_idle_limit":              "0",
		"load_balance_mode":              "off",
		"enable_pool_hba":                "on",
		"pool_passwd":                    quoteConf(filepath.Join(p.Dir, "pool_passwd")),
		"sr_check_period":                "0",
		"sr_check_user":                  su,
		"sr_check_password":              pw,
		"health_check_period":            "1",
		"health_check_timeout":           "2",
		"health_check_max_retries":       "0",
		"health_check_user":              su,
		"health_check_password":          pw,
		"connect_timeout":                "2000",
		"search_primary_node_timeout":    "10",
		"failover_on_backend_error":      "on",
		"log_destination":                "'stderr'",
		"logging_collector":              "off",
		"log_line_prefix":                "'%m: %a pid %p: '",
		"memory_cache_enabled":           "off",
		"use_watchdog":                   "off",
		"allow_clear_text_frontend_auth": "off",
	}
	for i, b := range p.backends {
		n := strconv.Itoa(i)
		set["backend_hostname"+n] = quoteConf(b.Host)
		set["backend_port"+n] = strconv.Itoa(b.Port)
		set["backend_weight"+n] = "1"
		set["backend_data_directory"+n] = quoteConf(b.DataDir)
		set["backend_flag"+n] = "'ALLOW_TO_FAILOVER'"
		set["backend_application_name"+n] = quoteConf("node" + n)
	}
	maps.Copy(set, p.opts.Extra)
	// Fixed: the ports and directories are launch's.
	set["listen_addresses"] = quoteConf(p.Host)
	set["port"] = strconv.Itoa(p.Port)
	set["unix_socket_directories"] = quoteConf(p.Dir)
	set["pcp_listen_addresses"] = "''"
	set["pcp_socket_dir"] = quoteConf(p.Dir)
	set["wd_ipc_socket_dir"] = quoteConf(p.Dir)
	set["pid_file_name"] = quoteConf(filepath.Join(p.Dir, "pgpool.pid"))
	set["logdir"] = quoteConf(p.Dir)
	set["memqcache_oiddir"] = quoteConf(filepath.Join(p.Dir, "oiddir"))
	var sb strings.Builder
	sb.WriteString("# written by poolwatch internal/launch\n")
	writeSettings(&sb, set)
	return sb.String()
}

// writeConfig writes pgpool.conf for the current port and returns the
// pgpool command line: foreground (-n), status file discarded (-D).
func (p *Pgpool) writeConfig() ([]string, error) {
	if err := p.run.writeFile(p.ConfigPath, []byte(p.config()), 0o600); err != nil {
		return nil, err
	}
	// A PCP port must be valid even though PCP listens on its socket only.
	return []string{"-n", "-D",
		"-f", p.ConfigPath,
		"-F", filepath.Join(p.Dir, "pcp.conf"),
		"-a", filepath.Join(p.Dir, "pool_hba.conf"),
	}, nil
}

// Running reports whether the Pgpool-II main process is up.
func (p *Pgpool) Running() bool { return p.running() }

// PID returns the pid of the running main process, or 0.
func (p *Pgpool) PID() int { return p.runningPID() }

// Addr returns "127.0.0.1:port".
func (p *Pgpool) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// NumInitChildren returns the effective num_init_children.
func (p *Pgpool) NumInitChildren() int {
	if p.opts.NumInitChildren <= 0 {
		return 4
	}
	return p.opts.NumInitChildren
}

// DSN returns a TCP URL for pgx or libpq through Pgpool-II:
// postgres://user:pw@127.0.0.1:port/db?sslmode=disable.
func (p *Pgpool) DSN(user, password, db string) string {
	return buildDSN(p.Host, p.Port, user, password, db, nil)
}

// Query logs in through Pgpool-II as the backends' superuser over TCP (it
// takes a child for the length of the call), runs one statement with the
// simple protocol ("SHOW POOL_NODES") and returns the rows of its last
// result.
func (p *Pgpool) Query(ctx context.Context, sql string) (*ShowResult, error) {
	su := p.backends[0]
	cfg, err := pgconn.ParseConfig(p.DSN(su.SuperUser, su.SuperPassword, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("parse pgpool DSN: %w", err)
	}
	cfg.RuntimeParams["application_name"] = AdminApplicationName
	return simpleQuery(ctx, cfg, "pgpool", sql)
}

// simpleQuery connects with cfg, runs sql with the simple protocol and
// returns the rows of its last result, closing the connection. Its errors
// name the server as what ("pgbouncer console") and the port it dialled.
func simpleQuery(ctx context.Context, cfg *pgconn.Config, what, sql string) (*ShowResult, error) {
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s on port %d: %w", what, cfg.Port, err)
	}
	defer func() { _ = c.Close(ctx) }()
	results, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, sql, err)
	}
	return showResult(results), nil
}

// showResult converts the last of results to a ShowResult.
func showResult(results []*pgconn.Result) *ShowResult {
	res := &ShowResult{}
	if len(results) == 0 {
		return res
	}
	last := results[len(results)-1]
	for _, fd := range last.FieldDescriptions {
		res.Columns = append(res.Columns, fd.Name)
		res.TypeOIDs = append(res.TypeOIDs, fd.DataTypeOID)
	}
	for _, row := range last.Rows {
		vals := make([]*string, len(row))
		for i, v := range row {
			if v != nil {
				s := string(v)
				vals[i] = &s
			}
		}
		res.Rows = append(res.Rows, vals)
	}
	return res
}
