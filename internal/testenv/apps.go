package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// The types of internal/launch under the names the tests know them by.
type (
	// App is launch.App.
	App = launch.App
	// AppOptions is launch.AppOptions.
	AppOptions = launch.AppOptions
)

// The applications (see launch.App).
const (
	AppPsycopg2      = launch.AppPsycopg2
	AppPsycopgPool   = launch.AppPsycopgPool
	AppHikariCP      = launch.AppHikariCP
	AppOpenTelemetry = launch.AppOpenTelemetry
	AppDatabaseSQL   = launch.AppDatabaseSQL
	AppPgxpool       = launch.AppPgxpool
)

// StartApp starts an application for tb (see launch.StartApp) in a
// directory of tb's own; Dir and, for the Go apps, GoAppDir are filled in.
// It fails or skips the test as Require does when the app's runtime
// (python, java, node) is missing; a cleanup stops the app and prints its
// log's tail if the test failed.
func StartApp(tb testing.TB, opts AppOptions) *Daemon {
	tb.Helper()
	if dep := launch.AppDependency(opts.App); dep != "" {
		Require(tb, dep)
	}
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	if opts.GoAppDir == "" {
		root, err := moduleRoot()
		if err != nil {
			tb.Fatal(err)
		}
		opts.GoAppDir = filepath.Join(root, "internal", "launch", "apps", "goapp")
	}
	return daemonFor(tb, "app "+string(opts.App), func(ctx context.Context) (*Daemon, error) { return launch.StartApp(ctx, opts) })
}

// AppCall sends method to the app's path (POST /hold?n=2, GET /state) and
// decodes its JSON answer into out (unless nil). It fails the test unless
// the app answers 200.
func AppCall(tb testing.TB, app *Daemon, method, path string, out any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, app.URL+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		tb.Fatalf("%s %s: read: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			tb.Fatalf("%s %s: decode %q: %v", method, path, body, err)
		}
	}
}

// AppGet returns the body of GET path from the app.
func AppGet(tb testing.TB, app *Daemon, path string) string {
	tb.Helper()
	resp, err := http.Get(app.URL + path) //nolint:gosec,noctx // a loopback test app
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s %v: %s", path, resp.Status, err, fmt.Sprint(string(body)))
	}
	return string(body)
}
