package scrape

import (
	"sort"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// This file is the one place for leak detection: what a leaked connection
// is on each kind of target, the Leak the model carries, and the log-once
// dedup of culprits. The probe pool's own leaks (the agent's connections)
// are the pool package's.
//
// A leaked connection is held by a client past the target's leak_threshold
// with no activity: idle in its transaction.
//
//   - postgres: a client backend in state "idle in transaction" or "idle in
//     transaction (aborted)" whose state_change is older than the threshold
//     (postgresLeakedSQL, evaluated by PostgreSQL inside activitySQL).
//   - pgbouncer (the console leak signature): a SHOW CLIENTS row that is
//     active and linked to a server connection (link is the server's ptr)
//     with no query in flight (wait and wait_us 0), in a pool where leaks
//     count (modeResolver), whose request_time is older than the threshold
//     on PgBouncer's own clock (leaksOf). Its server, found in SHOW SERVERS
//     by ptr, names the pool and the backend pid.

// MaxLeaks bounds Result.Leaks.
const MaxLeaks = 50

// MaxQueryLength bounds Leak.Query, in characters.
const MaxQueryLength = 200

// postgresLeakedSQL is true for a pg_stat_activity row `a` that is a leak:
// idle in a transaction for strictly longer than $5 seconds.
const postgresLeakedSQL = `coalesce(a.state IN ('idle in transaction', 'idle in transaction (aborted)')
                  AND a.state_change < now() - make_interval(secs => $5::float8), false)`

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
	// QueryKeyword is the first keyword of the backend's last query in
	// upper case ("UPDATE", "ALTER"), QueryID its query_id (PostgreSQL 14+
	// with compute_query_id on or auto with pg_stat_statements loaded; ""
	// otherwise). Postgres only.
	QueryKeyword, QueryID string
	// Query is the backend's last query, cut to MaxQueryLength characters,
	// with every string literal and comment redacted (RedactQuery); only
	// with log_query_text, "" otherwise and on pgbouncer.
	Query string
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

// linkedIdle is the row test of the console leak signature: a client that
// is active and linked to a server connection, with no query in flight.
func linkedIdle(state, link []byte, queryInFlight bool) bool {
	return string(state) == "active" && len(link) > 0 && !queryInFlight
}

// clientCandidate is a SHOW CLIENTS row that matches the leak signature
// (linked, active, no query in flight) in a pool where leaks count. Whether
// it is old enough is decided once PgBouncer's now is known.
type clientCandidate struct {
	id, link, database, user, app, addr string
	request                             float64
}

// modeResolver tells the pool mode of a (database, user) pair without
// allocating: pools from SHOW POOLS, then the database's own mode, then the
// default. "" is unknown.
type modeResolver struct {
	pools   map[string]map[string]string
	dbs     map[string]string
	deflt   string
	session bool // count session-mode leaks too
}

func newModeResolver(pools []poolRow, dbs []dbRow, config map[string]string, sessionLeaks bool) *modeResolver {
	m := &modeResolver{pools: map[string]map[string]string{}, dbs: map[string]string{}, deflt: config["pool_mode"], session: sessionLeaks}
	for _, p := range pools {
		if m.pools[p.database] == nil {
			m.pools[p.database] = map[string]string{}
		}
		if p.mode != "" {
			m.pools[p.database][p.user] = p.mode
		}
	}
	for _, d := range dbs {
		if d.mode != "" {
			m.dbs[d.name] = d.mode
		}
	}
	return m
}

func (m *modeResolver) mode(db, user []byte) string {
	if mode, ok := m.pools[string(db)][string(user)]; ok {
		return mode
	}
	if mode, ok := m.dbs[string(db)]; ok {
		return mode
	}
	// A pool of this database under another user (force_user) tells the
	// database's mode too.
	for _, mode := range m.pools[string(db)] {
		return mode
	}
	return m.deflt
}

// counts reports whether a linked idle client of (db, user) is a leak by
// the pool mode: always in transaction and statement pooling; in session
// pooling (or an unknown mode, or a replication connection, which always
// pools by session) only with session_mode_leaks.
func (m *modeResolver) counts(db, user, replication []byte) bool {
	if m.session {
		return true
	}
	if len(replication) > 0 && string(replication) != "none" {
		return false
	}
	mode := m.mode(db, user)
	return mode != "" && mode != modeSession
}

// possible reports whether any pool could hold a leak now: a server linked
// to a client (sv_active > 0) in a pool where leaks count. SHOW CLIENTS,
// whose size grows with the clients, is skipped otherwise.
func (m *modeResolver) possible(pools []poolRow) bool {
	for _, p := range pools {
		if p.database != adminDatabase && p.svActive > 0 && m.counts([]byte(p.database), []byte(p.user), nil) {
			return true
		}
	}
	return false
}

// pendingLeak is a candidate past the threshold, not yet attributed to a
// server connection.
type pendingLeak struct {
	clientCandidate
	age float64
}

// leaksOf returns the candidates strictly older than threshold on
// PgBouncer's clock.
func leaksOf(scan clientScan, threshold time.Duration) []pendingLeak {
	if !scan.nowOK {
		return nil
	}
	var out []pendingLeak
	for _, cand := range scan.candidates {
		age := scan.now - cand.request
		if age < 0 {
			age = 0
		}
		if age > threshold.Seconds() {
			out = append(out, pendingLeak{clientCandidate: cand, age: age})
		}
	}
	return out
}

// LeakLog logs each leaked connection of one target once: in the first round
// that reports it, with what a DBA needs to find the code that leaked it,
// and not again while later rounds report it (Leak.ID is stable across
// rounds). A leak missing from a round is forgotten, and logged again if it
// comes back.
//
// A LeakLog is not safe for concurrent use: its caller observes one round
// at a time, in order.
type LeakLog struct {
	logger log.Logger
	// seen holds the IDs of the leaks of the last observed round.
	seen map[string]bool
}

// NewLeakLog returns a LeakLog that logs to logger (which should name the
// target). A nil logger logs nothing.
func NewLeakLog(logger log.Logger) *LeakLog {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return &LeakLog{logger: logger, seen: map[string]bool{}}
}

// Observe logs, at warn level, every leak of a round's leaks that the
// previous round did not report, and remembers the round's leaks for the
// next call.
func (l *LeakLog) Observe(leaks []Leak) {
	current := make(map[string]bool, len(leaks))
	for _, lk := range leaks {
		current[lk.ID] = true
		if l.seen[lk.ID] {
			continue
		}
		kv := []any{"msg", "leaked connection", "pool", lk.Pool, "application_name", lk.ApplicationName,
			"user", lk.User, "database", lk.Database, "client_addr", lk.ClientAddr, "pid", lk.PID,
			"held_for", lk.Age.Round(time.Second)}
		if lk.QueryKeyword != "" {
			kv = append(kv, "query_keyword", lk.QueryKeyword)
		}
		if lk.QueryID != "" {
			kv = append(kv, "query_id", lk.QueryID)
		}
		if lk.Query != "" {
			kv = append(kv, "last_query", lk.Query)
		}
		level.Warn(l.logger).Log(kv...)
	}
	l.seen = current
}
