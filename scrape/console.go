package scrape

import (
	"context"
	"math"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/poolwatch/poolwatch/config"
)

// This file is the scraper of the PgBouncer-style admin consoles of PgCat
// and Odyssey. Neither is packaged here, so their mappings (pgcat.go,
// odyssey.go) are built from their source and tested on rows made from it
// only; docs/metrics.md says so. The round: SHOW VERSION once per
// connection (it picks the dialect and the version), SHOW POOLS, and SHOW
// DATABASES where the pooler has it.

// consoleDialect is what differs between the consoles: which columns a
// pooler prints as constants (absent here, never a false 0), where a pool's
// ceiling comes from, and which commands it has.
type consoleDialect struct {
	kind config.Kind
	// constant lists SHOW POOLS columns that the pooler's source prints as
	// a constant: they are not measurements.
	constant map[string]bool
	// databasesNeedVersion: SHOW DATABASES exists only in the versions that
	// also answer SHOW VERSION.
	databasesNeedVersion bool
	// parseVersion extracts the version from SHOW VERSION's answer, "" when
	// the answer is not this pooler's.
	parseVersion func(string) string
	// ceiling returns the Max of the pool (database, user) from SHOW
	// DATABASES rows.
	ceiling func(rows []consoleDBRow, database, user string) Optional
}

// dialectFor returns the mapping of kind (config.KindPgCat or
// config.KindOdyssey).
func dialectFor(kind config.Kind) consoleDialect {
	if kind == config.KindPgCat {
		return pgcatDialect
	}
	return odysseyDialect
}

// detectDialect picks the dialect from SHOW VERSION's answer when it names
// a known pooler, else the configured kind's.
func detectDialect(configured config.Kind, answer string) (consoleDialect, string) {
	for _, d := range []consoleDialect{pgcatDialect, odysseyDialect} {
		if v := d.parseVersion(answer); v != "" {
			return d, v
		}
	}
	return dialectFor(configured), ""
}

// newConsole returns the Scraper of a PgCat or Odyssey admin console (t's
// kind). Every command is sent with the simple protocol. Of t it uses the
// name, labels, kind and MaxPools; leaks are not detected (see
// Pool.NoLeakDetection).
func newConsole(t config.Target) *consoleScraper {
	return &consoleScraper{cfg: t, versions: map[*pgconn.PgConn]consoleConnInfo{}}
}

type consoleScraper struct {
	cfg config.Target

	mu sync.Mutex
	// versions remembers SHOW VERSION's answer per connection (emptied when
	// full). Guarded by mu.
	versions map[*pgconn.PgConn]consoleConnInfo
}

// consoleConnInfo is what SHOW VERSION told about a connection.
type consoleConnInfo struct {
	answered bool   // SHOW VERSION succeeded
	answer   string // its first row
}

// Scrape runs one round (see the file comment).
func (s *consoleScraper) Scrape(ctx context.Context, q Querier) *Result {
	r := &consoleRound{cfg: s.cfg}
	err := q.Do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		s.collect(ctx, func(ctx context.Context, sql string, mapFn func(rowSource) error) error {
			return showQuery(ctx, conn, sql, mapFn)
		}, conn.PgConn(), r)
		return nil
	})
	if err != nil {
		r.errors = append(r.errors, QueryError{Query: QueryConnect, Err: err})
	}
	return r.result()
}

// consoleQueries lists the query names of a console round.
func consoleQueries() []string {
	return []string{QueryConnect, QueryShowPools, QueryShowDatabases, QueryRound}
}

// collect runs the round's commands on cons. SHOW VERSION is a probe: an
// old Odyssey does not know it, which is no error.
func (s *consoleScraper) collect(ctx context.Context, cons console, pc *pgconn.PgConn, r *consoleRound) {
	info, ok := s.connInfo(pc)
	if !ok {
		err := cons(ctx, "SHOW VERSION", func(src rowSource) error {
			c := colIndex(src.columns(), "version")
			for src.next() {
				if !info.answered {
					info.answer, info.answered = str(src.values(), c[0]), true
				}
			}
			return nil
		})
		if err != nil {
			info = consoleConnInfo{}
		}
		info.answered = err == nil
		if ctx.Err() == nil {
			s.putConnInfo(pc, info)
		}
	}
	r.dialect, r.version = detectDialect(s.cfg.Kind, info.answer)

	run := func(name, sql string, mapFn func(rowSource) error) bool {
		if err := cons(ctx, sql, mapFn); err != nil {
			r.errors = append(r.errors, QueryError{Query: name, Err: err})
			return false
		}
		return true
	}
	r.poolsOK = run(QueryShowPools, "SHOW POOLS", func(src rowSource) (err error) {
		r.pools, err = mapConsolePools(src, r.dialect)
		return err
	})
	if !r.dialect.databasesNeedVersion || info.answered {
		run(QueryShowDatabases, "SHOW DATABASES", func(src rowSource) (err error) {
			r.dbs, err = mapConsoleDatabases(src)
			return err
		})
	}
}

