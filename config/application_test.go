package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"
)

// applicationBadConfigs maps each testdata/bad/kind-application-*.yml file
// to the exact error it must give (see badConfigs).
func applicationBadConfigs() map[string]string {
	return map[string]string{
		"kind-application-body-size-invalid.yml":                `testdata/bad/kind-application-body-size-invalid.yml:2: defaults.body_size_limit: invalid size "10 megabytes": use a whole number of bytes with an optional unit, such as 512KiB, 10MiB or 1GiB`,
		"kind-application-compare-instance-hostname.yml":        `testdata/bad/kind-application-compare-instance-hostname.yml:11: targets[1].seen_as[0].compare: compare: instance needs the target's url to name the instance by its IP address (it is compared with the client addresses the server shows), not "orders-api.internal"`,
		"kind-application-format-unknown.yml":                   `testdata/bad/kind-application-format-unknown.yml:5: targets[0].format: unknown format "openmetrics": use auto, prometheus or json`,
		"kind-application-http-client-two-tokens.yml":           `testdata/bad/kind-application-http-client-two-tokens.yml:6: targets[0].http_client: at most one of bearer_token & bearer_token_file must be configured`,
		"kind-application-http-client-unknown-key.yml":          `testdata/bad/kind-application-http-client-unknown-key.yml:8: targets[0].http_client: unknown key "ca_fil"`,
		"kind-application-missing-url.yml":                      `testdata/bad/kind-application-missing-url.yml:2: targets[0].url: missing required key: an application target needs the url of its metrics or status endpoint`,
		"kind-application-pool-label-invalid.yml":               `testdata/bad/kind-application-pool-label-invalid.yml:5: targets[0].pool_label: invalid label name "pool-name": use letters, digits and _, not starting with a digit`,
		"kind-application-probe-pool.yml":                       `testdata/bad/kind-application-probe-pool.yml:5: targets[0].probe_pool: applies to postgres and pgbouncer targets only: an application target is read over HTTP (url, http_client)`,
		"kind-application-seen-as-application.yml":              `testdata/bad/kind-application-seen-as-application.yml:6: targets[0].seen_as[0].target: target "billing-api" is of kind application: seen_as names a postgres or pgbouncer target`,
		"kind-application-seen-as-duplicate.yml":                `testdata/bad/kind-application-seen-as-duplicate.yml:10: targets[1].seen_as[1]: duplicate seen_as entry (first defined at line 9)`,
		"kind-application-seen-as-missing-application-name.yml": `testdata/bad/kind-application-seen-as-missing-application-name.yml:9: targets[1].seen_as[0].application_name: missing required key`,
		"kind-application-seen-as-unknown-target.yml":           `testdata/bad/kind-application-seen-as-unknown-target.yml:6: targets[0].seen_as[0].target: no target named "orders-db" in this configuration`,
		"kind-application-url-credentials.yml":                  `testdata/bad/kind-application-url-credentials.yml:4: targets[0].url: the URL carries a user or password: put credentials in http_client (basic_auth, authorization), never in the URL`,
		"kind-application-url-on-postgres.yml":                  `testdata/bad/kind-application-url-on-postgres.yml:5: targets[0].url: applies to application targets only`,
		"kind-application-url-scheme.yml":                       `testdata/bad/kind-application-url-scheme.yml:4: targets[0].url: unsupported URL scheme "ftp": use http:// or https://`,
		"kind-application-with-dsn.yml":                         `testdata/bad/kind-application-with-dsn.yml:5: targets[0].dsn: applies to postgres and pgbouncer targets only: an application target is read over HTTP (url, http_client)`,
	}
}

