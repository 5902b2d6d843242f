package config

// checkUpstreams checks the upstream key of every target, once all targets
// are known (and seen_as resolved): it names a postgres target of this
// configuration, and only a target that is not postgres sets it (a postgres
// target is its own upstream). An application target that does not set it
// gets the upstream its seen_as targets agree on, if they do. The link is
// static on purpose: it must hold while the connections it links are
// leaked, dead or refused, when nothing the agent reads at run time
// (PgBouncer's SHOW SERVERS remote_pid against pg_stat_activity.pid) is
// there to match.
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
	for i := range targets {
		if t := &targets[i]; t.Kind == KindApplication && t.Upstream == "" {
			t.Upstream = seenAsUpstream(t, targets)
		}
	}
	return nil
}

// seenAsUpstream returns the upstream that every seen_as target of t names
// (a postgres target, or a pgbouncer target's upstream), or "" when they
// name none or several.
func seenAsUpstream(t *Target, targets []Target) string {
	byName := make(map[string]*Target, len(targets))
	for i := range targets {
		byName[targets[i].Name] = &targets[i]
	}
	up := ""
	for _, s := range t.SeenAs {
		server, ok := byName[s.Target]
		if !ok {
			return ""
		}
		u := UpstreamOf(server)
		if u == "" || (up != "" && u != up) {
			return ""
		}
		up = u
	}
	return up
}

// UpstreamOf returns the target whose server t's connections end on: t
// itself for a postgres target, t.Upstream for others ("" when not set).
func UpstreamOf(t *Target) string {
	if t.Kind == KindPostgres {
		return t.Name
	}
	return t.Upstream
}
