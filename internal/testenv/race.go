//go:build race

package testenv

// raceEnabled is true when the tests run with the race detector, so the
// agent binary built for them has it too.
const raceEnabled = true
