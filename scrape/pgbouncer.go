package scrape

import (
	"context"
	"net"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/poolwatch/poolwatch/config"
)

// newPgBouncer returns the Scraper of a PgBouncer admin console. The
// connection it is given must be logged in to the `pgbouncer` database as an
// admin_users or stats_users user. Every command is sent with the simple
// protocol, whatever the connection's default exec mode. Of t it uses the
// name and labels, LeakThreshold (a client linked to a server with no query
// in flight for strictly longer is leaked; ages have 1 s resolution),
// SessionModeLeaks and MaxPools (0 or less means DefaultMaxPools).
func newPgBouncer(t config.Target) *pgBouncer {
	return &pgBouncer{cfg: t, versions: newVersionCache(versionCacheSize)}
}

type pgBouncer struct {
	cfg      config.Target
	versions *versionCache
}

// Scrape runs one round: the commands of bouncerCommands (SHOW POOLS,
// DATABASES, USERS (1.23+), CONFIG, LISTS, STATS and MEM); then SHOW
// CLIENTS only if a leak is possible or an application target's seen_as
// names this target (its clients are then counted by application_name for
// the cross-check), and SHOW SERVERS only if there is a leak to attribute.
// docs/metrics.md has the mapping.
func (s *pgBouncer) Scrape(ctx context.Context, q Querier) *Result {
	r := &bouncerRound{cfg: s.cfg}
	err := q.Do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		cons := func(ctx context.Context, sql string, mapFn func(rowSource) error) error {
			return showQuery(ctx, conn, sql, mapFn)
		}
		r.version = s.version(ctx, conn.PgConn().ParameterStatus("server_version"), conn.PgConn(), cons, r)
		s.collect(ctx, cons, ownClientOf(conn), r)
		return nil
	})
	if err != nil {
		r.errors = append(r.errors, QueryError{Query: QueryConnect, Err: err})
	}
	return r.result()
}

// bouncerCommand is one command that every round sends.
type bouncerCommand struct {
	query, sql string
	// minMajor.minMinor is the first version that has the command (0: all).
	minMajor, minMinor int
	// mapInto maps the command's rows into the round.
	mapInto func(rowSource, *bouncerRound) error
}

// bouncerCommands are the commands every round sends, in order: the one
// list of a round's fixed commands (SHOW CLIENTS and SHOW SERVERS follow
// only when a leak is possible). SHOW USERS is skipped before 1.23, where
// it has no pool_size.
var bouncerCommands = []bouncerCommand{
	{query: QueryShowPools, sql: "SHOW POOLS", mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.pools, err = mapPools(src)
		return err
	}},
	{query: QueryShowDatabases, sql: "SHOW DATABASES", mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.dbs, err = mapDatabases(src)
		return err
	}},
	{query: QueryShowUsers, sql: "SHOW USERS", minMajor: 1, minMinor: 23, mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.users, err = mapUsers(src)
		return err
	}},
	{query: QueryShowConfig, sql: "SHOW CONFIG", mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.config, err = mapConfig(src)
		return err
	}},
	{query: QueryShowLists, sql: "SHOW LISTS", mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.lists, err = mapLists(src)
		return err
	}},
	{query: QueryShowStats, sql: "SHOW STATS", mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.stats, err = mapStats(src)
		return err
	}},
	{query: QueryShowMem, sql: "SHOW MEM", mapInto: func(src rowSource, r *bouncerRound) (err error) {
		r.mem, err = mapMem(src)
		return err
	}},
}

// console runs one admin console command and hands its rows to mapFn, which
// consumes them. Live, it is showQuery on the probe connection; in tests it
// serves recorded output.
type console func(ctx context.Context, sql string, mapFn func(rowSource) error) error

