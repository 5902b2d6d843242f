package agent

import "time"

// Seams for the tests of package agent_test.

// SetClock makes now the clock of rounds' Start and of
// min_scrape_interval. Call it before Apply.
func (a *Agent) SetClock(now func() time.Time) { a.now = now }

// SetAfterSnapshot makes Scrape call f between taking the targets and
// starting their rounds. Call it before Scrape.
func (a *Agent) SetAfterSnapshot(f func()) { a.afterSnapshot = f }

// WaitClosing waits until the pools of the targets that reloads removed or
// changed are closed.
func (a *Agent) WaitClosing() { a.closing.Wait() }
