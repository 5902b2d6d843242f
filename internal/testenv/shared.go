package testenv

import (
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// Shared is one PostgreSQL cluster and one PgBouncer in front of it, shared
// by the tests of a package: started by the first test that asks for them,
// stopped by Stop, which TestMain calls after m.Run.
//
//	var shared = testenv.Shared{PgBouncer: testenv.PgBouncerOptions{...}}
//	func TestMain(m *testing.M) { code := m.Run(); shared.Stop(); os.Exit(code) }
type Shared struct {
	// Postgres and PgBouncer are the options of the two servers. Set them
	// before the first Get.
	Postgres  PostgresOptions
	PgBouncer PgBouncerOptions
	// Setup, when set, runs once after PostgreSQL is up and before PgBouncer
	// starts (to create roles and databases).
	Setup func(tb testing.TB, pg *Postgres)

	once    sync.Once
	pg      *Postgres
	pgb     *PgBouncer
	closers []io.Closer
	err     error
}

// MonitoringShared returns a Shared whose PostgreSQL has a login role with
// pg_monitor, and whose PgBouncer lets the same user into the admin console
// as a stats_users member: what poolwatch needs on each kind of target.
func MonitoringShared(user, password string) *Shared {
	return &Shared{
		Setup: func(tb testing.TB, pg *Postgres) {
			pg.CreateRole(tb, user, password, "LOGIN", "IN ROLE pg_monitor")
		},
		PgBouncer: PgBouncerOptions{
			Users:      map[string]string{user: password},
			StatsUsers: []string{user},
		},
	}
}

// Get returns the servers, starting them on first use. It fails or skips
// the test as Require does when a binary is missing.
func (s *Shared) Get(tb testing.TB) (*Postgres, *PgBouncer) {
	tb.Helper()
	Require(tb, "postgres", "pgbouncer")
	s.once.Do(func() {
		pg, err := launch.StartPostgres(s.Postgres)
		if err != nil {
			s.err = err
			return
		}
		s.closers = append(s.closers, pg)
		if s.Setup != nil {
			s.Setup(tb, &Postgres{pg})
		}
		pgb, err := launch.StartPgBouncer(pg, s.PgBouncer)
		if err != nil {
			s.err = err
			return
		}
		s.closers = append(s.closers, pgb)
		s.pg, s.pgb = &Postgres{pg}, &PgBouncer{pgb}
	})
	if s.err != nil {
		tb.Fatalf("shared test environment: %v", s.err)
	}
	if s.pg == nil {
		tb.Fatalf("shared test environment: setup failed in an earlier test")
	}
	return s.pg, s.pgb
}

// Stop stops the servers, if they were started; errors go to stderr (it
// runs after m.Run, with no test to fail).
func (s *Shared) Stop() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i].Close(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop the shared servers: %v\n", err)
		}
	}
	s.closers = nil
}
