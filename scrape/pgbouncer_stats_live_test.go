package scrape

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
)

// countingConn counts the bytes a client writes to and reads from its
// connection: what PgBouncer receives from it and sends to it.
type countingConn struct {
	net.Conn
	written, read *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func statsOf(tb testing.TB, r *Result, db string) DatabaseStats {
	tb.Helper()
	for _, s := range r.Stats {
		if s.Database == db {
			return s
		}
	}
	tb.Fatalf("no SHOW STATS row for %q in %+v", db, r.Stats)
	return DatabaseStats{}
}

// TestPgBouncer_Live_StatsCountersMoveByWhatTheClientDid runs N
// transactions of known length through PgBouncer 1.18 on one client
// connection that counts its bytes, and checks that every SHOW STATS
// counter 1.18 has moves by exactly (or, for times, within 10% of) what the
// client caused. The 1.21+ and 1.23+ counters (parses, binds, server
// assignments) do not exist in 1.18, Debian's version: they are tested on
// recorded rows only (TestMapStats_NewerCountersAreAbsentWhereTheVersionLacksThem).
func TestPgBouncer_Live_StatsCountersMoveByWhatTheClientDid(t *testing.T) {
	const (
		n      = 5
		length = 200 * time.Millisecond
	)
	_, b := liveBouncer(t, "pool_size=3 reserve_pool=0", testenv.PgBouncerOptions{})
	q := consoleQuerier(t, b)
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})

	var written, read atomic.Int64
	cfg, err := pgx.ParseConfig(b.DSN("app", appPassword, "appdb"))
	require.NoError(t, err)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, written: &written, read: &read}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	// A first transaction links a server connection and settles the login's
	// own traffic before the baseline.
	_, err = conn.Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	before := statsOf(t, pollScrape(t, s, q, "a stats row for appdb", func(r *Result) bool {
		for _, st := range r.Stats {
			if st.Database == "appdb" && st.Transactions >= 1 {
				return true
			}
		}
		return false
	}), "appdb")
	w0, r0 := written.Load(), read.Load()
	sleep := "SELECT pg_sleep(" + strconv.FormatFloat(length.Seconds(), 'f', -1, 64) + ")"
	// Each transaction as the client saw it, BEGIN sent to COMMIT answered:
	// PgBouncer's own timing of it lies inside, so this bounds xact_time
	// from above even on a loaded machine, where a transaction can last
	// well over its sleep.
	var clientTime time.Duration
	for i := 0; i < n; i++ {
		began := time.Now()
		for _, sql := range []string{"BEGIN", sleep, "COMMIT"} {
			_, err := conn.Exec(ctx, sql)
			require.NoError(t, err, sql)
		}
		clientTime += time.Since(began)
	}
	sentByClient, readByClient := written.Load()-w0, read.Load()-r0

	after := statsOf(t, pollScrape(t, s, q, "the transactions counted", func(r *Result) bool {
		for _, st := range r.Stats {
			if st.Database == "appdb" && st.Transactions-before.Transactions >= n && st.SentBytes.Value-before.SentBytes.Value >= float64(readByClient) {
				return true
			}
		}
		return false
	}), "appdb")
	want := float64(n) * length.Seconds()
	t.Logf("%d transactions of %v (%.4f s as the client saw them): xact_time moved %.4f s, query_time %.4f s, received %v B, sent %v B",
		n, length, clientTime.Seconds(), after.TransactionSeconds.Value-before.TransactionSeconds.Value, after.QuerySeconds.Value-before.QuerySeconds.Value,
		after.ReceivedBytes.Value-before.ReceivedBytes.Value, after.SentBytes.Value-before.SentBytes.Value)
	assert.Equal(t, float64(n), after.Transactions-before.Transactions, "total_xact_count")
	assert.Equal(t, float64(3*n), after.Queries-before.Queries, "total_query_count: BEGIN, the sleep and COMMIT")
	// Both times lie between the sleeps (n × length, which pg_sleep
	// guarantees) and the transactions as the client timed them; unloaded,
	// that is within 10% of n × length. A wrong unit (milliseconds for
	// microseconds) or a wrong column is off by orders of magnitude.
	xact, query := after.TransactionSeconds.Value-before.TransactionSeconds.Value, after.QuerySeconds.Value-before.QuerySeconds.Value
	upper := clientTime.Seconds() * 1.01
	assert.GreaterOrEqual(t, xact, want*0.99, "total_xact_time: at least the sleeps")
	assert.LessOrEqual(t, xact, upper, "total_xact_time: at most the transactions as the client timed them")
	assert.GreaterOrEqual(t, query, want*0.99, "total_query_time: at least the sleeps")
	assert.LessOrEqual(t, query, xact*1.01, "total_query_time: the transactions' queries, within xact_time")
	assert.Equal(t, float64(sentByClient), after.ReceivedBytes.Value-before.ReceivedBytes.Value, "total_received: every byte the client sent")
	assert.Equal(t, float64(readByClient), after.SentBytes.Value-before.SentBytes.Value, "total_sent: every byte the client read")
	assert.Equal(t, before.ClientWaitSeconds, after.ClientWaitSeconds, "total_wait_time: nobody waited")
	for name, o := range map[string]Optional{"assignments": after.ServerAssignments, "client parses": after.ClientParses, "server parses": after.ServerParses, "binds": after.Binds} {
		assert.False(t, o.Valid, "%s: 1.18 has no such column, so absent, not 0", name)
	}
}

