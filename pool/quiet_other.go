//go:build !unix

package pool

import "net"

// quiet cannot inspect a socket on this platform: every connection gets its
// health check, as if it were not fresh.
func quiet(net.Conn) bool { return false }
