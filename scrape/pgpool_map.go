package scrape

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/poolwatch/poolwatch/config"
)

// This file maps Pgpool-II's SHOW POOL_* output to the pool model. Every
// function here is pure, as for PgBouncer (pgbouncer_map.go): columns by
// name, unknown columns ignored, a missing column absent.
//
// Columns of Pgpool-II 4.3 (recorded live, testdata/pgpool-4.3):
//
//	SHOW POOL_PROCESSES: pool_pid, start_time, client_connection_count,
//	  database, username, backend_connection_time, pool_counter, status
//	SHOW POOL_POOLS: pool_pid, start_time, client_connection_count, pool_id,
//	  backend_id, database, username, backend_connection_time,
//	  client_connection_time, client_disconnection_time,
//	  client_idle_duration, majorversion, minorversion, pool_counter,
//	  pool_backendpid, pool_connected, status
//	SHOW POOL_NODES: node_id, hostname, port, status, pg_status, lb_weight,
//	  role, pg_role, select_cnt, load_balance_node, replication_delay,
//	  replication_state, replication_sync_state, last_status_change

// Pgpool-II pool names.
const (
	// PoolChildren is Pgpool-II's client side: its num_init_children child
	// processes, one per client.
	PoolChildren = "children"
	// pgpoolNodePrefix + node_id names the pool of a backend node's
	// connections ("node0").
	pgpoolNodePrefix = "node"
)

// Child statuses as SHOW POOL_PROCESSES prints them.
const (
	childWaiting       = "Wait for connection" // no client: the child is free
	childIdleInTxn     = "Idle in transaction"
	childStateWaitConn = "wait_for_connection"
)

// childState turns a child's status into a state label: lower case, words
// joined by "_" ("Idle in transaction" is "idle_in_transaction").
func childState(status string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(status)), " ", "_")
}

// childRow is one SHOW POOL_PROCESSES row.
type childRow struct {
	pid                    string
	database, user, status string
}

// mapProcesses maps SHOW POOL_PROCESSES: one row per child process.
func mapProcesses(src rowSource) ([]childRow, error) {
	c := colIndex(src.columns(), "pool_pid", "database", "username", "status")
	if c[0] < 0 {
		return nil, missing("pool_pid")
	}
	if c[3] < 0 {
		return nil, missing("status")
	}
	var out []childRow
	for src.next() {
		v := src.values()
		if !present(v, c[0]) {
			continue
		}
		out = append(out, childRow{pid: str(v, c[0]), database: str(v, c[1]), user: str(v, c[2]), status: str(v, c[3])})
	}
	return out, nil
}

// slotRow is one connected SHOW POOL_POOLS row: a cached connection of one
// child, in one of its max_pool slots, to one backend node.
type slotRow struct {
	pid, node      string
	database, user string
	backendPID     int
	// clientSince identifies the client the slot serves now
	// (client_connection_time).
	clientSince string
}

// poolsScan is what SHOW POOL_POOLS yields: the connected slots, and the
// number of slots per child and node (max_pool), which it shows whether
// connected or not.
type poolsScan struct {
	slots   []slotRow
	maxPool int
}

// mapPoolPools maps SHOW POOL_POOLS. Only connected slots are kept
// (pool_connected 1, or a backend pid where that column is missing).
func mapPoolPools(src rowSource) (poolsScan, error) {
	c := colIndex(src.columns(), "pool_pid", "pool_id", "backend_id", "database", "username",
		"pool_backendpid", "pool_connected", "client_connection_time")
	const cPid, cPoolID, cNode, cDB, cUser, cBPid, cConn, cClient = 0, 1, 2, 3, 4, 5, 6, 7
	for _, req := range []struct {
		i    int
		name string
	}{{cPid, "pool_pid"}, {cNode, "backend_id"}} {
		if c[req.i] < 0 {
			return poolsScan{}, missing(req.name)
		}
	}
	var out poolsScan
	for src.next() {
		v := src.values()
		if id := count(v, c[cPoolID]); id.Valid && id.Value < math.MaxInt32 && int(id.Value)+1 > out.maxPool {
			out.maxPool = int(id.Value) + 1
		}
		bpid := count(v, c[cBPid])
		connected := num(v, c[cConn])
		if connected.Valid && connected.Value == 0 || !connected.Valid && (!bpid.Valid || bpid.Value == 0) {
			continue
		}
		if !present(v, c[cPid]) || !present(v, c[cNode]) {
			continue
		}
		s := slotRow{pid: str(v, c[cPid]), node: str(v, c[cNode]), database: str(v, c[cDB]), user: str(v, c[cUser]), clientSince: str(v, c[cClient])}
		if bpid.Valid && bpid.Value <= math.MaxInt32 {
			s.backendPID = int(bpid.Value)
		}
		out.slots = append(out.slots, s)
	}
	return out, nil
}

