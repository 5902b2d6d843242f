package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// CA is a throwaway certificate authority for TLS tests: an ECDSA P-256 key
// and a self-signed CA certificate valid for one day. It needs no openssl.
// Its methods are safe for concurrent use (they only read it).
type CA struct {
	// Cert is the CA certificate; CertPEM the same, PEM-encoded.
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// CertOptions describe a leaf certificate issued by a CA.
type CertOptions struct {
	// CommonName is the subject CN. For a PostgreSQL client certificate
	// (pg_hba "cert") it must be the role name.
	CommonName string
	// DNSNames and IPs are the subject alternative names, which is what
	// verify-full and HTTPS clients check against the host they dial.
	DNSNames []string
	IPs      []net.IP
	// Client makes a client certificate (ExtKeyUsageClientAuth) instead of
	// a server one.
	Client bool
}

// KeyPair is a PEM-encoded certificate and its PKCS#8 private key.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA generates a CA named cn, failing the test on error.
func NewCA(tb testing.TB, cn string) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"poolwatch testenv"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("self-sign CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse CA certificate: %v", err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Pool returns a cert pool holding only this CA, for an HTTPS client.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue signs a leaf certificate valid for one day, failing the test on
// error.
func (ca *CA) Issue(tb testing.TB, o CertOptions) KeyPair {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate leaf key: %v", err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if o.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: o.CommonName},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("sign leaf certificate %q: %v", o.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("marshal leaf key: %v", err)
	}
	return KeyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatalf("random serial: %v", err)
	}
	return n
}

// ServerFiles writes files (name -> content) with mode 0600 into a new
// 0700 directory owned by the user the servers run as (see the package
// doc), so that PostgreSQL accepts them as ssl_key_file, hba_file and the
// like. It returns name -> absolute path. The directory is removed on
// cleanup.
func ServerFiles(tb testing.TB, files map[string][]byte) map[string]string {
	tb.Helper()
	dir, paths, err := launch.WriteServerFiles(files)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return paths
}

// WriteFiles writes files (name -> content, mode 0600) into a new temp
// directory of the test (removed on cleanup) and returns name -> path. For
// the agent's side: it runs as the test's user.
func WriteFiles(tb testing.TB, files map[string][]byte) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	paths := make(map[string]string, len(files))
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			tb.Fatalf("write %s: %v", p, err)
		}
		paths[name] = p
	}
	return paths
}
