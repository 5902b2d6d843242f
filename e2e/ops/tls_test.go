package ops_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// tlsHBA lets mon and certuser in only over TLS (certuser only with a
// client certificate whose CN is its name); everyone else, testenv's own
// superuser logins included, may use either.
const tlsHBA = `local   all  all                     trust
hostssl all  certuser  127.0.0.1/32  cert
host    all  certuser  127.0.0.1/32  reject
hostssl all  mon       127.0.0.1/32  scram-sha-256
host    all  mon       127.0.0.1/32  reject
host    all  all       127.0.0.1/32  scram-sha-256
`

// startTLSPostgres starts PostgreSQL with ssl=on, a server certificate for
// 127.0.0.1 from a new CA (which also verifies client certificates) and
// tlsHBA, with the roles mon and certuser (both pg_monitor).
func startTLSPostgres(t *testing.T) (*testenv.CA, *testenv.Postgres) {
	t.Helper()
	ca := testenv.NewCA(t, "poolwatch test CA")
	server := ca.Issue(t, testenv.CertOptions{CommonName: "127.0.0.1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	sf := testenv.ServerFiles(t, map[string][]byte{
		"server.crt": server.CertPEM, "server.key": server.KeyPEM,
		"ca.crt": ca.CertPEM, "pg_hba.conf": []byte(tlsHBA),
	})
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{ExtraConf: map[string]string{
		"ssl": "on", "ssl_cert_file": sf["server.crt"], "ssl_key_file": sf["server.key"],
		"ssl_ca_file": sf["ca.crt"], "hba_file": sf["pg_hba.conf"],
	}})
	monRole(t, pg)
	pg.CreateRole(t, "certuser", "", "LOGIN", "IN ROLE pg_monitor")
	return ca, pg
}

// TestTLS_VerifyFullToPostgresWithCAAndClientCertificates runs PostgreSQL
// with ssl=on and a server certificate from a throwaway CA, and targets
// that differ only in their TLS settings: the DSN's sslmode is honoured and
// tls.ca_file, tls.cert_file and tls.key_file are used.
func TestTLS_VerifyFullToPostgresWithCAAndClientCertificates(t *testing.T) {
	ca, pg := startTLSPostgres(t)
	wrongCA := testenv.NewCA(t, "some other CA")
	client := ca.Issue(t, testenv.CertOptions{CommonName: "certuser", Client: true})
	// A client certificate for certuser from a CA the server does not trust.
	rogue := wrongCA.Issue(t, testenv.CertOptions{CommonName: "certuser", Client: true})

	af := testenv.WriteFiles(t, map[string][]byte{
		"ca.pem": ca.CertPEM, "wrong-ca.pem": wrongCA.CertPEM,
		"client.crt": client.CertPEM, "client.key": client.KeyPEM,
		"rogue.crt": rogue.CertPEM, "rogue.key": rogue.KeyPEM,
	})
	mon := func(host, sslmode, app string) string {
		return fmt.Sprintf("postgres://mon:%s@%s/postgres?sslmode=%s&application_name=%s",
			monPassword, net.JoinHostPort(host, fmt.Sprint(pg.Port)), sslmode, app)
	}
	certuser := func(app string) string {
		return fmt.Sprintf("postgres://certuser@%s/postgres?sslmode=verify-full&application_name=%s", pg.Addr(), app)
	}
	cfg := fmt.Sprintf(`targets:
  - name: verify-full
    kind: postgres
    dsn: %s
    tls: {ca_file: %s}
  - name: wrong-ca
    kind: postgres
    dsn: %s
    tls: {ca_file: %s}
  - name: wrong-host
    kind: postgres
    dsn: %s
    tls: {ca_file: %s}
  - name: verify-ca
    kind: postgres
    dsn: %s
    tls: {ca_file: %s}
  - name: no-tls
    kind: postgres
    dsn: %s
  - name: client-cert
    kind: postgres
    dsn: %s
    tls: {ca_file: %s, cert_file: %s, key_file: %s}
  - name: rogue-cert
    kind: postgres
    dsn: %s
    tls: {ca_file: %s, cert_file: %s, key_file: %s}
`,
		mon("127.0.0.1", "verify-full", "pw-verify-full"), af["ca.pem"],
		mon("127.0.0.1", "verify-full", "pw-wrong-ca"), af["wrong-ca.pem"],
		// The server certificate names 127.0.0.1 only: verify-full checks
		// the host name, verify-ca does not.
		mon("localhost", "verify-full", "pw-wrong-host"), af["ca.pem"],
		mon("localhost", "verify-ca", "pw-verify-ca"), af["ca.pem"],
		mon("127.0.0.1", "disable", "pw-no-tls"),
		certuser("pw-client-cert"), af["ca.pem"], af["client.crt"], af["client.key"],
		certuser("pw-rogue-cert"), af["ca.pem"], af["rogue.crt"], af["rogue.key"],
	)
	pw := testenv.StartPoolwatch(t, cfg)
	m := pw.Scrape(t)

	for tg, want := range map[string]float64{
		"verify-full": 1, "verify-ca": 1, "client-cert": 1,
		"wrong-ca": 0, "wrong-host": 0, "no-tls": 0, "rogue-cert": 0,
	} {
		if up := m.Must(t, targetUp, "target", tg); up != want {
			t.Errorf("%s{target=%q} = %v, want %v", targetUp, tg, up, want)
		}
	}

	// The connections that got in are encrypted, and client-cert's
	// carries its certificate.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := pg.AdminConn(t)
	for app, wantDN := range map[string]string{"pw-verify-full": "", "pw-verify-ca": "", "pw-client-cert": "/CN=certuser"} {
		var ssl bool
		var dn string
		err := c.QueryRow(ctx, `SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_ssl s
			JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1 LIMIT 1`, app).Scan(&ssl, &dn)
		if err != nil {
			t.Errorf("no backend of %s: %v", app, err)
			continue
		}
		if !ssl || dn != wantDN {
			t.Errorf("backend of %s: ssl %v, client_dn %q; want ssl true, client_dn %q", app, ssl, dn, wantDN)
		}
	}

	// Each failure is explained in the log, on the target's line.
	for tg, reason := range map[string]string{
		"wrong-ca":   "certificate signed by unknown authority",
		"wrong-host": "wanted to match localhost",
		"no-tls":     "no encryption",
		"rogue-cert": "requires a valid client certificate",
	} {
		waitLog(t, pw, "target="+tg+" ", `msg="target scrape failed"`, reason)
	}
	pw.StopAndCheck(t, monPassword)
}

