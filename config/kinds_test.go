package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse_PgpoolTargetHoldsOneChildEvenWhenDefaultsAskForMore(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Parse("c.yml", []byte(`defaults:
  probe_pool:
    min_connections: 2
    max_connections: 3
targets:
  - name: pp
    kind: pgpool
    dsn: postgres://u@pgpool1:9999/appdb
  - name: db
    kind: postgres
    dsn: postgres://u@db1/postgres
`))
	require.NoError(t, err)
	pp, _ := cfg.Target("pp")
	require.Equal(t, PgpoolMaxProbeConnections, pp.ProbePool.MaxConnections)
	require.Equal(t, 1, pp.ProbePool.MinConnections)
	require.Zero(t, pp.ProbePool.StatementTimeout, "Pgpool-II gets no runtime parameters")
	db, _ := cfg.Target("db")
	require.Equal(t, 3, db.ProbePool.MaxConnections, "other kinds keep the defaults")
}

func TestParse_EveryKindIsAcceptedWithItsConsoleDatabase(t *testing.T) {
	hermeticEnv(t)
	for kind, db := range map[Kind]string{KindPostgres: "postgres", KindPgBouncer: "pgbouncer", KindPgpool: "appdb", KindPgCat: "pgcat", KindOdyssey: "console"} {
		cfg, err := Parse("c.yml", []byte("targets:\n  - name: t\n    kind: "+string(kind)+"\n    dsn: postgres://u@h:6432/"+db+"\n"))
		require.NoError(t, err, kind)
		tg, _ := cfg.Target("t")
		require.Equal(t, kind, tg.Kind)
		require.False(t, tg.SessionModeLeaks)
	}
	_, err := Parse("c.yml", []byte("targets:\n  - name: t\n    kind: pgcat\n    dsn: postgres://u@h:6432/pgbouncer\n"))
	require.NoError(t, err, "PgCat's console answers as pgbouncer too")
	_, err = Parse("c.yml", []byte("targets:\n  - name: t\n    kind: pgcat\n    dsn: postgres://u@h:6432/appdb\n"))
	require.EqualError(t, err, `c.yml:4: targets[0].dsn: a pgcat target connects to the admin console: the DSN's database must be "pgcat" or "pgbouncer", not "appdb"`)
	_, err = Parse("c.yml", []byte("targets:\n  - name: t\n    kind: pgpool\n    dsn: postgres://u@h:9999/appdb\n    session_mode_leaks: true\n"))
	require.EqualError(t, err, `c.yml:5: targets[0].session_mode_leaks: applies to pgbouncer targets only`)
}
