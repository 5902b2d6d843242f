package scrape

import (
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/poolwatch/poolwatch/config"
)

// ApplicationConnections is what a server (postgres or pgbouncer) sees of
// the connections whose application_name matches one glob, in any state:
// on postgres its client backends (the agent's own excluded), on pgbouncer
// its clients (SHOW CLIENTS; the admin console's excluded).
type ApplicationConnections struct {
	// ApplicationName is the glob.
	ApplicationName string
	// Total counts every matching connection.
	Total float64
	// ByAddress counts the matching connections by client IP address
	// (netip's canonical form, IPv4-mapped addresses unmapped). Connections
	// with no address (Unix sockets) are in Total only.
	ByAddress map[string]float64
}

// Unaccounted is the cross-check of one of an application's pools (or of
// all its pools together, Pool "*"): the connections it counts in use that
// the server does not see at all.
type Unaccounted struct {
	Pool  string
	Value float64
}

// AllPools is Unaccounted.Pool when a seen_as entry covers every pool of an
// application target that reports more than one.
const AllPools = "*"

// appCounter counts connections by application_name glob and client
// address while SHOW CLIENTS is scanned.
type appCounter struct {
	globs []string
	res   []*regexp.Regexp
	out   []ApplicationConnections
	// ok is false when the server does not show application names.
	ok bool
}

// newAppCounter returns a counter for globs, nil when there are none.
func newAppCounter(globs []string) *appCounter {
	if len(globs) == 0 {
		return nil
	}
	c := &appCounter{globs: globs}
	for _, g := range globs {
		c.res = append(c.res, globRegexp(g))
		c.out = append(c.out, ApplicationConnections{ApplicationName: g, ByAddress: map[string]float64{}})
	}
	return c
}

// add counts one connection of application app from address addr ("" or
// anything that is not an IP address: no address).
func (c *appCounter) add(app, addr string) {
	for i, re := range c.res {
		if !re.MatchString(app) {
			continue
		}
		c.out[i].Total++
		if a, ok := canonicalIP(addr); ok {
			c.out[i].ByAddress[a]++
		}
	}
}

// globRegexp compiles a glob of config's syntax (`*` any run, `?` one
// character, everything else itself) into an anchored regexp.
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`)$`)
	return regexp.MustCompile(b.String())
}

// canonicalIP returns s as a canonical IP address, if it is one.
func canonicalIP(s string) (string, bool) {
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return "", false
	}
	return a.Unmap().WithZone("").String(), true
}

// instanceAddr is the IP address in an application target's URL, if its
// host is one.
func instanceAddr(t config.Target) (string, bool) {
	u, err := url.Parse(t.URL)
	if err != nil {
		return "", false
	}
	return canonicalIP(u.Hostname())
}

// comparison is the seen_as entries of one application target that share a
// pool: the server side of one cross-check is the sum over them.
type comparison struct {
	pool    string
	entries []config.SeenAs
	mode    config.Compare
	// key identifies the comparison among replicas: the pool and the
	// sorted (target, glob) pairs.
	key string
}

// comparisons groups t's seen_as entries by pool, in the order of pools.
func comparisons(t config.Target) []comparison {
	byPool := map[string]*comparison{}
	var pools []string
	for _, s := range t.SeenAs {
		c := byPool[s.Pool]
		if c == nil {
			c = &comparison{pool: s.Pool, mode: config.CompareAuto}
			byPool[s.Pool] = c
			pools = append(pools, s.Pool)
		}
		c.entries = append(c.entries, s)
		// The strictest wins: total, then instance, then auto.
		switch {
		case s.Compare == config.CompareTotal:
			c.mode = config.CompareTotal
		case s.Compare == config.CompareInstance && c.mode == config.CompareAuto:
			c.mode = config.CompareInstance
		}
	}
	sort.Strings(pools)
	out := make([]comparison, 0, len(pools))
	for _, p := range pools {
		c := byPool[p]
		sort.Slice(c.entries, func(i, j int) bool {
			a, b := c.entries[i], c.entries[j]
			return a.Target < b.Target || (a.Target == b.Target && a.ApplicationName < b.ApplicationName)
		})
		parts := []string{p}
		for _, e := range c.entries {
			parts = append(parts, e.Target, e.ApplicationName)
		}
		c.key = strings.Join(parts, "\x00")
		out = append(out, *c)
	}
	return out
}

// CrossCheckPeers returns the targets whose rounds the cross-check of the
// application target app needs besides its own: the servers its seen_as
// entries name, then its replicas (the application targets of all that
// have a seen_as comparison identical to one of app's: same pool, same
// servers, same globs). Both are sorted and without app.
func CrossCheckPeers(app config.Target, all []config.Target) (servers, replicas []string) {
	keys := map[string]bool{}
	for _, c := range comparisons(app) {
		keys[c.key] = true
		for _, e := range c.entries {
			if !slices.Contains(servers, e.Target) {
				servers = append(servers, e.Target)
			}
		}
	}
	for _, t := range all {
		if t.Name == app.Name || t.Kind != config.KindApplication {
			continue
		}
		for _, c := range comparisons(t) {
			if keys[c.key] {
				replicas = append(replicas, t.Name)
				break
			}
		}
	}
	sort.Strings(servers)
	sort.Strings(replicas)
	return servers, replicas
}

