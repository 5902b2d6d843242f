// Package scrape queries one monitored target (a PgBouncer admin console, a
// PostgreSQL server, or an application that reports its own connection
// pool over HTTP) and turns what it answers into the uniform pool model:
// every pool, whatever its kind, has a floor, a ceiling, a reserve, open and
// in-use connections, waiting clients and leaked connections.
//
// It holds THE model: Result, one target's round, which the scraper fills,
// the agent completes (timing, error counters) and the collector turns into
// metrics as it is; and ProbePool, a snapshot of the agent's own pool for a
// target. New is the one place that picks the code for a kind of target;
// leaks.go the one place for leak detection and its log-once dedup;
// crosscheck.go the one place that compares what an application counts
// with what the server sees of it.
//
// The package knows nothing about Prometheus (package collector turns a
// Result into metrics) and nothing about connection management (a Querier,
// the probe pool, hands it a healthy connection). docs/metrics.md is the
// contract for what every field means and which column or SQL it comes from.
package scrape

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/pool"
)

// Query names recorded in QueryError.Query (and exported in the `query`
// label of poolwatch_target_scrape_errors_total).
const (
	QueryConnect       = "connect"
	QueryShowPools     = "show_pools"
	QueryShowDatabases = "show_databases"
	QueryShowUsers     = "show_users"
	QueryShowConfig    = "show_config"
	QueryShowLists     = "show_lists"
	QueryShowStats     = "show_stats"
	QueryShowClients   = "show_clients"
	QueryShowServers   = "show_servers"
	QueryShowVersion   = "show_version"
	QueryShowMem       = "show_mem"
	QueryActivity      = "activity"
)

// Query names of application targets: the HTTP request (its transport,
// status and size limit), and the parsing and mapping of the response.
const (
	QueryHTTP  = "http"
	QueryParse = "parse"
)

// QueryRound names a round that failed as a whole: cut short before it
// could run its queries, or a bug in the mapping.
const QueryRound = "round"

// Queries lists every query name a scraper of kind can report in
// Result.Errors, so that error counters can start at zero.
func Queries(kind config.Kind) []string {
	switch kind {
	case config.KindPgBouncer:
		return []string{QueryConnect, QueryShowPools, QueryShowDatabases, QueryShowUsers, QueryShowConfig,
			QueryShowLists, QueryShowStats, QueryShowMem, QueryShowClients, QueryShowServers, QueryShowVersion, QueryRound}
	case config.KindPgpool:
		return []string{QueryConnect, QueryShowPoolVersion, QueryPgpoolShow, QueryShowPoolProcesses, QueryShowPoolPools,
			QueryShowPoolNodes, QueryActivity, QueryRound}
	case config.KindPgCat, config.KindOdyssey:
		return consoleQueries()
	case config.KindApplication:
		return []string{QueryHTTP, QueryParse, QueryRound}
	}
	return []string{QueryConnect, QueryActivity, QueryRound}
}

// Well-known pool names.
const (
	// PoolClients is PgBouncer's client side, against max_client_conn.
	PoolClients = "clients"
	// PoolServer is a PostgreSQL server's connection slots.
	PoolServer = "server"
)

// DefaultMaxPools is the cap used when a target's MaxPools is 0 or less.
const DefaultMaxPools = 1000

// Querier runs fn on a healthy connection and releases it afterwards, on
// every path. Implemented by *pool.Pool.
//
// fn must honour ctx. The conn must not be retained after fn returns.
type Querier interface {
	Do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error
}

// Scraper runs one round against one target. Implementations are safe for
// concurrent use; each call to Scrape is independent.
type Scraper interface {
	// Scrape never returns nil, and returns a new Result on every call, which
	// the caller owns. Target, Kind and Labels are the target's. A failed
	// query is recorded in Result.Errors under its query name (e.g.
	// "show_pools", "show_clients", "activity") and the series from the
	// queries that did succeed are still returned. If Do itself fails (no
	// connection), Errors has one entry with query "connect". ctx bounds the
	// whole round. Start, Duration and ScrapeErrors are left for the caller.
	Scrape(ctx context.Context, q Querier) *Result
}

// SelfContained is a Scraper that reaches its target by itself (an HTTP
// client of its own) rather than through a probe pool: the agent creates no
// probe pool for it and passes a nil Querier to Scrape. Close releases what
// it holds (idle HTTP connections); a round running at that moment still
// ends by its own deadline. Scrape may still be called after Close.
type SelfContained interface {
	Scraper
	Close()
}

