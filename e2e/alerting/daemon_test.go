package alerting

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	// daemonReadyBudget bounds one start of Prometheus or Alertmanager, up
	// to its /-/ready answering 200.
	daemonReadyBudget = 30 * time.Second
	// daemonStopGrace is how long a daemon gets to exit after SIGTERM
	// before it is killed.
	daemonStopGrace = 15 * time.Second
	// daemonStartAttempts: a free port can be taken between picking it and
	// binding it; a start that fails with "address already in use" is
	// retried with a new port.
	daemonStartAttempts = 3
)

// daemon is a Prometheus or Alertmanager child process. Its stdout and
// stderr go to a log file in its temp dir; one goroutine reaps it.
type daemon struct {
	name    string
	URL     string // http://127.0.0.1:PORT
	Addr    string // 127.0.0.1:PORT
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // valid once done is closed
}

// startDaemon starts the binary testenv.LookPath(name) with the arguments
// args(addr) for a free loopback address, in dir, and waits until its
// /-/ready answers 200. It is stopped on cleanup (SIGTERM, then SIGKILL),
// and its log tail is printed if the test failed. The child gets SIGKILL if
// the test process dies.
func startDaemon(t *testing.T, name, dir string, args func(addr string) []string) *daemon {
	t.Helper()
	bin, err := testenv.LookPath(name)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var lastErr error
	for attempt := 1; attempt <= daemonStartAttempts; attempt++ {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		logPath := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, attempt))
		d, err := launch(name, bin, args(addr), dir, logPath)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		d.Addr, d.URL = addr, "http://"+addr
		t.Cleanup(func() {
			d.stop(t)
			if t.Failed() {
				t.Logf("%s log (%s), last lines:\n%s", name, d.logPath, d.logTail(40))
			}
		})
		lastErr = d.waitReady(daemonReadyBudget)
		if lastErr == nil {
			return d
		}
		d.stop(t)
		if !strings.Contains(d.logTail(40), "address already in use") {
			break
		}
	}
	t.Fatalf("start %s: %v", name, lastErr)
	return nil
}

func launch(name, bin string, args []string, dir, logPath string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // a path in the test's temp dir
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	cmd := exec.Command(bin, args...)   //nolint:gosec // bin from testenv.LookPath, args from this test
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + dir, "LC_ALL=C", "TZ=UTC"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	d := &daemon{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// waitReady polls /-/ready until it answers 200, the process exits or the
// budget runs out.
func (d *daemon) waitReady(budget time.Duration) error {
	deadline := time.Now().Add(budget)
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		select {
		case <-d.done:
			return fmt.Errorf("%s exited during startup (%w); log:\n%s", d.name, d.waitErr, d.logTail(30))
		default:
		}
		resp, err := client.Get(d.URL + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/-/ready answered %s", resp.Status)
		}
		last = err
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%s not ready within %v (last: %w); log:\n%s", d.name, budget, last, d.logTail(30))
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-d.done:
		case <-t.C:
		}
		t.Stop()
	}
}

// stop sends SIGTERM, waits daemonStopGrace, then kills the process and
// waits for it to be reaped. A daemon that needed SIGKILL fails the test.
// It is idempotent.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
		return
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal %s: %v", d.name, err)
	}
	timer := time.NewTimer(daemonStopGrace)
	defer timer.Stop()
	select {
	case <-d.done:
		return
	case <-timer.C:
	}
	_ = d.cmd.Process.Kill()
	<-d.done // SIGKILL cannot be ignored; Wait returns once it is reaped
	t.Errorf("%s did not exit within %v of SIGTERM and was killed", d.name, daemonStopGrace)
}

// logTail returns the last n lines of the daemon's log.
func (d *daemon) logTail(n int) string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

// httpGet fetches url with a deadline and returns the status code and body.
func httpGet(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, b, nil
}
