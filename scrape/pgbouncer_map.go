package scrape

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/poolwatch/poolwatch/config"
)

// This file maps PgBouncer console output to the pool model. Every function
// here is pure: it reads a rowSource (live or recorded) and never touches
// the network. Columns are found by name; unknown columns are ignored; a
// missing column is absent, never 0. A function returns an error only when a
// column without which its output means nothing is missing (e.g. SHOW POOLS
// without database or user); the error is then recorded against the query.

// adminDatabase is PgBouncer's virtual admin-console database. It is not a
// pool, cannot be paused, and its stats are the agent's own commands.
const adminDatabase = "pgbouncer"

// Pool modes as PgBouncer prints them.
const (
	modeSession = "session"
)

// errMissingColumn reports a result without a column the mapping needs.
var errMissingColumn = errors.New("missing column")

func missing(name string) error { return fmt.Errorf("%w %q", errMissingColumn, name) }

// poolRow is one SHOW POOLS row.
type poolRow struct {
	database, user, mode string
	open, inUse          float64
	svActive             float64
	waiting, maxWait     Optional
	// clients is cl_active + cl_waiting + cl_active_cancel_req +
	// cl_waiting_cancel_req (the columns this version has).
	clients Optional
	// states are the row's cl_* and sv_* counts.
	states []StateCount
}

// stateColumn is a per-state count column of a PgBouncer-style SHOW POOLS:
// cl_STATE counts clients, sv_STATE servers.
type stateColumn struct {
	idx         int
	side, state string
}

// stateColumns returns the cl_* and sv_* columns of cols, in column order.
// PgBouncer, PgCat and Odyssey name them alike; a state a version adds
// (PgCat's cl_idle) is picked up without a change here.
// A column name that appears twice counts once (the first), as in colIndex.
func stateColumns(cols []string) []stateColumn {
	var out []stateColumn
	for i, c := range cols {
		if slices.Contains(cols[:i], c) {
			continue
		}
		switch {
		case strings.HasPrefix(c, "cl_") && len(c) > 3:
			out = append(out, stateColumn{i, SideClient, c[3:]})
		case strings.HasPrefix(c, "sv_") && len(c) > 3:
			out = append(out, stateColumn{i, SideServer, c[3:]})
		}
	}
	return out
}

// statesOf reads the state columns of one row; a missing or garbage value
// is left out.
func statesOf(v [][]byte, cols []stateColumn) []StateCount {
	if len(cols) == 0 {
		return nil
	}
	out := make([]StateCount, 0, len(cols))
	for _, sc := range cols {
		if n := count(v, sc.idx); n.Valid {
			out = append(out, StateCount{Side: sc.side, State: sc.state, Count: n.Value})
		}
	}
	return out
}

