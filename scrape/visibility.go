package scrape

import "github.com/poolwatch/poolwatch/config"

// Visibility reports whether the agent's role saw only part of a postgres
// target's connections this round (see Result.LimitedVisibility). known is
// false when the round says nothing about it: another kind of target, or a
// round that did not read pg_stat_activity (the connect, the query or the
// round failed); limited is then false.
func (r *Result) Visibility() (limited, known bool) {
	if r.Kind != config.KindPostgres {
		return false, false
	}
	for _, e := range r.Errors {
		switch e.Query {
		case QueryConnect, QueryActivity, QueryRound:
			return false, false
		}
	}
	return r.LimitedVisibility, true
}
