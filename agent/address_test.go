package agent_test

import (
	"context"
	"crypto/md5" //nolint:gosec // PostgreSQL's md5 password format, for a role the test refuses to log in as
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/scrape"
)

// addressPasswordEnv holds the monitoring role's password for the auth
// modules of these tests.
const addressPasswordEnv = "POOLWATCH_AGENT_TEST_PW"

// addressConfig is a configuration for probes by address of 127.0.0.1
// only, with no configured target, and the auth module "mon".
func addressConfig(t *testing.T, maxTargets int, idleClose string, modules string) string {
	t.Helper()
	t.Setenv(addressPasswordEnv, monPass)
	return fmt.Sprintf(`
defaults:
  probe_pool: {acquire_retries: 0}
auth_modules:
  mon:
    user: %s
    password_env: %s
    sslmode: disable
%s
probe:
  allowed_targets: ["127.0.0.1:*"]
  max_targets: %d
  idle_close: %s
`, monUser, addressPasswordEnv, modules, maxTargets, idleClose)
}

// addressPools returns the probe pools the agent holds for addresses.
func addressPools(a *agent.Agent) int {
	s, _ := a.AddressProbes()
	return s.Pools
}

func TestProbeAddress_ScrapesPostgresAndPgBouncerByAddressOnOnePoolEach(t *testing.T) {
	checkGoroutines(t)
	pg, pgb := shared.Get(t)
	a := newAgent(t, addressConfig(t, 10, "5m", ""), nil)
	require.True(t, a.AddressProbesEnabled())

	for range 3 {
		res, err := a.ProbeAddress(context.Background(), "", "mon", pg.Addr())
		require.NoError(t, err)
		require.True(t, res.Up(), "%v", res.Errors)
		require.Equal(t, pg.Addr()+"/postgres", res.Target)
		require.Equal(t, config.KindPostgres, res.Kind)
		require.NotEmpty(t, res.Pools)
	}
	res, err := a.ProbeAddress(context.Background(), config.KindPgBouncer, "mon", pgb.Addr())
	require.NoError(t, err)
	require.True(t, res.Up(), "%v", res.Errors)
	require.Equal(t, pgb.Addr()+"/pgbouncer", res.Target)
	require.NotEmpty(t, res.Pools)

	require.Equal(t, 2, addressPools(a))
	pools := a.ProbePools()
	require.Len(t, pools, 2)
	for _, p := range pools {
		require.Equal(t, uint64(1), p.Stats.NewConnections, "%s: three probes, one connection", p.Target)
	}
	require.Empty(t, a.Names(), "an address is not a configured target")
}

func TestProbeAddress_RefusesWithoutConnecting(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	proxy := testenv.StartProxy(t, pg.Addr())
	a := newAgent(t, addressConfig(t, 10, "5m", ""), nil)
	for _, tc := range []struct {
		kind           config.Kind
		module, target string
		want           error
	}{
		{"", "mon", "10.0.0.1:5432", config.ErrAddressNotAllowed},
		{"", "mon", "localhost:" + strings.Split(proxy.Addr, ":")[1], config.ErrAddressNotAllowed},
		{"", "nope", proxy.Addr, config.ErrUnknownAuthModule},
		{"", "", proxy.Addr, config.ErrUnknownAuthModule},
		{"oracle", "mon", proxy.Addr, config.ErrBadAddress},
		{"", "mon", proxy.Addr + "/postgres?sslmode=disable", config.ErrBadAddress},
	} {
		_, err := a.ProbeAddress(context.Background(), tc.kind, tc.module, tc.target)
		require.ErrorIs(t, err, tc.want, "%+v", tc)
	}
	require.Zero(t, proxy.ActiveConns())
	require.Zero(t, addressPools(a))
	s, _ := a.AddressProbes()
	require.Equal(t, map[string]uint64{agent.RefusedNotAllowed: 2, agent.RefusedInvalid: 4, agent.RefusedMaxTargets: 0}, s.Refused)
}

// md5Password is PostgreSQL's stored form of an MD5 password.
func md5Password(user, password string) string {
	sum := md5.Sum([]byte(password + user)) //nolint:gosec // the format under test
	return "md5" + hex.EncodeToString(sum[:])
}

