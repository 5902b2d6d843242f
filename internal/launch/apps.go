package launch

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// appSources are the small applications of apps/ (see apps/*.py,
// apps/HikariApp.java, apps/otel/app.js), written into each app's
// directory at start. Embedded, so that the demo binary carries them. Its
// only package-level state: read-only.
//
//go:embed apps/psycopg2_app.py apps/psycopg_pool_app.py apps/HikariApp.java apps/otel/package.json apps/otel/package-lock.json apps/otel/app.js
var appSources embed.FS

// App names one of the small applications that report their own
// connection pool, for tests and the demo.
type App string

// The applications. Each runs a real pool library against PostgreSQL and
// serves, on its listen address, GET /ready, its pool's report, GET /state
// or /status (what the library itself says) and POST /hold?n=K and
// /release (check connections out and back). See each source for the rest.
const (
	// AppPsycopg2 is apps/psycopg2_app.py: psycopg2's
	// ThreadedConnectionPool, reported as a JSON status document at
	// /status, with the founding bug's retry loop (--workers, --mode
	// leaky|fixed) and POST /leak.
	AppPsycopg2 App = "psycopg2"
	// AppPsycopgPool is apps/psycopg_pool_app.py: psycopg_pool's
	// ConnectionPool, its get_stats() at /status.
	AppPsycopgPool App = "psycopg_pool"
	// AppHikariCP is apps/HikariApp.java: a real HikariCP pool whose
	// MXBean values the program writes under the Micrometer names at
	// /metrics and the Prometheus tracker's at /metrics/tracker.
	AppHikariCP App = "hikaricp"
	// AppOpenTelemetry is apps/otel/app.js: node-postgres' Pool with
	// @opentelemetry/instrumentation-pg, exported at /metrics by
	// @opentelemetry/exporter-prometheus.
	AppOpenTelemetry App = "opentelemetry"
	// AppDatabaseSQL and AppPgxpool are apps/goapp (a module of its own,
	// built with go): database/sql with client_golang's DBStatsCollector,
	// and pgxpool with IBM/pgxpoolprometheus, at /metrics.
	AppDatabaseSQL App = "database/sql"
	AppPgxpool     App = "pgxpool"
)

// AppOptions describe one application to start.
type AppOptions struct {
	App App
	// Dir is the app's working directory and $HOME, and holds its logs and
	// build output. It must exist.
	Dir string
	// DSN is the postgres:// URL the app's pool connects with.
	DSN string
	// ApplicationName is the application_name of its connections (or, for
	// the Go apps, ignored: set it in DSN). Empty: the app's default.
	ApplicationName string
	// Args are more flags for the app (see its source).
	Args []string
	// GoAppDir is the source directory of apps/goapp, for the Go apps:
	// it is a module of its own, so it is not embedded.
	GoAppDir string
	// Addr is the listen address, to start an app again where its
	// scrapers know it; "" picks a free loopback port (see DaemonOptions).
	Addr string
	ProcessOptions
}

// AppDependency is the dependency (see Dependencies) that app a needs; ""
// for the Go apps, built with the go command that runs the tests.
func AppDependency(a App) string {
	switch a {
	case AppPsycopg2, AppPsycopgPool:
		return "python"
	case AppHikariCP:
		return "java"
	case AppOpenTelemetry:
		return "node"
	}
	return ""
}

// appBudget bounds the preparation of an app: compiling it, or installing
// its npm packages the first time.
const appBudget = 5 * time.Minute