// CrossCheck compares the application target app, whose round is res,
// with what the servers of its seen_as entries see. rounds holds the rounds
// of those servers and of app's replicas (see CrossCheckPeers), by target
// name; configs the replicas' configurations. It is pure.
//
// For each comparison (the seen_as entries of one pool, or of every pool
// when they name none), the application's side is the connections it
// counts in use in those pools, and the server's side the connections the
// servers see for the entries' globs, in any state:
//
//   - per instance when the target's URL host is an IP address and the
//     server shows the instance's own connections by that address: every
//     member of the comparison (the target and its replicas) has a
//     distinct IP address in its URL, and every connection the servers see
//     for the globs comes from one of them (always, with compare: instance);
//   - otherwise against the total: the sum over the target and its
//     replicas against everything the servers see for the globs (always,
//     with compare: total). Every member then carries the same value.
//
// The value is max(0, in use − seen). A comparison is left out when a side
// is unknown: app's round failed or has no pool the entry names, a server's
// round could not count (failed, or a postgres role that cannot see other
// roles' backends), or, against the total, a replica's round is missing or
// failed.
func CrossCheck(app config.Target, res *Result, rounds map[string]*Result, configs map[string]config.Target) []Unaccounted {
	if res == nil || !res.Up() {
		return nil
	}
	var out []Unaccounted
	for _, c := range comparisons(app) {
		inUse, ok := poolsInUse(res, c.pool)
		if !ok {
			continue
		}
		seen := make([]ApplicationConnections, 0, len(c.entries))
		for _, e := range c.entries {
			ac, ok := serverSees(rounds[e.Target], e.ApplicationName)
			if !ok {
				seen = nil
				break
			}
			seen = append(seen, ac)
		}
		if seen == nil {
			continue
		}
		members := replicasOf(app, c, configs)
		var value float64
		if addr, ok := instanceAddr(app); ok && (c.mode == config.CompareInstance || (c.mode == config.CompareAuto && perInstance(app, members, seen))) {
			var s float64
			for _, ac := range seen {
				s += ac.ByAddress[addr]
			}
			value = inUse - s
		} else {
			total := inUse
			known := true
			for _, m := range members {
				n, ok := poolsInUse(rounds[m.Name], poolOf(m, c.key))
				if !ok {
					known = false
					break
				}
				total += n
			}
			if !known {
				continue
			}
			var s float64
			for _, ac := range seen {
				s += ac.Total
			}
			value = total - s
		}
		out = append(out, Unaccounted{Pool: unaccountedPool(res, c.pool), Value: max(0, value)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pool < out[j].Pool })
	return out
}

// poolsInUse sums the in-use connections of res's pools named pool (all of
// them for ""); false when res failed or has no such pool.
func poolsInUse(res *Result, pool string) (float64, bool) {
	if res == nil || !res.Up() {
		return 0, false
	}
	var n float64
	found := false
	for _, p := range res.Pools {
		if pool == "" || p.Name == pool {
			n += p.InUse
			found = true
		}
	}
	return n, found
}

// serverSees returns what the round res of a server counted for glob;
// false when it could not count, or cannot see every role's backends.
func serverSees(res *Result, glob string) (ApplicationConnections, bool) {
	if res == nil || res.LimitedVisibility {
		return ApplicationConnections{}, false
	}
	for _, ac := range res.Applications {
		if ac.ApplicationName == glob {
			return ac, true
		}
	}
	return ApplicationConnections{}, false
}

// replicasOf returns the configurations of app's replicas for comparison c,
// sorted by name.
func replicasOf(app config.Target, c comparison, configs map[string]config.Target) []config.Target {
	var out []config.Target
	for _, t := range configs {
		if t.Name == app.Name || t.Kind != config.KindApplication {
			continue
		}
		if poolOf(t, c.key) != "\x00none" {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// poolOf returns the pool of t's comparison whose key is key, "\x00none"
// when t has none.
func poolOf(t config.Target, key string) string {
	for _, c := range comparisons(t) {
		if c.key == key {
			return c.pool
		}
	}
	return "\x00none"
}

// perInstance reports whether the servers identify app and its replicas by
// address: each has a distinct IP address in its URL, and every connection
// seen comes from one of those addresses.
func perInstance(app config.Target, replicas []config.Target, seen []ApplicationConnections) bool {
	addrs := map[string]bool{}
	for _, t := range append([]config.Target{app}, replicas...) {
		a, ok := instanceAddr(t)
		if !ok || addrs[a] {
			return false
		}
		addrs[a] = true
	}
	for _, ac := range seen {
		var fromMembers float64
		for a := range addrs {
			fromMembers += ac.ByAddress[a]
		}
		if fromMembers != ac.Total {
			return false
		}
	}
	return true
}

// unaccountedPool is the pool label of a comparison: the pool it names, the
// target's one pool, or AllPools.
func unaccountedPool(res *Result, pool string) string {
	switch {
	case pool != "":
		return pool
	case len(res.Pools) == 1:
		return res.Pools[0].Name
	}
	return AllPools
}
