package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is the process lifecycle Postgres and PgBouncer share: start on a
// fresh port (retrying on another one when the bind fails) or on the same
// port again, wait until the server is ready, stop it with a signal and a
// grace period, and remove its directory. The owner embeds it and fills in
// the settings and hooks before the first start; mu serializes starts,
// stops and destroy.
type server struct {
	name    string // binary name and the server's name in messages
	port    *int   // the owner's Port: picked by the first start, kept across Stop/Start
	dir     string // the owner's Dir: the working directory, removed by destroy
	logPath string // the owner's LogPath: the server's stdout and stderr
	run     runAs

	startBudget time.Duration // how long a start may take until ready
	stopSignal  syscall.Signal
	stopGrace   time.Duration // from stopSignal to SIGKILL
	// stopExitCode is an exit status that is expected after stopSignal and
	// so not an error; 0 accepts only a clean exit.
	stopExitCode int
	// bindFailures are log messages that say the server could not bind its
	// port, so that a start on a fresh port is worth another attempt.
	bindFailures []string
	// args prepares a start on *port and returns the command line; it runs
	// before every attempt, after the port is picked.
	args func() ([]string, error)
	// ready returns nil once the server accepts clients.
	ready func(ctx context.Context) error

	mu   sync.Mutex
	proc *process // nil while stopped
}

// startLocked starts the server and waits until it is ready. With newPort it
// picks the port and retries with another one when the bind fails; without
// it, it reuses *s.port.
func (s *server) startLocked(newPort bool) error {
	bin, err := LookPath(s.name)
	if err != nil {
		return err
	}
	attempts := 1
	if newPort {
		attempts = 3
	}
	var lastErr error
	for i := 0; i < attempts; i++ {
		if newPort {
			if *s.port, err = FreePort(); err != nil {
				return err
			}
		}
		args, err := s.args()
		if err != nil {
			return err
		}
		var bindFailed bool
		bindFailed, lastErr = s.startOnce(bin, args)
		if lastErr == nil {
			return nil
		}
		if !bindFailed {
			break
		}
	}
	return lastErr
}

func (s *server) startOnce(bin string, args []string) (bool, error) {
	logStart := logSize(s.logPath)
	proc, err := startProcess(s.run, s.name, bin, args, s.dir, s.logPath)
	if err != nil {
		return false, err
	}
	deadline := time.Now().Add(s.startBudget)
	var lastErr error
	bindFailed := func() bool {
		return slices.ContainsFunc(s.bindFailures, func(msg string) bool { return logContainsFrom(s.logPath, logStart, msg) })
	}
	for time.Now().Before(deadline) {
		if proc.exited() {
			return bindFailed(), fmt.Errorf("%s exited during startup on port %d (%w); log tail:\n%s", s.name, *s.port, proc.waitErr, logTail(s.logPath, 30))
		}
		// Some servers keep running after a failed bind: PgBouncer 1.18
		// logs it and goes on with its unix socket alone.
		if bindFailed() {
			_, _ = proc.stop(syscall.SIGKILL, time.Second)
			return true, fmt.Errorf("%s could not bind port %d; log tail:\n%s", s.name, *s.port, logTail(s.logPath, 30))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		lastErr = s.ready(ctx)
		cancel()
		if lastErr == nil {
			s.proc = proc
			return false, nil
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-proc.done:
		case <-t.C:
		}
		t.Stop()
	}
	_, _ = proc.stop(syscall.SIGKILL, time.Second)
	return false, fmt.Errorf("%s on port %d not ready within %v (last error: %w); log tail:\n%s", s.name, *s.port, s.startBudget, lastErr, logTail(s.logPath, 30))
}

func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func logContainsFrom(path string, off int64, s string) bool {
	b, err := os.ReadFile(path) //nolint:gosec // a log file in launch's own temp dir
	if err != nil || int64(len(b)) < off {
		return false
	}
	return strings.Contains(string(b[off:]), s)
}

// stopLocked stops the server with stopSignal, escalating to SIGKILL after
// stopGrace. Stopping a stopped server does nothing.
func (s *server) stopLocked() error {
	if s.proc == nil {
		return nil
	}
	proc := s.proc
	s.proc = nil
	exitErr, err := proc.stop(s.stopSignal, s.stopGrace)
	if err != nil {
		return fmt.Errorf("stop %s on port %d: %w; log tail:\n%s", s.name, *s.port, err, logTail(s.logPath, 20))
	}
	var ee *exec.ExitError
	if exitErr != nil && (!errors.As(exitErr, &ee) || ee.ExitCode() != s.stopExitCode) {
		return fmt.Errorf("%s on port %d exited with %w; log tail:\n%s", s.name, *s.port, exitErr, logTail(s.logPath, 20))
	}
	return nil
}

// Close stops the server and removes its directory. Calling it again does
// nothing.
func (s *server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.stopLocked()
	if rerr := os.RemoveAll(s.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove %s: %w", s.dir, rerr))
	}
	return err
}

// Stop stops the server and keeps its directory; Start brings it back on
// the same port. Stopping a stopped server does nothing.
func (s *server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// Start starts a stopped server on the same port as before and waits until
// it is ready. Starting a running server does nothing. It fails if another
// process took the port in the meantime.
func (s *server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return nil
	}
	s.proc = nil
	if err := s.startLocked(false); err != nil {
		return fmt.Errorf("restart %s on port %d: %w", s.name, *s.port, err)
	}
	return nil
}

// running reports whether the server process is up.
func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// runningPID returns the pid of the running server process, or 0.
func (s *server) runningPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.pid()
}
