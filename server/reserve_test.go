package server

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

func TestAnswerCost_ReservesTwiceTheLastGatherAtMostHalfTheBudget(t *testing.T) {
	var c answerCost
	ctx, cancel := c.waitContext(context.Background())
	_, ok := ctx.Deadline()
	require.False(t, ok, "no budget, no deadline")
	cancel()

	budget, cancelBudget := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelBudget()
	end, _ := budget.Deadline()
	wait := func() time.Duration {
		ctx, cancel := c.waitContext(budget)
		defer cancel()
		d, ok := ctx.Deadline()
		require.True(t, ok)
		return end.Sub(d)
	}
	require.Equal(t, time.Duration(0), wait(), "nothing gathered yet: no reserve")

	g := c.gatherer(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		time.Sleep(50 * time.Millisecond) // the cost being measured
		return nil, nil
	}))
	_, err := g.Gather()
	require.NoError(t, err)
	last := time.Duration(c.last.Load())
	require.GreaterOrEqual(t, last, 50*time.Millisecond, "the gather was timed")
	require.Equal(t, 2*last, wait(), "twice the last gather")

	c.last.Store(int64(time.Minute))
	require.InDelta(t, float64(5*time.Second), float64(wait()), float64(100*time.Millisecond), "at most half the budget")
}
