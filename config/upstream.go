package config

// checkUpstreams checks the upstream key of every target, once all targets
// are known: it names a postgres target of this configuration, and only a
// target that is not postgres sets it (a postgres target is its own
// upstream). The link is static on purpose: it must hold while the
// connections it links are leaked, dead or refused, when nothing the agent
// reads at run time (PgBouncer's SHOW SERVERS remote_pid against
// pg_stat_activity.pid) is there to match.
func (p *parser) checkUpstreams(targets []Target) error {
	kinds := make(map[string]Kind, len(targets))
	for _, t := range targets {
		kinds[t.Name] = t.Kind
	}
	for i, t := range targets {
		o, ok := p.set(joinIndex("targets", i) + ".upstream")
		if !ok {
			continue
		}
		kind, known := kinds[t.Upstream]
		switch {
		case t.Kind == KindPostgres:
			return p.errorAt(o, "a postgres target is its own upstream: set upstream on the pgbouncer targets in front of it")
		case t.Upstream == "":
			return p.errorAt(o, "must not be empty: name the postgres target behind this one, or remove the key")
		case !known:
			return p.errorAt(o, "no target is named %q: name the postgres target of this configuration behind this one", t.Upstream)
		case kind != KindPostgres:
			return p.errorAt(o, "target %q is a %s target: name the postgres target behind this one", t.Upstream, kind)
		}
	}
	return nil
}

// UpstreamOf returns the target whose server t's connections end on: t
// itself for a postgres target, t.Upstream for others ("" when not set).
func UpstreamOf(t *Target) string {
	if t.Kind == KindPostgres {
		return t.Name
	}
	return t.Upstream
}
