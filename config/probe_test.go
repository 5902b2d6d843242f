package config

import (
	"errors"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func loadProbeConfig(t *testing.T) *Config {
	t.Helper()
	hermeticEnv(t)
	cfg, err := Load("testdata/good/probe.yml")
	require.NoError(t, err)
	return cfg
}

func TestLoad_ProbesByAddressNeedNoTarget(t *testing.T) {
	cfg := loadProbeConfig(t)
	require.Empty(t, cfg.Targets())
	require.Equal(t, []string{"legacy", "md5", "monitoring"}, cfg.AuthModules())
	require.Equal(t, Probe{
		AllowedTargets: []string{"db-*.internal:5432", "127.0.0.1:*", "[::1]:6432"},
		MaxTargets:     50,
		IdleClose:      2 * time.Minute,
	}, cfg.Probe())
}

func TestParse_ProbesByAddressAreOffByDefault(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/minimal.yml")
	require.NoError(t, err)
	require.Equal(t, Probe{MaxTargets: 100, IdleClose: 5 * time.Minute}, cfg.Probe())
	require.False(t, cfg.Probe().Enabled())
	_, err = cfg.AddressTarget(KindPostgres, "monitoring", "127.0.0.1:5432")
	require.ErrorIs(t, err, ErrAddressProbesOff)
}

// dsnQuery returns the query parameters of a URL DSN.
func dsnQuery(t *testing.T, dsn string) (*url.URL, url.Values) {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	return u, u.Query()
}

func TestAddressTarget_BuildsATargetFromTheDefaultsTheModuleAndTheAddress(t *testing.T) {
	cfg := loadProbeConfig(t)
	got, err := cfg.AddressTarget("", "monitoring", "DB-1.internal:5432/orders")
	require.NoError(t, err)
	u, q := dsnQuery(t, got.DSN)
	require.Equal(t, "db-1.internal:5432/orders", got.Name, "the canonical address: host in lower case")
	require.Equal(t, KindPostgres, got.Kind, "no kind means postgres")
	require.Equal(t, "poolwatch", u.User.Username())
	_, hasPW := u.User.Password()
	require.False(t, hasPW, "the password comes from password_file")
	require.Equal(t, "db-1.internal:5432", u.Host)
	require.Equal(t, "/orders", u.Path)
	require.Equal(t, url.Values{"sslmode": {"verify-full"}, "require_auth": {"!password,!md5"}}, q)
	// Relative to the configuration file's directory.
	require.Equal(t, PasswordSource{File: filepath.Join("testdata", "good", "secrets", "orders-db")}, got.Password)
	require.Equal(t, TLSFiles{CAFile: filepath.Join("testdata", "good", "tls", "ca.pem")}, got.TLS)
	// The defaults, with what derives from them, as for a configured target.
	require.Equal(t, 4*time.Second, got.ScrapeTimeout)
	require.Equal(t, map[string]string{"env": "prod"}, got.Labels)
	require.Equal(t, 3*time.Second, got.ProbePool.ConnectTimeout)
	require.Equal(t, 4*time.Second, got.ProbePool.StatementTimeout)
	require.Equal(t, time.Second, got.ProbePool.LockTimeout)
	require.Equal(t, 1, got.ProbePool.MinConnections)
	require.Contains(t, got.ConnString(), "sslrootcert=")

	again, err := cfg.AddressTarget(KindPostgres, "monitoring", "db-1.internal:5432/orders")
	require.NoError(t, err)
	require.True(t, got.Equal(again), "the same address gives the same target")
}

func TestAddressTarget_PgBouncerConnectsToTheConsoleWithoutSessionTimeouts(t *testing.T) {
	cfg := loadProbeConfig(t)
	got, err := cfg.AddressTarget(KindPgBouncer, "monitoring", "127.0.0.1:6432")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:6432/pgbouncer", got.Name)
	u, _ := dsnQuery(t, got.DSN)
	require.Equal(t, "/pgbouncer", u.Path)
	require.Zero(t, got.ProbePool.StatementTimeout)
	require.Zero(t, got.ProbePool.LockTimeout)

	_, err = cfg.AddressTarget(KindPgBouncer, "monitoring", "127.0.0.1:6432/orders")
	require.ErrorIs(t, err, ErrBadAddress)
	require.ErrorContains(t, err, `the DSN's database must be "pgbouncer", not "orders"`)
}

func TestAddressTarget_PostgresExporterModulesAndInsecureAuth(t *testing.T) {
	cfg := loadProbeConfig(t)
	legacy, err := cfg.AddressTarget(KindPostgres, "legacy", "127.0.0.1:5432")
	require.NoError(t, err)
	u, q := dsnQuery(t, legacy.DSN)
	require.Equal(t, "exporter", u.User.Username())
	pw, _ := u.User.Password()
	require.Equal(t, "s3cret-inline", pw, "userpass.password goes into the connection string")
	require.Equal(t, url.Values{"sslmode": {"disable"}, "application_name": {"poolwatch-legacy"}, "require_auth": {"!password,!md5"}}, q)
	require.NotContains(t, legacy.RedactedDSN(), "s3cret")

	md5, err := cfg.AddressTarget(KindPostgres, "md5", "127.0.0.1:5432")
	require.NoError(t, err)
	_, q = dsnQuery(t, md5.DSN)
	require.Equal(t, url.Values{"sslmode": {"disable"}}, q, "insecure_password_auth: no require_auth")
	require.Equal(t, PasswordSource{Env: "POOLWATCH_TEST_PASSWORD"}, md5.Password)
}

func TestAddressTarget_RefusesWhatTheAllowListDoesNotName(t *testing.T) {
	cfg := loadProbeConfig(t)
	for _, addr := range []string{
		"db-1.internal:5433",      // wrong port
		"db-1.internal.evil:5432", // suffix
		"evil.db-1.internal:5432", // prefix
		"10.0.0.1:5432",
		"[::1]:5432",
		"localhost:5432",
	} {
		_, err := cfg.AddressTarget(KindPostgres, "monitoring", addr)
		require.ErrorIs(t, err, ErrAddressNotAllowed, addr)
		require.ErrorContains(t, err, "matches none of probe.allowed_targets (db-*.internal:5432, 127.0.0.1:*, [::1]:6432)")
	}
	for _, addr := range []string{"db-7.internal:5432", "DB-7.INTERNAL:5432/x", "127.0.0.1:1", "[::1]:6432/postgres"} {
		_, err := cfg.AddressTarget(KindPostgres, "monitoring", addr)
		require.NoError(t, err, addr)
	}
}

// The caller chooses the address, never a connection parameter: anything
// that could smuggle one in is refused before the allow-list is consulted.
func TestAddressTarget_RefusesMalformedAddressesAndInjectedParameters(t *testing.T) {
	cfg := loadProbeConfig(t)
	for _, addr := range []string{
		"",
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:0",
		"127.0.0.1:65536",
		"127.0.0.1:05432",
		"127.0.0.1:5432/postgres?sslmode=disable",
		"127.0.0.1:5432/postgres&host=evil",
		"127.0.0.1:5432/a b",
		"127.0.0.1:5432/a/b",
		"user:pw@127.0.0.1:5432",
		"127.0.0.1:5432 host=evil",
		"::1:6432",
		"-x.internal:5432",
		"127.0.0.1:5432/" + string(make([]byte, 64)),
	} {
		_, err := cfg.AddressTarget(KindPostgres, "monitoring", addr)
		require.ErrorIs(t, err, ErrBadAddress, "%q", addr)
	}
}

func TestAddressTarget_NamesTheAuthModulesAndKinds(t *testing.T) {
	cfg := loadProbeConfig(t)
	_, err := cfg.AddressTarget(KindPostgres, "nope", "127.0.0.1:5432")
	require.ErrorIs(t, err, ErrUnknownAuthModule)
	require.EqualError(t, err, `unknown auth module "nope" (configured: legacy, md5, monitoring)`)
	_, err = cfg.AddressTarget(KindPostgres, "", "127.0.0.1:5432")
	require.ErrorIs(t, err, ErrUnknownAuthModule)
	_, err = cfg.AddressTarget("oracle", "monitoring", "127.0.0.1:5432")
	require.ErrorIs(t, err, ErrBadAddress)
	require.EqualError(t, err, `bad address: kind "oracle" cannot be probed by address`)
}

func TestGlobMatch_StarAndQuestionMark(t *testing.T) {
	for _, tc := range []struct {
		glob, s string
		want    bool
	}{
		{"*", "", true},
		{"*", "anything:1", true},
		{"db-?.internal:5432", "db-1.internal:5432", true},
		{"db-?.internal:5432", "db-10.internal:5432", false},
		{"db-*.internal:5432", "db-.internal:5432", true},
		{"db-*.internal:5432", "db-1.internal:54321", false},
		{"*.internal:*", "a.b.internal:1", true},
		{"a*b*c", "abbbc", true},
		{"a*b*c", "acb", false},
		{"[::1]:*", "[::1]:5432", true},
		{"127.0.0.1:*", "127.0.0.10:5432", false},
	} {
		require.Equal(t, tc.want, globMatch(tc.glob, tc.s), "%q ~ %q", tc.glob, tc.s)
	}
}

func TestAddressTarget_ErrorsNeverContainTheInlinePassword(t *testing.T) {
	cfg := loadProbeConfig(t)
	for _, addr := range []string{"127.0.0.1:5432/x y", "10.0.0.1:5432", "127.0.0.1:5432/orders"} {
		_, err := cfg.AddressTarget(KindPgBouncer, "legacy", addr)
		require.Error(t, err)
		requireNoSecret(t, err.Error())
		require.False(t, errors.Is(err, ErrUnknownAuthModule))
	}
}