// New returns the scraper for t's kind, configured by t: its leak
// threshold, pool cap, session-mode leaks (pgbouncer), application pools
// (postgres), the application_name globs to count for cross-checks
// (postgres and pgbouncer), and the URL, format and HTTP client of an
// application target, whose scraper is SelfContained. It is the only
// switch on the kind of target. It fails for a kind it does not know, and
// for an HTTP client configuration that cannot be built (a CA file that
// does not parse).
func New(t config.Target) (Scraper, error) {
	switch t.Kind {
	case config.KindPgBouncer:
		return newPgBouncer(t), nil
	case config.KindPostgres:
		return newPostgres(t), nil
	case config.KindPgpool:
		return newPgpool(t), nil
	case config.KindPgCat, config.KindOdyssey:
		return newConsole(t), nil
	case config.KindApplication:
		return newApplication(t)
	default:
		return nil, fmt.Errorf("target %q: no scraper for kind %q", t.Name, t.Kind)
	}
}

// Failed returns the Result of a round of t that failed as a whole with err,
// recorded under QueryRound: cut short before it could run its queries, or a
// bug in the mapping.
func Failed(t config.Target, err error) *Result {
	return &Result{Target: t.Name, Kind: t.Kind, Labels: t.Labels, Upstream: config.UpstreamOf(&t), Errors: []QueryError{{Query: QueryRound, Err: err}}}
}

// newResult starts a round's Result for a target of kind configured by t.
func newResult(kind config.Kind, t *config.Target) *Result {
	return &Result{Target: t.Name, Kind: kind, Labels: t.Labels, Upstream: config.UpstreamOf(t)}
}

// Optional is a value that a target may not report. The zero Optional is
// absent, which is different from a present 0.
type Optional struct {
	Value float64
	Valid bool
}

// Some returns a present Optional.
func Some(v float64) Optional { return Optional{Value: v, Valid: true} }

// Pool is one pool of the uniform model. docs/metrics.md lists the source of
// every field for every kind of pool.
type Pool struct {
	// Name is the `pool` label: "db/user", "clients", "db/*" (pgbouncer);
	// "server" or the application pool's name (postgres).
	Name string
	// Database, User and Mode are for poolwatch_pool_info; "" where not
	// applicable.
	Database, User, Mode string
	// Min is the floor, Max the ceiling (absent when unlimited or unknown),
	// Reserve the connections allowed on top of Max.
	Min, Max, Reserve Optional
	// Open counts connections that exist and count against Max; InUse those
	// working for a client.
	Open, InUse float64
	// Waiting counts clients queued for a connection; MaxWaitSeconds is the
	// age of the oldest. Absent on postgres, which has no queue.
	Waiting, MaxWaitSeconds Optional
	// Leaked counts connections held past the leak threshold with no
	// activity; OldestLeakSeconds is the age of the oldest, 0 when none.
	Leaked            float64
	OldestLeakSeconds float64
	// NoLeakDetection is set where poolwatch cannot see leaks (an
	// application's own pool, which reports no such thing; a PgCat or
	// Odyssey pool, whose console does not show idle transactions): Leaked
	// and OldestLeakSeconds are then absent, not 0.
	NoLeakDetection bool
	// AcquireTimeouts counts, since the application started, the requests
	// for a connection that timed out or were refused (application pools
	// that report it); absent elsewhere.
	AcquireTimeouts Optional
	// States counts the pool's connections by state as the pooler reports
	// them (PgBouncer's cl_* and sv_* columns, Pgpool-II's child states), in
	// a fixed order per kind; a state the pooler does not report is left
	// out, never 0. nil where the kind reports no states.
	States []StateCount
}

// Sides of a StateCount.
const (
	SideClient = "client"
	SideServer = "server"
)

// StateCount is the number of a pool's connections on one side (SideClient
// or SideServer) in one state ("active", "waiting", "idle"...).
type StateCount struct {
	Side, State string
	Count       float64
}

// ListCount is one row of PgBouncer's SHOW LISTS: the number of items in
// one of its internal lists (used_clients, free_servers...).
type ListCount struct {
	List  string
	Items float64
}

// MemoryCache is one row of PgBouncer's SHOW MEM: a slab cache of fixed-size
// objects. A value the console does not report is absent.
type MemoryCache struct {
	Name string
	// ObjectBytes is the size of one object; Used and Free count objects;
	// TotalBytes is the memory the cache holds.
	ObjectBytes, Used, Free, TotalBytes Optional
}

// DatabaseState is a PgBouncer database's PAUSE/DISABLE state.
type DatabaseState struct {
	Name             string
	Paused, Disabled bool
}

