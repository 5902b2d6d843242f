package testenv

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// PoolwatchWeb says how to reach an agent whose web interface is secured
// with --web.config.file (TLS, basic auth or both).
type PoolwatchWeb struct {
	// Config is the content of the exporter-toolkit web configuration
	// file. Relative paths in it are resolved by exporter-toolkit against
	// the file's directory, which is a fresh temp dir: give absolute paths.
	Config string
	// HTTPS is true when Config has a tls_server_config.
	HTTPS bool
	// Client is used for the readiness wait; it must trust the server's
	// certificate when HTTPS is set. Nil means http.DefaultClient.
	Client *http.Client
	// Username and Password are sent as basic auth on the readiness wait
	// when Username is not empty.
	Username, Password string
}

// StartPoolwatchWeb is StartPoolwatch for an agent run with
// --web.config.file: it writes web.Config next to the agent's config, passes
// the flag, sets URL to https:// when web.HTTPS, and waits (up to 30 s) until
// /-/ready answers 200 through web.Client with web's credentials. Stop,
// Signal, Logs and the cleanup are StartPoolwatch's. Poolwatch.Get uses
// http.DefaultClient without credentials, so use your own client with this
// agent.
func StartPoolwatchWeb(tb testing.TB, config string, web PoolwatchWeb, extraArgs ...string) *Poolwatch {
	tb.Helper()
	return startPoolwatch(tb, config, &web, extraArgs)
}

// WebConfigPath is where StartPoolwatchWeb wrote the web configuration
// file. exporter-toolkit reads it again on every request and TLS handshake,
// so a test can rewrite it to rotate credentials or certificates.
func (p *Poolwatch) WebConfigPath() string {
	return filepath.Join(filepath.Dir(p.ConfigPath), "web-config.yml")
}

func getStatus(c *http.Client, url, user, password string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
