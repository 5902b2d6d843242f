package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestRedactDSN_ReplacesPasswordsInEveryForm(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"url userinfo", "postgres://u:S3cret@db1:5432/postgres?sslmode=verify-full", "postgres://u:xxxxx@db1:5432/postgres?sslmode=verify-full"},
		{"postgresql scheme", "postgresql://u:S3cret@db1/postgres", "postgresql://u:xxxxx@db1/postgres"},
		{"url empty password", "postgres://u:@db1/postgres", "postgres://u:xxxxx@db1/postgres"},
		{"url query password", "postgresql://u@db1/postgres?password=S3cret&sslmode=require", "postgresql://u@db1/postgres?password=xxxxx&sslmode=require"},
		{"url query sslpassword", "postgres://u@db1/postgres?sslmode=verify-full&sslpassword=S3cret", "postgres://u@db1/postgres?sslmode=verify-full&sslpassword=xxxxx"},
		{"url encoded key", "postgres://u@db1/postgres?pass%77ord=S3cret", "postgres://u@db1/postgres?pass%77ord=xxxxx"},
		{"url both", "postgres://u:S3cret@db1/postgres?password=S3cret2", "postgres://u:xxxxx@db1/postgres?password=xxxxx"},
		{"url no password", "postgres://u@db1/postgres?sslmode=disable", "postgres://u@db1/postgres?sslmode=disable"},
		{"url no userinfo", "postgres://db1/postgres", "postgres://db1/postgres"},
		{"url unencoded slash", "postgres://u:S3c/ret@db1/postgres", "postgres://u:xxxxx@db1/postgres"},
		{"url unencoded at", "postgres://u:S3c@ret@db1/postgres", "postgres://u:xxxxx@db1/postgres"},
		{"url ambiguous at in query over-masks", "postgres://u:S3cret@db1/postgres?application_name=a@b", "postgres://u:xxxxx@b"},
		{"url at in query keeps a later password masked", "postgres://db1/postgres?application_name=a@b&password=S3cret", "postgres://db1/postgres?application_name=a@b&password=xxxxx"},
		{"url host and port before an at over-masks", "postgres://db1:5432/postgres?application_name=a@b", "postgres://db1:xxxxx@b"},
		{"url user with a question mark", "postgres://u?x:S3cret@db1/postgres", "postgres://u?x:xxxxx@db1/postgres"},
		{"url password with a space", "postgres://u:S3c ret@db1/postgres", "postgres://u:xxxxx@db1/postgres"},
		{"other scheme", "mysql://u:S3cret@db1/orders", "mysql://u:xxxxx@db1/orders"},
		{"kv bare", "host=db1 user=u password=S3cret dbname=postgres", "host=db1 user=u password=xxxxx dbname=postgres"},
		{"kv quoted with escapes", `host=db1 password='S3 cr\'et' user=u`, "host=db1 password=xxxxx user=u"},
		{"kv bare with escape", `password=S3cr\ et host=db1`, "password=xxxxx host=db1"},
		{"kv spaces around equals", "password = S3cret host=db1", "password = xxxxx host=db1"},
		{"kv sslpassword", "host=db1 sslpassword=S3cret", "host=db1 sslpassword=xxxxx"},
		{"kv unterminated quote", "host=db1 password='S3cret host=db2", "host=db1 password=xxxxx"},
		{"kv broken before password", "host='db1 password=S3cret", "host='db1 password=xxxxx"},
		{"kv no password", "host=db1 user=u", "host=db1 user=u"},
		{"kv empty password takes the next word, as pgx does", "password= S3cret host=db1", "password= xxxxx host=db1"},
		{"kv password key inside a value is masked too", "application_name=password=S3cret host=db1", "application_name=password=xxxxx host=db1"},
		{"kv key ending in password is not a password", "host=db1 mypassword=x", "host=db1 mypassword=x"},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := RedactDSN(tc.in)
			require.Equal(t, tc.want, got)
			require.NotContains(t, got, "S3c")
		})
	}
}

