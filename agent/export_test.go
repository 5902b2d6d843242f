package agent

// Seams for the tests of package agent_test.

// SetAfterSnapshot makes Scrape call f between taking the targets and
// starting their rounds. Call it before Scrape.
func (a *Agent) SetAfterSnapshot(f func()) { a.afterSnapshot = f }

// WaitClosing waits until the pools of the targets that reloads removed or
// changed are closed.
func (a *Agent) WaitClosing() { a.closing.Wait() }
