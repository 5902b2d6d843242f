package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of ProcessOptions.
const (
	// DefaultReadyBudget bounds one start attempt of a daemon, up to its
	// readiness path answering 200.
	DefaultReadyBudget = 30 * time.Second
	// DefaultStopGrace is how long a daemon gets to exit after SIGTERM
	// before it is killed.
	DefaultStopGrace = 15 * time.Second
)

const (
	// daemonStartAttempts: a free port can be taken between picking it and
	// binding it; a start that fails with "address already in use" is
	// retried with a new port.
	daemonStartAttempts = 3
	// killWait bounds the wait for a process to be reaped after SIGKILL.
	killWait = 10 * time.Second
	// readyPollEvery is the interval of the readiness polls.
	readyPollEvery = 50 * time.Millisecond
)

// ProcessOptions say how a child process is supervised. The zero value is
// what tests want.
type ProcessOptions struct {
	// ReadyBudget bounds each start attempt, up to the readiness path
	// answering 200; 0 means DefaultReadyBudget.
	ReadyBudget time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL; 0 means
	// DefaultStopGrace.
	StopGrace time.Duration
	// ProcessGroup runs the child in a process group of its own: a
	// terminal's Ctrl-C then reaches only this process, which stops the
	// child in its own time, and stop signals the whole group and finally
	// kills whatever the child forked and left behind. Programs (the demo)
	// want this; tests do not need it.
	ProcessGroup bool
}

func (o ProcessOptions) readyBudget() time.Duration {
	if o.ReadyBudget <= 0 {
		return DefaultReadyBudget
	}
	return o.ReadyBudget
}

func (o ProcessOptions) stopGrace() time.Duration {
	if o.StopGrace <= 0 {
		return DefaultStopGrace
	}
	return o.StopGrace
}

// DaemonOptions describe a daemon that serves HTTP on a loopback address
// given on its command line.
type DaemonOptions struct {
	// Name names the daemon in messages and its log files,
	// Dir/<Name>-<attempt>.log.
	Name string
	// Bin is the binary's absolute path (see LookPath).
	Bin string
	// Dir is the working directory and $HOME of the daemon, and holds its
	// logs. It must exist.
	Dir string
	// Args returns the command line for the listen address addr
	// ("127.0.0.1:PORT").
	Args func(addr string) []string
	// ReadyPath is polled until it answers 200; "" means "/-/ready".
	ReadyPath string
	// Addr is the listen address ("127.0.0.1:PORT") to start on, to start a
	// daemon again where its clients know it; "" picks a free loopback
	// port.
	Addr string
	ProcessOptions
}

// Daemon is a child process started by launch (Prometheus, Alertmanager,
// the agent, or any other HTTP server). Its stdout and stderr go to
// LogPath and one goroutine reaps it. It gets SIGKILL if this process dies
// (Pdeathsig). The fields are set before it is returned and never change.
type Daemon struct {
	Name    string
	Addr    string // 127.0.0.1:PORT
	URL     string // http://127.0.0.1:PORT
	LogPath string

	opts    ProcessOptions
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid once done is closed
}

