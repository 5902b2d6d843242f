package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A pgbouncer target names the postgres target behind it; a postgres target
// is its own upstream; an application target gets the upstream its seen_as
// targets agree on, and none when they disagree or name none.
func TestUpstream_LinksEachTargetToTheServerBehindIt(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Parse("upstream.yml", []byte(`targets:
  - name: orders-db
    kind: postgres
    dsn: postgres://poolwatch@db1/postgres
  - name: bouncer-1
    kind: pgbouncer
    dsn: postgres://stats@pgb1:6432/pgbouncer
    upstream: orders-db
  - name: bouncer-2
    kind: pgbouncer
    dsn: postgres://stats@pgb2:6432/pgbouncer
  - name: orders-api
    kind: application
    url: http://10.0.0.7:8080/metrics
    seen_as:
      - {target: orders-db, application_name: "orders-api*"}
      - {target: bouncer-1, application_name: "orders-api*"}
  - name: stats-api
    kind: application
    url: http://10.0.0.8:8080/metrics
    seen_as:
      - {target: bouncer-2, application_name: "stats-api*"}
  - name: mixed-api
    kind: application
    url: http://10.0.0.9:8080/metrics
    seen_as:
      - {target: orders-db, application_name: "mixed*"}
      - {target: bouncer-2, application_name: "mixed*"}
  - name: pinned-api
    kind: application
    url: http://10.0.0.10:8080/metrics
    upstream: orders-db
`))
	require.NoError(t, err)
	got := map[string]string{}
	for _, tg := range cfg.Targets() {
		got[tg.Name] = UpstreamOf(&tg)
	}
	require.Equal(t, map[string]string{
		"orders-db":  "orders-db",
		"bouncer-1":  "orders-db",
		"bouncer-2":  "",
		"orders-api": "orders-db", // both seen_as targets end on orders-db
		"stats-api":  "",          // bouncer-2 names no upstream
		"mixed-api":  "",          // they disagree
		"pinned-api": "orders-db",
	}, got)
}
