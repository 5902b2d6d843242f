package testenv

import (
	"context"
	"testing"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// PgpoolOptions configures a throwaway Pgpool-II (see launch.PgpoolOptions).
type PgpoolOptions = launch.PgpoolOptions

// Pgpool is a throwaway Pgpool-II 4.3 (launch.Pgpool: Host, Port, DSN,
// Addr...) with test helpers that fail tb on error.
type Pgpool struct {
	*launch.Pgpool
}

// StartPgpool starts Pgpool-II in front of backends (node 0, 1, ...) for tb
// (see launch.StartPgpool) and registers a cleanup that stops it and
// removes its directory. It fails the test when Pgpool-II does not come up,
// and as Require does when it is not installed.
func StartPgpool(tb testing.TB, backends []*Postgres, opts PgpoolOptions) *Pgpool {
	tb.Helper()
	Require(tb, "pgpool")
	pgs := make([]*launch.Postgres, len(backends))
	for i, b := range backends {
		pgs[i] = b.Postgres
	}
	p, err := launch.StartPgpool(pgs, opts)
	if err != nil {
		tb.Fatalf("start pgpool: %v", err)
	}
	closeOnCleanup(tb, "pgpool", p)
	return &Pgpool{p}
}

// Stop stops Pgpool-II (fast shutdown: clients are disconnected). Start
// brings it back on the same port with the same configuration.
func (p *Pgpool) Stop(tb testing.TB) {
	tb.Helper()
	if err := p.Pgpool.Stop(); err != nil {
		tb.Fatal(err)
	}
}

// Start starts a stopped Pgpool-II on the same port.
func (p *Pgpool) Start(tb testing.TB) {
	tb.Helper()
	if err := p.Pgpool.Start(); err != nil {
		tb.Fatal(err)
	}
}

// Show runs a statement through Pgpool-II as the superuser ("SHOW
// POOL_NODES") on a connection of its own, which takes a child for the
// length of the call, and returns its rows, failing the test on error.
func (p *Pgpool) Show(tb testing.TB, sql string) *ShowResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	res, err := p.Query(ctx, sql)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}