// StartDaemon starts a daemon on a free loopback port (or on opts.Addr)
// and returns once its ReadyPath answers 200. ctx cancels the start. A
// start on a free port that fails because another process took the port
// is retried with a new one (3 attempts). When the daemon does not come
// up, the error holds its log's tail.
func StartDaemon(ctx context.Context, opts DaemonOptions) (*Daemon, error) {
	if opts.Name == "" || opts.Bin == "" || opts.Dir == "" || opts.Args == nil {
		return nil, errors.New("launch: DaemonOptions need Name, Bin, Dir and Args")
	}
	readyPath := opts.ReadyPath
	if readyPath == "" {
		readyPath = "/-/ready"
	}
	var lastErr error
	attempts := daemonStartAttempts
	if opts.Addr != "" {
		attempts = 1
	}
	for attempt := 1; attempt <= attempts; attempt++ {
		addr := opts.Addr
		if addr == "" {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		cmd := exec.Command(opts.Bin, opts.Args(addr)...) //nolint:gosec // the caller's binary (LookPath) and arguments
		cmd.Dir = opts.Dir
		cmd.Env = childEnv(opts.Dir)
		logPath := filepath.Join(opts.Dir, fmt.Sprintf("%s-%d.log", opts.Name, attempt))
		d, err := startCommand(opts.Name, cmd, logPath, opts.ProcessOptions)
		if err != nil {
			return nil, err
		}
		d.Addr, d.URL = addr, "http://"+addr
		lastErr = d.waitReady(ctx, d.URL+readyPath)
		if lastErr == nil {
			return d, nil
		}
		if err := d.Close(); err != nil {
			lastErr = errors.Join(lastErr, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !strings.Contains(d.LogTail(40), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// configuredDaemon is a daemon known to LookPath that reads one
// configuration file, written to dir/file before the start; args returns
// its command line for that file's path and the listen address.
type configuredDaemon struct {
	name, dir, file, config string
	po                      ProcessOptions
	args                    func(cfgPath, addr string) []string
}

// options looks the binary up, writes the configuration and returns the
// daemon's DaemonOptions.
func (c configuredDaemon) options() (DaemonOptions, error) {
	if err := checkDependency(c.name); err != nil {
		return DaemonOptions{}, err
	}
	bin, err := LookPath(c.name)
	if err != nil {
		return DaemonOptions{}, err
	}
	if c.dir == "" {
		return DaemonOptions{}, fmt.Errorf("launch: no directory for %s", c.name)
	}
	cfg := filepath.Join(c.dir, c.file)
	if err := os.WriteFile(cfg, []byte(c.config), 0o600); err != nil {
		return DaemonOptions{}, fmt.Errorf("write %s config: %w", c.name, err)
	}
	return DaemonOptions{
		Name: c.name, Bin: bin, Dir: c.dir,
		Args:           func(addr string) []string { return c.args(cfg, addr) },
		ProcessOptions: c.po,
	}, nil
}

// start is the StartXxx of a configuredDaemon.
func (c configuredDaemon) start(ctx context.Context) (*Daemon, error) {
	do, err := c.options()
	if err != nil {
		return nil, err
	}
	return StartDaemon(ctx, do)
}

// startCommand starts cmd, set up by the caller (path, arguments, Dir,
// Env), under launch's supervision: its stdout and stderr are appended to
// logPath, its SysProcAttr is replaced by Pdeathsig (and Setpgid with
// po.ProcessGroup), and one goroutine reaps it.
func startCommand(name string, cmd *exec.Cmd, logPath string, po ProcessOptions) (*Daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // a log path of the caller's own directory
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: po.ProcessGroup, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, cmd.Path, err)
	}
	d := &Daemon{Name: name, LogPath: logPath, opts: po, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// PID returns the process id (with ProcessGroup, also its process group id).
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// LogTail returns the last n lines of the log, indented, for messages.
func (d *Daemon) LogTail(n int) string { return logTail(d.LogPath, n) }

func (d *Daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// exitText describes how the process ended; call once done is closed.
func (d *Daemon) exitText() string {
	if d.waitErr == nil {
		return "exit status 0"
	}
	return d.waitErr.Error()
}

// waitReady polls url until it answers 200, the process exits, ctx is done
// or the ready budget runs out.
func (d *Daemon) waitReady(parent context.Context, url string) error {
	budget := d.opts.readyBudget()
	ctx, cancel := context.WithTimeout(parent, budget)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if d.exited() {
			return fmt.Errorf("%s exited during start-up (%s); log:\n%s", d.Name, d.exitText(), d.LogTail(30))
		}
		last = getOK(ctx, client, url)
		if last == nil {
			return nil
		}
		t := time.NewTimer(readyPollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%s not ready within %v (last: %w); log:\n%s", d.Name, budget, last, d.LogTail(30))
		case <-d.done:
		case <-t.C:
		}
		t.Stop()
	}
}

// getOK GETs url and returns an error unless it answered 200. The
// connection is not kept: no idle connection outlives the poll.
func getOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", url, err)
	}
	req.Close = true
	resp, err := client.Do(req) //nolint:gosec // G704: a loopback address of a daemon launch started
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}

// signal sends sig to the process, or to its group with ProcessGroup.
func (d *Daemon) signal(sig syscall.Signal) error {
	if d.opts.ProcessGroup {
		if err := syscall.Kill(-d.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal %s's process group with %v: %w", d.Name, sig, err)
		}
		return nil
	}
	if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s with %v: %w", d.Name, sig, err)
	}
	return nil
}

// Close stops the daemon: it sends SIGTERM, waits StopGrace, then sends
// SIGKILL and waits up to 10 s for the process to be reaped. It returns an
// error when SIGKILL was needed or signalling failed. Calling it again does
// nothing more; with ProcessGroup, whatever the child forked and left
// behind is killed too.
func (d *Daemon) Close() error {
	var errs []error
	if !d.exited() {
		if err := d.signal(syscall.SIGTERM); err != nil {
			errs = append(errs, err)
		}
	}
	grace := d.opts.stopGrace()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-d.done:
		if d.opts.ProcessGroup {
			_ = syscall.Kill(-d.PID(), syscall.SIGKILL)
		}
		return errors.Join(errs...)
	case <-t.C:
	}
	if err := d.signal(syscall.SIGKILL); err != nil {
		errs = append(errs, err)
	}
	t2 := time.NewTimer(killWait)
	defer t2.Stop()
	select {
	case <-d.done:
		errs = append(errs, fmt.Errorf("%s did not exit within %v of SIGTERM and was killed", d.Name, grace))
	case <-t2.C:
		errs = append(errs, fmt.Errorf("%s (pid %d) did not exit even %v after SIGKILL", d.Name, d.PID(), killWait))
	}
	return errors.Join(errs...)
}

// PIDAlive reports whether a process with this pid exists and has not
// exited (a zombie counts as exited; a process of another user counts as
// alive).
func PIDAlive(pid int) bool { return pidAlive(pid) }