func TestRedactSecrets_RemovesPasswordsQuotedInErrorText(t *testing.T) {
	for in, want := range map[string]string{
		"failed: host=x password=S3cret user=u":                          "failed: host=x password=xxxxx user=u",
		"failed: host=x password='S3c ret' user=u":                       "failed: host=x password=xxxxx user=u",
		"failed to connect to `user=u password=S3cret database=d`: boom": "failed to connect to `user=u password=xxxxx database=d`: boom",
		"cannot parse postgres://u:S3cret@h:5432/db: bad":                "cannot parse postgres://u:xxxxx@h:5432/db: bad",
		"cannot parse `postgres://u:S3c@ret@h/db`: bad":                  "cannot parse `postgres://u:xxxxx@h/db`: bad",
		"dial postgres://u@h/db?sslpassword=S3cret&sslmode=require: x":   "dial postgres://u@h/db?sslpassword=xxxxx&sslmode=require: x",
		"two: password=S3cret-1 and postgres://v:S3cret-2@h/db":          "two: password=xxxxx and postgres://v:xxxxx@h/db",
		"no secret here: user=u host=h postgres://u@h/db":                "no secret here: user=u host=h postgres://u@h/db",
	} {
		require.Equal(t, want, RedactSecrets(in))
	}
}

func TestRedactError_RedactsTheTextAndUnwrapsToTheCause(t *testing.T) {
	cause := errors.New("password=S3cret")
	err := RedactError(fmt.Errorf("x: %w", cause))
	require.EqualError(t, err, "x: password=xxxxx")
	require.ErrorIs(t, err, cause)
	require.NoError(t, RedactError(nil))
}

func TestTarget_RedactedDSNUsesRedactDSN(t *testing.T) {
	tg := Target{DSN: "postgres://u:S3cret@db1/postgres"} //nolint:gosec // a test password
	require.Equal(t, "postgres://u:xxxxx@db1/postgres", tg.RedactedDSN())
}

func TestDSNSettings_AgreesWithPgxOnThePassword(t *testing.T) {
	hermeticEnv(t)
	for _, dsn := range []string{
		"postgres://u:S3cret@db1/postgres",
		"postgres://u:S3%40cret@db1/postgres",
		"postgres://u@db1/postgres?password=S3cret",
		"postgres://u@db1/postgres?pass%77ord=S3cret",
		"host=db1 password='S3 cr\\'et'",
		"host=db1 password=S3cr\\ et",
		"host=db1 user=u",
		"postgres://u:@db1/postgres",
		"postgres://u?x:S3cret@db1/postgres",
		"postgres://u:S3cret@db1/postgres?application_name=a+b&password=S3+cret",
		"host=db1 password=''",
	} {
		t.Run(dsn, func(t *testing.T) {
			cfg, err := pgconn.ParseConfig(dsn)
			require.NoError(t, err)
			require.Equal(t, cfg.Password, dsnSettings(dsn)["password"])
		})
	}
}

// FuzzRedactDSN checks RedactDSN against pgx: whatever password pgx finds in
// a DSN must not survive redaction.
func FuzzRedactDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://u:S3cret@db1:5432/postgres?sslmode=verify-full",
		"postgres://u@db1/postgres?password=S3cret&sslmode=require",
		"postgres://u@db1/postgres?pass%77ord=S3cret",
		"postgres://u:S3c/ret@db1/postgres",
		"postgres://u:S3c@ret@db1/postgres",
		"host=db1 user=u password=S3cret dbname=postgres",
		`host=db1 password='S3 cr\'et' user=u`,
		`password=S3cr\ et host=db1`,
		"password = S3cret host=db1",
	} {
		f.Add(s)
	}
	hermeticEnv(f)
	f.Fuzz(func(t *testing.T, dsn string) {
		red := RedactDSN(dsn)
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil || len(cfg.Password) < 4 || strings.Count(dsn, cfg.Password) != 1 {
			return
		}
		if strings.Contains(red, cfg.Password) {
			t.Fatalf("RedactDSN(%q) = %q keeps the password %q", dsn, red, cfg.Password)
		}
	})
}