func TestLoad_ApplicationTargets(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/application.yml")
	require.NoError(t, err)
	ts := cfg.Targets()
	require.Len(t, ts, 4)

	// The servers count the globs that seen_as names on them.
	require.Equal(t, []string{"orders-api*", "report-?"}, ts[0].Applications)
	require.Equal(t, []string{"orders-api*"}, ts[1].Applications)
	require.Zero(t, ts[0].Format, "application keys stay zero on server targets")
	require.Zero(t, ts[0].BodySizeLimit)

	wantHTTP := promconfig.DefaultHTTPClientConfig
	wantHTTP.BasicAuth = &promconfig.BasicAuth{Username: "poolwatch", PasswordFile: "testdata/good/secrets/orders-db"}
	wantHTTP.TLSConfig = promconfig.TLSConfig{CAFile: "testdata/good/tls/ca.pem"}
	require.Equal(t, Target{
		Name:          "orders-api-1",
		Kind:          KindApplication,
		Labels:        map[string]string{"env": "prod"},
		ScrapeTimeout: 3 * time.Second,
		MaxPools:      1000,
		URL:           "https://10.0.0.7:8443/metrics",
		Format:        FormatAuto,
		HTTPClient:    wantHTTP,
		SeenAs: []SeenAs{
			{Target: "orders-db", ApplicationName: "orders-api*", Compare: CompareAuto},
			{Target: "bouncer-1", ApplicationName: "orders-api*", Pool: "HikariPool-1", Compare: CompareInstance},
		},
		BodySizeLimit: 2 << 20,
	}, ts[2], "no DSN, no probe pool, no leak threshold: the server kinds' defaults do not apply")

	reports := ts[3]
	require.Equal(t, FormatJSON, reports.Format)
	require.Equal(t, "db", reports.PoolLabel)
	require.Equal(t, ByteSize(64<<10), reports.BodySizeLimit)
	require.Equal(t, promconfig.DefaultHTTPClientConfig, reports.HTTPClient, "no http_client: Prometheus' defaults")
	require.Equal(t, map[string]string{"env": "prod", "team": "reports"}, reports.Labels)
	require.Equal(t, []SeenAs{{Target: "orders-db", ApplicationName: "report-?", Compare: CompareTotal}}, reports.SeenAs)
}

func TestByteSize_ParsesBinaryUnitsAsPrometheusDoes(t *testing.T) {
	for in, want := range map[string]ByteSize{
		"0": 0, "512": 512, "512B": 512, "1KB": 1024, "1KiB": 1024, "10MB": 10 << 20, "10MiB": 10 << 20, "2GiB": 2 << 30,
	} {
		got, ok := parseByteSize(in)
		require.True(t, ok, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "1.5MiB", "10 MiB", "10mb", "10TiB", "ten", "99999999999999999999", "9999999999GiB"} {
		_, ok := parseByteSize(in)
		require.False(t, ok, in)
	}
	require.Equal(t, "10MiB", ByteSize(10<<20).String())
	require.Equal(t, "1500B", ByteSize(1500).String())
}

func TestRedactURL_HidesQueryValuesAndUserInfo(t *testing.T) {
	require.Equal(t, "http://10.0.0.7:8080/metrics?token=xxxxx", RedactURL("http://u:S3cret@10.0.0.7:8080/metrics?token=S3cret"))
	require.Equal(t, "http://10.0.0.7/status", Target{URL: "http://10.0.0.7/status"}.RedactedURL())
	require.Empty(t, RedactURL("http://[::1"))
}

func TestLoad_ApplicationErrorsNeverQuoteTheURLsSecret(t *testing.T) {
	hermeticEnv(t)
	_, err := Parse("x.yml", []byte("targets:\n  - name: a\n    kind: application\n    url: \"http://u:S3cret@[::1/x\"\n"))
	require.Error(t, err)
	require.False(t, strings.Contains(strings.ToLower(err.Error()), secretMarker), err.Error())
}

// checkApplicationInvariants is checkInvariants for an application target.
func checkApplicationInvariants(t *testing.T, cfg *Config, tg Target) {
	t.Helper()
	switch {
	case tg.URL == "" || tg.DSN != "" || tg.Labels == nil:
		t.Fatalf("%s: no URL, a DSN or nil labels", tg.Name)
	case tg.Format != FormatAuto && tg.Format != FormatPrometheus && tg.Format != FormatJSON:
		t.Fatalf("%s: bad format %q", tg.Name, tg.Format)
	case tg.ScrapeTimeout <= 0 || tg.BodySizeLimit <= 0 || tg.MaxPools < 1:
		t.Fatalf("%s: bad durations or sizes: %+v", tg.Name, tg)
	case tg.ProbePool != (ProbePool{}) || tg.ApplicationPools != nil || tg.Applications != nil:
		t.Fatalf("%s: server settings on an application target", tg.Name)
	}
	for _, s := range tg.SeenAs {
		server, ok := cfg.Target(s.Target)
		if !ok || (server.Kind != KindPostgres && server.Kind != KindPgBouncer) || s.ApplicationName == "" {
			t.Fatalf("%s: bad seen_as %+v", tg.Name, s)
		}
		if !slices.Contains(server.Applications, s.ApplicationName) {
			t.Fatalf("%s: server %s does not count %q", tg.Name, s.Target, s.ApplicationName)
		}
	}
}
