package scrape

import (
	"sort"

	"github.com/poolwatch/poolwatch/config"
)

// This file is the one place for the per-target cap on pools (max_pools):
// which pools a round keeps when a target has more than the cap, and, on
// pgbouncer, which databases' series go with them. Anyone who can log in
// can create pools (a PgBouncer `*` catch-all creates an auto-database, and
// so a pool, for every database name a client asks for), so the cap must
// never let made-up pools push out the ones that matter.
//
// Ranking, best first; within a rank, by name:
//
//  1. the target-wide pool (`clients` on pgbouncer, `server` on postgres);
//  2. pools whose name matches one of the target's pinned_pools globs;
//  3. busy pools: with connections in use or leaked, or clients waiting;
//  4. pools that only hold open, idle connections;
//  5. pools with nothing open.
//
// Busy pools come before merely open ones because anyone who can log in
// can open connections: each login to a made-up database through a
// PgBouncer `*` catch-all leaves an auto-database whose pool keeps an idle
// server connection for server_idle_timeout (10 minutes by default), and a
// thousand such logins would otherwise push a busy pool with a later name
// out of the cap.
//
// The first max_pools pools are kept, pinned ones included: the cap is a
// hard bound. The kept pools are returned sorted by name.

// poolRank orders pools for the cap: lower is kept first.
func poolRank(p *Pool, keep string, pinned []string) int {
	switch {
	case p.Name == keep:
		return 0
	case matchesAny(pinned, p.Name):
		return 1
	case p.InUse > 0 || p.Leaked > 0 || (p.Waiting.Valid && p.Waiting.Value > 0):
		return 2
	case p.Open > 0:
		return 3
	default:
		return 4
	}
}

// capPools keeps at most t.MaxPools (DefaultMaxPools when 0 or less) of
// pools, ranked as the file comment says, always keeping the pool named
// keep (if present). It returns the kept pools sorted by name and how many
// were dropped. It reorders pools in place.
func capPools(pools []Pool, t *config.Target, keep string) ([]Pool, int) {
	maxPools := t.MaxPools
	if maxPools <= 0 {
		maxPools = DefaultMaxPools
	}
	byName := func(i, j int) bool { return pools[i].Name < pools[j].Name }
	if len(pools) <= maxPools {
		sort.Slice(pools, byName)
		return pools, 0
	}
	ranks := make(map[string]int, len(pools))
	for i := range pools {
		ranks[pools[i].Name] = poolRank(&pools[i], keep, t.PinnedPools)
	}
	sort.SliceStable(pools, func(i, j int) bool {
		ri, rj := ranks[pools[i].Name], ranks[pools[j].Name]
		if ri != rj {
			return ri < rj
		}
		return pools[i].Name < pools[j].Name
	})
	dropped := len(pools) - maxPools
	pools = pools[:maxPools]
	sort.Slice(pools, byName)
	return pools, dropped
}

// capDatabases keeps the database series (PAUSE/DISABLE state and SHOW
// STATS) of at most maxPools databases: those of the kept pools first, then
// paused or disabled ones, then the rest, by name within each. Without the
// cap, every auto-database a stranger creates would add series of its own
// even when its pool is dropped. dbs and stats come sorted by name and stay
// so.
func capDatabases(dbs []DatabaseState, stats []DatabaseStats, kept []Pool, maxPools int) ([]DatabaseState, []DatabaseStats) {
	if maxPools <= 0 {
		maxPools = DefaultMaxPools
	}
	names := map[string]bool{}
	for _, d := range dbs {
		names[d.Name] = true
	}
	for _, s := range stats {
		names[s.Database] = true
	}
	if len(names) <= maxPools {
		return dbs, stats
	}
	state := make(map[string]DatabaseState, len(dbs))
	for _, d := range dbs {
		state[d.Name] = d
	}
	withPool := map[string]bool{}
	for _, p := range kept {
		if p.Database != "" {
			withPool[p.Database] = true
		}
	}
	rank := func(name string) int {
		switch d := state[name]; {
		case withPool[name]:
			return 0
		case d.Paused || d.Disabled:
			return 1
		default:
			return 2
		}
	}
	order := make([]string, 0, len(names))
	for n := range names {
		order = append(order, n)
	}
	sort.Slice(order, func(i, j int) bool {
		ri, rj := rank(order[i]), rank(order[j])
		if ri != rj {
			return ri < rj
		}
		return order[i] < order[j]
	})
	keep := make(map[string]bool, maxPools)
	for _, n := range order[:maxPools] {
		keep[n] = true
	}
	var outDBs []DatabaseState
	for _, d := range dbs {
		if keep[d.Name] {
			outDBs = append(outDBs, d)
		}
	}
	var outStats []DatabaseStats
	for _, s := range stats {
		if keep[s.Database] {
			outStats = append(outStats, s)
		}
	}
	return outDBs, outStats
}

// matchesAny reports whether name matches one of the globs.
func matchesAny(globs []string, name string) bool {
	for _, g := range globs {
		if globMatch(g, name) {
			return true
		}
	}
	return false
}

// globMatch reports whether name matches the glob, in which `*` matches any
// run of characters (none included) and `?` any one character; every other
// character matches itself. The same syntax as application pools' globs
// (see globToLike). Linear in len(glob) × len(name) at worst.
func globMatch(glob, name string) bool {
	g, n := []rune(glob), []rune(name)
	gi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(n) {
		switch {
		case gi < len(g) && (g[gi] == '?' || g[gi] == n[ni]):
			gi++
			ni++
		case gi < len(g) && g[gi] == '*':
			star, mark = gi, ni
			gi++
		case star >= 0:
			gi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for gi < len(g) && g[gi] == '*' {
		gi++
	}
	return gi == len(g)
}
