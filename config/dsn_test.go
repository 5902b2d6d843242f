package config

import (
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
		{"url unencoded slash", "postgres://u:S3c/ret@db1/postgres", "postgres://xxxxx@db1/postgres"},
		{"url unencoded at", "postgres://u:S3c@ret@db1/postgres", "postgres://xxxxx@db1/postgres"},
		{"url ambiguous at in query over-masks", "postgres://u:S3cret@db1/postgres?application_name=a@b", "postgres://xxxxx@b"},
		{"url ambiguous keeps later password masked", "postgres://db1/postgres?application_name=a@b&password=S3cret", "postgres://xxxxx@b&password=xxxxx"},
		{"other scheme", "mysql://u:S3cret@db1/orders", "mysql://u:xxxxx@db1/orders"},
		{"kv bare", "host=db1 user=u password=S3cret dbname=postgres", "host=db1 user=u password=xxxxx dbname=postgres"},
		{"kv quoted with escapes", `host=db1 password='S3 cr\'et' user=u`, "host=db1 password=xxxxx user=u"},
		{"kv bare with escape", `password=S3cr\ et host=db1`, "password=xxxxx host=db1"},
		{"kv spaces around equals", "password = S3cret host=db1", "password = xxxxx host=db1"},
		{"kv sslpassword", "host=db1 sslpassword=S3cret", "host=db1 sslpassword=xxxxx"},
		{"kv unterminated quote", "host=db1 password='S3cret host=db2", "host=db1 password=xxxxx"},
		{"kv broken before password", "host='db1 password=S3cret", "host='db1 password=xxxxx"},
		{"kv no password", "host=db1 user=u", "host=db1 user=u"},
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
	} {
		t.Run(dsn, func(t *testing.T) {
			cfg, err := pgconn.ParseConfig(dsn)
			require.NoError(t, err)
			s, err := dsnSettings(dsn)
			require.NoError(t, err)
			require.Equal(t, cfg.Password, s["password"])
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
