package scrape

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/poolwatch/poolwatch/config"
)

// Query names of a pgpool round.
const (
	QueryShowPoolVersion   = "show_pool_version"
	QueryPgpoolShow        = "pgpool_show"
	QueryShowPoolProcesses = "show_pool_processes"
	QueryShowPoolPools     = "show_pool_pools"
	QueryShowPoolNodes     = "show_pool_nodes"
)

// pgpoolActivitySQL reads, on the primary, the backends of the children
// that Pgpool-II shows idle in a transaction ($1: their pids on the main
// node). /*NO LOAD BALANCE*/ keeps Pgpool-II from sending it to a standby,
// where those pids do not exist.
const pgpoolActivitySQL = `/*NO LOAD BALANCE*/ SELECT pid,
       extract(epoch FROM now() - state_change)::float8,
       extract(epoch FROM now() - xact_start)::float8,
       xact_start::text, application_name, usename, datname, left(query, 200)
FROM pg_stat_activity
WHERE pid = ANY($1::int4[]) AND state IN ('idle in transaction', 'idle in transaction (aborted)')`

// newPgpool returns the Scraper of a Pgpool-II. Its connection is an
// ordinary client connection through Pgpool-II (any database), so it holds
// one child process for as long as it is open: the probe pool keeps exactly
// one (config.PgpoolMaxProbeConnections), and docs/metrics.md gives the
// sizing advice. Every command is sent with the simple protocol. Of t it
// uses the name and labels, LeakThreshold and MaxPools.
func newPgpool(t config.Target) *pgpool {
	return &pgpool{cfg: t, conns: map[*pgconn.PgConn]pgpoolConnInfo{}, firstSeen: map[string]time.Time{}, now: time.Now}
}

type pgpool struct {
	cfg config.Target
	now func() time.Time

	mu sync.Mutex
	// conns remembers what a connection learnt once (version, settings),
	// keyed by the connection, which it keeps alive until evicted (emptied
	// when full). Guarded by mu.
	conns map[*pgconn.PgConn]pgpoolConnInfo
	// firstSeen is when a child's client (pid@client_connection_time) was
	// first seen idle in a transaction; forgotten once it no longer is.
	// Guarded by mu.
	firstSeen map[string]time.Time
}

// pgpoolConnInfo is what does not change for a connection's life: the
// version and settings that need a restart of Pgpool-II to change.
type pgpoolConnInfo struct {
	version  string
	settings pgpoolSettings
	// poolNodes: this Pgpool-II does not know SHOW POOL_BACKEND_STATS
	// (before 4.2): node states come from SHOW POOL_NODES.
	poolNodes bool
}

// Scrape runs one round: SHOW POOL_VERSION and PGPOOL SHOW
// num_init_children and max_pool once per connection; then SHOW
// POOL_PROCESSES, SHOW POOL_POOLS and the nodes' states (SHOW
// POOL_BACKEND_STATS, or SHOW POOL_NODES before 4.2); and, only when a
// child is idle in a transaction, one query of pg_stat_activity on the
// primary for the ages of those transactions. docs/metrics.md has the
// mapping.
func (s *pgpool) Scrape(ctx context.Context, q Querier) *Result {
	r := &pgpoolRound{cfg: s.cfg}
	err := q.Do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		s.collect(ctx, func(ctx context.Context, sql string, mapFn func(rowSource) error) error {
			return showQuery(ctx, conn, sql, mapFn)
		}, conn.PgConn(), func(ctx context.Context, pids []int32) (map[int]backendActivity, error) {
			return queryActivity(ctx, conn, pids)
		}, r)
		return nil
	})
	if err != nil {
		r.errors = append(r.errors, QueryError{Query: QueryConnect, Err: err})
	}
	return r.result()
}

// activityFn reads pg_stat_activity for the given backend pids.
type activityFn func(ctx context.Context, pids []int32) (map[int]backendActivity, error)

// collect runs a round's commands on cons (pc identifies the connection for
// the per-connection cache; nil caches nothing) and maps them into r.
func (s *pgpool) collect(ctx context.Context, cons console, pc *pgconn.PgConn, activity activityFn, r *pgpoolRound) {
	run := func(name, sql string, mapFn func(rowSource) error) bool {
		if err := cons(ctx, sql, mapFn); err != nil {
			r.errors = append(r.errors, QueryError{Query: name, Err: err})
			return false
		}
		return true
	}
	info, cached := s.connInfo(pc)
	if !cached {
		info = pgpoolConnInfo{}
		okVersion := run(QueryShowPoolVersion, "SHOW POOL_VERSION", func(src rowSource) error {
			c := colIndex(src.columns(), "pool_version")
			for src.next() {
				if info.version == "" {
					info.version = parsePgpoolVersion(str(src.values(), c[0]))
				}
			}
			return nil
		})
		okChildren := run(QueryPgpoolShow, "PGPOOL SHOW num_init_children", func(src rowSource) (err error) {
			info.settings.numInitChildren, err = mapSetting(src, "num_init_children")
			return err
		})
		okPool := run(QueryPgpoolShow, "PGPOOL SHOW max_pool", func(src rowSource) (err error) {
			info.settings.maxPool, err = mapSetting(src, "max_pool")
			return err
		})
		if okVersion && okChildren && okPool {
			s.putConnInfo(pc, info)
		}
	}
	r.version, r.settings = info.version, info.settings

	r.childrenOK = run(QueryShowPoolProcesses, "SHOW POOL_PROCESSES", func(src rowSource) (err error) {
		r.children, err = mapProcesses(src)
		return err
	})
	r.poolsOK = run(QueryShowPoolPools, "SHOW POOL_POOLS", func(src rowSource) (err error) {
		r.pools, err = mapPoolPools(src)
		return err
	})
	s.nodes(ctx, cons, pc, info, r)

	r.candidates = leakCandidates(r.children, r.pools, r.nodes)
	r.now = s.now()
	r.firstSeen = s.observe(r.candidates, r.now)
	var pids []int32
	for _, c := range r.candidates {
		if c.backendPID > 0 {
			pids = append(pids, int32(c.backendPID)) //nolint:gosec // bounded by mapPoolPools
		}
	}
	if len(pids) == 0 {
		return
	}
	act, err := activity(ctx, pids)
	if err != nil {
		r.errors = append(r.errors, QueryError{Query: QueryActivity, Err: err})
		return
	}
	r.activity = act
}

