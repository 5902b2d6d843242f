// Package scrape queries one monitored target (a PgBouncer admin console or a
// PostgreSQL server) and turns what it answers into the uniform pool model:
// every pool, whatever its kind, has a floor, a ceiling, a reserve, open and
// in-use connections, waiting clients and leaked connections.
//
// It holds THE model: Result, one target's round, which the scraper fills,
// the agent completes (timing, error counters) and the collector turns into
// metrics as it is; and ProbePool, a snapshot of the agent's own pool for a
// target. New is the one place that picks the code for a kind of target;
// leaks.go the one place for leak detection and its log-once dedup.
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
	QueryActivity      = "activity"
)

// QueryRound names a round that failed as a whole: cut short before it
// could run its queries, or a bug in the mapping.
const QueryRound = "round"

// Queries lists every query name a scraper of kind can report in
// Result.Errors, so that error counters can start at zero.
func Queries(kind config.Kind) []string {
	if kind == config.KindPgBouncer {
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

// New returns the scraper for t's kind, configured by t: its leak
// threshold, pool cap, session-mode leaks (pgbouncer) and application pools
// (postgres). It is the only switch on the kind of target. It fails for a
// kind it does not know.
func New(t config.Target) (Scraper, error) {
	switch t.Kind {
	case config.KindPgBouncer:
		return newPgBouncer(t), nil
	case config.KindPostgres:
		return newPostgres(t), nil
	default:
		return nil, fmt.Errorf("target %q: no scraper for kind %q", t.Name, t.Kind)
	}
}

// Failed returns the Result of a round of t that failed as a whole with err,
// recorded under QueryRound: cut short before it could run its queries, or a
// bug in the mapping.
func Failed(t config.Target, err error) *Result {
	return &Result{Target: t.Name, Kind: t.Kind, Labels: t.Labels, Errors: []QueryError{{Query: QueryRound, Err: err}}}
}

// newResult starts a round's Result for a target of kind configured by t.
func newResult(kind config.Kind, t *config.Target) *Result {
	return &Result{Target: t.Name, Kind: kind, Labels: t.Labels}
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

// ProbePool is a snapshot of the agent's own probe pool for one target.
type ProbePool struct {
	Target string
	// Labels are the target's static labels (do not modify).
	Labels map[string]string
	Stats  pool.Stats
}
