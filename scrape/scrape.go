// Package scrape queries one monitored target (a PgBouncer admin console or a
// PostgreSQL server) and turns what it answers into the uniform pool model:
// every pool, whatever its kind, has a floor, a ceiling, a reserve, open and
// in-use connections, waiting clients and leaked connections.
//
// The package knows nothing about Prometheus (package collector turns a
// Result into metrics) and nothing about connection management (a Querier,
// the probe pool, hands it a healthy connection). docs/metrics.md is the
// contract for what every field means and which column or SQL it comes from.
package scrape

import (
	"context"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

// Kinds of target, as in Result.Kind and the config's `kind:`.
const (
	KindPgBouncer = "pgbouncer"
	KindPostgres  = "postgres"
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
	QueryActivity      = "activity"
)

// QueryRound names a round that failed as a whole: cut short before it
// could run its queries, or a bug in the mapping.
const QueryRound = "round"

// Queries lists every query name a scraper of kind can report in
// Result.Errors, so that error counters can start at zero.
func Queries(kind string) []string {
	if kind == KindPgBouncer {
		return []string{QueryConnect, QueryShowPools, QueryShowDatabases, QueryShowUsers, QueryShowConfig,
			QueryShowLists, QueryShowStats, QueryShowClients, QueryShowServers, QueryShowVersion, QueryRound}
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

// DefaultMaxPools is the cap used when an Options' MaxPools is 0 or less.
const DefaultMaxPools = 1000

// MaxLeaks bounds Result.Leaks.
const MaxLeaks = 50

// MaxQueryLength bounds Leak.Query, in characters.
const MaxQueryLength = 200

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
	// Scrape never returns nil. A failed query is recorded in Result.Errors
	// under its query name (e.g. "show_pools", "show_clients", "activity") and
	// the series from the queries that did succeed are still returned. If Do
	// itself fails (no connection), Errors has one entry with query "connect".
	// ctx bounds the whole round.
	Scrape(ctx context.Context, q Querier) *Result
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
}

// Leak is one connection held past the leak threshold, with what a DBA needs
// to find the code that leaked it. None of it is meant for labels.
type Leak struct {
	// ID is a stable identity across rounds, so that each leak is logged once:
	// pgbouncer: the client's id (1.24+) or ptr+connect_time, plus
	// request_time; postgres: pid+xact_start.
	ID   string
	Pool string
	// ApplicationName, User, Database and ClientAddr ("host:port") describe
	// the client.
	ApplicationName, User, Database, ClientAddr string
	// PID is the backend pid (pgbouncer: the linked server's remote_pid), 0
	// if unknown.
	PID int
	// Age is how long the connection has been held with no activity (idle in
	// its transaction): the value compared with the threshold.
	Age time.Duration
	// TransactionAge is how long the transaction has been open (postgres
	// only; 0 on pgbouncer, whose console does not show it).
	TransactionAge time.Duration
	// Query is the backend's last query, cut to MaxQueryLength characters
	// (postgres); "" on pgbouncer.
	Query string
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

// Result is one round's view of one target.
type Result struct {
	// Kind is KindPgBouncer or KindPostgres. Version is the server's version
	// ("1.18.0", "15.10"), "" when unknown.
	Kind, Version string
	// Pools is sorted by Name and capped at MaxPools.
	Pools []Pool
	// PoolsDropped counts the pools the cap dropped this round.
	PoolsDropped int
	// Databases and Stats are pgbouncer only, sorted by database name.
	Databases []DatabaseState
	Stats     []DatabaseStats
	// Leaks are the current leaks, oldest first, at most MaxLeaks.
	Leaks []Leak
	// Errors lists the failed queries of the round, in the order they ran.
	Errors []QueryError
	// LimitedVisibility is set on postgres when the agent's role lacks
	// pg_read_all_stats (granted by pg_monitor): other roles' backends are
	// then invisible and every count is too low.
	LimitedVisibility bool
}

// Up reports whether every query of the round succeeded.
func (r *Result) Up() bool { return len(r.Errors) == 0 }

// PgBouncerOptions configures a pgbouncer Scraper.
type PgBouncerOptions struct {
	// LeakThreshold: a client linked to a server with no query in flight for
	// strictly longer than this is leaked. Ages have 1 s resolution.
	LeakThreshold time.Duration
	// SessionModeLeaks counts linked idle clients of session-mode pools as
	// leaks too. Off by default: in session pooling holding a server
	// connection is normal (docs/metrics.md explains).
	SessionModeLeaks bool
	// MaxPools caps the pools per round; 0 or less means DefaultMaxPools.
	MaxPools int
}

// ApplicationPool declares an application's own pool on a postgres target.
type ApplicationPool struct {
	// Name is the `pool` label.
	Name string
	// ApplicationName is a glob (`*`, `?`) matched against
	// pg_stat_activity.application_name; "" matches only an empty name.
	ApplicationName string
	// User and Database are globs matched against usename and datname; ""
	// matches any.
	User, Database string
	// Min and Max are the application pool's declared bounds.
	Min, Max Optional
}

// PostgresOptions configures a postgres Scraper.
type PostgresOptions struct {
	// LeakThreshold: a backend idle in a transaction for strictly longer than
	// this is leaked.
	LeakThreshold time.Duration
	// MaxPools caps the pools per round; 0 or less means DefaultMaxPools.
	MaxPools int
	// ApplicationPools are matched in order; a backend belongs to the first
	// that matches it.
	ApplicationPools []ApplicationPool
}

// capPools sorts pools by Name and keeps at most max of them, always keeping
// the pool named keep (if present). It returns the kept pools and how many
// were dropped.
func capPools(pools []Pool, maxPools int, keep string) ([]Pool, int) {
	if maxPools <= 0 {
		maxPools = DefaultMaxPools
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	if len(pools) <= maxPools {
		return pools, 0
	}
	kept := make([]Pool, 0, maxPools)
	keepIdx := -1
	for i := range pools {
		if pools[i].Name == keep {
			keepIdx = i
			break
		}
	}
	budget := maxPools
	if keepIdx >= 0 {
		budget--
	}
	for i := range pools {
		if i == keepIdx {
			kept = append(kept, pools[i])
			continue
		}
		if budget > 0 {
			kept = append(kept, pools[i])
			budget--
		}
	}
	return kept, len(pools) - len(kept)
}

// sortLeaks orders leaks oldest first (ID breaks ties, for determinism) and
// keeps at most MaxLeaks.
func sortLeaks(leaks []Leak) []Leak {
	sort.Slice(leaks, func(i, j int) bool {
		if leaks[i].Age != leaks[j].Age {
			return leaks[i].Age > leaks[j].Age
		}
		return leaks[i].ID < leaks[j].ID
	})
	if len(leaks) > MaxLeaks {
		leaks = leaks[:MaxLeaks]
	}
	return leaks
}
