package scrape

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// consolePipeline is a console that sends a round's fixed commands at once
// and reads their answers in order: one network round trip instead of one
// per command. An admin console speaks only the simple query protocol, and
// PgBouncer's refuses several commands in one query string ("invalid
// command"), but it answers Query messages sent back to back in order, each
// with its own result or error and its own ReadyForQuery: an error in one
// command does not touch the next.
//
// The commands must be run in the order they were given, each exactly
// once, as collect does; a command that is not the next one (SHOW CLIENTS,
// which depends on what SHOW POOLS said) first reads whatever is still in
// flight and then runs alone. Each answer is read under the context of the
// call that reads it. When reading fails (the context ends, the connection
// breaks), the connection is closed, since unread answers are still on it:
// the probe pool then destroys it, and every command not yet read fails.
// close must be called once collect is done, on every path.
type consolePipeline struct {
	conn *pgx.Conn
	sqls []string
	// next is the index in sqls of the next answer to read; sent is set once
	// sqls[next:] are on the wire; reading while an answer is being read.
	next    int
	sent    bool
	reading bool
	// broken is why the connection can no longer be read, nil while it can.
	broken error
}

func newConsolePipeline(conn *pgx.Conn, sqls []string) *consolePipeline {
	return &consolePipeline{conn: conn, sqls: sqls}
}

// run is the pipeline's console (see console).
func (p *consolePipeline) run(ctx context.Context, sql string, mapFn func(rowSource) error) error {
	if err := ctx.Err(); err != nil {
		p.poison(err, p.inFlight())
		return fmt.Errorf("%s: %w", sql, err)
	}
	if p.broken != nil {
		return fmt.Errorf("%s: an earlier command broke the connection: %w", sql, p.broken)
	}
	if p.next >= len(p.sqls) || p.sqls[p.next] != sql {
		// Not one of the pipelined commands: what is in flight is read and
		// dropped first, then the command runs alone.
		if err := p.drain(ctx); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return showQuery(ctx, p.conn, sql, mapFn)
	}
	if !p.sent {
		if err := p.send(ctx); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	p.next++
	return p.read(ctx, sql, mapFn)
}

// send writes every command not yet read at once.
func (p *consolePipeline) send(ctx context.Context) error {
	pc := p.conn.PgConn()
	unwatch := watchDeadline(ctx, pc)
	fe := pc.Frontend()
	for _, q := range p.sqls[p.next:] {
		fe.SendQuery(&pgproto3.Query{String: q})
	}
	err := fe.Flush()
	if unwatch() != nil || err != nil {
		err = readError(ctx, err)
		p.poison(err, true) // part of it may be on the wire
		return err
	}
	p.sent = true
	return nil
}

// read reads the answer of sql, the next one on the wire, through mapFn.
// As showQuery, it reports the server's error before mapFn's.
func (p *consolePipeline) read(ctx context.Context, sql string, mapFn func(rowSource) error) error {
	pc := p.conn.PgConn()
	p.reading = true
	unwatch := watchDeadline(ctx, pc)
	src := &wireRows{pc: pc}
	var mapErr error
	// Up to the RowDescription, or an error instead.
	for src.err == nil && src.cols == nil && !src.done {
		src.receive()
	}
	if src.cols != nil {
		mapErr = mapFn(src)
		for src.next() {
		}
	}
	// Up to this answer's ReadyForQuery.
	for src.err == nil && !src.ready {
		src.receive()
	}
	if timedOut := unwatch(); timedOut != nil && src.err == nil && !src.ready {
		src.err = timedOut
	}
	p.reading = false
	switch {
	case src.err != nil:
		err := readError(ctx, src.err)
		p.poison(err, true) // the rest of this answer, and the next ones
		return fmt.Errorf("%s: %w", sql, err)
	case src.pgErr != nil:
		return fmt.Errorf("%s: %w", sql, src.pgErr)
	case mapErr != nil:
		return fmt.Errorf("%s: %w", sql, mapErr)
	}
	return nil
}

// drain reads and drops the answers still in flight.
func (p *consolePipeline) drain(ctx context.Context) error {
	for p.broken == nil && p.inFlight() {
		sql := p.sqls[p.next]
		if err := p.run(ctx, sql, func(rowSource) error { return nil }); err != nil && p.broken != nil {
			return err
		}
	}
	return nil
}

// close reads what is still in flight, so that the connection goes back to
// its pool clean, or closes it if that fails. After a panic in the middle
// of an answer, it closes the connection.
func (p *consolePipeline) close(ctx context.Context) {
	switch {
	case p.reading:
		p.poison(errors.New("the round ended in the middle of an answer"), true)
	case p.broken == nil && p.inFlight():
		_ = p.drain(ctx)
	}
}

// inFlight reports whether answers are on the wire, unread.
func (p *consolePipeline) inFlight() bool { return p.sent && p.next < len(p.sqls) }

// poison marks the pipeline broken by err and, if answers may still be on
// the wire (dirty), closes the connection: it must not go back to the pool
// with them.
func (p *consolePipeline) poison(err error, dirty bool) {
	if p.broken != nil {
		return
	}
	p.broken = err
	if dirty {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_ = p.conn.PgConn().Close(ctx)
	}
}

// closeTimeout bounds the goodbye sent to a console whose connection the
// pipeline gives up.
const closeTimeout = 100 * time.Millisecond

// errDeadline is the error of a read the context's end interrupted.
var errDeadline = errors.New("the round's context ended while reading the console")

// readError returns err, wrapped with ctx's error when ctx is done (the
// read was interrupted by the context's end).
func readError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if err == nil || errors.Is(err, errDeadline) {
			return cerr
		}
		return fmt.Errorf("%w: %w", cerr, err)
	}
	if err == nil {
		return errDeadline
	}
	return err
}

