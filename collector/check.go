package collector

import (
	"errors"
	"fmt"
)

// errNotTextSafe wraps what makes a collector's series unfit for Text: what
// the registry's consistency check, which Text does not run per series,
// would reject.
var errNotTextSafe = errors.New("series the registry would reject")

// checker is the consistency check of Text, done on the model rather than
// per series: every label value valid UTF-8, and every key that becomes a
// label (a pool's name, a database's) unique where it must be, so that no
// two series of a family have the same labels. The collector sends one
// series per family and key by construction (lists and caches of SHOW MEM
// are deduplicated as they are sent).
type checker struct {
	err error
}

func (c *checker) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{errNotTextSafe}, args...)...)
	}
}

// values checks label values.
func (c *checker) values(vs ...string) {
	for _, v := range vs {
		if !validLabelValue(v) {
			c.fail("label value %q is not valid UTF-8", v)
		}
	}
}

// keys checks that the keys of a scope (a target's pools...) are unique,
// and valid label values.
type keys struct {
	c     *checker
	scope string
	seen  map[string]struct{}
}

func (c *checker) keys(scope string, n int) keys {
	return keys{c: c, scope: scope, seen: make(map[string]struct{}, n)}
}

func (k keys) add(key string) {
	k.c.values(key)
	if _, dup := k.seen[key]; dup {
		k.c.fail("%s %q twice", k.scope, key)
		return
	}
	k.seen[key] = struct{}{}
}

func (c *checker) labels(static map[string]string) {
	for n, v := range static {
		if !validLegacyName(n) {
			c.fail("label name %q needs escaping", n)
		}
		c.values(v)
	}
}

// textSafe runs the checker over the rounds.
func (c *Targets) textSafe() error {
	var ck checker
	targets := ck.keys("target", len(c.rounds))
	for _, r := range c.rounds {
		targets.add(r.Target)
		ck.labels(r.Labels)
		ck.values(string(r.Kind), r.Version, r.Upstream)
		for q := range r.ScrapeErrors {
			ck.values(q)
		}
		pools := ck.keys("pool", len(r.Pools))
		for _, p := range r.Pools {
			pools.add(p.Name)
			ck.values(p.Database, p.User, p.Mode)
			// A handful per pool: compared pairwise.
			for i, st := range p.States {
				ck.values(st.State)
				for _, prev := range p.States[:i] {
					if prev.Side == st.Side && prev.State == st.State {
						ck.fail("pool %q state %q twice", p.Name, st.State)
					}
				}
			}
		}
		unaccounted := ck.keys("unaccounted pool", len(r.Unaccounted))
		for _, u := range r.Unaccounted {
			unaccounted.add(u.Pool)
		}
		dbs := ck.keys("database", len(r.Databases))
		for _, db := range r.Databases {
			dbs.add(db.Name)
		}
		stats := ck.keys("database of SHOW STATS", len(r.Stats))
		for _, s := range r.Stats {
			stats.add(s.Database)
		}
		for _, l := range r.Lists {
			ck.values(l.List)
		}
		for _, m := range r.Memory {
			ck.values(m.Name)
		}
		nodes := ck.keys("node", len(r.Nodes))
		for _, n := range r.Nodes {
			nodes.add(n.Name)
			ck.values(n.Address, n.Role)
		}
		if ck.err != nil {
			return fmt.Errorf("target %q: %w", r.Target, ck.err)
		}
	}
	return nil
}

func (c *ProbePools) textSafe() error {
	var ck checker
	targets := ck.keys("target", len(c.pools))
	for _, p := range c.pools {
		targets.add(p.Target)
		ck.labels(p.Labels)
	}
	return ck.err
}

func (c *AddressProbes) textSafe() error {
	var ck checker
	for r := range c.s.Refused {
		ck.values(r)
	}
	return ck.err
}
