package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is an in-process TCP fault proxy between a client and a PostgreSQL
// or PgBouncer server. It listens on 127.0.0.1 and forwards every accepted
// connection to the upstream address, with faults switched on and off at
// run time. It also counts the frontend messages it forwards.
//
// All methods are safe for concurrent use. Close (run on cleanup) stops
// every goroutine the proxy started before it returns.
type Proxy struct {
	Addr string // "127.0.0.1:port"
	Host string // "127.0.0.1"
	Port int

	upstream string
	ln       net.Listener
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Once

	latency atomic.Int64 // time.Duration
	refuse  atomic.Bool
	queries atomic.Int64
	parses  atomic.Int64
	execs   atomic.Int64
	// passwords counts 'p' messages: a password (in clear or MD5) or a
	// SASL (SCRAM) response.
	passwords atomic.Int64
	dropped   atomic.Int64

	mu        sync.Mutex
	conns     map[*proxyConn]struct{}
	blackhole bool
	bhChange  chan struct{} // closed and replaced whenever blackhole changes
	closed    bool
}

// StartProxy starts a proxy to upstream ("host:port") and registers Close
// on cleanup.
func StartProxy(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	p, err := NewProxy(upstream)
	if err != nil {
		tb.Fatalf("start proxy: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// NewProxy is StartProxy without a testing.TB; the caller must Close it.
func NewProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	port := ln.Addr().(*net.TCPAddr).Port //nolint:errcheck,forcetypeassert // a TCP listener
	p := &Proxy{
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Host:     "127.0.0.1",
		Port:     port,
		upstream: upstream,
		ln:       ln,
		ctx:      ctx,
		cancel:   cancel,
		conns:    make(map[*proxyConn]struct{}),
		bhChange: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// DSN rewrites a postgres:// URL from Postgres.DSN or PgBouncer.DSN to go
// through the proxy: same user, database and parameters, the proxy's
// address. Use sslmode=disable (the default of those DSNs): the counters
// cannot see inside TLS.
func (p *Proxy) DSN(upstreamDSN string) (string, error) {
	return replaceHost(upstreamDSN, p.Addr)
}

// Close stops accepting, closes every connection and waits for every
// goroutine of the proxy to end. It is idempotent.
func (p *Proxy) Close() {
	p.closeMu.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := p.takeConnsLocked()
		p.mu.Unlock()
		p.cancel()
		_ = p.ln.Close()
		for _, c := range conns {
			c.close(false)
		}
		p.wg.Wait()
	})
}

// SetLatency delays every chunk forwarded, in each direction, by d, so a
// query's round trip gains at least 2*d. 0 turns it off. Chunks already
// waiting keep the delay they started with.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Blackhole on: connections accepted from now on are never answered and
// never forwarded (not even after Blackhole(false): they stay dead until the
// client gives up; what they send is read and dropped), and live connections
// stop forwarding in both directions: bytes already read are held, not
// delivered, until Blackhole(false), which delivers them and resumes.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackhole == on {
		return
	}
	p.blackhole = on
	close(p.bhChange)
	p.bhChange = make(chan struct{})
}

// FreezeExisting makes every live connection stop forwarding data for good,
// in both directions, while connections accepted later work normally: the
// server seems to hang on the connections a pool already holds. What a side
// sends is read and dropped; a side closing its end still closes the other,
// so a client that gives up takes its server backend with it. It returns how
// many connections it froze.
func (p *Proxy) FreezeExisting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.frozen.Store(true)
	}
	return len(p.conns)
}

// Refuse on: new connections are accepted and closed at once (the client
// sees EOF). Live connections are not affected.
func (p *Proxy) Refuse(on bool) { p.refuse.Store(on) }

// ResetAll aborts every live connection with a TCP RST on both sides
// (SO_LINGER 0, then close) and returns how many there were.
func (p *Proxy) ResetAll() int {
	p.mu.Lock()
	conns := p.takeConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.close(true)
	}
	return len(conns)
}

// QueryCount returns how many frontend Query ('Q', simple protocol)
// messages were forwarded to the upstream since the last ResetCounts.
func (p *Proxy) QueryCount() int64 { return p.queries.Load() }

// ParseCount returns how many frontend Parse ('P', extended protocol)
// messages were forwarded to the upstream since the last ResetCounts.
func (p *Proxy) ParseCount() int64 { return p.parses.Load() }

// StatementCount returns how many statements clients sent to run since the
// last ResetCounts: simple Query ('Q') plus extended-protocol Execute ('E')
// messages. A prepared statement run again sends no Parse, so this is the
// count that sees every round.
func (p *Proxy) StatementCount() int64 { return p.queries.Load() + p.execs.Load() }

// DroppedBytes returns how many bytes clients sent into a fault: on
// connections FreezeExisting froze, or accepted while blackholed (read and
// dropped). Poll it to know that a client has reached the fault.
func (p *Proxy) DroppedBytes() int64 { return p.dropped.Load() }

