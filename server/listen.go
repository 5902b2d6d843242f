package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/net/netutil"
)

// This file bounds what HTTP clients can hold of the agent: time (read,
// write and idle timeouts) and connections (a limiting listener around each
// listener exporter-toolkit serves on). Without them, idle keep-alive
// connections are never closed, and enough of them take every file
// descriptor, the targets' connections' included.

// Fixed HTTP timeouts (docs/operations.md lists them with the flags).
const (
	// ReadHeaderTimeout bounds reading a request's headers, and the TLS
	// handshake before them; never more than the idle timeout, so that a
	// connection that sends nothing at all goes as soon as an idle one.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout = 30 * time.Second
	// WriteGrace is the time a response gets to be written beyond the
	// longest legitimate wait for a round (the largest scrape_timeout of
	// the configuration): a request's write deadline is set to the sum when
	// it arrives, so no legitimate scrape is cut off, whatever the
	// configuration, and a client that stops reading is dropped in the end.
	WriteGrace = time.Minute
)

// Defaults of the flags.
const (
	DefaultIdleTimeout    = time.Minute
	DefaultMaxConnections = 512
	// MaxIdleTimeout is the largest idle timeout accepted.
	MaxIdleTimeout = 2 * time.Minute
)

// HTTPLimits are the bounds set by flags.
type HTTPLimits struct {
	// IdleTimeout closes a keep-alive connection idle this long: > 0 and
	// at most MaxIdleTimeout.
	IdleTimeout time.Duration
	// MaxConnections caps the connections open at once on each listener:
	// the next ones wait in the kernel's accept queue. >= 1;
	// EffectiveMaxConnections lowers it to what the file descriptor limit
	// leaves.
	MaxConnections int
}

// Validate reports a limit out of range.
func (l HTTPLimits) Validate() error {
	switch {
	case l.IdleTimeout <= 0 || l.IdleTimeout > MaxIdleTimeout:
		return fmt.Errorf("--web.idle-timeout must be > 0 and at most %v, got %v", MaxIdleTimeout, l.IdleTimeout)
	case l.MaxConnections < 1:
		return fmt.Errorf("--web.max-connections must be at least 1, got %d", l.MaxConnections)
	}
	return nil
}

// NewHTTPServer returns the agent's http.Server for handler, with the
// fixed read timeouts, l's idle timeout, and a write deadline per request
// of longest() + WriteGrace, where longest reports the largest
// scrape_timeout of the configuration in force (it may change on reload).
func NewHTTPServer(handler http.Handler, l HTTPLimits, longest func() time.Duration) *http.Server {
	return &http.Server{
		Handler:           withWriteDeadline(handler, longest),
		ReadHeaderTimeout: min(ReadHeaderTimeout, l.IdleTimeout),
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       l.IdleTimeout,
		// WriteTimeout stays 0: withWriteDeadline sets each request's.
	}
}

// withWriteDeadline sets each request's write deadline to longest() +
// WriteGrace from its arrival.
func withWriteDeadline(next http.Handler, longest func() time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An error means the writer cannot take deadlines (a test
		// recorder); there is nothing to bound then.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(longest() + WriteGrace))
		next.ServeHTTP(w, r)
	})
}

// EffectiveMaxConnections is maxConns lowered, if need be, to half the process's
// soft limit on open files (which Go raises to the hard limit at start),
// so that HTTP clients can never take the descriptors the targets'
// connections need. It reports whether it lowered maxConns.
func EffectiveMaxConnections(maxConns int) (int, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return maxConns, false
	}
	half := int(min(rl.Cur/2, uint64(1<<30))) //nolint:gosec // bounded above (an unlimited limit reads as 2^64-1)
	if half >= 1 && half < maxConns {
		return half, true
	}
	return maxConns, false
}

// ListenAndServe is exporter-toolkit's web.ListenAndServe (the same
// listeners: TCP addresses, vsock:// ones, or systemd's sockets), with each
// listener wrapped in a limiting listener of maxConns connections. It
// returns when serving ends, with its error.
func ListenAndServe(srv *http.Server, flags *web.FlagConfig, maxConns int, logger *slog.Logger) error {
	listeners, err := listen(flags, logger)
	if err != nil {
		return err
	}
	return ServeLimited(listeners, srv, flags, maxConns, logger)
}

// ServeLimited serves srv on listeners through exporter-toolkit (TLS and
// basic auth from flags' web configuration file), each listener wrapped in
// a limiting listener of maxConns connections, and closes them when
// serving ends.
func ServeLimited(listeners []net.Listener, srv *http.Server, flags *web.FlagConfig, maxConns int, logger *slog.Logger) error {
	limited := make([]net.Listener, len(listeners))
	for i, l := range listeners {
		limited[i] = netutil.LimitListener(l, maxConns)
	}
	defer func() {
		for _, l := range limited {
			_ = l.Close()
		}
	}()
	return web.ServeMultiple(limited, srv, flags, logger)
}

// listen opens the listeners the flags name, as web.ListenAndServe does.
func listen(flags *web.FlagConfig, logger *slog.Logger) ([]net.Listener, error) {
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		logger.Info("Listening on systemd activated listeners instead of port listeners.")
		ls, err := activation.Listeners()
		if err != nil {
			return nil, err
		}
		if len(ls) < 1 {
			return nil, errors.New("no socket activation file descriptors found")
		}
		return ls, nil
	}
	if flags.WebListenAddresses == nil || len(*flags.WebListenAddresses) == 0 {
		return nil, errors.New("no web listen address or systemd socket flag specified")
	}
	var ls []net.Listener
	for _, address := range *flags.WebListenAddresses {
		l, err := listenOne(address)
		if err != nil {
			for _, o := range ls {
				_ = o.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func listenOne(address string) (net.Listener, error) {
	if !strings.HasPrefix(address, "vsock://") {
		return net.Listen("tcp", address)
	}
	u, err := url.Parse(address)
	if err != nil {
		return nil, err
	}
	_, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return nil, err
	}
	return vsock.Listen(uint32(port), nil)
}