const consoleCacheSize = 16

func (s *consoleScraper) connInfo(pc *pgconn.PgConn) (consoleConnInfo, bool) {
	if pc == nil {
		return consoleConnInfo{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.versions[pc]
	return info, ok
}

func (s *consoleScraper) putConnInfo(pc *pgconn.PgConn, info consoleConnInfo) {
	if pc == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.versions) >= consoleCacheSize {
		clear(s.versions)
	}
	s.versions[pc] = info
}

// consolePoolRow is one SHOW POOLS row of a console.
type consolePoolRow struct {
	database, user, mode string
	open, inUse          float64
	waiting, maxWait     Optional
	states               []StateCount
}

// mapConsolePools maps a console's SHOW POOLS: open is the sum of the
// sv_* states the pooler measures, in use sv_active, waiting cl_waiting,
// the oldest wait maxwait + maxwait_us / 1e6. Columns the dialect knows as
// constants are left out.
func mapConsolePools(src rowSource, d consoleDialect) ([]consolePoolRow, error) {
	cols := src.columns()
	c := colIndex(cols, "database", "user", "pool_mode", "cl_waiting", "sv_active", "maxwait", "maxwait_us")
	if c[0] < 0 {
		return nil, missing("database")
	}
	if c[1] < 0 {
		return nil, missing("user")
	}
	var states []stateColumn
	for _, sc := range stateColumns(cols) {
		if !d.constant[cols[sc.idx]] {
			states = append(states, sc)
		}
	}
	measured := func(i int) int {
		if i >= 0 && d.constant[cols[i]] {
			return -1
		}
		return i
	}
	cWaiting, cMaxwait, cMaxwaitUS := measured(c[3]), measured(c[5]), measured(c[6])
	var out []consolePoolRow
	for src.next() {
		v := src.values()
		if !present(v, c[0]) || !present(v, c[1]) {
			continue
		}
		p := consolePoolRow{database: str(v, c[0]), user: str(v, c[1]), mode: str(v, c[2]), waiting: count(v, cWaiting), states: statesOf(v, states)}
		for _, st := range p.states {
			if st.Side == SideServer {
				p.open += st.Count
			}
		}
		p.inUse = count(v, measured(c[4])).Value
		if w := count(v, cMaxwait); w.Valid {
			p.maxWait = w
			if us := count(v, cMaxwaitUS); us.Valid {
				p.maxWait.Value += us.Value / 1e6
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// consoleDBRow is one SHOW DATABASES row of a console.
type consoleDBRow struct {
	name, user string
	poolSize   Optional
}

// mapConsoleDatabases maps a console's SHOW DATABASES: name, force_user and
// pool_size.
func mapConsoleDatabases(src rowSource) ([]consoleDBRow, error) {
	c := colIndex(src.columns(), "name", "force_user", "pool_size")
	if c[0] < 0 {
		return nil, missing("name")
	}
	var out []consoleDBRow
	for src.next() {
		v := src.values()
		if present(v, c[0]) {
			out = append(out, consoleDBRow{name: str(v, c[0]), user: str(v, c[1]), poolSize: count(v, c[2])})
		}
	}
	return out, nil
}

// consoleRound collects one console round.
type consoleRound struct {
	cfg     config.Target
	dialect consoleDialect
	version string
	pools   []consolePoolRow
	poolsOK bool
	dbs     []consoleDBRow
	errors  []QueryError
}

// result assembles the Result. It is pure.
func (r *consoleRound) result() *Result {
	res := newResult(r.cfg.Kind, &r.cfg)
	res.Version, res.Errors = r.version, r.errors
	seen := map[string]bool{}
	var pools []Pool
	for _, p := range r.pools {
		name := p.database + "/" + p.user
		if seen[name] || p.database == "" {
			continue
		}
		seen[name] = true
		pools = append(pools, Pool{
			Name: name, Database: p.database, User: p.user, Mode: p.mode,
			Max:  r.dialect.ceiling(r.dbs, p.database, p.user),
			Open: p.open, InUse: p.inUse, Waiting: p.waiting, MaxWaitSeconds: p.maxWait,
			States: p.states, NoLeakDetection: true,
		})
	}
	res.Pools, res.PoolsDropped = capPools(pools, &r.cfg, "")
	return res
}

// sumCeiling adds the pool sizes of the matching rows; absent when none
// matches, or when one is 0 or unknown (unlimited or unknown).
func sumCeiling(rows []consoleDBRow, match func(consoleDBRow) bool) Optional {
	var out Optional
	for _, row := range rows {
		if !match(row) {
			continue
		}
		if !row.poolSize.Valid || row.poolSize.Value <= 0 {
			return Optional{}
		}
		out = Some(out.Value + row.poolSize.Value)
	}
	if math.IsInf(out.Value, 0) {
		return Optional{}
	}
	return out
}

// trimPrefixFold removes prefix from s, ignoring case; ok reports whether
// it was there.
func trimPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