// A probe by address sends credentials to a host the caller chose: it
// answers SCRAM, but never a request for the password in clear or as MD5
// unless its auth module says insecure_password_auth. The proxy counts the
// authentication answers the client sends.
func TestProbeAddress_NeverAnswersACleartextOrMD5PasswordRequestUnlessAllowed(t *testing.T) {
	checkGoroutines(t)
	testenv.Require(t, "postgres")
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	const clearUser, md5User, pw = "pw_clear", "pw_md5", "Addr-S3cret-pw"
	pg.CreateRole(t, clearUser, pw, "LOGIN")
	pg.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", md5User, md5Password(md5User, pw)))
	hba := filepath.Join(pg.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	require.NoError(t, err)
	rules := fmt.Sprintf("host all %s 127.0.0.1/32 password\nhost all %s 127.0.0.1/32 md5\n", clearUser, md5User)
	require.NoError(t, os.WriteFile(hba, append([]byte(rules), old...), 0o600)) //nolint:gosec // G703: the test's own cluster's pg_hba.conf
	pg.Exec(t, "SELECT pg_reload_conf()")
	t.Setenv("POOLWATCH_AGENT_TEST_ADDR_PW", pw)
	module := func(name, user string, insecure bool) string {
		return fmt.Sprintf("  %s:\n    user: %s\n    password_env: POOLWATCH_AGENT_TEST_ADDR_PW\n    sslmode: disable\n    insecure_password_auth: %v\n", name, user, insecure)
	}
	a := newAgent(t, addressConfig(t, 10, "5m",
		module("clear", clearUser, false)+module("md5", md5User, false)+
			module("clear_ok", clearUser, true)+module("md5_ok", md5User, true)), nil)
	proxy := testenv.StartProxy(t, pg.Addr())

	probe := func(module string) (*scrape.Result, int64) {
		t.Helper()
		proxy.ResetCounts()
		res, err := a.ProbeAddress(context.Background(), "", module, proxy.Addr)
		require.NoError(t, err)
		return res, proxy.PasswordCount()
	}
	for _, m := range []string{"clear", "md5"} {
		res, sent := probe(m)
		require.False(t, res.Up(), m)
		require.Zero(t, sent, "%s: no password left the agent", m)
		msg := res.Errors[0].Err.Error()
		require.Contains(t, msg, "require_auth")
		require.Contains(t, msg, "which a probe by address never sends")
		require.Contains(t, msg, "insecure_password_auth: true")
		require.NotContains(t, msg, pw)
	}
	for _, m := range []string{"clear_ok", "md5_ok"} {
		res, sent := probe(m)
		require.True(t, res.Up(), "%s: %v", m, res.Errors)
		require.Equal(t, int64(1), sent, "%s: the one password message the server asked for", m)
	}
	// SCRAM needs no permission (the shared modules' role, over scram).
	scram, err := a.ProbeAddress(context.Background(), "", "mon", proxy.Addr)
	require.NoError(t, err)
	require.False(t, scram.Up(), "pwmon does not exist on this cluster")
	require.Contains(t, scram.Errors[0].Err.Error(), "password authentication failed", "SCRAM was answered")
	require.NotContains(t, scram.Errors[0].Err.Error(), "require_auth")
}

// A caller cycling through 1,000 addresses never makes the agent hold more
// than max_targets probe pools: past the bound, a new address is refused
// until an idle pool closes. The clock is the agent's: an advance by
// idle_close makes every pool idle at once.
func TestProbeAddress_ThousandAddressesNeverHoldMoreThanMaxTargets(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	clock := newFakeClock()
	const maxTargets, batch = 20, 50
	a := newAgentAt(t, addressConfig(t, maxTargets, "1m", ""), nil, clock.Now)
	base := testenv.Baseline(t)
	var created, refused, most int
	for i := range 1000 {
		if i > 0 && i%batch == 0 {
			clock.Advance(time.Minute) // every pool so far is idle now
		}
		// Distinct addresses of a real server: databases that do not exist.
		res, err := a.ProbeAddress(context.Background(), "", "mon", fmt.Sprintf("%s/nodb%04d", pg.Addr(), i))
		switch {
		case errors.Is(err, agent.ErrTooManyAddressTargets):
			refused++
			require.ErrorContains(t, err, "probe.max_targets")
		case err != nil:
			t.Fatal(err)
		default:
			created++
			require.False(t, res.Up())
			require.Contains(t, res.Errors[0].Err.Error(), "does not exist")
		}
		most = max(most, addressPools(a))
		require.LessOrEqual(t, addressPools(a), maxTargets, "after address %d", i)
	}
	t.Logf("1000 addresses, max_targets %d: %d probed, %d refused, at most %d pools held", maxTargets, created, refused, most)
	require.Equal(t, 1000/batch*maxTargets, created, "each batch: max_targets new pools, once the idle ones made room")
	require.Equal(t, 1000-created, refused)
	require.Equal(t, maxTargets, most)
	s, _ := a.AddressProbes()
	require.Equal(t, uint64(refused), s.Refused[agent.RefusedMaxTargets])

	clock.Advance(time.Minute)
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := addressPools(a)
		return n == 0, fmt.Sprintf("%d probe pools by address still held after idle_close", n)
	})
	a.WaitClosing()
	after := testenv.SettleAt(t, base)
	t.Logf("idle pools closed: 0 held; goroutines %d -> %d, fds %d -> %d", base.Goroutines, after.Goroutines, base.FDs, after.FDs)
}

