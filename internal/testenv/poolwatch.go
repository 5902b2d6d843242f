package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// binary caches the poolwatch binary built for this test process.
var builtBinary struct {
	once sync.Once
	path string
	err  error
}

// moduleRoot finds the directory holding go.mod, from this source file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the testenv source file")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above %s", file)
		}
		dir = parent
	}
}

// RaceBuild reports whether the agent binary the tests run is built with
// the race detector (as it is when the tests run with -race): its memory
// and CPU figures are then the race detector's, not the agent's.
func RaceBuild() bool { return raceEnabled && os.Getenv(BinaryEnv) == "" }

// BinaryEnv names an environment variable that, when set, is the path of
// the poolwatch binary the tests run instead of building one: to check that
// a test fails on an older build (`go build` it from the older commit). It
// is refused under CI, which always tests the code it checked out.
const BinaryEnv = "POOLWATCH_TEST_BINARY"

// BuildPoolwatch builds the poolwatch binary once per test process (with the
// race detector when the tests run with it) and returns its path; or
// returns the binary that POOLWATCH_TEST_BINARY names.
func BuildPoolwatch(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(BinaryEnv); bin != "" {
		if InCI() {
			tb.Fatalf("%s=%s is set under CI=true: CI tests the binary it builds", BinaryEnv, bin)
		}
		tb.Logf("%s: running %s instead of this tree's code", BinaryEnv, bin)
		return bin
	}
	builtBinary.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			builtBinary.err = err
			return
		}
		// Swept by a later run once this process has exited.
		dir, err := launch.MkdirTemp("bin")
		if err != nil {
			builtBinary.err = err
			return
		}
		out := filepath.Join(dir, "poolwatch")
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "-ldflags", "-X github.com/prometheus/common/version.Version=0.0.0-test -X github.com/prometheus/common/version.Revision=testrev", ".")
		cmd := exec.Command("go", args...) //nolint:gosec // G204: builds this module
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			builtBinary.err = fmt.Errorf("go build: %w: %s", err, b)
			return
		}
		builtBinary.path = out
	})
	if builtBinary.err != nil {
		tb.Fatalf("build poolwatch: %v", builtBinary.err)
	}
	return builtBinary.path
}

// Poolwatch is a running poolwatch agent started by StartPoolwatch.
type Poolwatch struct {
	// URL is the agent's base URL, e.g. http://127.0.0.1:9648.
	URL        string
	Addr       string
	ConfigPath string
	cmd        *exec.Cmd
	logs       *SyncBuffer
	done       chan struct{}
	exitErr    error
	// web is how to reach the agent for the readiness wait.
	web PoolwatchWeb
}

// StartPoolwatch writes config to a file and runs the agent with it on a
// free loopback port, plus any extra flags. It waits until /-/ready answers
// 200 (up to 30 s) and stops the agent (SIGTERM, then SIGKILL) on cleanup.
// If the test failed, the agent's log is printed.
func StartPoolwatch(tb testing.TB, config string, extraArgs ...string) *Poolwatch {
	tb.Helper()
	return startPoolwatch(tb, config, nil, extraArgs)
}

// startPoolwatch is StartPoolwatch, with --web.config.file when web is set.
func startPoolwatch(tb testing.TB, config string, web *PoolwatchWeb, extraArgs []string) *Poolwatch {
	tb.Helper()
	bin := BuildPoolwatch(tb)
	dir := tb.TempDir()
	cfgPath := filepath.Join(dir, "poolwatch.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		tb.Fatalf("write config: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
	args := []string{"--config.file=" + cfgPath, "--web.listen-address=" + addr}
	pw := &Poolwatch{URL: "http://" + addr, Addr: addr, ConfigPath: cfgPath, logs: &SyncBuffer{}, done: make(chan struct{})}
	if web != nil {
		if err := os.WriteFile(pw.WebConfigPath(), []byte(web.Config), 0o600); err != nil {
			tb.Fatalf("write web config: %v", err)
		}
		args = append(args, "--web.config.file="+pw.WebConfigPath())
		if web.HTTPS {
			pw.URL = "https://" + addr
		}
		pw.web = *web
	}
	pw.cmd = exec.Command(bin, append(args, extraArgs...)...) //nolint:gosec // G204: the binary BuildPoolwatch just built
	pw.cmd.Stdout = pw.logs
	pw.cmd.Stderr = pw.logs
	pw.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := pw.cmd.Start(); err != nil {
		tb.Fatalf("start poolwatch: %v", err)
	}
	go func() {
		pw.exitErr = pw.cmd.Wait()
		close(pw.done)
	}()
	tb.Cleanup(func() {
		pw.Stop(tb)
		if tb.Failed() {
			tb.Logf("poolwatch log:\n%s", pw.Logs())
		}
	})
	pw.WaitReady(tb, 30*time.Second)
	return pw
}

// WaitReady polls /-/ready until it answers 200, through the client and
// with the credentials of StartPoolwatchWeb's PoolwatchWeb, if any.
func (p *Poolwatch) WaitReady(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	client := p.web.Client
	if client == nil {
		client = http.DefaultClient
	}
	Eventually(tb, timeout, 20*time.Millisecond, func() (bool, string) {
		select {
		case <-p.done:
			tb.Fatalf("poolwatch exited before it was ready: %v\n%s", p.exitErr, p.Logs())
		default:
		}
		code, err := getStatus(client, p.URL+"/-/ready", p.web.Username, p.web.Password)
		if err != nil {
			return false, fmt.Sprintf("poolwatch not ready at %s (last: %v)\n%s", p.URL, err, p.Logs())
		}
		return code == http.StatusOK, fmt.Sprintf("poolwatch not ready at %s (last: status %d)\n%s", p.URL, code, p.Logs())
	})
}

// Logs returns everything the agent wrote so far.
func (p *Poolwatch) Logs() string { return p.logs.String() }

// PID returns the agent's process id.
func (p *Poolwatch) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the agent.
func (p *Poolwatch) Signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal poolwatch: %v", err)
	}
}

// Done is closed when the agent has exited.
func (p *Poolwatch) Done() <-chan struct{} { return p.done }

// ExitErr is the agent's exit status once Done is closed.
func (p *Poolwatch) ExitErr() error { return p.exitErr }

// Stop sends SIGTERM and waits up to 15 s, then kills the agent.
func (p *Poolwatch) Stop(tb testing.TB) {
	tb.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		tb.Errorf("poolwatch did not stop within 15 s of SIGTERM")
	}
}

// Get fetches path (e.g. "/metrics") and returns the status and body.
func (p *Poolwatch) Get(tb testing.TB, path string, header ...string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
	if err != nil {
		tb.Fatalf("request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}
