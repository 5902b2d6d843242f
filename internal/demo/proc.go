package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// readyBudget bounds one start of a daemon, up to its readiness URL
	// answering 200.
	readyBudget = 45 * time.Second
	// stopGrace is how long a daemon gets to exit after SIGTERM before its
	// whole process group is killed.
	stopGrace = 10 * time.Second
	// startAttempts: a free port can be taken between picking it and
	// binding it; a start that fails with "address already in use" is
	// retried with a new port.
	startAttempts = 3
)

// child is a daemon started by the demo (poolwatch, Prometheus,
// Alertmanager, Chromium). It runs in its own process group, so the
// terminal's Ctrl-C reaches only the demo, which stops it in order, and so
// stop can kill everything it forked; it gets SIGKILL if the demo dies.
// Its stdout and stderr go to a log file.
type child struct {
	name    string
	addr    string // 127.0.0.1:PORT, "" for a child that does not listen
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid once done is closed
}

// startChild starts bin with args in dir, its output appended to logPath.
func startChild(name, bin string, args []string, dir, logPath string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // a path in the demo's own directory
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	cmd := exec.Command(bin, args...)   //nolint:gosec // binaries and arguments chosen by the demo
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + dir, "LC_ALL=C", "TZ=UTC"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the process has exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// pid returns the child's pid, which is also its process group id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM to the child's process group, waits stopGrace, then
// kills the group, and waits for the child to be reaped. It is idempotent.
// It returns an error when SIGKILL was needed.
func (c *child) stop() error {
	if !c.exited() {
		_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	}
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-c.done:
		// Anything the leader forked and left behind goes too.
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		return nil
	case <-t.C:
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	<-c.done // SIGKILL cannot be ignored
	return fmt.Errorf("%s did not exit within %v of SIGTERM and was killed", c.name, stopGrace)
}

// logTail returns the last n lines of the child's log.
func (c *child) logTail(n int) string { return fileTail(c.logPath, n) }

// fileTail returns the last n lines of a file, indented, for error messages.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path) //nolint:gosec // a log in the demo's own directory
	if err != nil {
		return fmt.Sprintf("\t(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

// startDaemon starts the daemon whose arguments args(addr) make it listen
// on a free loopback address, and waits until GET readyPath answers 200. A
// start that fails because the port was taken meanwhile is retried with a
// new port. logPath(attempt) names the log of each attempt.
func startDaemon(ctx context.Context, name, bin, dir, readyPath string, logPath func(attempt int) string, args func(addr string) []string) (*child, error) {
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		c, err := startChild(name, bin, args(addr), dir, logPath(attempt))
		if err != nil {
			return nil, err
		}
		c.addr = addr
		lastErr = c.waitReady(ctx, "http://"+addr+readyPath, readyBudget)
		if lastErr == nil {
			return c, nil
		}
		_ = c.stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !strings.Contains(c.logTail(40), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// waitReady polls url until it answers 200, the child exits, ctx is done or
// the budget runs out.
func (c *child) waitReady(ctx context.Context, url string, budget time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if c.exited() {
			return fmt.Errorf("%s exited during start-up (%w); log:\n%s", c.name, c.waitErr, c.logTail(20))
		}
		last = getOK(ctx, client, url)
		if last == nil {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready within %v (last: %w); log:\n%s", c.name, budget, last, c.logTail(20))
			}
			return ctx.Err()
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
	}
}

// httpGet GETs url. The demo only fetches addresses of the services it
// started on 127.0.0.1.
func httpGet(ctx context.Context, client *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil) //nolint:gosec // G704: a loopback address of the demo's own
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := client.Do(req) //nolint:gosec // G704: see above
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return resp, nil
}

// getOK fetches url and returns an error unless it answered 200.
func getOK(ctx context.Context, client *http.Client, url string) error {
	resp, err := httpGet(ctx, client, url)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}

// freePort binds 127.0.0.1:0, closes the listener and returns the port the
// kernel picked.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port //nolint:errcheck,forcetypeassert // a TCP listener
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("close port probe: %w", err)
	}
	return port, nil
}

// pidAlive reports whether a process with this pid exists and is not a
// zombie.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	zombie := i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
	return !zombie
}
