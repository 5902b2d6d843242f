package agent_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
)

// run runs the agent binary with args and returns its exit code, stdout and
// stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testenv.BuildPoolwatch(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, stdout.String(), stderr.String()
}

func TestCheckConfig_RejectsEveryBadFileWithTheLoadersOneLineError(t *testing.T) {
	files, err := filepath.Glob("../../config/testdata/bad/*.yml")
	require.NoError(t, err)
	require.Greater(t, len(files), 30)
	for _, f := range files {
		abs, err := filepath.Abs(f)
		require.NoError(t, err)
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, want := config.Load(abs)
			require.Error(t, want)
			code, stdout, stderr := run(t, "check-config", "--config.file="+abs)
			require.Equal(t, 1, code)
			require.Empty(t, stdout)
			require.Equal(t, want.Error()+"\n", stderr, "exactly the loader's error, on one line")
			require.NotContains(t, stderr, "goroutine", "no stack trace")
			require.NotContains(t, stderr, "S3cret", "no password")
		})
	}
}

func TestCheckConfig_AcceptsTheShippedExample(t *testing.T) {
	abs, err := filepath.Abs("../../config.yaml.example")
	require.NoError(t, err)
	cmd := exec.Command(testenv.BuildPoolwatch(t), "check-config", "--config.file="+abs)
	// The example reads its passwords from these variables.
	cmd.Env = append(os.Environ(), exampleEnv(t, abs)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "OK")
}

// exampleEnv sets every password_env variable the example names.
func exampleEnv(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "password_env:") {
			name := strings.TrimSpace(strings.TrimPrefix(line, "password_env:"))
			env = append(env, name+"=example-password")
		}
	}
	return env
}

func TestCheckConfig_MissingFileIsAClearError(t *testing.T) {
	code, _, stderr := run(t, "check-config", "--config.file=/nonexistent/poolwatch.yml")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "/nonexistent/poolwatch.yml")
	require.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
}

func TestRun_BadConfigExitsNonZeroWithoutAStackTrace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(path, []byte("targets: []\n"), 0o600))
	code, _, stderr := run(t, "--config.file="+path, "--web.listen-address=127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "bad.yml:1: targets: at least one target is required")
	require.NotContains(t, stderr, "goroutine ")
}

func TestVersion_PrintsVersionRevisionAndGoVersion(t *testing.T) {
	code, stdout, _ := run(t, "--version")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "poolwatch, version 0.0.0-test")
	require.Contains(t, stdout, "revision: testrev)")
	require.Regexp(t, `go version:\s+go1\.27`, stdout)
}

// run is the default command: `poolwatch --help` shows the flags it takes,
// not only those of the application.
func TestHelp_ListsTheRunFlags(t *testing.T) {
	code, stdout, _ := run(t, "--help")
	require.Equal(t, 0, code)
	for _, flag := range []string{"--config.file", "--web.listen-address", "--web.config.file", "--web.telemetry-path",
		"--scrape.timeout-offset", "--[no-]metrics.targets", "--web.shutdown-timeout", "--web.enable-lifecycle"} {
		require.Contains(t, stdout, flag)
	}
}

func TestFlags_UnknownFlagIsRejected(t *testing.T) {
	code, _, stderr := run(t, "--no-such-flag")
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "unknown flag --no-such-flag")
}
