// Package config loads and validates poolwatch's YAML configuration.
//
// Parsing is strict: every key is known, every value has the right type and
// range, and every error names the file, the line and the YAML path of the
// offending key on one line (see Error). A *Config can only be obtained from
// Load or Parse, so holding one means the configuration passed validation.
//
// The file has four top-level keys: defaults and targets; auth_modules and
// probe, for /probe by address (probe.go). Every key under defaults can be
// overridden per target; mappings (labels, tls, probe_pool) merge key by
// key. config.yaml.example at the top of the repository documents every key
// and its default.
//
// # How a setting is declared
//
// A key is one field of Target (or of a type it holds), and its struct tags
// say everything the decoder needs (decode.go): `yaml` is the key, `default`
// its built-in default written as in YAML (absent: the zero value), `check`
// its rules (required, nonempty, positive, ms for whole milliseconds,
// nullable for null as empty, path for a file resolved against the
// configuration's directory, labels for label names), `only:"target"`
// keeps it out of defaults, and `item` and `hint` word its errors. Rules
// that span several keys live in the one validation pass (resolve.go).
//
// # What is checked at load
//
// Besides the types and ranges of all values: target names are unique and
// URL-safe; DSNs parse with pgx exactly as the probe pool will parse them;
// each target has at most one password source; a password_file is a regular
// file that can be opened and is not empty (its content is otherwise read
// only by PasswordSource.Read, once per new connection); a password_env
// variable is set and not empty; tls files are regular files that can be
// opened; static labels are valid Prometheus label names and do not clash
// with the labels poolwatch sets itself (ReservedLabels). No check blocks: a
// FIFO or a device named as a file is refused, not opened for reading.
//
// # Relative paths
//
// password_file, tls.ca_file, tls.cert_file and tls.key_file are resolved
// relative to the directory of the configuration file, as Prometheus does.
// Target holds the resolved paths.
//
// # DSNs
//
// A DSN is a postgres:// or postgresql:// URL or a keyword/value string
// ("host=db1 user=poolwatch dbname=postgres"), and it must parse with
// pgx.ParseConfig, which is what the probe pool uses; like pgx, validation
// sees the PG* environment variables, and paths inside a DSN (sslrootcert…)
// are pgx's: relative to the working directory. Rejected: other URL schemes,
// several hosts (a target is one server), pgxpool's pool_* keys and
// statement_timeout or lock_timeout (probe_pool sets those), and, for a
// pgbouncer target, any database but the admin console "pgbouncer".
// dsn.go is the one place that parses, rewrites (Target.ConnString) and
// redacts (RedactDSN, RedactSecrets) a DSN.
//
// # Application targets
//
// A target of kind application is read over HTTP (url, format, pool_label,
// http_client, body_size_limit) and has no DSN, password, tls, probe_pool,
// application_pools or leak_threshold: set on the target, those are errors;
// under defaults they are ignored for it. Its http_client is
// prometheus/common's HTTPClientConfig, decoded strictly by that package's
// own YAML methods and validated by it. Its seen_as entries name postgres
// or pgbouncer targets of the same file; the load records on each such
// server the application_name globs to count (Target.Applications).
//
// # Secrets
//
// No error produced by this package contains a password, whether it was
// written in a DSN or read from a file or the environment. Errors do not
// quote DSNs at all; use RedactDSN or Target.RedactedDSN to show one.
package config

import (
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"time"

	promconfig "github.com/prometheus/common/config"
)

// Kind is the kind of a target.
type Kind string

// The kinds of target.
const (
	// KindPostgres is a PostgreSQL server, watched through pg_stat_activity.
	KindPostgres Kind = "postgres"
	// KindPgBouncer is a PgBouncer admin console (database "pgbouncer").
	KindPgBouncer Kind = "pgbouncer"
	// KindPgpool is a Pgpool-II, watched through its SHOW POOL_* commands
	// on one connection, which holds one of its child processes.
	KindPgpool Kind = "pgpool"
	// KindPgCat is a PgCat admin console (database "pgcat").
	KindPgCat Kind = "pgcat"
	// KindOdyssey is an Odyssey admin console (a route with storage
	// "local", by convention database "console").
	KindOdyssey Kind = "odyssey"
	// KindApplication is an application whose own connection pool reports
	// itself over HTTP: Prometheus metrics or a JSON status document.
	KindApplication Kind = "application"
)

// AdminDatabases returns the databases a kind's DSN may name: its admin
// console's (a PgBouncer-style console answers only there), or nil when
// any database will do. Odyssey's console is whichever route the operator
// gives storage "local" ("console" by convention), so any name will do.
func (k Kind) AdminDatabases() []string {
	switch k {
	case KindPgBouncer:
		return []string{"pgbouncer"}
	case KindPgCat:
		return []string{"pgcat", "pgbouncer"}
	}
	return nil
}

