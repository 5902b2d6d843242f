package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// The install step of `make demo` (deps-demo, which runs deps-apt) is
// checked with fake dpkg, apt-get, sudo and id first on PATH: removing real
// packages from the machine to watch them come back is not practical, and
// the fakes let every branch be asserted exactly. The real install was run
// by hand (chromium, through `make demo SCREENSHOT=1`).

// fakeSystem is a directory of fake system commands and the files they
// record to.
type fakeSystem struct {
	bin    string // put first on PATH
	aptLog string // one line per apt-get call: its arguments, "sudo " first if through sudo
}

// newFakeSystem writes the fakes:
//   - dpkg-query -W -f='${Status}' NAME says "install ok installed" for the
//     packages in $FAKE_INSTALLED, "deinstall ok config-files" for those in
//     $FAKE_REMOVED (removed, configuration kept), and fails for the others;
//   - apt-get records its arguments and succeeds;
//   - sudo records that it was used and runs the command;
//   - id -u prints $FAKE_UID (other uses run the real id).
func newFakeSystem(t *testing.T) fakeSystem {
	t.Helper()
	dir := t.TempDir()
	f := fakeSystem{bin: filepath.Join(dir, "bin"), aptLog: filepath.Join(dir, "apt.log")}
	require.NoError(t, os.Mkdir(f.bin, 0o700))
	scripts := map[string]string{
		"dpkg-query": `#!/bin/sh
[ "$1" = "-W" ] || { echo "fake dpkg-query: only -W is supported" >&2; exit 2; }
for p in $FAKE_INSTALLED; do [ "$p" = "$3" ] && { printf 'install ok installed'; exit 0; }; done
for p in $FAKE_REMOVED; do [ "$p" = "$3" ] && { printf 'deinstall ok config-files'; exit 0; }; done
echo "dpkg-query: no packages found matching $3" >&2
exit 1
`,
		"apt-get": `#!/bin/sh
echo "${FAKE_VIA_SUDO:+sudo }$*" >> "$FAKE_APT_LOG"
`,
		"sudo": `#!/bin/sh
FAKE_VIA_SUDO=1 exec "$@"
`,
		"id": `#!/bin/sh
if [ "$1" = "-u" ] && [ -n "$FAKE_UID" ]; then echo "$FAKE_UID"; exit 0; fi
exec /usr/bin/id "$@"
`,
	}
	for name, body := range scripts {
		require.NoError(t, os.WriteFile(filepath.Join(f.bin, name), []byte(body), 0o755)) //nolint:gosec // test fakes must be executable
	}
	return f
}

// makeRun runs make in the repository root with the fakes first on PATH
// and returns make's output and the apt-get calls, one per line.
func (f fakeSystem) makeRun(t *testing.T, installed, uid string, args ...string) (string, []string) {
	t.Helper()
	testenv.Require(t, "make")
	makeBin, err := testenv.LookPath("make")
	require.NoError(t, err)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	cmd := exec.Command(makeBin, append([]string{"--no-print-directory", "-C", root}, args...)...) //nolint:gosec // make with the test's arguments
	cmd.Env = append(os.Environ(),
		"PATH="+f.bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FAKE_INSTALLED="+installed,
		"FAKE_UID="+uid,
		"FAKE_APT_LOG="+f.aptLog,
		"MAKEFLAGS=", "MAKELEVEL=",
	)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make %v:\n%s", args, out)
	b, err := os.ReadFile(f.aptLog)
	if os.IsNotExist(err) {
		return string(out), nil
	}
	require.NoError(t, err)
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			calls = append(calls, l)
		}
	}
	return string(out), calls
}

// pgPackage is what deps-apt adds to its install line on a machine without
// the PostgreSQL 15 server binaries (it checks the real path, not dpkg).
func pgPackage() string {
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/postgres"); err == nil {
		return ""
	}
	return " postgresql-15"
}