// TestTLS_ReloadPicksUpRotatedCertificateFiles renews the client
// certificate in place (same paths, as cert-manager or Vault agents do),
// reloads, and checks that the agent's next connection presents the new
// certificate. A reload is the documented way to make the agent see new
// files: the target's configuration is unchanged, so its pool is kept, and
// its connections must still pick up the files' new content.
func TestTLS_ReloadPicksUpRotatedCertificateFiles(t *testing.T) {
	ca, pg := startTLSPostgres(t)
	first := ca.Issue(t, testenv.CertOptions{CommonName: "certuser", Client: true})
	second := ca.Issue(t, testenv.CertOptions{CommonName: "certuser", Client: true})
	af := testenv.WriteFiles(t, map[string][]byte{"ca.pem": ca.CertPEM, "client.crt": first.CertPEM, "client.key": first.KeyPEM})
	pw := testenv.StartPoolwatch(t, fmt.Sprintf(`targets:
  - name: client-cert
    kind: postgres
    dsn: postgres://certuser@%s/postgres?sslmode=verify-full&application_name=pw-rotate
    tls: {ca_file: %s, cert_file: %s, key_file: %s}
`, pg.Addr(), af["ca.pem"], af["client.crt"], af["client.key"]), lifecycle)

	if up := pw.Scrape(t).Must(t, targetUp, "target", "client-cert"); up != 1 {
		t.Fatalf("client-cert up = %v before the rotation, want 1", up)
	}
	if got, want := clientSerial(t, pg, "pw-rotate"), serialOf(t, first); got != want {
		t.Fatalf("client certificate serial %s before the rotation, want the first one's %s", got, want)
	}

	// Renew in place, reload, and make the pool dial again.
	replaceFile(t, af["client.crt"], string(second.CertPEM))
	replaceFile(t, af["client.key"], string(second.KeyPEM))
	if code, body := reload(t, pw); code != 200 {
		t.Fatalf("POST /-/reload: %d %s", code, body)
	}
	pg.TerminateBackends(t, "pw-rotate")
	pg.WaitBackends(t, "pw-rotate", func(n int) bool { return n == 0 }, settle)
	eventually(t, settle, "client-cert up again", func() (bool, string) {
		up := pw.Scrape(t).Must(t, targetUp, "target", "client-cert")
		return up == 1, fmt.Sprint(up)
	})
	if got, want := clientSerial(t, pg, "pw-rotate"), serialOf(t, second); got != want {
		t.Fatalf("after renewing the client certificate in place and reloading, the agent's new connection "+
			"presents serial %s, want the renewed certificate's %s (the first one was %s): TLS files are read "+
			"only when the target's probe pool is created", got, want, serialOf(t, first))
	}
	pw.StopAndCheck(t)
}

// clientSerial returns the serial number of the client certificate of the
// backend with this application_name, in decimal.
func clientSerial(t *testing.T, pg *testenv.Postgres, app string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var serial string
	err := pg.AdminConn(t).QueryRow(ctx, `SELECT coalesce(s.client_serial::text, '') FROM pg_stat_ssl s
		JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1 LIMIT 1`, app).Scan(&serial)
	if err != nil {
		t.Fatalf("client certificate of %s: %v", app, err)
	}
	return serial
}

func serialOf(t *testing.T, kp testenv.KeyPair) string {
	t.Helper()
	b, _ := pem.Decode(kp.CertPEM)
	if b == nil {
		t.Fatal("no PEM block in certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c.SerialNumber.String()
}
