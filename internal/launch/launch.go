// Package launch starts and stops the real servers that poolwatch's tests
// and its demo run against: throwaway PostgreSQL 15 clusters, PgBouncer and
// Pgpool-II in front of them, Prometheus, Alertmanager, an Alertmanager webhook receiver
// and any daemon that serves HTTP. It knows nothing of package testing:
// tests use it through internal/testenv, whose Start*(tb) functions wrap the
// functions here and register tb.Cleanup; the demo (internal/demo) uses it
// directly.
//
// # Contracts
//
//   - Every Start* function returns a handle, or an error after undoing
//     whatever it started. Every handle has one stop method, Close() error:
//     it stops the processes, removes what was created for them, and is
//     safe to call twice. Postgres, PgBouncer and Pgpool also have Stop and Start,
//     which stop and start the server again on the same port, keeping its
//     directory.
//   - Child processes get SysProcAttr.Pdeathsig = SIGKILL, so a process
//     that dies (panic, timeout, SIGKILL) takes its servers with it.
//     Directories left by such a crash are removed by the next run (see
//     SweepStale).
//   - When the process runs as root, initdb, postgres, pgbouncer and pgpool run as
//     the "postgres" system user, in a temporary directory owned by it.
//   - Ports are picked at run time by binding 127.0.0.1:0; nothing is
//     hard-coded. Everything listens on 127.0.0.1 only.
//   - A missing program gives an error wrapping ErrNotInstalled that names
//     its Dependency and the apt packages that provide it (see Dependencies).
//
// # initdb cache
//
// initdb takes 1-16 s, so it runs at most once per process, into a template
// data directory that each cluster copies. The template is kept in
// $TMPDIR/poolwatch-testenv.cache-<euid>/ and is shared by concurrent and
// later processes (it is created under a temporary name and renamed into
// place, so readers only ever see a complete template). Deleting that
// directory is always safe.
package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNotInstalled is wrapped by LookPath, Dependency.Check and the Start*
// functions when a program is not installed.
var ErrNotInstalled = errors.New("not installed")

// PostgresBinDir is where the PostgreSQL 15 binaries are looked up, unless
// the environment variable POOLWATCH_PG_BINDIR names another directory.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// Dependency is something from the machine that a test or the demo needs:
// its Name (the name POOLWATCH_TEST_SKIP uses, see internal/testenv), how
// to tell that it is installed, and the Debian packages that install it
// (`make deps` installs them). A later dependency is one more row of
// Dependencies.
type Dependency struct {
	// Name is short and lower-case: "postgres", "pgbouncer", "chromium".
	Name string
	// Binaries must all be found by LookPath.
	Binaries []string
	// Files must all exist (libraries such as jars).
	Files []string
	// Probe, when set, is a command that must exit 0 (for example an import
	// of the Python modules a test needs). It runs with a 30 s limit.
	Probe []string
	// Apt lists the Debian packages that provide everything above.
	Apt []string
	// GoInstall, for a tool Debian does not package, is the argument of
	// the `go install` that provides it (module path@version); make deps
	// runs it.
	GoInstall string
}

// Dependencies returns every dependency known to launch, in a fixed order.
func Dependencies() []Dependency {
	return []Dependency{
		{Name: "postgres", Binaries: []string{"postgres", "initdb"}, Apt: []string{"postgresql-15"}},
		{Name: "pgbouncer", Binaries: []string{"pgbouncer"}, Apt: []string{"pgbouncer"}},
		{Name: "pgpool", Binaries: []string{"pgpool"}, Apt: []string{"pgpool2"}},
		{Name: "prometheus", Binaries: []string{"prometheus", "promtool"}, Apt: []string{"prometheus"}},
		{Name: "alertmanager", Binaries: []string{"alertmanager", "amtool"}, Apt: []string{"prometheus-alertmanager"}},
		{Name: "chromium", Binaries: []string{"chromium"}, Apt: []string{"chromium"}},
		{Name: "make", Binaries: []string{"make"}, Apt: []string{"make"}},
		// The real pool libraries of the application tests (AppOptions).
		{Name: "python", Binaries: []string{"python3"}, Probe: []string{"python3", "-c", "import psycopg2, psycopg2.pool, psycopg_pool"},
			Apt: []string{"python3-psycopg2", "python3-psycopg-pool"}},
		{Name: "java", Binaries: []string{"java", "javac"}, Files: hikariClassPath(),
			Apt: []string{"default-jdk-headless", "libhikaricp-java", "libpostgresql-jdbc-java", "libslf4j-java"}},
		// npm comes with NodeSource's nodejs, and in Debian's own package
		// npm, which conflicts with NodeSource's: make deps installs npm
		// only when there is no npm binary.
		{Name: "node", Binaries: []string{"node", "npm"}, Apt: []string{"nodejs", "npm"}},
		{Name: "helm", Binaries: []string{"helm"}, GoInstall: "helm.sh/helm/v3/cmd/helm@v3.22.0"},
	}
}

