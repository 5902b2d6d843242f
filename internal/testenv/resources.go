package testenv

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// Resources is what a process holds that a leak would grow: goroutines and
// open file descriptors.
type Resources struct {
	Goroutines, FDs int
}

// CountResources returns this process's goroutines and open file
// descriptors (Linux: /proc/self/fd).
func CountResources(tb testing.TB) Resources {
	tb.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("count file descriptors: %v", err)
	}
	return Resources{Goroutines: runtime.NumGoroutine(), FDs: len(entries)}
}

// Baseline polls until the counts stop changing between two polls 20 ms
// apart (at most 10 s) and returns them: take it after a warm-up.
func Baseline(tb testing.TB) Resources {
	tb.Helper()
	last := CountResources(tb)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		now := CountResources(tb)
		if now == last {
			return now
		}
		last = now
	}
	return last
}

// SettleAt polls until both counts are at or below base, for at most 10 s,
// and fails the test with the last counts if they never get there. It
// returns the counts it settled at.
func SettleAt(tb testing.TB, base Resources) Resources {
	tb.Helper()
	var now Resources
	Eventually(tb, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		now = CountResources(tb)
		return now.Goroutines <= base.Goroutines && now.FDs <= base.FDs,
			fmt.Sprintf("resources did not settle back at the baseline %+v: still %+v", base, now)
	})
	return now
}
