package testenv

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

// waitGone polls until pid has exited, for at most 10 s.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for PIDAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive after 10 s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartDaemon_ServesOnALoopbackPortAndLogsToItsDir(t *testing.T) {
	opts := helperDaemon(t, "serve", ProcessOptions{})
	d := StartDaemon(t, opts)

	require.Regexp(t, `^127\.0\.0\.1:\d+$`, d.Addr)
	require.Equal(t, "http://"+d.Addr, d.URL)
	require.Equal(t, opts.Dir+"/helper-serve-1.log", d.LogPath)
	require.NoError(t, getOK(context.Background(), &http.Client{Timeout: 5 * time.Second}, d.URL+"/-/ready"))
	require.True(t, PIDAlive(d.PID()))
}

func TestLaunchDaemon_StopEndsItWithSIGTERMAndIsIdempotent(t *testing.T) {
	d, stop, err := LaunchDaemon(context.Background(), helperDaemon(t, "serve", ProcessOptions{}))
	require.NoError(t, err)
	pid := d.PID()

	start := time.Now()
	require.NoError(t, stop())
	require.Less(t, time.Since(start), DefaultStopGrace, "SIGTERM was enough")
	require.False(t, PIDAlive(pid))
	require.NoError(t, stop(), "a second stop")
}

func TestLaunchDaemon_StopKillsADaemonThatIgnoresSIGTERMAndSaysSo(t *testing.T) {
	d, stop, err := LaunchDaemon(context.Background(), helperDaemon(t, "ignore-term", ProcessOptions{StopGrace: 300 * time.Millisecond}))
	require.NoError(t, err)

	err = stop()
	require.ErrorContains(t, err, "helper-ignore-term did not exit within 300ms of SIGTERM and was killed")
	require.False(t, PIDAlive(d.PID()))
}

func TestLaunchDaemon_FailsWithTheLogTailWhenTheDaemonExitsDuringStartUp(t *testing.T) {
	opts := helperDaemon(t, "exit", ProcessOptions{})
	start := time.Now()
	_, _, err := LaunchDaemon(context.Background(), opts)

	require.ErrorContains(t, err, "helper-exit exited during start-up (exit status 3)")
	require.ErrorContains(t, err, "helper: boom, cannot start")
	require.Less(t, time.Since(start), DefaultReadyBudget, "an exit is not waited out")
	_, statErr := os.Stat(opts.Dir + "/helper-exit-2.log")
	require.True(t, errors.Is(statErr, os.ErrNotExist), "a failure other than a taken port is not retried")
}

func TestLaunchDaemon_GivesUpWhenContextEnds(t *testing.T) {
	// A daemon that never answers 200: its readiness path is missing.
	opts := helperDaemon(t, "serve", ProcessOptions{})
	opts.ReadyPath = "/never"
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err := LaunchDaemon(ctx, opts)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestLaunchDaemon_ProcessGroupStopKillsWhatTheDaemonLeftBehind(t *testing.T) {
	d, stop, err := LaunchDaemon(context.Background(), helperDaemon(t, "fork", ProcessOptions{ProcessGroup: true}))
	require.NoError(t, err)
	m := regexp.MustCompile(`forked pid (\d+)`).FindStringSubmatch(d.LogTail(10))
	require.NotNil(t, m, d.LogTail(10))
	sleepPID, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	require.True(t, PIDAlive(sleepPID))

	require.NoError(t, stop())
	require.False(t, PIDAlive(d.PID()))
	waitGone(t, sleepPID)
}

func TestLaunchCommand_SupervisesACommandThatDoesNotListen(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `echo started; trap "" TERM; while :; do sleep 0.05; done`)
	d, stop, err := LaunchCommand("looper", cmd, dir+"/looper.log", ProcessOptions{StopGrace: 300 * time.Millisecond, ProcessGroup: true})
	require.NoError(t, err)
	require.Empty(t, d.Addr)

	deadline := time.Now().Add(10 * time.Second)
	for d.LogTail(1) != "\tstarted" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, "\tstarted", d.LogTail(1))
	require.ErrorContains(t, stop(), "looper did not exit within 300ms of SIGTERM and was killed")
	require.False(t, PIDAlive(d.PID()))
}
