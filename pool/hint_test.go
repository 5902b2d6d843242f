package pool_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

// A target of the wrong kind fails with the server's own words, which do
// not say why; the error names the likely cause, and still unwraps to the
// server's error.
func TestDo_NamesTheWrongKindAsTheLikelyCause(t *testing.T) {
	checkGoroutines(t)
	pg, b := env(t)
	for name, tc := range map[string]struct {
		kind     config.Kind
		dsn      string
		server   string // what the server says
		code     string
		wantHint string
	}{
		"postgres kind against PgBouncer's console": {
			kind: config.KindPostgres, dsn: b.DSN(monUser, monPass, "pgbouncer"),
			server: "unsupported startup parameter: ", code: "08P01", // lock_timeout or statement_timeout
			wantHint: "if this is a PgBouncer console, use kind: pgbouncer",
		},
		"pgbouncer kind against PostgreSQL": {
			kind: config.KindPgBouncer, dsn: fmt.Sprintf("postgres://%s:%s@%s/pgbouncer?sslmode=disable", monUser, monPass, pg.Addr()),
			server: `database "pgbouncer" does not exist`, code: "3D000",
			wantHint: "is this a PostgreSQL server rather than PgBouncer's admin console? If so, use kind: postgres",
		},
	} {
		t.Run(name, func(t *testing.T) {
			opts := testOptions(t, tc.dsn)
			opts.Kind = tc.kind
			// What the configuration sends a postgres target.
			opts.LockTimeout, opts.StatementTimeout = time.Second, 5*time.Second
			p := newPool(t, opts)
			err := p.Do(context.Background(), func(context.Context, *pgx.Conn) error { return nil })
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.server)
			require.Contains(t, err.Error(), tc.wantHint)
			require.NotContains(t, err.Error(), monPass)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			require.Equal(t, tc.code, pgErr.Code)
		})
	}
}

// The right kind gets no hint, and neither does an error that says nothing
// about the kind (a wrong password).
func TestDo_GivesNoKindHintWhenTheKindIsRight(t *testing.T) {
	checkGoroutines(t)
	_, b := env(t)
	opts := testOptions(t, b.DSN(monUser, "Wr0ng-pw", "pgbouncer"))
	opts.Kind = config.KindPgBouncer
	p := newPool(t, opts)
	err := p.Do(context.Background(), func(context.Context, *pgx.Conn) error { return nil })
	require.Error(t, err)
	require.NotContains(t, err.Error(), "use kind")
	require.NotContains(t, err.Error(), "Wr0ng-pw")
}