// FindDependency returns the dependency called name, or the one that
// provides the binary name ("promtool" is part of "prometheus").
func FindDependency(name string) (Dependency, bool) {
	deps := Dependencies()
	for _, d := range deps {
		if d.Name == name {
			return d, true
		}
	}
	for _, d := range deps {
		for _, b := range d.Binaries {
			if b == name {
				return d, true
			}
		}
	}
	return Dependency{}, false
}

// Check returns nil when everything the dependency needs is installed, or
// an error wrapping ErrNotInstalled that lists what is missing and the apt
// packages that install it.
func (d Dependency) Check() error {
	var missing []string
	for _, b := range d.Binaries {
		if _, err := LookPath(b); err != nil {
			missing = append(missing, err.Error())
		}
	}
	for _, f := range d.Files {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, fmt.Sprintf("file %s", f))
		}
	}
	if len(d.Probe) > 0 && len(missing) == 0 {
		if out, err := runProbe(d.Probe); err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v %s", strings.Join(d.Probe, " "), err, out))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if d.GoInstall != "" {
		return fmt.Errorf("%s is %w (%s; go install %s)", d.Name, ErrNotInstalled, strings.Join(missing, "; "), d.GoInstall)
	}
	return fmt.Errorf("%s is %w (%s; apt package %s)", d.Name, ErrNotInstalled, strings.Join(missing, "; "), strings.Join(d.Apt, " "))
}

// LookPath returns the absolute path of a program:
//
//   - "postgres", "initdb" and any other PostgreSQL program: in
//     $POOLWATCH_PG_BINDIR or PostgresBinDir (never PATH, which may hold
//     another major version);
//   - "pgbouncer" and "pgpool": PATH, then /usr/sbin (a non-root PATH often
//     lacks /usr/sbin);
//   - "alertmanager": PATH as "prometheus-alertmanager" (Debian's name), then
//     "alertmanager";
//   - "python3": Debian's /usr/bin/python3 first, whose dist-packages hold
//     python3-psycopg2 and python3-psycopg-pool (a python3 earlier in PATH,
//     pyenv's for one, does not see them), then PATH;
//   - anything else ("promtool", "prometheus", "chromium"...): PATH.
//
// A missing program yields an error wrapping ErrNotInstalled.
func LookPath(name string) (string, error) {
	var candidates []string
	switch name {
	case "postgres", "initdb", "pg_ctl", "psql", "pgbench", "pg_isready":
		dir := os.Getenv("POOLWATCH_PG_BINDIR")
		if dir == "" {
			dir = PostgresBinDir
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s %w (looked in %s)", name, ErrNotInstalled, dir)
	case "pgbouncer", "pgpool":
		candidates = []string{name, "/usr/sbin/" + name}
	case "alertmanager":
		candidates = []string{"prometheus-alertmanager", "alertmanager", "/usr/bin/prometheus-alertmanager"}
	case "python3":
		candidates = []string{"/usr/bin/python3", "python3"}
	case "helm":
		// go install puts it in GOBIN, or GOPATH/bin, which need not be on
		// PATH.
		candidates = []string{"helm"}
		for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("GOPATH"), "bin"), filepath.Join(os.Getenv("HOME"), "go", "bin")} {
			if filepath.IsAbs(dir) {
				candidates = append(candidates, filepath.Join(dir, "helm"))
			}
		}
	default:
		candidates = []string{name}
	}
	for _, c := range candidates {
		if filepath.IsAbs(c) {
			if isExecutable(c) {
				return c, nil
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s %w (looked for %v)", name, ErrNotInstalled, candidates)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p) //nolint:gosec // only stats a binary path chosen by LookPath
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// FreePort binds 127.0.0.1:0, closes the listener and returns the port the
// kernel picked. Another process can take the port before it is used, so
// the Start functions retry on a bind failure with a new port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port //nolint:errcheck,forcetypeassert // a TCP listener
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("close probe listener: %w", err)
	}
	return port, nil
}

// checkDependency checks the dependency called name (see FindDependency).
func checkDependency(name string) error {
	d, ok := FindDependency(name)
	if !ok {
		return fmt.Errorf("launch: unknown dependency %q", name)
	}
	return d.Check()
}

// runProbe runs a dependency's probe command for at most 30 s.
func runProbe(argv []string) (string, error) {
	bin, err := LookPath(argv[0])
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, argv[1:]...).CombinedOutput() //nolint:gosec // a probe from Dependencies
	return strings.TrimSpace(string(out)), err
}