// PasswordCount returns how many authentication answers ('p' messages:
// a password in clear or as MD5, or a SASL response) clients sent since the
// last ResetCounts. 0 after a refused login means no secret left the
// client.
func (p *Proxy) PasswordCount() int64 { return p.passwords.Load() }

// ResetCounts zeroes QueryCount, ParseCount, StatementCount and
// PasswordCount.
func (p *Proxy) ResetCounts() {
	p.queries.Store(0)
	p.parses.Store(0)
	p.execs.Store(0)
	p.passwords.Store(0)
}

// ActiveConns returns how many client connections are open through the
// proxy (blackholed ones included). A connection leaves the count when the
// proxy notices its end; a live connection frozen by Blackhole is noticed
// only after Blackhole(false).
func (p *Proxy) ActiveConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) takeConnsLocked() []*proxyConn {
	out := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	clear(p.conns)
	return out
}

func (p *Proxy) blackholeState() (bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackhole, p.bhChange
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// Transient (e.g. EMFILE): back off briefly, bounded by Close.
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-p.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if p.refuse.Load() {
			_ = c.Close()
			continue
		}
		pc := &proxyConn{client: c, done: make(chan struct{})}
		pc.parser = newFEParser(func(typ byte) {
			switch typ {
			case 'Q':
				p.queries.Add(1)
			case 'P':
				p.parses.Add(1)
			case 'E':
				p.execs.Add(1)
			case 'p':
				p.passwords.Add(1)
			}
		})
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[pc] = struct{}{}
		blackholed := p.blackhole
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(pc, blackholed)
	}
}

func (p *Proxy) forget(pc *proxyConn) {
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// serve runs one connection until either side ends or the proxy closes it.
func (p *Proxy) serve(pc *proxyConn, blackholed bool) {
	defer p.wg.Done()
	defer p.forget(pc)
	defer pc.close(false)
	if blackholed {
		// Never answer, never dial: read and drop what the client sends, only
		// to notice when it gives up.
		buf := make([]byte, 4<<10)
		for {
			n, err := pc.client.Read(buf)
			p.dropped.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	p.wg.Add(1)
	go func() { // lets ResetAll abort a dial in progress; ends with serve
		defer p.wg.Done()
		select {
		case <-pc.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	up, err := d.DialContext(ctx, "tcp", p.upstream)
	if err != nil {
		return
	}
	if !pc.setUpstream(up) {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pump(pc, pc.client, up, true)
		pc.close(false)
	}()
	p.pump(pc, up, pc.client, false)
}

// pump copies src to dst chunk by chunk, applying latency and blackhole,
// and feeds the parser. clientToServer says which direction this is.
func (p *Proxy) pump(pc *proxyConn, src, dst net.Conn, clientToServer bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && pc.frozen.Load() {
			if clientToServer {
				p.dropped.Add(int64(n))
			}
			n = 0 // frozen: read and drop, so that a close still propagates
		}
		if n > 0 {
			if !p.hold(pc) {
				return
			}
			if d := time.Duration(p.latency.Load()); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-pc.done:
					t.Stop()
					return
				case <-t.C:
				}
				if !p.hold(pc) { // blackholed during the delay
					return
				}
				if pc.frozen.Load() { // frozen during the delay
					continue
				}
			}
			pc.parserMu.Lock()
			if clientToServer {
				pc.parser.clientBytes(buf[:n])
			} else {
				pc.parser.serverBytes(buf[:n])
			}
			pc.parserMu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold blocks while the proxy is blackholed; false means the connection was
// closed meanwhile.
func (p *Proxy) hold(pc *proxyConn) bool {
	for {
		on, ch := p.blackholeState()
		if !on {
			return true
		}
		select {
		case <-pc.done:
			return false
		case <-ch:
		}
	}
}

// proxyConn is one client connection and its upstream.
type proxyConn struct {
	client net.Conn
	done   chan struct{} // closed by close
	frozen atomic.Bool   // set by FreezeExisting: never forward again

	parserMu sync.Mutex
	parser   *feParser

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
}

// setUpstream records the upstream connection; false (and the upstream
// closed) if the connection was closed during the dial.
func (c *proxyConn) setUpstream(up net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = up.Close()
		return false
	}
	c.upstream = up
	return true
}

// close closes both sides; with rst, each with SO_LINGER 0 so the peers get
// a TCP RST instead of a FIN. Idempotent.
func (c *proxyConn) close(rst bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	up := c.upstream
	c.mu.Unlock()
	close(c.done)
	for _, conn := range []net.Conn{c.client, up} {
		if conn == nil {
			continue
		}
		if tc, ok := conn.(*net.TCPConn); ok && rst {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
	}
}

// replaceHost points a postgres:// URL at addr.
func replaceHost(dsn, addr string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("proxy DSN: want a postgres:// URL") // the DSN may hold a password: not quoted
	}
	u.Host = addr
	return u.String(), nil
}