// installCalls are the apt-get calls deps-apt makes to install pkgs (a
// space-separated list; "" for none), PostgreSQL included when missing.
func installCalls(pkgs string) []string {
	all := strings.TrimSpace(pkgs + pgPackage())
	if all == "" {
		return nil
	}
	return []string{"update -qq", "install -y -qq " + all}
}

const demoPackages = "pgbouncer prometheus prometheus-alertmanager python3-psycopg2"

func TestDepsApt_InstallsOnlyTheMissingPackages(t *testing.T) {
	f := newFakeSystem(t)
	out, calls := f.makeRun(t, "pgbouncer python3-psycopg2", "0", "deps-apt", "APT_PACKAGES="+demoPackages)
	require.Contains(t, out, ">> installing apt packages: prometheus prometheus-alertmanager")
	require.Equal(t, []string{"update -qq", "install -y -qq prometheus prometheus-alertmanager" + pgPackage()}, calls)
}

func TestDepsApt_ReinstallsAPackageRemovedWithItsConfigKept(t *testing.T) {
	// "apt-get remove" leaves the package known to dpkg -s, without binaries.
	t.Setenv("FAKE_REMOVED", "pgbouncer")
	f := newFakeSystem(t)
	out, calls := f.makeRun(t, "prometheus prometheus-alertmanager python3-psycopg2", "0", "deps-apt", "APT_PACKAGES="+demoPackages)
	require.Contains(t, out, ">> installing apt packages: pgbouncer")
	require.Equal(t, []string{"update -qq", "install -y -qq pgbouncer" + pgPackage()}, calls)
}

func TestDepsApt_InstallsNothingWhenEveryPackageIsPresent(t *testing.T) {
	f := newFakeSystem(t)
	out, calls := f.makeRun(t, demoPackages, "0", "deps-apt", "APT_PACKAGES="+demoPackages)
	if pgPackage() == "" {
		require.NotContains(t, out, "installing apt packages")
		require.Empty(t, calls)
	}
}

func TestDepsApt_UsesSudoWhenNotRoot(t *testing.T) {
	f := newFakeSystem(t)
	_, calls := f.makeRun(t, "", "1000", "deps-apt", "APT_PACKAGES=pgbouncer")
	require.Equal(t, []string{"sudo update -qq", "sudo install -y -qq pgbouncer" + pgPackage()}, calls)
}

func TestDepsDemo_InstallsTheDemosPackagesOnAFreshMachine(t *testing.T) {
	f := newFakeSystem(t)
	out, calls := f.makeRun(t, "", "0", "deps-demo")
	require.Contains(t, out, ">> installing apt packages: "+demoPackages+pgPackage()+"\n")
	require.Equal(t, installCalls(demoPackages), calls, "chromium is not needed without SCREENSHOT")
}

func TestDepsDemo_AddsChromiumOnlyForAScreenshot(t *testing.T) {
	for _, tc := range []struct {
		screenshot string
		want       string
	}{
		{"", ""},
		{"0", ""},
		{"1", "chromium"},
		{"yes", "chromium"},
	} {
		t.Run("SCREENSHOT="+tc.screenshot, func(t *testing.T) {
			f := newFakeSystem(t)
			_, calls := f.makeRun(t, demoPackages, "0", "deps-demo", "SCREENSHOT="+tc.screenshot)
			require.Equal(t, installCalls(tc.want), calls)
		})
	}
}

func TestDemoTarget_BuildsPoolwatchAndRunsTheDemoAfterTheInstallStep(t *testing.T) {
	f := newFakeSystem(t)
	// -n prints the recipe without running it; deps-demo's recursive make
	// runs anyway (it is a $(MAKE) line), against the fakes.
	out, _ := f.makeRun(t, demoPackages+" chromium", "0", "-n", "demo", "SCREENSHOT=1")
	deps := strings.Index(out, "dpkg-query")
	build := strings.Index(out, "go build")
	run := strings.Index(out, "go run ./internal/demo -poolwatch ./poolwatch -screenshot docs/img/prometheus-alerts.png")
	require.True(t, deps >= 0 && build > deps && run > build, "want the install step, then make build, then the demo; got:\n%s", out)
}
