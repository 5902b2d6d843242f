package scrape

import (
	"errors"
	"testing"

	"github.com/poolwatch/poolwatch/config"
)

func TestVisibility_KnownOnlyForAPostgresRoundThatReadTheActivity(t *testing.T) {
	failed := errors.New("boom")
	for _, tc := range []struct {
		name           string
		r              Result
		limited, known bool
	}{
		{"postgres, role sees everything", Result{Kind: config.KindPostgres}, false, true},
		{"postgres, role without pg_monitor", Result{Kind: config.KindPostgres, LimitedVisibility: true}, true, true},
		{"postgres, connect failed", Result{Kind: config.KindPostgres, Errors: []QueryError{{Query: QueryConnect, Err: failed}}}, false, false},
		{"postgres, query failed", Result{Kind: config.KindPostgres, LimitedVisibility: true, Errors: []QueryError{{Query: QueryActivity, Err: failed}}}, false, false},
		{"postgres, round cut", Result{Kind: config.KindPostgres, Errors: []QueryError{{Query: QueryRound, Err: failed}}}, false, false},
		{"pgbouncer", Result{Kind: config.KindPgBouncer}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limited, known := tc.r.Visibility()
			if limited != tc.limited || known != tc.known {
				t.Errorf("Visibility() = %v, %v, want %v, %v", limited, known, tc.limited, tc.known)
			}
		})
	}
}

func TestResult_UpstreamIsThePostgresTargetBehind(t *testing.T) {
	pg := config.Target{Name: "orders-db", Kind: config.KindPostgres}
	pgb := config.Target{Name: "bouncer", Kind: config.KindPgBouncer, Upstream: "orders-db"}
	lone := config.Target{Name: "bouncer-2", Kind: config.KindPgBouncer}
	for _, tc := range []struct {
		t    config.Target
		want string
	}{{pg, "orders-db"}, {pgb, "orders-db"}, {lone, ""}} {
		if got := newResult(tc.t.Kind, &tc.t).Upstream; got != tc.want {
			t.Errorf("%s: newResult upstream %q, want %q", tc.t.Name, got, tc.want)
		}
		if got := Failed(tc.t, errors.New("x")).Upstream; got != tc.want {
			t.Errorf("%s: Failed upstream %q, want %q", tc.t.Name, got, tc.want)
		}
	}
}
