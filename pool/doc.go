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
// from pgxpool and, unless the connection is fresh (see below), runs the
// health check under its own timeout. A connection that fails the check is
// destroyed (its *pgx.Conn is hijacked from pgxpool and closed) before the
// next attempt starts, so the classic retry-loop leak (attempt 1 acquires
// conn1, the check fails, attempt 2 acquires conn2 and only conn2 is ever
// returned) cannot happen: there is at most one connection in the hands of
// an attempt at any time, and it is disposed of before the loop moves on.
//
// This holds for panics too, wherever they happen between pgxpool handing
// out a connection and its release: in the health check (which runs pgx
// code and any tracer), in the pool's own bookkeeping, in the callback or
// in the release itself. The connection is destroyed, or released if the
// panic came after it was found healthy and it is still reusable, and then
// the panic goes on to the caller. The pool's lock is never left held.
//
// pgxpool's own liveness ping (ShouldPing) is turned off, because it retries
// silently inside Acquire and because the PgBouncer admin console rejects
// pgx's ping. The pool runs its own health check instead, chosen by the
// target's kind: an empty-statement ping on PostgreSQL, SHOW VERSION over
// the simple protocol on the PgBouncer and PgCat consoles, SHOW LISTS on
// Odyssey's, SHOW POOL_VERSION on Pgpool-II.
//
// A connection that comes back from a callback closed, busy (a query still
// in flight), or inside a transaction is destroyed, never returned to the
// pool.
//
// # Connection policy
//
// docs/connections.md states the policy for operators; here is what the
// code does.
//
//   - Between calls the pool keeps Options.MinConnections connections open (the
//     configuration's default is 1 for PostgreSQL and PgBouncer targets,
//     so that a full server or pooler cannot lock the agent out when it
//     matters) and never more than Options.MaxConnections (default 2). When a
//     connection is destroyed, or returned while the pool is below
//     MinConns, one background top-up dials what is missing; the call that
//     triggered it does not wait for it. MinConns 0 keeps nothing open
//     between calls.
//   - A connection that completed a query successfully within [FreshFor]
//     (1 s: its login, its last health check, or a callback that returned
//     nil) is handed out without a health-check round trip, as pgxpool's
//     default ShouldPing does. Any other connection is checked first, and
//     every failed check destroys the connection before the next attempt.
//   - A connection lives until it fails a check, breaks, or idles out:
//     there is no lifetime limit. Options.IdleClose closes every
//     connection, MinConns included, after that long without a call (zero:
//     never); the next call opens the pool again.
//   - While a target is down (the last call found no healthy connection),
//     a call makes one attempt: the retries (Options.AcquireRetries) are
//     for a target that answered and blipped, and for a dead one would
//     only multiply the dials and lengthen every failed round. A call that
//     fails that way, alone on a pool that holds no connection and dials
//     none, drops the inner pgxpool and stops the janitor: a down target
//     costs no goroutine and next to no memory between calls, so that
//     thousands of them do not add up.
//   - The DSN is parsed once, at New, unless parsing it reads files whose
//     content may change (TLS files, a service or password file:
//     config.DSNReadsFiles); then every dial parses it afresh.
//   - The kinds differ only in kindPolicy: the health check, the simple
//     protocol, whether statement_timeout and lock_timeout are sent, and
//     the most connections the kind allows (Pgpool-II: 1, as each takes one
//     of its child processes; New refuses more). A new kind is one case in
//     policyFor.
//
// # Timeouts
//
// The caller's context bounds the whole of [Pool.Do]: waiting for a free
// connection, dialling, health checks, the backoff between attempts and the
// destruction of failed connections. A dial the caller gave up on goes on
// in pgxpool's background, so that its connection serves the next call, but
// never longer than Options.ConnectTimeout: a blackholed target cannot keep
// a dial (and a pool slot) alive for pgx's default two minutes. The whole
// dial, including reading the password and TLS files, fits in that budget,
// even if a file blocks (a named pipe, a hung network file system): the
// password is read through a config.PasswordReader, and the DSN (which
// names the TLS files) is parsed in a goroutine the dial stops waiting
// for. Either way at most one read per pool is in flight, and a read that
// failed is not retried within the call. [New] too waits at most
// ConnectTimeout for the TLS files.
//
// # Leaks
//
// The pool tracks how long each connection has been in a callback's hands.
// A connection held longer than Options.LeakThreshold counts as leaked in
// [Stats] until it is released, and is logged once, as HikariCP's
// leakDetectionThreshold does. Leaks are counted under the pool's lock and
// logged after it is released.
//
// # Lifecycle
//
// A Pool opens its connections lazily, on the first [Pool.Do], and closes
// them all after Options.IdleClose without use; the next Do opens them
// again. Its janitor goroutine (leak logging, idle close) runs from the
// first Do until Close, except while the target is down (see above).
//
// [Pool.Close] returns by the time its context is done, whatever a dial, a
// password read or a callback is doing. It stops new calls at once, then
// waits for running calls to return and for every connection to close;
// pgxpool's Close cancels the dials in progress. If the context ends first,
// Close cancels the context that callbacks, health checks and password
// reads run under, and returns an error wrapping the context's error.
// What is still running is then cleaned up by one background goroutine per
// pool as it ends: a callback when it returns (at once if it honours its
// context), a connect hook that ignores its context when it returns, and
// then the remaining connections are closed. Nothing else is left running:
// at most one password-file read and one TLS-file read per pool stay
// blocked in a file that never answers, until it does, and pgx's own
// cancel request for a query cut off by a timeout lasts at most 15 s. A
// callback that ignores its context therefore holds its connection and
// that goroutine until it returns, but never Close. A context without a
// deadline makes Close wait for all of it.
//
// All methods of Pool are safe for concurrent use.
package pool
