package hostile_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// idleClient opens a connection to addr, sends one keep-alive request and
// reads its response, and leaves the connection open and idle.
func idleClient(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /-/healthy HTTP/1.1\r\nHost: poolwatch\r\n\r\n"); err != nil {
		_ = c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return c, nil
}

// TestHTTP_IdleConnectionsAreClosedAndDescriptorsComeBack opens 1,500 HTTP
// connections that each make one request and then sit idle, as anyone who
// reaches the port can: the agent closes them after --web.idle-timeout, and
// its open descriptors are back to the baseline within the idle timeout
// + 5 s, while /metrics keeps answering. (Before the fix, idle keep-alive
// connections were never closed: the issue saw 1,512 descriptors held for
// the whole test.)
func TestHTTP_IdleConnectionsAreClosedAndDescriptorsComeBack(t *testing.T) {
	const (
		conns = 1500
		idle  = 3 * time.Second
		slack = 5 // descriptors the runtime may open or close meanwhile
	)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
	cfg := fmt.Sprintf("targets:\n  - name: pg\n    kind: postgres\n    dsn: %s\n", pg.DSN("mon", monPassword, "postgres"))
	// The connection cap (default 512) would keep most of the 1,500 in the
	// accept queue, to be served one idle timeout after another: raise it
	// here, where what is measured is the idle timeout.
	pw := testenv.StartPoolwatch(t, cfg, "--web.idle-timeout="+idle.String(), "--web.max-connections=2000")
	pw.Scrape(t) // the target's connection is part of the baseline
	baseline := openFDs(t, pw.PID())

	opened := make([]net.Conn, conns)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range opened {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := idleClient(pw.Addr)
			if err != nil {
				errs <- err
				return
			}
			opened[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("open an idle connection: %v", err)
	}
	defer func() {
		for _, c := range opened {
			_ = c.Close()
		}
	}()
	held := time.Now()
	peak := openFDs(t, pw.PID())
	t.Logf("%d idle HTTP connections: agent descriptors %d -> %d", conns, baseline, peak)
	if peak < baseline+conns {
		t.Fatalf("the agent holds %d descriptors with %d connections open, want at least %d: the attack did not happen", peak, conns, baseline+conns)
	}
	if up := pw.Scrape(t).Must(t, "poolwatch_target_up", "target", "pg"); up != 1 {
		t.Errorf("up %v while the idle connections are open, want 1", up)
	}

	last := peak
	testenv.Eventually(t, idle+5*time.Second-time.Since(held), 100*time.Millisecond, func() (bool, string) {
		last = openFDs(t, pw.PID())
		return last <= baseline+slack, fmt.Sprintf("agent descriptors %d, baseline %d", last, baseline)
	})
	t.Logf("descriptors back to %d (baseline %d) %v after the connections went idle (--web.idle-timeout=%v)",
		last, baseline, time.Since(held).Round(100*time.Millisecond), idle)
	if up := pw.Scrape(t).Must(t, "poolwatch_target_up", "target", "pg"); up != 1 {
		t.Errorf("up %v after the idle connections were closed, want 1", up)
	}
	pw.StopAndCheck(t, monPassword)
}