// nodes reads the backend nodes' states into r: SHOW POOL_BACKEND_STATS
// (4.2+), which Pgpool-II answers from its own memory, rather than SHOW
// POOL_NODES, which in 4.3 connects to every backend for its pg_status and
// pg_role columns (23 ms against 0.07 ms per call on two local nodes,
// docs/performance.md). Both have node_id, hostname, port, status and role.
// A Pgpool-II that does not know SHOW POOL_BACKEND_STATS gets SHOW
// POOL_NODES, from then on for the connection; only a failure of that is
// recorded, under show_pool_nodes.
func (s *pgpool) nodes(ctx context.Context, cons console, pc *pgconn.PgConn, info pgpoolConnInfo, r *pgpoolRound) {
	mapInto := func(src rowSource) (err error) {
		r.nodes, err = mapNodes(src)
		return err
	}
	if !info.poolNodes {
		err := cons(ctx, "SHOW POOL_BACKEND_STATS", mapInto)
		if err == nil || ctx.Err() != nil {
			if err != nil {
				r.errors = append(r.errors, QueryError{Query: QueryShowPoolNodes, Err: err})
			}
			return
		}
		if cached, ok := s.connInfo(pc); ok {
			cached.poolNodes = true
			s.putConnInfo(pc, cached)
		}
	}
	if err := cons(ctx, "SHOW POOL_NODES", mapInto); err != nil {
		r.errors = append(r.errors, QueryError{Query: QueryShowPoolNodes, Err: err})
	}
}

// pgpoolConnCacheSize bounds the per-connection cache: the probe pool holds
// one connection.
const pgpoolConnCacheSize = 4

func (s *pgpool) connInfo(pc *pgconn.PgConn) (pgpoolConnInfo, bool) {
	if pc == nil {
		return pgpoolConnInfo{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.conns[pc]
	return info, ok
}

func (s *pgpool) putConnInfo(pc *pgconn.PgConn, info pgpoolConnInfo) {
	if pc == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) >= pgpoolConnCacheSize {
		clear(s.conns)
	}
	s.conns[pc] = info
}

// observe records when each candidate was first seen, forgets the clients
// that are no longer idle in a transaction, and returns a copy for the
// round.
func (s *pgpool) observe(cands []pgpoolLeakCandidate, now time.Time) map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	current := make(map[string]time.Time, len(cands))
	for _, c := range cands {
		seen, ok := s.firstSeen[c.key]
		if !ok {
			seen = now
		}
		current[c.key] = seen
	}
	s.firstSeen = current
	out := make(map[string]time.Time, len(current))
	for k, v := range current {
		out[k] = v
	}
	return out
}

// queryActivity runs pgpoolActivitySQL for pids.
func queryActivity(ctx context.Context, conn *pgx.Conn, pids []int32) (map[int]backendActivity, error) {
	rows, err := conn.Query(ctx, pgpoolActivitySQL, pgx.QueryExecModeSimpleProtocol, pids)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_activity: %w", err)
	}
	defer rows.Close()
	out, mapErr := mapActivity(&pgxRows{rows: rows})
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pg_stat_activity: %w", err)
	}
	return out, mapErr
}

// mapActivity maps the rows of pgpoolActivitySQL, by position: pid, idle
// seconds, transaction seconds, xact_start, application_name, usename,
// datname, query.
func mapActivity(src rowSource) (map[int]backendActivity, error) {
	out := map[int]backendActivity{}
	for src.next() {
		v := src.values()
		pid, idle := count(v, 0), count(v, 1)
		if !pid.Valid || !idle.Valid || pid.Value > 1<<31 {
			continue
		}
		out[int(pid.Value)] = backendActivity{
			idleSeconds: idle.Value, xactSeconds: count(v, 2).Value, xactStart: str(v, 3),
			app: str(v, 4), user: str(v, 5), database: str(v, 6), query: str(v, 7),
		}
	}
	return out, nil
}