// TestPgBouncer_Live_StateCountsEqualShowPoolsAtTheSameMoment holds a steady
// exhaustion (3 of 3 in use, 2 waiting) and compares the round's per-state
// counts with SHOW POOLS read just before and just after it; SHOW LISTS and
// SHOW MEM of the same round agree on the clients.
func TestPgBouncer_Live_StateCountsEqualShowPoolsAtTheSameMoment(t *testing.T) {
	_, b := liveBouncer(t, "pool_size=3 reserve_pool=0", testenv.PgBouncerOptions{})
	q := consoleQuerier(t, b)
	s := newPgBouncer(config.Target{LeakThreshold: time.Hour})
	h := testenv.HoldTransactions(t, b.DSN("app", appPassword, "appdb"), 5, "holder")
	h.WaitHeld(t, 3, livePollTimeout)
	pollScrape(t, s, q, "2 waiting", func(r *Result) bool {
		p, ok := findPool(r, "appdb/app")
		return ok && p.Waiting.Value == 2
	})

	states := func(show *testenv.ShowResult) []StateCount {
		for _, rec := range show.Records() {
			if rec["database"] != "appdb" {
				continue
			}
			var out []StateCount
			for _, c := range show.Columns {
				side, st := "", ""
				switch {
				case len(c) > 3 && c[:3] == "cl_":
					side, st = SideClient, c[3:]
				case len(c) > 3 && c[:3] == "sv_":
					side, st = SideServer, c[3:]
				default:
					continue
				}
				v, err := strconv.ParseFloat(rec[c], 64)
				require.NoError(t, err)
				out = append(out, StateCount{Side: side, State: st, Count: v})
			}
			return out
		}
		t.Fatal("no appdb row in SHOW POOLS")
		return nil
	}
	before := states(b.Show(t, "SHOW POOLS"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := s.Scrape(ctx, q)
	after := states(b.Show(t, "SHOW POOLS"))
	require.Empty(t, res.Errors)
	require.Equal(t, before, after, "the state held still around the round")
	p, ok := findPool(res, "appdb/app")
	require.True(t, ok)
	assert.Equal(t, before, p.States)
	assert.Len(t, p.States, 11, "1.18 has 4 client and 7 server states")

	used, ok := listItems(res.Lists, "used_clients")
	require.True(t, ok)
	clients, _ := findPool(res, PoolClients)
	assert.Equal(t, clients.Open, used)
	for _, m := range res.Memory {
		if m.Name == "client_cache" {
			assert.Equal(t, Some(used), m.Used, "SHOW MEM counts the same client objects as SHOW LISTS")
			return
		}
	}
	t.Fatalf("no client_cache in SHOW MEM: %+v", res.Memory)
}
