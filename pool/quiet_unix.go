//go:build unix

package pool

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quiet reports whether an idle connection's socket is as a live server
// leaves it: open, with nothing unread. It peeks without consuming a byte
// and without waiting (MSG_PEEK|MSG_DONTWAIT), so it costs one system call,
// not a round trip. A server that ended the session (pg_terminate_backend,
// a restart, a shutdown) sends an error and closes its end: the peek sees
// those bytes or the end of the stream, and quiet is false. Under TLS the
// peek looks at the TCP connection beneath (a pending record or the end).
// When the socket cannot be inspected, quiet is false too, and the caller
// falls back to a health check.
//
// quiet never blocks: it peeks through RawConn.Control, which does not take
// the socket's read lock, because another goroutine may hold that lock in a
// Read that lasts until the server next speaks (pgx's background reader,
// which a write slower than 15 ms starts, can leave one behind on an idle
// connection). RawConn.Read would wait for that Read, with no deadline and
// no context. Callers still sync the connection first (pgconn's SyncConn),
// so that such a reader's bytes are not missed.
func quiet(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	idle := false
	var buf [1]byte
	if err := raw.Control(func(fd uintptr) {
		_, _, rerr := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// Nothing to read on an open socket: EAGAIN. No error means data
		// (the server spoke) or the end of the stream (it left); any other
		// error means the socket is broken.
		idle = errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EWOULDBLOCK)
	}); err != nil {
		return false
	}
	return idle
}
