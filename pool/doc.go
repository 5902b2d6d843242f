// Package pool is poolwatch's probe pool: one small, correctly-released
// connection pool per monitored target, built on pgxpool.
//
// # Guarantees
//
// Every connection the pool hands out is returned or destroyed exactly once,
// on every path. Callers never hold a raw connection: they pass a callback to
// [Pool.Do], which acquires a healthy connection, runs the callback and then
// releases the connection, also when the callback fails or panics.
//
// Acquiring is a bounded loop of attempts. Each attempt acquires a connection
// from pgxpool and runs the health check under its own timeout. A connection
// that fails the check is destroyed (its *pgx.Conn is hijacked from pgxpool
// and closed) before the next attempt starts, so the classic retry-loop leak
// (attempt 1 acquires conn1, the check fails, attempt 2 acquires conn2 and
// only conn2 is ever returned) cannot happen: there is at most one connection
// in the hands of an attempt at any time, and it is disposed of before the
// loop moves on.
//
// pgxpool's own liveness ping (ShouldPing) is turned off, because it retries
// silently inside Acquire and because the PgBouncer admin console rejects
// pgx's ping. The pool runs its own health check instead: an empty-statement
// ping on PostgreSQL, and SHOW VERSION over the simple protocol on the
// PgBouncer console.
//
// A connection that comes back from a callback closed, busy (a query still
// in flight), or inside a transaction is destroyed, never returned to the
// pool.
//
// # Timeouts
//
// The caller's context bounds the whole of [Pool.Do]: waiting for a free
// connection, dialling, health checks and the backoff between attempts.
// New connections are dialled with Options.ConnectTimeout, so a blackholed
// target cannot keep a dial (and a pool slot) alive for pgx's default two
// minutes after the caller gave up.
//
// # Leaks
//
// The pool tracks how long each connection has been in a callback's hands.
// A connection held longer than Options.LeakThreshold counts as leaked in
// [Stats] until it is released, and is logged once, as HikariCP's
// leakDetectionThreshold does.
//
// # Lifecycle
//
// A Pool opens its connections lazily, on the first [Pool.Do], and closes
// them all after Options.IdleClose without use; the next Do opens them
// again. [Pool.Close] stops new calls, waits for running callbacks until its
// context is done, then cancels the context those callbacks run under, and
// closes every connection. Close never hangs while callbacks honour their
// context.
//
// All methods of Pool are safe for concurrent use.
package pool