// DatabaseStats holds a PgBouncer database's SHOW STATS totals: counters
// since PgBouncer started.
type DatabaseStats struct {
	Database          string
	Transactions      float64
	Queries           float64
	ClientWaitSeconds float64
	// The other counters of SHOW STATS, absent where this version has no
	// such column: total_xact_time and total_query_time (µs, here
	// seconds), total_received and total_sent (bytes),
	// total_server_assignment_count (1.23+), total_client_parse_count,
	// total_server_parse_count and total_bind_count (1.21+).
	TransactionSeconds, QuerySeconds  Optional
	ReceivedBytes, SentBytes          Optional
	ServerAssignments                 Optional
	ClientParses, ServerParses, Binds Optional
}

// BackendNode is one of Pgpool-II's backend nodes.
type BackendNode struct {
	// Name is "node" + node_id, the name of the node's pool.
	Name string
	// Address is hostname:port; Status Pgpool-II's status of the node (up,
	// waiting, down, unused, quarantine); Role its role (primary, standby,
	// main, replica).
	Address, Status, Role string
	// Up reports whether Pgpool-II uses the node: status up or waiting.
	Up bool
}

// QueryError is one failed query of a round.
type QueryError struct {
	Query string
	Err   error
}

// Error implements error.
func (e QueryError) Error() string { return e.Query + ": " + e.Err.Error() }

// Unwrap returns the query's error.
func (e QueryError) Unwrap() error { return e.Err }

// Result is one round against one target: what the scraper read, and the
// round's identity, timing and error counters that the agent adds. It is the
// one type that flows from the scraper through the agent to the collector.
// Once published (the agent hands it to every request that shares the
// round), a Result is read-only.
type Result struct {
	// Target is the target's name; Labels its static labels (shared with the
	// configuration: do not modify).
	Target string
	Kind   config.Kind
	Labels map[string]string
	// Upstream is the target whose server this target's connections end
	// on (config.UpstreamOf): the target itself on postgres, the upstream
	// key elsewhere, "" when not configured.
	Upstream string
	// Version is the server's version ("1.18.0", "15.10"), "" when unknown.
	Version string
	// Start is when the round began and Duration how long it took; set by
	// the agent.
	Start    time.Time
	Duration time.Duration
	// ScrapeErrors counts the target's failed queries by query name since
	// the target was configured, this round's included: a copy, set by the
	// agent. Every name of Queries(Kind) is present.
	ScrapeErrors map[string]float64
	// Pools is sorted by Name and capped at MaxPools, the pools that
	// matter ranked first (cap.go).
	Pools []Pool
	// PoolsDropped counts the pools the cap dropped this round.
	PoolsDropped int
	// Databases and Stats are pgbouncer only, sorted by database name, and
	// capped with the pools (cap.go).
	Databases []DatabaseState
	Stats     []DatabaseStats
	// Lists and Memory are PgBouncer's SHOW LISTS and SHOW MEM, in its
	// order; nil on other kinds or when the command failed.
	Lists  []ListCount
	Memory []MemoryCache
	// Nodes are Pgpool-II's backend nodes (SHOW POOL_NODES), sorted by
	// Name; nil on other kinds or when the command failed.
	Nodes []BackendNode
	// Leaks are the current leaks, oldest first, at most MaxLeaks.
	Leaks []Leak
	// Errors lists the failed queries of the round, in the order they ran.
	Errors []QueryError
	// LimitedVisibility is set on postgres when the agent's role lacks
	// pg_read_all_stats (granted by pg_monitor): other roles' backends are
	// then invisible and every count is too low. Meaningful only when
	// Visibility says it is known.
	LimitedVisibility bool

	// Applications (postgres, pgbouncer) counts the server's connections
	// for each glob of the target's config.Target.Applications, sorted by
	// glob; nil when the target has none or when counting failed.
	Applications []ApplicationConnections
	// Unaccounted (application) is the cross-check of this round against
	// the servers named in seen_as, sorted by pool; the agent fills it in
	// (see CrossCheck). Nil when the target has no seen_as or when a side
	// of the comparison is unknown.
	Unaccounted []Unaccounted
}

// Up reports whether every query of the round succeeded.
func (r *Result) Up() bool { return len(r.Errors) == 0 }

// ProbePool is a snapshot of the agent's own probe pool for one target.
type ProbePool struct {
	Target string
	// Labels are the target's static labels (do not modify).
	Labels map[string]string
	Stats  pool.Stats
}