// StartApp prepares and starts an application on a free loopback port and
// returns once its /ready answers 200. Preparing may compile it (javac, go
// build) or, for AppOpenTelemetry, install its npm packages from the
// committed package-lock.json into the launch cache
// ($TMPDIR/poolwatch-testenv.cache-<euid>/otel-<hash>, reused until the
// sources change). A missing runtime gives an error wrapping
// ErrNotInstalled.
func StartApp(ctx context.Context, opts AppOptions) (*Daemon, error) {
	if opts.Dir == "" || opts.DSN == "" {
		return nil, errors.New("launch: AppOptions need Dir and DSN")
	}
	if dep := AppDependency(opts.App); dep != "" {
		if err := checkDependency(dep); err != nil {
			return nil, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, appBudget)
	defer cancel()
	bin, args, err := prepareApp(pctx, opts)
	if err != nil {
		return nil, fmt.Errorf("prepare %s app: %w", opts.App, err)
	}
	return StartDaemon(ctx, DaemonOptions{
		Name: "app-" + strings.ReplaceAll(string(opts.App), "/", "-"), Bin: bin, Dir: opts.Dir,
		Args:           func(addr string) []string { return append(append([]string(nil), args(addr)...), opts.Args...) },
		ReadyPath:      "/ready",
		Addr:           opts.Addr,
		ProcessOptions: opts.ProcessOptions,
	})
}

// prepareApp returns the app's binary and its command line for a listen
// address.
func prepareApp(ctx context.Context, o AppOptions) (string, func(addr string) []string, error) {
	withName := func(args []string, flag string) []string {
		if o.ApplicationName != "" {
			args = append(args, flag, o.ApplicationName)
		}
		return args
	}
	switch o.App {
	case AppPsycopg2, AppPsycopgPool:
		file := "psycopg2_app.py"
		if o.App == AppPsycopgPool {
			file = "psycopg_pool_app.py"
		}
		script, err := writeAppSource(o.Dir, file)
		if err != nil {
			return "", nil, err
		}
		py, err := LookPath("python3")
		if err != nil {
			return "", nil, err
		}
		return py, func(addr string) []string {
			args := []string{script, "--listen", addr, "--dsn", o.DSN}
			if o.App == AppPsycopg2 {
				args = withName(args, "--app-name")
			}
			return args
		}, nil
	case AppHikariCP:
		return prepareHikari(ctx, o)
	case AppOpenTelemetry:
		dir, err := otelModules(ctx)
		if err != nil {
			return "", nil, err
		}
		node, err := LookPath("node")
		if err != nil {
			return "", nil, err
		}
		return node, func(addr string) []string {
			return withName([]string{filepath.Join(dir, "app.js"), "--listen", addr, "--dsn", o.DSN}, "--app-name")
		}, nil
	case AppDatabaseSQL, AppPgxpool:
		bin, err := buildGoApp(ctx, o)
		if err != nil {
			return "", nil, err
		}
		pool := "sql"
		if o.App == AppPgxpool {
			pool = "pgxpool"
		}
		return bin, func(addr string) []string {
			return []string{"-listen", addr, "-dsn", o.DSN, "-pool", pool}
		}, nil
	}
	return "", nil, fmt.Errorf("unknown app %q", o.App)
}

// writeAppSource writes the embedded apps/name into dir and returns its
// path.
func writeAppSource(dir, name string) (string, error) {
	src, err := appSources.ReadFile("apps/" + name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.Base(name))
	if err := os.WriteFile(path, src, 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// hikariClassPath is what HikariApp compiles and runs against: Debian's
// jars.
func hikariClassPath() []string {
	return []string{"/usr/share/java/HikariCP.jar", "/usr/share/java/postgresql.jar",
		"/usr/share/java/slf4j-api.jar", "/usr/share/java/slf4j-nop.jar"}
}

// prepareHikari compiles HikariApp.java into o.Dir and returns java's
// command line: the JDBC URL, user and password come from o.DSN.
func prepareHikari(ctx context.Context, o AppOptions) (string, func(addr string) []string, error) {
	src, err := writeAppSource(o.Dir, "HikariApp.java")
	if err != nil {
		return "", nil, err
	}
	javac, err := LookPath("javac")
	if err != nil {
		return "", nil, err
	}
	java, err := LookPath("java")
	if err != nil {
		return "", nil, err
	}
	cp := strings.Join(hikariClassPath(), ":")
	if out, err := exec.CommandContext(ctx, javac, "-d", o.Dir, "-cp", cp, src).CombinedOutput(); err != nil { //nolint:gosec // javac from LookPath, our own source
		return "", nil, fmt.Errorf("javac: %w: %s", err, out)
	}
	u, err := url.Parse(o.DSN)
	if err != nil {
		return "", nil, fmt.Errorf("parse DSN: %s", redactURL(err))
	}
	q := url.Values{}
	if o.ApplicationName != "" {
		q.Set("ApplicationName", o.ApplicationName)
	}
	jdbc := "jdbc:postgresql://" + u.Host + u.Path + "?" + q.Encode()
	pass, _ := u.User.Password()
	return java, func(addr string) []string {
		return []string{"-cp", o.Dir + ":" + cp, "HikariApp", "--listen", addr, "--jdbc-url", jdbc,
			"--user", u.User.Username(), "--password", pass}
	}, nil
}

// redactURL words a URL parse error without the URL.
func redactURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "invalid URL"
}

// otelModules returns the directory holding apps/otel with its npm
// packages installed (npm ci), creating it on first use. The directory is
// keyed by the hash of the app's sources and lock file, built under a
// temporary name and renamed into place, so concurrent users see it
// complete or not at all.
func otelModules(ctx context.Context) (string, error) {
	names := []string{"package.json", "package-lock.json", "app.js"}
	h := sha256.New()
	files := map[string][]byte{}
	for _, n := range names {
		b, err := appSources.ReadFile("apps/otel/" + n)
		if err != nil {
			return "", err
		}
		files[n] = b
		_, _ = h.Write([]byte(n + "\x00"))
		_, _ = h.Write(b)
	}
	root := filepath.Join(os.TempDir(), fmt.Sprintf("poolwatch-testenv.cache-%d", os.Geteuid()))
	if err := os.MkdirAll(root, 0o711); err != nil { //nolint:gosec // the shared cache root, see template.go
		return "", fmt.Errorf("create cache %s: %w", root, err)
	}
	final := filepath.Join(root, "otel-"+hex.EncodeToString(h.Sum(nil)[:8]))
	if ok, _ := fileExists(filepath.Join(final, "complete")); ok {
		return final, nil
	}
	tmp, err := os.MkdirTemp(root, "building-otel-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }() // no-op after a successful rename
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, n), b, 0o600); err != nil {
			return "", err
		}
	}
	npm, err := LookPath("npm")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error") //nolint:gosec // npm from LookPath
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "npm_config_cache="+filepath.Join(tmp, ".npm-cache"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci (@opentelemetry packages, pinned by apps/otel/package-lock.json): %w: %s", err, out)
	}
	_ = os.RemoveAll(filepath.Join(tmp, ".npm-cache"))
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		if ok, _ := fileExists(filepath.Join(final, "complete")); ok {
			return final, nil // another process won the race
		}
		return "", fmt.Errorf("install %s: %w", final, err)
	}
	return final, nil
}

// buildGoApp builds apps/goapp from o.GoAppDir into o.Dir with the go
// command of PATH (the module cache and proxy of the environment).
func buildGoApp(ctx context.Context, o AppOptions) (string, error) {
	if o.GoAppDir == "" {
		return "", errors.New("AppOptions.GoAppDir is not set")
	}
	goBin, err := LookPath("go")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(o.Dir, "goapp")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".") //nolint:gosec // go from LookPath
	cmd.Dir = o.GoAppDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", o.GoAppDir, err, out)
	}
	return bin, nil
}
