package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse. It must never panic; an error
// must be a one-line *Error located in the file; a success must satisfy the
// invariants that Target documents.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*/*.yml")
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, "../config.yaml.example")
	for _, s := range seeds {
		data, err := os.ReadFile(s) //nolint:gosec // the seed files
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	hermeticEnv(f)
	const file = "testdata/bad/fuzz.yml" // relative files resolve in testdata/bad
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(file, data)
		if err != nil {
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T, not *Error: %v", err, err)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\n\r") || !strings.HasPrefix(msg, file+":") || cerr.Line < 1 || cerr.Path == "" {
				t.Fatalf("malformed error: %q", msg)
			}
			if cfg != nil {
				t.Fatal("both a config and an error")
			}
			return
		}
		checkInvariants(t, cfg)
	})
}

func checkInvariants(t *testing.T, cfg *Config) {
	t.Helper()
	targets := cfg.Targets()
	if len(targets) == 0 {
		t.Fatal("valid config without targets")
	}
	seen := map[string]bool{}
	for _, tg := range targets {
		if tg.Kind == KindApplication {
			if seen[tg.Name] || !targetNameRE.MatchString(tg.Name) {
				t.Fatalf("bad or duplicate name %q", tg.Name)
			}
			seen[tg.Name] = true
			checkApplicationInvariants(t, cfg, tg)
			continue
		}
		pp := tg.ProbePool
		switch {
		case seen[tg.Name] || !targetNameRE.MatchString(tg.Name):
			t.Fatalf("bad or duplicate name %q", tg.Name)
		case !slices.Contains(Kinds(), tg.Kind):
			t.Fatalf("bad kind %q", tg.Kind)
		case tg.Kind == KindPgpool && pp.MaxConnections > PgpoolMaxProbeConnections:
			t.Fatalf("%s: a pgpool probe pool of %d connections", tg.Name, pp.MaxConnections)
		case tg.DSN == "" || tg.Labels == nil:
			t.Fatalf("%s: empty DSN or nil labels", tg.Name)
		case tg.ScrapeTimeout <= 0 || tg.LeakThreshold <= 0 || tg.MinScrapeInterval < 0 || tg.MaxPools < 1:
			t.Fatalf("%s: bad target durations or sizes: %+v", tg.Name, tg)
		case pp.MaxConnections < 1 || pp.MinConnections < 0 || pp.MinConnections > pp.MaxConnections || pp.AcquireRetries < 0:
			t.Fatalf("%s: bad probe pool sizes: %+v", tg.Name, pp)
		case pp.ConnectTimeout <= 0 || pp.ConnectTimeout > tg.ScrapeTimeout || pp.HealthCheckTimeout <= 0 || pp.HealthCheckTimeout > tg.ScrapeTimeout:
			t.Fatalf("%s: bad probe pool timeouts: %+v", tg.Name, pp)
		case pp.RetryBackoff < 0 || pp.LeakThreshold <= 0 || pp.IdleClose < 0 || pp.LockTimeout < 0:
			t.Fatalf("%s: bad probe pool durations: %+v", tg.Name, pp)
		case tg.Kind == KindPostgres && pp.StatementTimeout <= 0:
			t.Fatalf("%s: postgres target without statement timeout", tg.Name)
		case tg.Kind != KindPostgres && (pp.StatementTimeout != 0 || pp.LockTimeout != 0 || tg.ApplicationPools != nil):
			t.Fatalf("%s: postgres-only settings on a %s target", tg.Name, tg.Kind)
		case (tg.TLS.CertFile == "") != (tg.TLS.KeyFile == ""):
			t.Fatalf("%s: cert without key", tg.Name)
		case tg.Password.File != "" && tg.Password.Env != "":
			t.Fatalf("%s: two password sources", tg.Name)
		}
		seen[tg.Name] = true
		for k, v := range tg.Labels {
			if v == "" || !identRE.MatchString(k) || strings.HasPrefix(k, "__") {
				t.Fatalf("%s: bad label %q=%q", tg.Name, k, v)
			}
			for _, r := range ReservedLabels() {
				if k == r {
					t.Fatalf("%s: reserved label %q", tg.Name, k)
				}
			}
		}
		pools := map[string]bool{}
		for _, ap := range tg.ApplicationPools {
			if ap.Name == "" || ap.Name == ServerPoolName || pools[ap.Name] || ap.ApplicationName == "" {
				t.Fatalf("%s: bad application pool %+v", tg.Name, ap)
			}
			if ap.MinConnections != nil && ap.MaxConnections != nil && *ap.MinConnections > *ap.MaxConnections {
				t.Fatalf("%s: application pool min > max", tg.Name)
			}
			pools[ap.Name] = true
		}
		if got, ok := cfg.Target(tg.Name); !ok || !got.Equal(tg) {
			t.Fatalf("%s: Target() disagrees with Targets()", tg.Name)
		}
	}
}