// nodeRow is one SHOW POOL_NODES row.
type nodeRow struct {
	id, address, status, role string
}

// mapNodes maps SHOW POOL_NODES.
func mapNodes(src rowSource) ([]nodeRow, error) {
	c := colIndex(src.columns(), "node_id", "hostname", "port", "status", "role")
	if c[0] < 0 {
		return nil, missing("node_id")
	}
	var out []nodeRow
	for src.next() {
		v := src.values()
		if !present(v, c[0]) {
			continue
		}
		n := nodeRow{id: str(v, c[0]), status: str(v, c[3]), role: str(v, c[4])}
		if h, p := str(v, c[1]), str(v, c[2]); h != "" && p != "" {
			n.address = h + ":" + p
		} else {
			n.address = h
		}
		out = append(out, n)
	}
	return out, nil
}

// nodeUp reports whether Pgpool-II uses a node: status "up", or "waiting"
// (attached, no client connected to it yet). "down", "unused" and
// "quarantine" are not.
func nodeUp(status string) bool { return status == "up" || status == "waiting" }

// mapSetting maps PGPOOL SHOW <name>: one row, one column named name.
func mapSetting(src rowSource, name string) (Optional, error) {
	c := colIndex(src.columns(), name)
	if c[0] < 0 {
		return Optional{}, missing(name)
	}
	var out Optional
	for src.next() {
		if !out.Valid {
			out = count(src.values(), c[0])
		}
	}
	return out, nil
}

// parsePgpoolVersion extracts "4.3.5" from SHOW POOL_VERSION
// ("4.3.5 (tamahomeboshi)").
func parsePgpoolVersion(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, ' '); i >= 0 {
		s = s[:i]
	}
	return s
}

// backendActivity is what pg_stat_activity says about the backend of a
// child idle in a transaction.
type backendActivity struct {
	idleSeconds, xactSeconds float64
	xactStart                string
	app, user, database      string
	query                    string
}

// pgpoolLeakCandidate is a child idle in a transaction, with the backend
// pid of its connection on the main node (0 when unknown).
type pgpoolLeakCandidate struct {
	child      childRow
	backendPID int
	// key identifies the child's client across rounds: pid and
	// client_connection_time.
	key string
}

// pgpoolRound collects one round's mapped output. Fields stay nil when
// their query failed or was skipped.
type pgpoolRound struct {
	cfg        config.Target
	version    string
	settings   pgpoolSettings
	children   []childRow
	childrenOK bool
	pools      poolsScan
	poolsOK    bool
	nodes      []nodeRow
	candidates []pgpoolLeakCandidate
	activity   map[int]backendActivity
	firstSeen  map[string]time.Time
	now        time.Time
	errors     []QueryError
}

// pgpoolSettings are the settings a round needs, read once per connection.
type pgpoolSettings struct {
	numInitChildren, maxPool Optional
}

// mainNode returns the node whose connections carry the sessions' queries:
// the primary, else the first node that is up, else "0".
func mainNode(nodes []nodeRow) string {
	for _, n := range nodes {
		if n.role == "primary" && nodeUp(n.status) {
			return n.id
		}
	}
	for _, n := range nodes {
		if nodeUp(n.status) {
			return n.id
		}
	}
	return "0"
}

// leakCandidates returns the children idle in a transaction, each with the
// backend pid of its slot on the main node (the slot for the child's
// current database and user).
func leakCandidates(children []childRow, pools poolsScan, nodes []nodeRow) []pgpoolLeakCandidate {
	main := mainNode(nodes)
	var out []pgpoolLeakCandidate
	for _, ch := range children {
		if ch.status != childIdleInTxn {
			continue
		}
		cand := pgpoolLeakCandidate{child: ch, key: ch.pid}
		for _, s := range pools.slots {
			if s.pid == ch.pid && s.node == main && s.database == ch.database && s.user == ch.user {
				cand.backendPID = s.backendPID
				cand.key = ch.pid + "@" + s.clientSince
				break
			}
		}
		out = append(out, cand)
	}
	return out
}