// collect runs the round's commands on cons and maps their output into r.
// r.version must be set: it gates SHOW USERS. Each failed command is
// recorded in r.errors and the round goes on.
func (s *pgBouncer) collect(ctx context.Context, cons console, own ownClient, r *bouncerRound) {
	run := func(name, sql string, mapFn func(rowSource) error) bool {
		if err := cons(ctx, sql, mapFn); err != nil {
			r.errors = append(r.errors, QueryError{Query: name, Err: err})
			return false
		}
		return true
	}

	for _, cmd := range bouncerCommands {
		if cmd.minMajor > 0 && !versionAtLeast(r.version, cmd.minMajor, cmd.minMinor) {
			continue
		}
		ok := run(cmd.query, cmd.sql, func(src rowSource) error { return cmd.mapInto(src, r) })
		if cmd.query == QueryShowPools {
			r.poolsOK = ok
		}
	}

	modes := newModeResolver(r.pools, r.dbs, r.config, s.cfg.SessionModeLeaks)
	apps := newAppCounter(s.cfg.Applications)
	if r.poolsOK && !modes.possible(r.pools) && apps == nil {
		return // no server is linked to a client in a pool where leaks count
	}
	r.clientsRan = true
	var scan clientScan
	if !run(QueryShowClients, "SHOW CLIENTS", func(src rowSource) (err error) {
		scan, err = scanClientsCounting(src, own, modes, apps)
		return err
	}) {
		return
	}
	if apps != nil && apps.ok {
		r.apps = apps.out
	}
	r.ownFound = scan.ownFound
	r.leaks = leaksOf(scan, s.cfg.LeakThreshold)
	if len(r.leaks) == 0 {
		return
	}
	want := make(map[string]bool, len(r.leaks))
	for _, l := range r.leaks {
		want[l.link] = true
	}
	run(QueryShowServers, "SHOW SERVERS", func(src rowSource) (err error) {
		r.servers, err = mapServers(src, want)
		return err
	})
}

// version returns the PgBouncer version of the connection pc, whose console
// reported `reported` as its server_version ParameterStatus at login
// ("1.18.0/bouncer"): that costs no query and cannot change for the
// connection's life. Should a console report none, SHOW VERSION runs once
// per connection and is remembered.
func (s *pgBouncer) version(ctx context.Context, reported string, pc *pgconn.PgConn, cons console, r *bouncerRound) string {
	if v := parseBouncerVersion(reported); v != "" {
		return v
	}
	if v, ok := s.versions.get(pc); ok {
		return v
	}
	var v string
	err := cons(ctx, "SHOW VERSION", func(src rowSource) error {
		c := colIndex(src.columns(), "version")
		for src.next() {
			if v == "" {
				v = parseBouncerVersion(str(src.values(), c[0]))
			}
		}
		return nil
	})
	if err != nil {
		r.errors = append(r.errors, QueryError{Query: QueryShowVersion, Err: err})
		return ""
	}
	if v != "" {
		s.versions.put(pc, v)
	}
	return v
}

// ownClientOf returns how the agent's connection shows in SHOW CLIENTS:
// its local address and port, as PgBouncer sees them unless NAT or a proxy
// is in between.
func ownClientOf(conn *pgx.Conn) ownClient {
	nc := conn.PgConn().Conn()
	if nc == nil {
		return ownClient{}
	}
	if a, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		return ownClient{addr: a.IP.String(), port: a.Port}
	}
	return ownClient{}
}

// versionCacheSize bounds the version cache: a probe pool holds a few
// connections.
const versionCacheSize = 16

// versionCache remembers the version of connections whose console sent no
// server_version. It is keyed by the *pgconn.PgConn, which it keeps alive
// until evicted, so a pointer cannot be reused by another connection while
// it is a key. When full, it is emptied.
type versionCache struct {
	mu  sync.Mutex
	max int
	m   map[*pgconn.PgConn]string
}

func newVersionCache(maxEntries int) *versionCache {
	return &versionCache{max: maxEntries, m: map[*pgconn.PgConn]string{}}
}

func (c *versionCache) get(k *pgconn.PgConn) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *versionCache) put(k *pgconn.PgConn, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = v
}