// mapPools maps SHOW POOLS. open is the sum of every sv_* state, in use the
// server connections linked to a client (active, or busy with a cancel).
func mapPools(src rowSource) ([]poolRow, error) {
	c := colIndex(src.columns(),
		"database", "user", "pool_mode", "cl_waiting", "maxwait", "maxwait_us",
		"sv_active", "sv_active_cancel", "sv_being_canceled",
		"sv_idle", "sv_used", "sv_tested", "sv_login",
		"cl_active", "cl_active_cancel_req", "cl_waiting_cancel_req")
	const (
		cDB, cUser, cMode, cWaiting, cMaxwait, cMaxwaitUS = 0, 1, 2, 3, 4, 5
		firstInUse, lastInUse                             = 6, 8
		firstOpen, lastOpen                               = 6, 12
		cClActive, cClActiveCancel, cClWaitingCancel      = 13, 14, 15
	)
	if c[cDB] < 0 {
		return nil, missing("database")
	}
	if c[cUser] < 0 {
		return nil, missing("user")
	}
	states := stateColumns(src.columns())
	var out []poolRow
	for src.next() {
		v := src.values()
		if !present(v, c[cDB]) || !present(v, c[cUser]) {
			continue
		}
		p := poolRow{
			database: str(v, c[cDB]),
			user:     str(v, c[cUser]),
			mode:     str(v, c[cMode]),
			waiting:  count(v, c[cWaiting]),
			states:   statesOf(v, states),
		}
		for k := firstOpen; k <= lastOpen; k++ {
			n := count(v, c[k])
			p.open += n.Value
			if k <= lastInUse && k >= firstInUse {
				p.inUse += n.Value
			}
		}
		p.svActive = count(v, c[firstInUse]).Value
		if w := count(v, c[cMaxwait]); w.Valid {
			p.maxWait = w
			if us := count(v, c[cMaxwaitUS]); us.Valid {
				p.maxWait.Value += us.Value / 1e6
			}
		}
		for _, k := range []int{cWaiting, cClActive, cClActiveCancel, cClWaitingCancel} {
			if n := count(v, c[k]); n.Valid {
				p.clients.Value += n.Value
				p.clients.Valid = true
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// dbRow is one SHOW DATABASES row. The sizes are the effective ones:
// PgBouncer applies the [pgbouncer] defaults before printing them.
type dbRow struct {
	name, mode                                                     string
	poolSize, minPoolSize, reserve, maxConnections, currentConnect Optional
	paused, disabled                                               bool
}

// mapDatabases maps SHOW DATABASES. The reserve pool is `reserve_pool` up to
// 1.23 and `reserve_pool_size` from 1.24.
func mapDatabases(src rowSource) ([]dbRow, error) {
	c := colIndex(src.columns(),
		"name", "pool_mode", "pool_size", "min_pool_size", "reserve_pool_size", "reserve_pool",
		"max_connections", "current_connections", "paused", "disabled")
	if c[0] < 0 {
		return nil, missing("name")
	}
	var out []dbRow
	for src.next() {
		v := src.values()
		if !present(v, c[0]) {
			continue
		}
		d := dbRow{
			name:           str(v, c[0]),
			mode:           str(v, c[1]),
			poolSize:       count(v, c[2]),
			minPoolSize:    count(v, c[3]),
			reserve:        count(v, c[4]),
			maxConnections: count(v, c[6]),
			currentConnect: count(v, c[7]),
		}
		if !d.reserve.Valid {
			d.reserve = count(v, c[5])
		}
		p, dis := num(v, c[8]), num(v, c[9])
		d.paused = p.Valid && p.Value != 0
		d.disabled = dis.Valid && dis.Value != 0
		out = append(out, d)
	}
	return out, nil
}

// userRow is one SHOW USERS row's overrides (1.23+): absent when not set.
type userRow struct {
	poolSize, reserve Optional
}

// mapUsers maps SHOW USERS. pool_size (1.23+) and reserve_pool_size (newer)
// are printed padded ("        5"), empty when the user sets none.
func mapUsers(src rowSource) (map[string]userRow, error) {
	c := colIndex(src.columns(), "name", "pool_size", "reserve_pool_size")
	if c[0] < 0 {
		return nil, missing("name")
	}
	out := map[string]userRow{}
	for src.next() {
		v := src.values()
		if !present(v, c[0]) {
			continue
		}
		u := userRow{poolSize: count(v, c[1]), reserve: count(v, c[2])}
		if u.poolSize.Valid || u.reserve.Valid {
			out[str(v, c[0])] = u
		}
	}
	return out, nil
}

// configKeys are the SHOW CONFIG keys poolwatch uses.
var configKeys = []string{"max_client_conn", "pool_mode"}

// mapConfig maps SHOW CONFIG (key, value) to the keys in configKeys.
func mapConfig(src rowSource) (map[string]string, error) {
	c := colIndex(src.columns(), "key", "value")
	if c[0] < 0 {
		return nil, missing("key")
	}
	if c[1] < 0 {
		return nil, missing("value")
	}
	out := map[string]string{}
	for src.next() {
		v := src.values()
		k := cell(v, c[0])
		for _, want := range configKeys {
			if string(k) == want && present(v, c[1]) {
				out[want] = str(v, c[1])
			}
		}
	}
	return out, nil
}

// mapLists maps SHOW LISTS (list, items), in PgBouncer's order. A row
// whose items is missing or garbage is left out.
func mapLists(src rowSource) ([]ListCount, error) {
	c := colIndex(src.columns(), "list", "items")
	if c[0] < 0 {
		return nil, missing("list")
	}
	if c[1] < 0 {
		return nil, missing("items")
	}
	var out []ListCount
	for src.next() {
		v := src.values()
		if n := count(v, c[1]); present(v, c[0]) && n.Valid {
			out = append(out, ListCount{List: str(v, c[0]), Items: n.Value})
		}
	}
	return out, nil
}

// listItems returns the items of the list named name, if reported.
func listItems(lists []ListCount, name string) (float64, bool) {
	for _, l := range lists {
		if l.List == name {
			return l.Items, true
		}
	}
	return 0, false
}

// mapMem maps SHOW MEM (name, size, used, free, memtotal), in PgBouncer's
// order.
func mapMem(src rowSource) ([]MemoryCache, error) {
	c := colIndex(src.columns(), "name", "size", "used", "free", "memtotal")
	if c[0] < 0 {
		return nil, missing("name")
	}
	var out []MemoryCache
	for src.next() {
		v := src.values()
		if !present(v, c[0]) {
			continue
		}
		out = append(out, MemoryCache{
			Name:        str(v, c[0]),
			ObjectBytes: count(v, c[1]),
			Used:        count(v, c[2]),
			Free:        count(v, c[3]),
			TotalBytes:  count(v, c[4]),
		})
	}
	return out, nil
}

// mapStats maps SHOW STATS totals. A row with any of the three counters
// total_xact_count, total_query_count and total_wait_time missing or
// garbage is left out whole, so a counter never reads a false 0; the other
// counters are absent where their column is missing (older versions) or
// garbage. Times are microseconds in PgBouncer, seconds here. The admin
// console's row is left out.
func mapStats(src rowSource) ([]DatabaseStats, error) {
	c := colIndex(src.columns(), "database", "total_xact_count", "total_query_count", "total_wait_time",
		"total_xact_time", "total_query_time", "total_received", "total_sent",
		"total_server_assignment_count", "total_client_parse_count", "total_server_parse_count", "total_bind_count")
	if c[0] < 0 {
		return nil, missing("database")
	}
	micro := func(o Optional) Optional {
		o.Value /= 1e6
		return o
	}
	var out []DatabaseStats
	for src.next() {
		v := src.values()
		if !present(v, c[0]) || str(v, c[0]) == adminDatabase {
			continue
		}
		x, q, w := count(v, c[1]), count(v, c[2]), count(v, c[3])
		if !x.Valid || !q.Valid || !w.Valid {
			continue
		}
		out = append(out, DatabaseStats{
			Database:           str(v, c[0]),
			Transactions:       x.Value,
			Queries:            q.Value,
			ClientWaitSeconds:  w.Value / 1e6,
			TransactionSeconds: micro(count(v, c[4])),
			QuerySeconds:       micro(count(v, c[5])),
			ReceivedBytes:      count(v, c[6]),
			SentBytes:          count(v, c[7]),
			ServerAssignments:  count(v, c[8]),
			ClientParses:       count(v, c[9]),
			ServerParses:       count(v, c[10]),
			Binds:              count(v, c[11]),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Database < out[j].Database })
	return out, nil
}

// clientScan is what SHOW CLIENTS yields: PgBouncer's current time and the
// leak candidates.
type clientScan struct {
	// now is PgBouncer's clock, in parseClock's seconds; valid when nowOK.
	now   float64
	nowOK bool
	// ownFound reports whether the agent's own row was identified.
	ownFound   bool
	rows       int
	candidates []clientCandidate
}

// ownClient identifies the agent's own console connection in SHOW CLIENTS.
type ownClient struct {
	addr string // the agent's local IP as PgBouncer sees it; "" to match any
	port int    // the agent's local port; 0 when unknown
}

// scanClients maps SHOW CLIENTS. Rows are streamed: only the few that match
// the leak signature are kept, everything else costs no allocation. now is
// the request_time of the agent's own row (its request is this very SHOW
// CLIENTS), or, when that row cannot be identified (NAT, proxy), the latest
// request_time of all rows, which is the same value: the agent's row is one
// of them and no request is later than now.
func scanClients(src rowSource, own ownClient, modes *modeResolver) (clientScan, error) {
	return scanClientsCounting(src, own, modes, nil)
}

// scanClientsCounting is scanClients that also counts, in apps (when not
// nil), every client but the admin console's by application_name and
// address, whatever its state. apps.ok tells whether this PgBouncer shows
// application_name at all.
func scanClientsCounting(src rowSource, own ownClient, modes *modeResolver, apps *appCounter) (clientScan, error) {
	c := colIndex(src.columns(),
		"state", "link", "request_time", "wait", "wait_us", "ptr", "connect_time",
		"database", "user", "application_name", "addr", "port", "replication", "id")
	const (
		cState, cLink, cReq, cWait, cWaitUS, cPtr, cConn = 0, 1, 2, 3, 4, 5, 6
		cDB, cUser, cApp, cAddr, cPort, cRepl, cID       = 7, 8, 9, 10, 11, 12, 13
	)
	for _, req := range []struct {
		i    int
		name string
	}{{cState, "state"}, {cLink, "link"}, {cReq, "request_time"}, {cWait, "wait"}, {cPtr, "ptr"}} {
		if c[req.i] < 0 {
			return clientScan{}, missing(req.name)
		}
	}
	var (
		out    clientScan
		maxReq = math.Inf(-1)
		ownReq float64
	)
	if apps != nil {
		apps.ok = c[cApp] >= 0
	}
	for src.next() {
		v := src.values()
		out.rows++
		if apps != nil && apps.ok && string(cell(v, c[cDB])) != adminDatabase {
			apps.add(str(v, c[cApp]), str(v, c[cAddr]))
		}
		req, ok := parseClock(cell(v, c[cReq]))
		if !ok {
			continue
		}
		if req > maxReq {
			maxReq = req
		}
		if !out.ownFound && own.port > 0 && string(cell(v, c[cDB])) == adminDatabase {
			if p := count(v, c[cPort]); p.Valid && int(p.Value) == own.port &&
				(own.addr == "" || !present(v, c[cAddr]) || string(cell(v, c[cAddr])) == own.addr) {
				out.ownFound, ownReq = true, req
			}
		}
		inFlight := !isZero(v, c[cWait]) || (present(v, c[cWaitUS]) && !isZero(v, c[cWaitUS]))
		if !linkedIdle(cell(v, c[cState]), cell(v, c[cLink]), inFlight) ||
			!modes.counts(cell(v, c[cDB]), cell(v, c[cUser]), cell(v, c[cRepl])) {
			continue
		}
		cand := clientCandidate{
			link:     str(v, c[cLink]),
			database: str(v, c[cDB]),
			user:     str(v, c[cUser]),
			app:      str(v, c[cApp]),
			addr:     str(v, c[cAddr]),
			request:  req,
		}
		if p := str(v, c[cPort]); p != "" && cand.addr != "" {
			cand.addr = net.JoinHostPort(cand.addr, p)
		}
		if id := str(v, c[cID]); id != "" {
			cand.id = "id:" + id + "@" + str(v, c[cReq])
		} else {
			cand.id = str(v, c[cPtr]) + "@" + str(v, c[cConn]) + "@" + str(v, c[cReq])
		}
		out.candidates = append(out.candidates, cand)
	}
	switch {
	case out.ownFound:
		out.now, out.nowOK = ownReq, true
	case !math.IsInf(maxReq, -1):
		out.now, out.nowOK = maxReq, true
	}
	return out, nil
}

// serverRow is the part of a SHOW SERVERS row a leak needs.
type serverRow struct {
	database, user string
	pid            int
}

// mapServers maps the SHOW SERVERS rows whose ptr is in want (the links of
// the leaked clients).
func mapServers(src rowSource, want map[string]bool) (map[string]serverRow, error) {
	c := colIndex(src.columns(), "ptr", "database", "user", "remote_pid")
	if c[0] < 0 {
		return nil, missing("ptr")
	}
	out := map[string]serverRow{}
	for src.next() {
		v := src.values()
		if !want[string(cell(v, c[0]))] {
			continue
		}
		s := serverRow{database: str(v, c[1]), user: str(v, c[2])}
		if pid := count(v, c[3]); pid.Valid && pid.Value <= math.MaxInt32 {
			s.pid = int(pid.Value)
		}
		out[str(v, c[0])] = s
	}
	return out, nil
}

// parseBouncerVersion extracts "1.18.0" from the console's server_version
// ParameterStatus ("1.18.0/bouncer") or SHOW VERSION ("PgBouncer 1.18.0").
func parseBouncerVersion(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "PgBouncer")
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "/ "); i >= 0 {
		s = s[:i]
	}
	return s
}

// versionAtLeast reports whether version ("1.23.1") is at least
// major.minor. An unknown or unparsable version counts as new enough, so
// that a command is tried rather than skipped.
func versionAtLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || (ma == major && mi >= minor)
}

// bouncerRound collects one round's mapped output. Fields stay nil when
// their query failed or was skipped.
type bouncerRound struct {
	cfg     config.Target
	version string
	pools   []poolRow
	poolsOK bool
	dbs     []dbRow
	users   map[string]userRow
	config  map[string]string
	lists   []ListCount
	stats   []DatabaseStats
	mem     []MemoryCache
	// clientsRan reports whether SHOW CLIENTS was sent, and ownFound whether
	// the agent's own row was identified in it (for tests).
	clientsRan, ownFound bool
	leaks                []pendingLeak
	servers              map[string]serverRow
	errors               []QueryError
	// apps are the per-application counts of SHOW CLIENTS, nil when not
	// asked for or not known.
	apps []ApplicationConnections
}

// result assembles the Result. It is pure.
func (r *bouncerRound) result() *Result {
	res := newResult(config.KindPgBouncer, &r.cfg)
	res.Version, res.Errors = r.version, r.errors
	res.Applications = r.apps
	dbByName := map[string]dbRow{}
	for _, d := range r.dbs {
		dbByName[d.name] = d
	}

	// Leaks, attributed to the pool of their server connection.
	type agg struct {
		n, oldest float64
	}
	leakByPool := map[string]agg{}
	for _, l := range r.leaks {
		db, user, pid := l.database, l.user, 0
		if s, ok := r.servers[l.link]; ok {
			if s.database != "" && s.user != "" {
				db, user = s.database, s.user
			}
			pid = s.pid
		}
		name := db + "/" + user
		a := leakByPool[name]
		a.n++
		a.oldest = math.Max(a.oldest, l.age)
		leakByPool[name] = a
		res.Leaks = append(res.Leaks, Leak{
			ID:              l.id,
			Pool:            name,
			ApplicationName: l.app,
			User:            l.user,
			Database:        l.database,
			ClientAddr:      l.addr,
			PID:             pid,
			Age:             seconds(l.age),
		})
	}
	res.Leaks = sortLeaks(res.Leaks)

	var pools []Pool
	seen := map[string]bool{}
	for _, p := range r.pools {
		if p.database == adminDatabase {
			continue
		}
		name := p.database + "/" + p.user
		if seen[name] {
			continue
		}
		seen[name] = true
		d := dbByName[p.database]
		mode := p.mode
		if mode == "" {
			mode = d.mode
		}
		if mode == "" {
			mode = r.config["pool_mode"]
		}
		pool := Pool{
			Name: name, Database: p.database, User: p.user, Mode: mode,
			Min:            d.minPoolSize,
			Max:            d.poolSize,
			Reserve:        d.reserve,
			Open:           p.open,
			InUse:          p.inUse,
			Waiting:        p.waiting,
			MaxWaitSeconds: p.maxWait,
			States:         p.states,
		}
		if u, ok := r.users[p.user]; ok {
			if u.poolSize.Valid {
				pool.Max = u.poolSize
			}
			if u.reserve.Valid {
				pool.Reserve = u.reserve
			}
		}
		if a, ok := leakByPool[name]; ok {
			pool.Leaked, pool.OldestLeakSeconds = a.n, a.oldest
		}
		pools = append(pools, pool)
	}

	// The client side.
	clients := Pool{Name: PoolClients}
	if v, ok := r.config["max_client_conn"]; ok {
		clients.Max = num([][]byte{[]byte(v)}, 0)
	}
	haveClients := false
	if n, ok := listItems(r.lists, "used_clients"); ok {
		clients.Open, clients.InUse, haveClients = n, n, true
	} else if r.poolsOK {
		for _, p := range r.pools {
			if p.clients.Valid {
				clients.Open += p.clients.Value
				haveClients = true
			}
		}
		clients.InUse = clients.Open
	}
	if haveClients {
		pools = append(pools, clients)
	}

	// Database-wide caps, and the databases' states.
	for _, d := range r.dbs {
		if d.name == adminDatabase {
			continue
		}
		res.Databases = append(res.Databases, DatabaseState{Name: d.name, Paused: d.paused, Disabled: d.disabled})
		if !d.maxConnections.Valid || d.maxConnections.Value <= 0 || !d.currentConnect.Valid {
			continue
		}
		name := d.name + "/*"
		if seen[name] {
			continue
		}
		seen[name] = true
		mode := d.mode
		if mode == "" {
			mode = r.config["pool_mode"]
		}
		pools = append(pools, Pool{
			Name: name, Database: d.name, Mode: mode,
			Max:   d.maxConnections,
			Open:  d.currentConnect.Value,
			InUse: d.currentConnect.Value,
		})
	}
	sort.Slice(res.Databases, func(i, j int) bool { return res.Databases[i].Name < res.Databases[j].Name })

	res.Pools, res.PoolsDropped = capPools(pools, &r.cfg, PoolClients)
	res.Databases, res.Stats = capDatabases(res.Databases, r.stats, res.Pools, r.cfg.MaxPools)
	res.Lists, res.Memory = r.lists, r.mem
	return res
}
