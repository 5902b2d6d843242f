package launch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSweepStale_RemovesOnlyDirsOfDeadProcesses(t *testing.T) {
	tmp := t.TempDir()
	// A pid that belonged to a process that has exited. The kernel may hand
	// it out again at once; try a few until one stays free.
	deadPID := 0
	for range 20 {
		dead := exec.Command("true")
		require.NoError(t, dead.Run())
		if !pidAlive(dead.Process.Pid) {
			deadPID = dead.Process.Pid
			break
		}
	}
	require.NotZero(t, deadPID, "every exited pid was reused at once")
	mk := func(name string) string {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.MkdirAll(filepath.Join(p, "data"), 0o700))
		return p
	}
	stale := mk(fmt.Sprintf("%spg-%d-123", tempPrefix, deadPID))
	mine := mk(fmt.Sprintf("%spg-%d-456", tempPrefix, os.Getpid()))
	// A dead owner but a live postmaster (here: this process) is kept.
	guarded := mk(fmt.Sprintf("%spg-%d-789", tempPrefix, deadPID))
	require.NoError(t, os.WriteFile(filepath.Join(guarded, "data", "postmaster.pid"), []byte(fmt.Sprintf("%d\n/x\n", os.Getpid())), 0o600))
	other := mk("somebody-else-1-2")

	removed := SweepStale(tmp)
	require.Equal(t, []string{stale}, removed)
	for _, keep := range []string{mine, guarded, other} {
		_, err := os.Stat(keep)
		require.NoError(t, err, keep)
	}
}
