package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// daemonHelperArg marks the command line of the test binary run as a fake
// daemon by TestDaemonHelperProcess: -- daemonHelperArg MODE ADDR.
const daemonHelperArg = "testenv-daemon-helper"

// helperDaemon returns DaemonOptions that run this test binary as a fake
// daemon in mode (see TestDaemonHelperProcess).
func helperDaemon(t *testing.T, mode string, po ProcessOptions) DaemonOptions {
	t.Helper()
	bin, err := os.Executable()
	require.NoError(t, err)
	return DaemonOptions{
		Name: "helper-" + mode,
		Bin:  bin,
		Dir:  t.TempDir(),
		Args: func(addr string) []string {
			return []string{"-test.run=^TestDaemonHelperProcess$", "--", daemonHelperArg, mode, addr}
		},
		ProcessOptions: po,
	}
}

// TestDaemonHelperProcess is not a test: run by helperDaemon, it is a fake
// daemon serving /-/ready on ADDR. Modes: "serve" exits on SIGTERM;
// "ignore-term" ignores it; "exit" fails at once with a message on stderr;
// "fork" starts a sleep(1) that it leaves behind when SIGTERM ends it, and
// prints its pid.
func TestDaemonHelperProcess(_ *testing.T) {
	i := slices.Index(os.Args, daemonHelperArg)
	if i < 0 || i+2 >= len(os.Args) {
		return // an ordinary test run
	}
	mode, addr := os.Args[i+1], os.Args[i+2]
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "helper: boom, cannot start")
		os.Exit(3)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	case "fork":
		sleep := exec.Command("sleep", "300")
		if err := sleep.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		fmt.Printf("forked pid %d\n", sleep.Process.Pid)
	}
	terms := make(chan os.Signal, 1)
	if mode != "ignore-term" {
		signal.Notify(terms, syscall.SIGTERM)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(5)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/ready" {
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	<-terms // forever in ignore-term mode: only SIGKILL ends it
	os.Exit(0)
}

// waitGone waits until pid has exited, for at most 10 s.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, waitExit(ctx, pid), "pid %d", pid)
}

// startDaemon starts a helper daemon and closes it when the test ends.
func startDaemon(t *testing.T, opts DaemonOptions) *Daemon {
	t.Helper()
	d, err := StartDaemon(context.Background(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestStartDaemon_ServesOnALoopbackPortAndLogsToItsDir(t *testing.T) {
	opts := helperDaemon(t, "serve", ProcessOptions{})
	d := startDaemon(t, opts)

	require.Regexp(t, `^127\.0\.0\.1:\d+$`, d.Addr)
	require.Equal(t, "http://"+d.Addr, d.URL)
	require.Equal(t, opts.Dir+"/helper-serve-1.log", d.LogPath)
	require.NoError(t, getOK(context.Background(), &http.Client{Timeout: 5 * time.Second}, d.URL+"/-/ready"))
	require.True(t, PIDAlive(d.PID()))
}

func TestStartDaemon_StartsAgainOnTheAddressOfAStoppedOne(t *testing.T) {
	first := startDaemon(t, helperDaemon(t, "serve", ProcessOptions{}))
	require.NoError(t, first.Close())

	opts := helperDaemon(t, "serve", ProcessOptions{})
	opts.Addr = first.Addr
	again := startDaemon(t, opts)
	require.Equal(t, first.Addr, again.Addr)
	require.Equal(t, first.URL, again.URL)
	require.NoError(t, getOK(context.Background(), &http.Client{Timeout: 5 * time.Second}, again.URL+"/-/ready"))
}

func TestStartDaemon_OnATakenAddressFailsWithoutTryingAnother(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	opts := helperDaemon(t, "serve", ProcessOptions{})
	opts.Addr = l.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = StartDaemon(ctx, opts)
	require.ErrorContains(t, err, "address already in use")
	_, err = os.Stat(opts.Dir + "/helper-serve-2.log")
	require.True(t, os.IsNotExist(err), "one attempt only")
}

func TestDaemon_CloseEndsItWithSIGTERMAndIsIdempotent(t *testing.T) {
	d := startDaemon(t, helperDaemon(t, "serve", ProcessOptions{}))
	pid := d.PID()

	start := time.Now()
	require.NoError(t, d.Close())
	require.Less(t, time.Since(start), DefaultStopGrace, "SIGTERM was enough")
	require.False(t, PIDAlive(pid))
	require.NoError(t, d.Close(), "a second Close")
}

func TestDaemon_CloseKillsADaemonThatIgnoresSIGTERMAndSaysSo(t *testing.T) {
	d := startDaemon(t, helperDaemon(t, "ignore-term", ProcessOptions{StopGrace: 300 * time.Millisecond}))

	err := d.Close()
	require.ErrorContains(t, err, "helper-ignore-term did not exit within 300ms of SIGTERM and was killed")
	require.False(t, PIDAlive(d.PID()))
}

func TestStartDaemon_FailsWithTheLogTailWhenTheDaemonExitsDuringStartUp(t *testing.T) {
	opts := helperDaemon(t, "exit", ProcessOptions{})
	start := time.Now()
	_, err := StartDaemon(context.Background(), opts)

	require.ErrorContains(t, err, "helper-exit exited during start-up (exit status 3)")
	require.ErrorContains(t, err, "helper: boom, cannot start")
	require.Less(t, time.Since(start), DefaultReadyBudget, "an exit is not waited out")
	_, statErr := os.Stat(opts.Dir + "/helper-exit-2.log")
	require.True(t, errors.Is(statErr, os.ErrNotExist), "a failure other than a taken port is not retried")
}

func TestStartDaemon_GivesUpWhenContextEnds(t *testing.T) {
	// A daemon that never answers 200: its readiness path is missing.
	opts := helperDaemon(t, "serve", ProcessOptions{})
	opts.ReadyPath = "/never"
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := StartDaemon(ctx, opts)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestDaemon_ProcessGroupCloseKillsWhatTheDaemonLeftBehind(t *testing.T) {
	d := startDaemon(t, helperDaemon(t, "fork", ProcessOptions{ProcessGroup: true}))
	m := regexp.MustCompile(`forked pid (\d+)`).FindStringSubmatch(d.LogTail(10))
	require.NotNil(t, m, d.LogTail(10))
	sleepPID, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	require.True(t, PIDAlive(sleepPID))

	require.NoError(t, d.Close())
	require.False(t, PIDAlive(d.PID()))
	waitGone(t, sleepPID)
}