// TestTarget_ConnStringAddsTLSFilesInTheDSNsOwnForm checks the exact text
// for both forms, and that pgx, parsing the result as the probe pool does,
// reads the very files (paths with a space, a quote, a backslash, "&" and
// "#" included).
func TestTarget_ConnStringAddsTLSFilesInTheDSNsOwnForm(t *testing.T) {
	hermeticEnv(t)
	dir := filepath.Join(t.TempDir(), `a dir's \odd&#name`)
	require.NoError(t, os.Mkdir(dir, 0o700))
	tls := TLSFiles{}
	for dst, src := range map[*string]string{&tls.CAFile: "ca.pem", &tls.CertFile: "client.pem", &tls.KeyFile: "client.key"} {
		b, err := os.ReadFile(filepath.Join("testdata/good/tls", src))
		require.NoError(t, err)
		*dst = filepath.Join(dir, src)
		require.NoError(t, os.WriteFile(*dst, b, 0o600)) //nolint:gosec // G703: a file under t.TempDir()
	}
	esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace
	qesc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	cases := []struct{ name, dsn, want string }{
		{"url", "postgres://u:S3cret@db1:5432/postgres?sslmode=verify-full&application_name=pool%20watch",
			"postgres://u:S3cret@db1:5432/postgres?sslmode=verify-full&application_name=pool%20watch&sslrootcert=" + qesc(tls.CAFile) + "&sslcert=" + qesc(tls.CertFile) + "&sslkey=" + qesc(tls.KeyFile)},
		{"keyword/value", "host=db1 user=u password=S3cret sslmode=verify-full application_name='pool watch'",
			"host=db1 user=u password=S3cret sslmode=verify-full application_name='pool watch' sslrootcert='" + esc(tls.CAFile) + "' sslcert='" + esc(tls.CertFile) + "' sslkey='" + esc(tls.KeyFile) + "'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.dsn, Target{DSN: tc.dsn}.ConnString(), "no TLS files: the DSN as it is")
			got := Target{DSN: tc.dsn, TLS: tls}.ConnString()
			require.Equal(t, tc.want, got)
			s := dsnSettings(got)
			require.Equal(t, []string{tls.CAFile, tls.CertFile, tls.KeyFile, "pool watch", "S3cret"},
				[]string{s["sslrootcert"], s["sslcert"], s["sslkey"], s["application_name"], s["password"]})
			cfg, err := pgconn.ParseConfig(got)
			require.NoError(t, err, "pgx reads the files it names")
			require.NotNil(t, cfg.TLSConfig.RootCAs)
			require.Len(t, cfg.TLSConfig.Certificates, 1)
			require.Equal(t, "pool watch", cfg.RuntimeParams["application_name"])
		})
	}
	for dsn, want := range map[string]string{
		"postgres://u:p?w@db1/postgres":           "postgres://u:p?w@db1/postgres?sslrootcert=%2Fca.pem",
		"postgresql://db1":                        "postgresql://db1?sslrootcert=%2Fca.pem",
		"postgres://db1/postgres?":                "postgres://db1/postgres?sslrootcert=%2Fca.pem",
		"postgres://db1/postgres?sslmode=prefer&": "postgres://db1/postgres?sslmode=prefer&sslrootcert=%2Fca.pem",
		"host=db1": "host=db1 sslrootcert='/ca.pem'",
	} {
		require.Equal(t, want, Target{DSN: dsn, TLS: TLSFiles{CAFile: "/ca.pem"}}.ConnString())
	}
}
