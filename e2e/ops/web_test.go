package ops_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// TestWeb_TLSAndBasicAuthFromWebConfigFile serves the agent with
// --web.config.file holding a TLS certificate and a bcrypt basic-auth user,
// and checks every way in: the right credentials over TLS work; none, a
// wrong password or an unknown user get 401 on every path; plain HTTP and a
// client that does not trust the certificate get nothing; a password changed
// in the file applies without a restart.
func TestWeb_TLSAndBasicAuthFromWebConfigFile(t *testing.T) {
	const user, password = "prometheus", "Web-S3cret-51b3"
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	monRole(t, pg)

	ca := testenv.NewCA(t, "poolwatch web CA")
	cert := ca.Issue(t, testenv.CertOptions{CommonName: "poolwatch", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}})
	files := testenv.WriteFiles(t, map[string][]byte{"web.crt": cert.CertPEM, "web.key": cert.KeyPEM})
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("bcrypt: %v", err)
	}
	webConfig := fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
  min_version: TLS12
basic_auth_users:
  %s: %s
`, files["web.crt"], files["web.key"], user, hash)

	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}},
	}
	pw := testenv.StartPoolwatchWeb(t, configOf(pgTarget("pg", pg, "pw-web", "")), testenv.PoolwatchWeb{
		Config: webConfig, HTTPS: true, Client: client, Username: user, Password: password,
	}, lifecycle)
	if !strings.HasPrefix(pw.URL, "https://") {
		t.Fatalf("agent URL %q is not https", pw.URL)
	}

	// do sends one request and returns what the test looks at; the body is
	// read and closed.
	type answer struct {
		StatusCode int
		Header     http.Header
		TLS        *tls.ConnectionState
	}
	do := func(c *http.Client, method, url, u, p string) (*answer, string, error) {
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			return nil, "", err
		}
		if u != "" {
			req.SetBasicAuth(u, p)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return &answer{resp.StatusCode, resp.Header, resp.TLS}, string(b), err
	}
	statusOf := func(a *answer) string {
		if a == nil {
			return "no response"
		}
		return fmt.Sprint(a.StatusCode)
	}

	// The right credentials over TLS: metrics, with the target up.
	resp, body, err := do(client, http.MethodGet, pw.URL+"/metrics", user, password)
	if err != nil {
		t.Fatalf("GET /metrics over TLS with credentials: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics over TLS with credentials: status %d\n%s", resp.StatusCode, body)
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET /metrics was not served over TLS 1.2+: %+v", resp.TLS)
	}
	if up := testenv.ParseMetrics(t, body).Must(t, targetUp, "target", "pg"); up != 1 {
		t.Fatalf("%s{target=pg} = %v over TLS, want 1", targetUp, up)
	}

	// No, wrong or unknown credentials: 401 with a challenge, on every
	// path, and nothing of the metrics. The reload endpoint is protected
	// too and reloads nothing.
	waitLog(t, pw, `msg="config loaded"`) // the start's load
	loads := strings.Count(pw.Logs(), "config loaded")
	for _, path := range []string{"/metrics", "/probe?target=pg", "/", "/-/ready", "/-/healthy"} {
		for _, cred := range [][2]string{{"", ""}, {user, "wrong"}, {"intruder", password}} {
			resp, body, err := do(client, http.MethodGet, pw.URL+path, cred[0], cred[1])
			if err != nil {
				t.Fatalf("GET %s as %q: %v", path, cred[0], err)
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s as %q: status %d, want 401", path, cred[0], resp.StatusCode)
			}
			if !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("GET %s as %q: no basic-auth challenge (WWW-Authenticate %q)", path, cred[0], resp.Header.Get("WWW-Authenticate"))
			}
			if strings.Contains(body, "poolwatch_") {
				t.Errorf("GET %s as %q: a 401 body carries metrics", path, cred[0])
			}
		}
	}
	resp, _, err = do(client, http.MethodPost, pw.URL+"/-/reload", "", "")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /-/reload without credentials: %v %v, want 401", statusOf(resp), err)
	}
	resp, _, err = do(client, http.MethodPost, pw.URL+"/-/reload", user, password)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /-/reload with credentials: %v %v, want 200", statusOf(resp), err)
	}
	// The log is ordered: once the authenticated reload's line is in, a
	// reload by the unauthenticated POST would be in too.
	eventually(t, settle, "the authenticated reload in the log", func() (bool, string) {
		n := strings.Count(pw.Logs(), "config loaded")
		return n >= loads+1, fmt.Sprintf("%d loads, was %d", n, loads)
	})
	if n := strings.Count(pw.Logs(), "config loaded"); n != loads+1 {
		t.Errorf("%d config loads after one unauthenticated and one authenticated POST /-/reload, want %d", n, loads+1)
	}

	// Plain HTTP on the same port: Go's TLS server answers 400 and serves
	// nothing else.
	plainURL := "http://" + strings.TrimPrefix(pw.URL, "https://")
	resp, body, err = do(&http.Client{Timeout: 10 * time.Second}, http.MethodGet, plainURL+"/metrics", user, password)
	if err == nil && (resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "poolwatch_")) {
		t.Errorf("plain HTTP GET /metrics: status %d, want 400 and no metrics\n%.300s", resp.StatusCode, body)
	}

	// A client that does not trust the certificate cannot connect.
	_, _, err = do(&http.Client{Timeout: 10 * time.Second}, http.MethodGet, pw.URL+"/metrics", user, password)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET /metrics trusting only the system roots: err %v, want a certificate error", err)
	}

	// Credentials rotate without a restart: exporter-toolkit reads the web
	// configuration again on every request.
	const newPassword = "Web-S3cret-rotated-9d"
	newHash, err := bcrypt.GenerateFromPassword([]byte(newPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("bcrypt: %v", err)
	}
	replaceFile(t, pw.WebConfigPath(), strings.Replace(webConfig, string(hash), string(newHash), 1))
	for cred, want := range map[string]int{password: http.StatusUnauthorized, newPassword: http.StatusOK} {
		resp, _, err := do(client, http.MethodGet, pw.URL+"/-/healthy", user, cred)
		if err != nil || resp.StatusCode != want {
			t.Errorf("after rotating the password in the web config: %v %v, want %d", statusOf(resp), err, want)
		}
	}
	pw.StopAndCheck(t, monPassword, password, newPassword)
}
