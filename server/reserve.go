package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// answerCost remembers how long the last answer of one handler took to
// gather its series, once its rounds were in. A request with a budget stops
// waiting for rounds twice that long before its budget ends (encoding costs
// about what gathering does), at most half of what is left, so that the
// answer, thousands of targets' series included, still reaches Prometheus
// within its scrape timeout: the rounds that were not in time are down for
// that request only (agent.Scrape). Only the gathering is timed, not the
// writing, so that a client that reads slowly cannot shorten the wait of
// others. It is safe for concurrent use.
type answerCost struct {
	last atomic.Int64 // nanoseconds
}

// gatherer returns g, timed into c.
func (c *answerCost) gatherer(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		start := time.Now()
		defer func() { c.last.Store(int64(time.Since(start))) }()
		return g.Gather()
	})
}

// waitContext returns ctx shortened by the reserve for answering, when ctx
// has a deadline; otherwise ctx.
func (c *answerCost) waitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	left := time.Until(deadline)
	reserve := min(2*time.Duration(c.last.Load()), left/2)
	return context.WithDeadline(ctx, deadline.Add(-reserve))
}
