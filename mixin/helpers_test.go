package mixin

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// repoRoot is the repository root, relative to this package's directory
// (go test runs in the package directory).
const repoRoot = ".."

// requireTool returns the path of a binary, through testenv's one policy
// (testenv.Require): a missing binary fails the test unless
// POOLWATCH_TEST_SKIP names its dependency.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	testenv.Require(t, name)
	path, err := testenv.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// runTool runs a command in dir with a deadline and returns its combined
// output and error.
func runTool(t *testing.T, dir, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // G204: the tests run promtool and amtool by design
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// copyFiles copies the files matching pattern into dir and returns their
// base names.
func copyFiles(t *testing.T, pattern, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatalf("glob %s: %v", pattern, err)
	}
	if len(paths) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	var names []string
	for _, p := range paths {
		b := readTestFile(t, p)
		name := filepath.Base(p)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		names = append(names, name)
	}
	return names
}

// readTestFile reads a file of the repository or of a test's temp dir.
func readTestFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path) //nolint:gosec // G304: paths are the repository's own files
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}
