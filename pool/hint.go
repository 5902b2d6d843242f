package pool

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/poolwatch/poolwatch/config"
)

// This file names the likely cause of a failed acquire when the server's
// answer says more than its own words: a target of the wrong kind, or an
// address probe that refused to send a password in clear. It is the one
// place for such hints; a new kind adds its case to kindHint.

// hinted is an acquire error with the likely cause appended to its text.
// It unwraps to the original error.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() + " (" + h.hint + ")" }
func (h hinted) Unwrap() error { return h.err }

// explain returns err with the likely cause appended when one is known, or
// err as it is.
func explain(kind config.Kind, err error) error {
	if err == nil {
		return nil
	}
	if h := kindHint(kind, err); h != "" {
		return hinted{err: err, hint: h}
	}
	if h := authHint(err); h != "" {
		return hinted{err: err, hint: h}
	}
	return err
}

// kindHint recognises a server of another kind than the target's from the
// way it rejects the connection or the health check.
func kindHint(kind config.Kind, err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return ""
	}
	switch kind {
	case config.KindPostgres, "":
		// PgBouncer (and other poolers' consoles) refuse the start-up
		// parameters that only a PostgreSQL server understands.
		if pgErr.Code == "08P01" && strings.HasPrefix(pgErr.Message, "unsupported startup parameter") {
			return "the server rejects PostgreSQL session settings the way PgBouncer's admin console does: if this is a PgBouncer console, use kind: pgbouncer"
		}
	case config.KindPgBouncer:
		// PostgreSQL has no database "pgbouncer" (the console's name).
		if pgErr.Code == "3D000" && strings.Contains(pgErr.Message, `"pgbouncer"`) {
			return `no database "pgbouncer" here: is this a PostgreSQL server rather than PgBouncer's admin console? If so, use kind: postgres`
		}
	}
	return ""
}

// authHint explains a connection refused because the server asked for a
// password in clear or as MD5 where require_auth forbids it (address
// probes, unless their auth module allows it).
func authHint(err error) string {
	if !strings.Contains(err.Error(), "require_auth check failed") {
		return ""
	}
	return "the server asked for a cleartext or MD5 password, which a probe by address never sends: " +
		"use SCRAM (password_encryption = scram-sha-256 and scram-sha-256 in pg_hba.conf, or auth_type = scram-sha-256 in PgBouncer) " +
		"or a TLS client certificate, or set insecure_password_auth: true on the auth module"
}
