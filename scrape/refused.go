package scrape

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/poolwatch/poolwatch/config"
)

// This file is the one place that tells, from the error of a failed
// connect, that the server or pooler refused the agent a connection for
// lack of slots, and why: poolwatch_target_connection_refused{reason}. At
// full exhaustion that is what the agent sees of a target whose connection
// it lost, and it must never be turned into an in-use count the agent did
// not read.

// Reasons a target refuses a connection for lack of slots: the values of
// the `reason` label of poolwatch_target_connection_refused.
const (
	// RefusedServerSlots: PostgreSQL has no slot left at all ("sorry, too
	// many clients already", SQLSTATE 53300).
	RefusedServerSlots = "server_slots"
	// RefusedReservedSlots: only reserved slots are left and the agent's
	// role may not use them ("remaining connection slots are reserved
	// for ...", SQLSTATE 53300): every slot an ordinary role can use is
	// taken.
	RefusedReservedSlots = "reserved_slots"
	// RefusedRoleLimit: the role's CONNECTION LIMIT ("too many connections
	// for role", 53300), or a pooler's per-user client cap
	// (PgBouncer 1.24+ max_user_client_connections).
	RefusedRoleLimit = "role_limit"
	// RefusedDatabaseLimit: the database's CONNECTION LIMIT ("too many
	// connections for database", 53300).
	RefusedDatabaseLimit = "database_limit"
	// RefusedPgBouncerMaxClientConn: PgBouncer's max_client_conn ("no more
	// connections allowed (max_client_conn)"). PgBouncer never refuses its
	// admin console for it, so a pgbouncer target sees it only behind
	// another PgBouncer; a postgres target behind a PgBouncer does.
	RefusedPgBouncerMaxClientConn = "pgbouncer_max_client_conn"
	// RefusedPgBouncerMaxDBConnections: PgBouncer's per-database client
	// cap (1.24+ max_db_client_connections, "no more connections allowed
	// (max_db_client_connections)"). Up to 1.23, max_db_connections makes
	// clients wait, it refuses none.
	RefusedPgBouncerMaxDBConnections = "pgbouncer_max_db_connections"
)

// RefusalReasons lists the reasons exported for a target of kind, each
// as a 0/1 series, in a fixed order: none for a kind whose refusals are
// not mapped. A postgres target can sit behind a PgBouncer, so it gets
// PgBouncer's reasons too; a pgbouncer target (the admin console) gets only
// PgBouncer's; a pgpool target server_slots, which Pgpool-II answers
// ("sorry, too many clients already", 53300) when every child is busy and
// reserved_connections is set.
func RefusalReasons(kind config.Kind) []string {
	bouncer := []string{RefusedPgBouncerMaxClientConn, RefusedPgBouncerMaxDBConnections}
	switch kind {
	case config.KindPostgres:
		return append([]string{RefusedServerSlots, RefusedReservedSlots, RefusedRoleLimit, RefusedDatabaseLimit}, bouncer...)
	case config.KindPgBouncer:
		return bouncer
	case config.KindPgpool:
		return []string{RefusedServerSlots}
	}
	return nil
}

// sqlstateTooManyConnections is PostgreSQL's too_many_connections.
const sqlstateTooManyConnections = "53300"

// Refused returns why the round's connect was refused for lack of slots,
// one of RefusalReasons(r.Kind), or "" when the round connected, failed
// for another reason (down, wrong password, timeout...), or was refused
// for a reason its kind does not export.
func (r *Result) Refused() string {
	for _, e := range r.Errors {
		if e.Query != QueryConnect {
			continue
		}
		reason := RefusalReason(e.Err)
		for _, want := range RefusalReasons(r.Kind) {
			if reason == want {
				return reason
			}
		}
	}
	return ""
}

// RefusalReason classifies a connect error: the reason a server or pooler
// refused the connection for lack of slots, or "" for any other error. It
// reads the server's error (pgconn.PgError) wherever it is in err's chain:
// the SQLSTATE 53300 messages of PostgreSQL 12 to 17 and PgBouncer's
// "no more connections allowed (...)", which PgBouncer sends with SQLSTATE
// 08P01.
func RefusalReason(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return ""
	}
	msg := strings.ToLower(pgErr.Message)
	if strings.HasPrefix(msg, "no more connections allowed") {
		switch {
		case strings.Contains(msg, "max_client_conn"):
			return RefusedPgBouncerMaxClientConn
		case strings.Contains(msg, "max_db_client_connections"), strings.Contains(msg, "max_db_connections"):
			return RefusedPgBouncerMaxDBConnections
		case strings.Contains(msg, "max_user_client_connections"), strings.Contains(msg, "max_user_connections"):
			return RefusedRoleLimit
		}
		return ""
	}
	if pgErr.Code != sqlstateTooManyConnections {
		return ""
	}
	switch {
	case strings.Contains(msg, "too many clients already"):
		return RefusedServerSlots
	case strings.Contains(msg, "remaining connection slots are reserved"):
		return RefusedReservedSlots
	case strings.Contains(msg, "for role"):
		return RefusedRoleLimit
	case strings.Contains(msg, "for database"):
		return RefusedDatabaseLimit
	}
	// An unknown wording of too_many_connections (a translated server
	// message): the server is out of slots, which one is not known.
	return RefusedServerSlots
}
