package testenv

import (
	"context"
	"testing"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// PgBouncerOptions configures a throwaway PgBouncer (see
// launch.PgBouncerOptions).
type PgBouncerOptions = launch.PgBouncerOptions

// ShowResult is the text-format result of an admin console command.
type ShowResult = launch.ShowResult

// PgBouncer is a throwaway PgBouncer 1.18 (launch.PgBouncer: Host, Port,
// DSN, Addr...) with test helpers that fail tb on error.
type PgBouncer struct {
	*launch.PgBouncer
}

// StartPgBouncer starts PgBouncer in front of pg for tb (see
// launch.StartPgBouncer) and registers a cleanup that stops it and removes
// its directory. It fails the test when PgBouncer does not come up, and as
// Require does when it is not installed.
func StartPgBouncer(tb testing.TB, pg *Postgres, opts PgBouncerOptions) *PgBouncer {
	tb.Helper()
	Require(tb, "pgbouncer")
	b, err := launch.StartPgBouncer(pg.Postgres, opts)
	if err != nil {
		tb.Fatalf("start pgbouncer: %v", err)
	}
	closeOnCleanup(tb, "pgbouncer", b)
	return &PgBouncer{b}
}

// Stop stops PgBouncer (SIGTERM; clients are disconnected). Start brings it
// back on the same port with the same configuration.
func (b *PgBouncer) Stop(tb testing.TB) {
	tb.Helper()
	if err := b.PgBouncer.Stop(); err != nil {
		tb.Fatal(err)
	}
}

// Start starts a stopped PgBouncer on the same port. Starting a running one
// does nothing.
func (b *PgBouncer) Start(tb testing.TB) {
	tb.Helper()
	if err := b.PgBouncer.Start(); err != nil {
		tb.Fatal(err)
	}
}

// AdminExec runs a console command such as "PAUSE appdb" or "RELOAD" as
// AdminUser, failing the test on error. It waits up to 30 s (PAUSE waits
// for server connections to be released).
func (b *PgBouncer) AdminExec(tb testing.TB, cmd string) {
	tb.Helper()
	b.Show(tb, cmd)
}

// Show runs a console command that returns rows ("SHOW POOLS") and returns
// them, failing the test on error.
func (b *PgBouncer) Show(tb testing.TB, cmd string) *ShowResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	res, err := b.AdminQuery(ctx, cmd)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}