// PgpoolMaxProbeConnections is the most connections a pgpool target's
// probe pool may hold: each takes one of Pgpool-II's child processes for as
// long as it is open.
const PgpoolMaxProbeConnections = 1

// ReservedLabels are the label names that poolwatch sets itself, on pool
// series (target, pool, state), on info metrics (kind, database, user, mode,
// version, upstream), on error counters (query), on PgBouncer's lists and
// caches (list, cache), on Pgpool-II's backend nodes (node, role, address),
// or that Prometheus attaches at scrape time (job, instance). A static label
// may not use one of them, nor a name starting with "__".
func ReservedLabels() []string {
	return []string{"target", "pool", "job", "instance", "kind", "database", "user", "mode", "query", "version",
		"state", "list", "cache", "node", "role", "address", "upstream", "reason", "refusal"}
}

// ServerPoolName is the pool name of a postgres target's connection slots. An
// application pool may not use it.
const ServerPoolName = "server"

// Config is a validated configuration. The only way to get one is Load or
// Parse; its fields are unexported and its accessors return copies, so a
// *Config is immutable and safe for concurrent use.
type Config struct {
	targets []Target
	index   map[string]int
	// defaults are the defaults as written, the base of AddressTarget;
	// modules and probe configure probes by address (probe.go).
	defaults Target
	modules  map[string]AuthModule
	probe    Probe
}

// Load reads the file at path and parses it with Parse. Relative file paths
// inside the configuration are resolved against the directory of path. A
// failure to read the file wraps the os error; any other error is an *Error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path) //nolint:gosec // reading the operator's config file is the point
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates a configuration. filename is used in error
// messages, and its directory is the base for relative file paths in the
// configuration. Any error it returns is an *Error.
func Parse(filename string, data []byte) (*Config, error) {
	if filename == "" {
		filename = "<input>"
	}
	p := newParser(filename)
	targets, err := p.parse(data)
	if err != nil {
		return nil, err
	}
	c := &Config{targets: targets, index: make(map[string]int, len(targets)), defaults: p.defaults, modules: p.modules, probe: p.probe}
	for i, t := range targets {
		c.index[t.Name] = i
	}
	return c, nil
}

// Targets returns a copy of the targets, in configuration order, with the
// defaults already merged in. The caller may modify the result.
func (c *Config) Targets() []Target {
	if c == nil {
		return nil
	}
	out := make([]Target, len(c.targets))
	for i, t := range c.targets {
		out[i] = t.clone()
	}
	return out
}

// Target returns a copy of the target with the given name.
func (c *Config) Target(name string) (Target, bool) {
	if c == nil {
		return Target{}, false
	}
	i, ok := c.index[name]
	if !ok {
		return Target{}, false
	}
	return c.targets[i].clone(), true
}

