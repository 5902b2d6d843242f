package scrape

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolwatch/poolwatch/config"
)

// errInjected stands for a failed console command in fixture rounds.
var errInjected = errors.New("injected failure")

// fixtureConsole serves recorded console output from testdata/DIR: the
// command "SHOW POOLS" reads show_pools.txt. Commands in fail fail with
// errInjected; a command without a file fails too. Every command sent is
// appended to *sent when sent is not nil.
func fixtureConsole(tb testing.TB, dir string, fail map[string]bool, sent *[]string) console {
	tb.Helper()
	return func(_ context.Context, sql string, mapFn func(rowSource) error) error {
		name := strings.ToLower(strings.ReplaceAll(sql, " ", "_"))
		if sent != nil {
			*sent = append(*sent, name)
		}
		if fail[name] {
			return errInjected
		}
		b, err := os.ReadFile(filepath.Join("testdata", dir, name+".txt"))
		if err != nil {
			return err
		}
		return mapFn(parseTable(string(b)))
	}
}

// overrideConsole serves the tables in over by file name ("show_pools")
// and everything else from base.
func overrideConsole(base console, over map[string]string) console {
	return func(ctx context.Context, sql string, mapFn func(rowSource) error) error {
		name := strings.ToLower(strings.ReplaceAll(sql, " ", "_"))
		if text, ok := over[name]; ok {
			return mapFn(parseTable(text))
		}
		return base(ctx, sql, mapFn)
	}
}

// fixtureRound runs a whole pgbouncer round against a console and returns
// its Result and the round (for what it ran).
func fixtureRound(opts config.Target, version string, own ownClient, cons console) (*Result, *bouncerRound) {
	s := newPgBouncer(opts)
	r := &bouncerRound{cfg: opts, version: version}
	s.collect(context.Background(), cons, own, r)
	return r.result(), r
}

// readFixture returns a recorded table.
func readFixture(tb testing.TB, dir, name string) *table {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", dir, name+".txt"))
	if err != nil {
		tb.Fatal(err)
	}
	return parseTable(string(b))
}

// intp returns a pointer to n, for config.ApplicationPool's sizes.
func intp(n int) *int { return &n }
