package server_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/server"
)

// serveLimited serves h with limits on a loopback listener, stopped on
// cleanup, and returns its address.
func serveLimited(t *testing.T, h http.Handler, limits server.HTTPLimits) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := server.NewHTTPServer(h, limits, func() time.Duration { return time.Second })
	empty := ""
	flags := &web.FlagConfig{WebConfigFile: &empty}
	done := make(chan error, 1)
	go func() {
		done <- server.ServeLimited([]net.Listener{l}, srv, flags, limits.MaxConnections, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		require.ErrorIs(t, <-done, http.ErrServerClosed)
	})
	return l.Addr().String()
}

// getOn sends one keep-alive GET on conn and reads the response's status
// line and body.
func getOn(t *testing.T, conn net.Conn, r *bufio.Reader, path string) string {
	t.Helper()
	_, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: poolwatch\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.Status + " " + strings.TrimSpace(string(b))
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })

func TestServeLimited_ClosesAnIdleKeepAliveConnectionAfterTheIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	addr := serveLimited(t, ok, server.HTTPLimits{IdleTimeout: idle, MaxConnections: 10})
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	r := bufio.NewReader(conn)
	require.Equal(t, "200 OK ok", getOn(t, conn, r, "/"))

	start := time.Now()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second))) // a bound, not a wait
	_, err = r.ReadByte()
	closedAfter := time.Since(start)
	require.ErrorIs(t, err, io.EOF, "the server closed the idle connection")
	require.GreaterOrEqual(t, closedAfter, idle-50*time.Millisecond)
	require.Less(t, closedAfter, idle+2*time.Second)
}

func TestServeLimited_CapsConnectionsAndTheNextOneWaitsItsTurn(t *testing.T) {
	addr := serveLimited(t, ok, server.HTTPLimits{IdleTimeout: time.Minute, MaxConnections: 2})
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 2 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		r := bufio.NewReader(c)
		require.Equal(t, "200 OK ok", getOn(t, c, r, "/"))
		conns, readers = append(conns, c), append(readers, r)
	}

	third, err := net.Dial("tcp", addr) // the kernel accepts; the server does not
	require.NoError(t, err)
	defer third.Close()
	_, err = io.WriteString(third, "GET / HTTP/1.1\r\nHost: poolwatch\r\n\r\n")
	require.NoError(t, err)
	r3 := bufio.NewReader(third)
	require.NoError(t, third.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err = r3.ReadByte()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "a third connection is not served while two are open")

	require.NoError(t, conns[0].Close())
	require.NoError(t, third.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(r3, nil)
	require.NoError(t, err, "served once a slot is free")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_ = resp.Body.Close()
	require.Equal(t, "200 OK ok", getOn(t, conns[1], readers[1], "/"), "the others are still served")
}

func TestHTTPLimits_RejectsOutOfRangeValues(t *testing.T) {
	require.NoError(t, server.HTTPLimits{IdleTimeout: 2 * time.Minute, MaxConnections: 1}.Validate())
	for _, l := range []server.HTTPLimits{
		{IdleTimeout: 0, MaxConnections: 10},
		{IdleTimeout: 2*time.Minute + time.Second, MaxConnections: 10},
		{IdleTimeout: time.Minute, MaxConnections: 0},
	} {
		require.Error(t, l.Validate(), "%+v", l)
	}
	n, lowered := server.EffectiveMaxConnections(1 << 40)
	require.True(t, lowered, "no file limit is that high")
	require.Positive(t, n)
	n, lowered = server.EffectiveMaxConnections(1)
	require.False(t, lowered)
	require.Equal(t, 1, n)
}