// Target is one configured target with the defaults merged in. Every field is
// set after Load: durations and sizes hold their effective values, never a
// "use the default" zero, except where a comment says otherwise.
//
// The struct tags are the configuration's schema (see the package comment);
// the field order is the order in which errors list the valid keys.
type Target struct {
	// Name is unique within the configuration, matches ^[a-zA-Z0-9_.:-]+$
	// and is the value of the `target` label and of /probe?target=.
	Name string `yaml:"name" only:"target" check:"required,nonempty"`
	Kind Kind   `yaml:"kind" only:"target" check:"required"`
	// DSN is the connection string as written: a postgres:// or
	// postgresql:// URL, or a keyword/value string, that pgx parses. It can
	// contain a password: never log it; use RedactedDSN. The probe pool
	// connects with ConnString, which adds the TLS files. Required for
	// postgres and pgbouncer targets; empty for application targets.
	DSN string `yaml:"dsn" only:"target" check:"nonempty"`
	// Password is where the password comes from when it is not in the DSN.
	// The zero value means none besides the DSN.
	Password PasswordSource `yaml:",inline" only:"target"`
	// ApplicationPools are the application pools declared for a postgres
	// target, in configuration order (a backend belongs to the first one
	// that matches it). Always nil for pgbouncer targets, nil when none.
	ApplicationPools []ApplicationPool `yaml:"application_pools" only:"target" item:"an application pool"`
	// ScrapeTimeout bounds one scrape of this target (> 0).
	ScrapeTimeout time.Duration `yaml:"scrape_timeout" default:"5s" check:"positive"`
	// MinScrapeInterval: when > 0, a result younger than this is served
	// again instead of querying the target. 0 means fresh data every scrape.
	MinScrapeInterval time.Duration `yaml:"min_scrape_interval"`
	// LeakThreshold: a connection of the target held this long with no
	// activity counts as leaked (> 0).
	LeakThreshold time.Duration `yaml:"leak_threshold" default:"5m" check:"positive"`
	// SessionModeLeaks, for pgbouncer targets: count linked idle clients of
	// session-mode pools as leaks. Always false for postgres targets.
	SessionModeLeaks bool `yaml:"session_mode_leaks"`
	// MaxPools caps the number of pools exported for this target (>= 1).
	MaxPools int `yaml:"max_pools" default:"1000" check:"positive"`
	// PinnedPools are globs matched against the `pool` label (`*` any run
	// of characters, `?` one character): a pool that matches one ranks
	// first when MaxPools cuts, so that no number of auto-created pools can
	// push it out. They count toward MaxPools. Nil when none.
	PinnedPools []string `yaml:"pinned_pools" check:"nonempty" item:"a pool glob"`
	// LogQueryText, for postgres targets: a leaked connection's log line
	// carries its last query's text, with every string literal and comment
	// redacted. When false (the default) only the query's first keyword
	// and its query_id are logged. Always false for pgbouncer targets.
	LogQueryText bool `yaml:"log_query_text"`
	// Labels are the static labels of every series of this target: the
	// defaults' labels merged key by key with the target's. A label given
	// the empty value in the target removes the default of that name. Never
	// nil.
	Labels map[string]string `yaml:"labels" check:"labels"`
	// TLS holds optional files for TLS to the target. sslmode comes from
	// the DSN; files given here are never also given in the DSN.
	TLS TLSFiles `yaml:"tls"`
	// ProbePool configures the agent's own pool for this target.
	ProbePool ProbePool `yaml:"probe_pool"`
	// Upstream names the postgres target of this configuration whose server
	// this target's connections end on: for a pgbouncer target, the server
	// behind it. It links the target's leak alerts to that server's, so that
	// Alertmanager sends every view of one leaked connection as one
	// notification (poolwatch_target_upstream_info). Empty: no link. A
	// postgres target is its own upstream and may not set it; an
	// application target that does not set it gets the one its seen_as
	// targets agree on (derived at load). See upstream.go.
	Upstream string `yaml:"upstream" only:"target"`

	// The keys below are for application targets (kind application) only,
	// and hold their zero values on other targets.

	// URL is the application's metrics or status endpoint: an http:// or
	// https:// URL with a host and no user information.
	URL string `yaml:"url" only:"target" check:"nonempty"`
	// Format is what URL serves (default FormatAuto).
	Format Format `yaml:"format" only:"target" default:"auto"`
	// PoolLabel is the label of the exposition that names a pool. Empty:
	// each dialect's own (pool, db_name, db_client_connection_pool_name...);
	// an exposition whose dialect has none (pgxpool) then has one pool,
	// named "default".
	PoolLabel string `yaml:"pool_label" only:"target"`
	// HTTPClient is prometheus/common's HTTP client configuration (TLS,
	// basic auth, authorization, proxy...), with relative file paths
	// resolved; DefaultHTTPClientConfig when not written. Shared between
	// copies of the target: do not modify.
	HTTPClient promconfig.HTTPClientConfig `yaml:"http_client" only:"target"`
	// SeenAs says how server targets of this configuration see the
	// application's connections, for the cross-check; nil when none.
	SeenAs []SeenAs `yaml:"seen_as" only:"target" item:"a seen_as entry"`
	// BodySizeLimit bounds the size of a response, decompressed (> 0;
	// default 10MiB): a larger one fails the scrape.
	BodySizeLimit ByteSize `yaml:"body_size_limit" default:"10MiB" check:"positive"`

	// Applications, on postgres and pgbouncer targets, are the
	// application_name globs that application targets' seen_as entries name
	// on this target, sorted and unique: the server counts its connections
	// per glob and client address for them. Derived at load, not a key.
	Applications []string
}

// TLSFiles are optional files for TLS to a target, the equivalents of
// libpq's sslrootcert, sslcert and sslkey. Empty means not set (in the file,
// "" or null unsets a default). CertFile and KeyFile are either both set or
// both empty. Paths are resolved (see the package comment) and were regular
// files that could be opened at load.
type TLSFiles struct {
	CAFile   string `yaml:"ca_file" check:"nullable,path"`
	CertFile string `yaml:"cert_file" check:"nullable,path"`
	KeyFile  string `yaml:"key_file" check:"nullable,path"`
}

