package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestPgpool_StartsAsPostgresInItsOwnDirAndRestartsOnTheSamePort(t *testing.T) {
	pg := sharedPG(t)
	user, pw, db := uniqueName(t, "app"), "app-pw", uniqueName(t, "appdb")
	pg.CreateRole(t, user, pw, "LOGIN")
	pg.CreateDatabase(t, db)
	p := StartPgpool(t, []*Postgres{pg}, PgpoolOptions{NumInitChildren: 2, MaxPool: 1, Users: map[string]string{user: pw}})
	require.Equal(t, "127.0.0.1", p.Host)
	require.Positive(t, p.Port)
	require.Equal(t, 2, p.NumInitChildren())
	st, err := os.Stat(p.Dir)
	require.NoError(t, err)
	require.True(t, st.IsDir())

	nodes := p.Show(t, "SHOW POOL_NODES").Records()
	require.Len(t, nodes, 1)
	require.Equal(t, "up", nodes[0]["status"])
	require.Equal(t, pg.Addr(), nodes[0]["hostname"]+":"+nodes[0]["port"])

	// A client logs in with its pool_passwd password (scram-sha-256), and a
	// wrong one is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN(user, pw, db))
	require.NoError(t, err)
	var one int
	require.NoError(t, c.QueryRow(ctx, "SELECT 1").Scan(&one))
	require.NoError(t, c.Close(ctx))
	_, err = pgx.Connect(ctx, p.DSN(user, "wrong", db))
	require.ErrorContains(t, err, "authentication failed")

	port := p.Port
	p.Stop(t)
	require.False(t, p.Running())
	p.Start(t)
	require.Equal(t, port, p.Port)
	require.Equal(t, "2", p.Show(t, "PGPOOL SHOW num_init_children").Records()[0]["num_init_children"])

	require.NoError(t, p.Close())
	_, err = os.Stat(p.Dir)
	require.True(t, os.IsNotExist(err), "Close removes the directory")
	require.NoError(t, p.Close(), "twice is fine")
}