// watchDeadline makes ctx's end interrupt the connection's reads and
// writes, once for a whole answer rather than once per message as
// pgconn's ReceiveMessage does with a context: every DataRow would
// otherwise register and stop a context callback. The returned function
// stops watching; it returns errDeadline if ctx's end has interrupted the
// connection, whose deadline it then clears so that the connection can be
// used again.
func watchDeadline(ctx context.Context, pc *pgconn.PgConn) func() error {
	if ctx.Done() == nil {
		return func() error { return nil }
	}
	nc := pc.Conn()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() error {
		if stop() {
			return nil
		}
		<-fired
		_ = nc.SetDeadline(time.Time{})
		return errDeadline
	}
}

// wireRows is one answer read off the wire, as a rowSource: values are
// the DataRow's, valid until the next call to next.
type wireRows struct {
	pc   *pgconn.PgConn
	cols []string
	vals [][]byte
	// done: the rows are over (CommandComplete or an error); ready: the
	// answer's ReadyForQuery has been read.
	done, ready bool
	// err is a failed read; pgErr the server's error for this command.
	err   error
	pgErr *pgconn.PgError
}

func (w *wireRows) columns() []string { return w.cols }

func (w *wireRows) values() [][]byte { return w.vals }

func (w *wireRows) next() bool {
	for !w.done && w.err == nil {
		if w.receive() {
			return true
		}
	}
	return false
}

// receive reads one message and reports whether it was a DataRow.
func (w *wireRows) receive() bool {
	msg, err := w.pc.ReceiveMessage(context.Background()) // the deadline is watchDeadline's
	if err != nil {
		w.err = err
		w.done = true
		return false
	}
	switch m := msg.(type) {
	case *pgproto3.RowDescription:
		w.cols = make([]string, len(m.Fields))
		for i, f := range m.Fields {
			w.cols[i] = string(f.Name)
		}
	case *pgproto3.DataRow:
		if !w.done {
			w.vals = m.Values
			return true
		}
	case *pgproto3.CommandComplete, *pgproto3.EmptyQueryResponse:
		w.done = true
	case *pgproto3.ErrorResponse:
		w.pgErr = pgconn.ErrorResponseToPgError(m)
		w.done = true
	case *pgproto3.ReadyForQuery:
		w.done, w.ready = true, true
	}
	return false
}