// ApplicationPool is an application's own connection pool, declared on a
// postgres target and recognised by its backends in pg_stat_activity.
type ApplicationPool struct {
	// Name is the value of the `pool` label: unique within the target, not
	// empty and not "server".
	Name string `yaml:"name" check:"required,nonempty"`
	// ApplicationName is a glob matched against application_name: `*`
	// matches any run of characters, `?` any single character, and every
	// other character matches itself. Never empty.
	ApplicationName string `yaml:"application_name" check:"required,nonempty" hint:": use \"*\" to match every application"`
	// User and Database are globs with the same syntax, matched against
	// usename and datname. Empty matches anything.
	User     string `yaml:"user"`
	Database string `yaml:"database"`
	// MinConnections and MaxConnections are the declared size of the
	// application's pool; nil when not declared. When both are set,
	// min <= max; MaxConnections is >= 1.
	MinConnections *int `yaml:"min_connections"`
	MaxConnections *int `yaml:"max_connections" check:"positive"`
}

// ProbePool configures the agent's own connection pool for one target.
type ProbePool struct {
	// MinConnections (>= 0, default 1) are kept open between scrapes once
	// the pool is in use, so that a full server or pooler cannot lock the
	// agent out when it matters; MaxConnections (>= 1, >= MinConnections)
	// is the pool's hard limit.
	MinConnections int `yaml:"min_connections" default:"1"`
	MaxConnections int `yaml:"max_connections" default:"2" check:"positive"`
	// ConnectTimeout bounds dialling and authenticating a new connection;
	// HealthCheckTimeout bounds one health check. Both are > 0 and at most
	// the target's ScrapeTimeout. Defaults: min(3s, scrape timeout) and
	// min(1s, scrape timeout).
	ConnectTimeout     time.Duration `yaml:"connect_timeout" check:"positive"`
	HealthCheckTimeout time.Duration `yaml:"health_check_timeout" check:"positive"`
	// AcquireRetries is the number of retries after a failed first attempt
	// to acquire a healthy connection: an acquire makes at most
	// 1 + AcquireRetries attempts, with a backoff between them. 0 means
	// a single attempt.
	AcquireRetries int `yaml:"acquire_retries" default:"3"`
	// RetryBackoff is the wait before the first retry (>= 0; 0 means retry
	// at once). The probe pool doubles it for each further retry, up to 5s.
	RetryBackoff time.Duration `yaml:"retry_backoff" default:"100ms"`
	// LeakThreshold: one of the agent's own connections held this long
	// counts as leaked (> 0).
	LeakThreshold time.Duration `yaml:"leak_threshold" default:"30s" check:"positive"`
	// IdleClose: a probe pool unused for this long closes its connections.
	// 0 means never.
	IdleClose time.Duration `yaml:"idle_close" default:"10m"`
	// StatementTimeout and LockTimeout are sent as runtime parameters on
	// postgres targets, in whole milliseconds. StatementTimeout is > 0 (a
	// configured 0 means the scrape timeout); LockTimeout 0 means no lock
	// timeout. Both are 0 on pgbouncer targets, whose console rejects them.
	StatementTimeout time.Duration `yaml:"statement_timeout" check:"ms"`
	LockTimeout      time.Duration `yaml:"lock_timeout" default:"1s" check:"ms"`
}

// RedactedDSN returns the DSN with its password replaced by "xxxxx".
func (t Target) RedactedDSN() string { return RedactDSN(t.DSN) }

// Equal reports whether t and o are the same target in every field. Reload
// uses it to keep the pools of unchanged targets. It compares configuration
// only: a changed password file content does not make a target unequal (the
// password is read again for every new connection anyway). Nil and empty
// Labels or ApplicationPools are equal, and pointers are compared by value.
func (t Target) Equal(o Target) bool {
	return reflect.DeepEqual(t.clone(), o.clone())
}

// clone returns a deep copy of t in canonical form: Labels never nil,
// ApplicationPools and PinnedPools nil when empty.
func (t Target) clone() Target {
	c := t
	c.Labels = maps.Clone(t.Labels)
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	c.PinnedPools = nil
	if len(t.PinnedPools) > 0 {
		c.PinnedPools = append([]string(nil), t.PinnedPools...)
	}
	c.SeenAs = slices.Clone(t.SeenAs)
	c.Applications = slices.Clone(t.Applications)
	if len(c.SeenAs) == 0 {
		c.SeenAs = nil
	}
	if len(c.Applications) == 0 {
		c.Applications = nil
	}
	c.ApplicationPools = nil
	for _, p := range t.ApplicationPools {
		p.MinConnections, p.MaxConnections = cloneInt(p.MinConnections), cloneInt(p.MaxConnections)
		c.ApplicationPools = append(c.ApplicationPools, p)
	}
	return c
}

func cloneInt(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
