package scrape

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"

	"github.com/poolwatch/poolwatch/config"
)

// The messages are the servers' own: PostgreSQL 15's and 16's (postinit.c,
// which 17 keeps) and PgBouncer's (client.c).
func TestRefusalReason_MapsEachServerAndPoolerMessage(t *testing.T) {
	for _, c := range []struct {
		code, msg, want string
	}{
		{"53300", "sorry, too many clients already", RefusedServerSlots},
		{"53300", "remaining connection slots are reserved for non-replication superuser connections", RefusedReservedSlots},
		{"53300", "remaining connection slots are reserved for roles with the SUPERUSER attribute", RefusedReservedSlots},
		{"53300", `remaining connection slots are reserved for roles with privileges of the "pg_use_reserved_connections" role`, RefusedReservedSlots},
		{"53300", `too many connections for role "mon"`, RefusedRoleLimit},
		{"53300", `too many connections for database "postgres"`, RefusedDatabaseLimit},
		{"53300", "zu viele Verbindungen", RefusedServerSlots}, // a translated message: out of slots, which ones unknown
		{"08P01", "no more connections allowed (max_client_conn)", RefusedPgBouncerMaxClientConn},
		{"08P01", "no more connections allowed (max_db_client_connections)", RefusedPgBouncerMaxDBConnections},
		{"08P01", "no more connections allowed (max_user_client_connections)", RefusedRoleLimit},
		{"08P01", "no more connections allowed (something new)", ""},
		{"28P01", `password authentication failed for user "mon"`, ""},
		{"57P03", "the database system is starting up", ""},
		{"08P01", "query_wait_timeout", ""},
	} {
		wrapped := fmt.Errorf("probe pool \"pg\": acquire: failed to connect: %w", &pgconn.PgError{Severity: "FATAL", Code: c.code, Message: c.msg})
		assert.Equal(t, c.want, RefusalReason(wrapped), "%s %s", c.code, c.msg)
	}
	assert.Empty(t, RefusalReason(errors.New("dial tcp 127.0.0.1:1: connect: connection refused")))
	assert.Empty(t, RefusalReason(nil))
}

func TestResult_RefusedReadsOnlyTheConnectErrorAndTheKindsReasons(t *testing.T) {
	slots := &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}
	maxClient := &pgconn.PgError{Code: "08P01", Message: "no more connections allowed (max_client_conn)"}

	pg := &Result{Kind: config.KindPostgres, Errors: []QueryError{{Query: QueryConnect, Err: fmt.Errorf("acquire: %w", slots)}}}
	assert.Equal(t, RefusedServerSlots, pg.Refused())

	behindBouncer := &Result{Kind: config.KindPostgres, Errors: []QueryError{{Query: QueryConnect, Err: maxClient}}}
	assert.Equal(t, RefusedPgBouncerMaxClientConn, behindBouncer.Refused())

	query := &Result{Kind: config.KindPostgres, Errors: []QueryError{{Query: QueryActivity, Err: slots}}}
	assert.Empty(t, query.Refused(), "only a refused connect is a refusal")

	console := &Result{Kind: config.KindPgBouncer, Errors: []QueryError{{Query: QueryConnect, Err: slots}}}
	assert.Empty(t, console.Refused(), "a pgbouncer target exports PgBouncer's reasons only")

	assert.Empty(t, (&Result{Kind: config.KindPostgres}).Refused())
	assert.Equal(t, []string{"pgbouncer_max_client_conn", "pgbouncer_max_db_connections"}, RefusalReasons(config.KindPgBouncer))
	assert.Len(t, RefusalReasons(config.KindPostgres), 6)
}
