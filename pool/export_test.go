package pool

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Hooks exposes the pool's test seams to the external test package.
type Hooks struct {
	At        func(ctx context.Context, pt Point)
	Tick      <-chan time.Time
	Configure func(*pgxpool.Config)
	Password  func(context.Context) (string, error)
	Sleep     func(context.Context, time.Duration) error
}

// Point is a place in Do where a test may panic.
type Point = point

// The points of Do, in the order a call passes them.
const (
	PointAcquired = pointAcquired
	PointCheck    = pointCheck
	PointChecked  = pointChecked
	PointDestroy  = pointDestroy
	PointTrack    = pointTrack
	PointHandOff  = pointHandOff
	PointRelease  = pointRelease
)

// NewWithHooks is New with test seams.
func NewWithHooks(opts Options, h Hooks) (*Pool, error) {
	var at func(context.Context, point)
	if h.At != nil {
		at = func(ctx context.Context, pt point) { h.At(ctx, pt) }
	}
	return newPool(opts, hooks{at: at, tick: h.Tick, configure: h.Configure, password: h.Password, sleep: h.Sleep})
}

// Cleaned is closed once the cleanup Close started has finished: every call
// returned and every connection closed.
func (p *Pool) Cleaned() <-chan struct{} { return p.cleaned }

// HasInner reports whether the pool holds an inner pgxpool now.
func (p *Pool) HasInner() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inner != nil
}
