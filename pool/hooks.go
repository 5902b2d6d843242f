package pool

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// hooks are seams for tests. The zero value, which New uses, changes
// nothing.
type hooks struct {
	// at is called at each point of a Do call. Tests panic there to check
	// that no connection is lost. At pointTrack it runs with Pool.mu held.
	at func(ctx context.Context, pt point)
	// tick replaces the janitor's ticker.
	tick <-chan time.Time
	// configure may change the pgxpool config after the pool has set it up,
	// to add a tracer, for example.
	configure func(*pgxpool.Config)
	// password replaces the reader of Options.Password.
	password func(context.Context) (string, error)
	// sleep replaces the wait between attempts.
	sleep func(context.Context, time.Duration) error
}

// point names a place in Do, between pgxpool handing out a connection and
// the connection's release, where a panic could lose it.
type point string

const (
	// pointAcquired: pgxpool has just handed out a connection.
	pointAcquired point = "acquired"
	// pointCheck: inside the health check, before its query.
	pointCheck point = "check"
	// pointChecked: the connection passed its health check or was fresh.
	pointChecked point = "checked"
	// pointDestroy: a connection is being destroyed, before it is closed.
	pointDestroy point = "destroy"
	// pointTrack: inside track, with Pool.mu held.
	pointTrack point = "track"
	// pointHandOff: just before the callback is called.
	pointHandOff point = "hand_off"
	// pointRelease: inside release, before the connection's fate is decided.
	pointRelease point = "release"
)

// at calls the test hook for pt, if any.
func (p *Pool) at(ctx context.Context, pt point) {
	if p.hooks.at != nil {
		p.hooks.at(ctx, pt)
	}
}
