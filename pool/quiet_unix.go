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
	if err := raw.Read(func(fd uintptr) bool {
		_, _, rerr := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// Nothing to read on an open socket: EAGAIN. No error means data
		// (the server spoke) or the end of the stream (it left); any other
		// error means the socket is broken.
		idle = errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EWOULDBLOCK)
		return true // never wait for readiness
	}); err != nil {
		return false
	}
	return idle
}