// result assembles the Result. It is pure.
func (r *pgpoolRound) result() *Result {
	res := newResult(config.KindPgpool, &r.cfg)
	res.Version, res.Errors = r.version, r.errors

	// Leaks: age from pg_stat_activity's state_change (PostgreSQL's clock),
	// else from when the agent first saw the child idle in a transaction.
	threshold := r.cfg.LeakThreshold.Seconds()
	var leaked, oldest float64
	for _, cand := range r.candidates {
		l := Leak{Pool: PoolChildren, User: cand.child.user, Database: cand.child.database, PID: cand.backendPID}
		if a, ok := r.activity[cand.backendPID]; ok && cand.backendPID != 0 {
			l.Age = seconds(a.idleSeconds)
			l.TransactionAge = seconds(a.xactSeconds)
			l.ApplicationName, l.Query = a.app, truncate(a.query, MaxQueryLength)
			if a.user != "" {
				l.User = a.user
			}
			if a.database != "" {
				l.Database = a.database
			}
			l.ID = "pgpool:" + cand.child.pid + "@" + strconv.Itoa(cand.backendPID) + "@" + a.xactStart
		} else if seen, ok := r.firstSeen[cand.key]; ok {
			l.Age = r.now.Sub(seen)
			l.ID = "pgpool:" + cand.key + "@" + seen.UTC().Format(time.RFC3339Nano)
		} else {
			continue
		}
		if l.Age.Seconds() <= threshold {
			continue
		}
		leaked++
		oldest = math.Max(oldest, l.Age.Seconds())
		res.Leaks = append(res.Leaks, l)
	}
	res.Leaks = sortLeaks(res.Leaks)

	var pools []Pool
	if r.childrenOK {
		children := Pool{Name: PoolChildren, Max: r.settings.numInitChildren, Leaked: leaked, OldestLeakSeconds: oldest}
		counts := map[string]float64{}
		var order []string
		for _, ch := range r.children {
			st := childState(ch.status)
			if st == "" {
				continue
			}
			if _, ok := counts[st]; !ok {
				order = append(order, st)
			}
			counts[st]++
			if ch.status != childWaiting {
				children.InUse++
			}
		}
		children.Open = children.InUse
		sort.Strings(order)
		for _, st := range order {
			children.States = append(children.States, StateCount{Side: SideClient, State: st, Count: counts[st]})
		}
		pools = append(pools, children)
	}

	if r.poolsOK {
		// A slot is in use while its child serves a client with the slot's
		// database and user.
		serving := map[string]childRow{}
		for _, ch := range r.children {
			if ch.status != childWaiting && ch.status != "" {
				serving[ch.pid] = ch
			}
		}
		byNode := map[string]*Pool{}
		var ids []string
		node := func(id string) *Pool {
			if p, ok := byNode[id]; ok {
				return p
			}
			p := &Pool{Name: pgpoolNodePrefix + id}
			if n, m := r.settings.numInitChildren, r.settings.maxPool; n.Valid && m.Valid {
				p.Max = Some(n.Value * m.Value)
			}
			byNode[id] = p
			ids = append(ids, id)
			return p
		}
		for _, n := range r.nodes {
			node(n.id)
		}
		for _, s := range r.pools.slots {
			p := node(s.node)
			p.Open++
			if ch, ok := serving[s.pid]; ok && ch.database == s.database && ch.user == s.user {
				p.InUse++
			}
		}
		for _, id := range ids {
			pools = append(pools, *byNode[id])
		}
	}

	seenNode := map[string]bool{}
	for _, n := range r.nodes {
		if seenNode[n.id] {
			continue // a node listed twice counts once, the first
		}
		seenNode[n.id] = true
		res.Nodes = append(res.Nodes, BackendNode{
			Name: pgpoolNodePrefix + n.id, Address: n.address, Status: n.status, Role: n.role, Up: nodeUp(n.status),
		})
	}
	sort.Slice(res.Nodes, func(i, j int) bool { return res.Nodes[i].Name < res.Nodes[j].Name })
	res.Pools, res.PoolsDropped = capPools(pools, &r.cfg, PoolChildren)
	return res
}