// Idle pools close by themselves, not only when room is needed, and a
// pool kept busy is not closed.
func TestProbeAddress_ClosesIdlePoolsAndKeepsProbedOnes(t *testing.T) {
	checkGoroutines(t)
	pg, pgb := shared.Get(t)
	clock := newFakeClock()
	a := newAgentAt(t, addressConfig(t, 10, "1m", ""), nil, clock.Now)
	probe := func(kind config.Kind, addr string) {
		t.Helper()
		res, err := a.ProbeAddress(context.Background(), kind, "mon", addr)
		require.NoError(t, err)
		require.True(t, res.Up(), "%v", res.Errors)
	}
	probe("", pg.Addr())
	probe(config.KindPgBouncer, pgb.Addr())
	require.Equal(t, 2, addressPools(a))
	require.Equal(t, 1, pg.CountBackends(t, "poolwatch"), "the postgres probe pool keeps its one connection")

	clock.Advance(40 * time.Second)
	probe(config.KindPgBouncer, pgb.Addr()) // still probed
	clock.Advance(40 * time.Second)         // postgres idle 80 s, pgbouncer 40 s
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := addressPools(a)
		return n == 1, fmt.Sprintf("%d pools, want the pgbouncer one only", n)
	})
	require.Equal(t, pgb.Addr()+"/pgbouncer", a.ProbePools()[0].Target)
	a.WaitClosing()
	require.Equal(t, 0, pg.CountBackends(t, "poolwatch"), "the idle pool's connection is closed")
}

// A reload that changes an auth module closes the pools built with the old
// one; the next probe builds a new one.
func TestProbeAddress_AReloadClosesPoolsOfAChangedAuthModule(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	a := newAgent(t, addressConfig(t, 10, "5m", ""), nil)
	_, err := a.ProbeAddress(context.Background(), "", "mon", pg.Addr())
	require.NoError(t, err)
	require.Equal(t, 1, addressPools(a))

	same, err := config.Parse("test.yml", []byte(addressConfig(t, 10, "5m", "")))
	require.NoError(t, err)
	require.NoError(t, a.Apply(same))
	require.Equal(t, 1, addressPools(a), "unchanged: the pool stays")

	changed, err := config.Parse("test.yml", []byte(strings.Replace(addressConfig(t, 10, "5m", ""), "sslmode: disable", "sslmode: prefer", 1)))
	require.NoError(t, err)
	require.NoError(t, a.Apply(changed))
	require.Equal(t, 0, addressPools(a), "the module changed: the pool closes")
	res, err := a.ProbeAddress(context.Background(), "", "mon", pg.Addr())
	require.NoError(t, err)
	require.True(t, res.Up(), "%v", res.Errors)

	off, err := config.Parse("test.yml", []byte("targets:"+postgresTarget("pg", pg.Addr(), "pw_reload_off", "")))
	require.NoError(t, err)
	require.NoError(t, a.Apply(off))
	require.Equal(t, 0, addressPools(a))
	require.False(t, a.AddressProbesEnabled())
	_, err = a.ProbeAddress(context.Background(), "", "mon", pg.Addr())
	require.ErrorIs(t, err, config.ErrAddressProbesOff)
}

// Concurrent probes of random addresses, with a small bound and pools going
// idle all the time: the bound holds at every moment, and nothing leaks.
func TestProbeAddress_ConcurrentProbesKeepTheBound(t *testing.T) {
	checkGoroutines(t)
	pg, _ := shared.Get(t)
	const maxTargets = 4
	a := newAgent(t, addressConfig(t, maxTargets, "20ms", ""), nil)
	var stop atomic.Bool
	var most atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if n := int64(addressPools(a)); n > most.Load() {
				most.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var probed, refused atomic.Int64
	var workers sync.WaitGroup
	for w := range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r := rand.New(rand.NewPCG(uint64(w), 13)) //nolint:gosec // a test's address choice
			for range 60 {
				addr := fmt.Sprintf("%s/nodb%d", pg.Addr(), r.IntN(12))
				_, err := a.ProbeAddress(context.Background(), "", "mon", addr)
				switch {
				case errors.Is(err, agent.ErrTooManyAddressTargets):
					refused.Add(1)
				case err != nil:
					t.Error(err)
					return
				default:
					probed.Add(1)
				}
			}
		}()
	}
	workers.Wait()
	stop.Store(true)
	wg.Wait()
	t.Logf("480 concurrent probes of 12 addresses, max_targets %d: %d probed, %d refused, at most %d pools held", maxTargets, probed.Load(), refused.Load(), most.Load())
	require.LessOrEqual(t, most.Load(), int64(maxTargets))
	require.Positive(t, probed.Load())
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		return addressPools(a) == 0, "idle pools still held"
	})
}
