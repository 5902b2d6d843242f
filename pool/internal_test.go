package pool

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

func TestBackoff_DoublesAndIsCapped(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		base    time.Duration
		attempt int
		want    time.Duration
	}{
		{0, 1, 0},
		{0, 3, 0},
		{-ms, 2, 0},
		{100 * ms, 1, 100 * ms},
		{100 * ms, 2, 200 * ms},
		{100 * ms, 3, 400 * ms},
		{100 * ms, 4, 800 * ms},
		{100 * ms, 6, 3200 * ms},
		{100 * ms, 7, 5000 * ms},
		{100 * ms, 1000, 5000 * ms},
		{3 * time.Second, 1, 3 * time.Second},
		{3 * time.Second, 2, 5 * time.Second},
		{time.Minute, 1, 5 * time.Second},
	} {
		require.Equal(t, tc.want, backoff(tc.base, tc.attempt), "backoff(%v, %d)", tc.base, tc.attempt)
	}
}

func TestPolicyFor_KindsDifferInProtocolTimeoutsAndCheck(t *testing.T) {
	pg, err := policyFor(config.KindPostgres)
	require.NoError(t, err)
	require.Equal(t, kindPolicy{sessionTimeouts: true}, pg)
	zero, err := policyFor("")
	require.NoError(t, err)
	require.Equal(t, pg, zero, "the zero kind is postgres")
	bouncer, err := policyFor(config.KindPgBouncer)
	require.NoError(t, err)
	require.Equal(t, kindPolicy{simpleProtocol: true, check: "SHOW VERSION"}, bouncer)
	pgcat, err := policyFor(config.KindPgCat)
	require.NoError(t, err)
	require.Equal(t, bouncer, pgcat, "PgCat has a PgBouncer-style console")
	odyssey, err := policyFor(config.KindOdyssey)
	require.NoError(t, err)
	require.Equal(t, kindPolicy{simpleProtocol: true, check: "SHOW LISTS"}, odyssey)
	pgpool, err := policyFor(config.KindPgpool)
	require.NoError(t, err)
	require.Equal(t, kindPolicy{simpleProtocol: true, check: "SHOW POOL_VERSION", maxConns: config.PgpoolMaxProbeConnections}, pgpool)
	for _, k := range config.Kinds() {
		if k == config.KindApplication {
			continue // read over HTTP, without a probe pool
		}
		_, err := policyFor(k)
		require.NoError(t, err, "every kind with a probe pool has a policy")
	}
	_, err = policyFor("oracle")
	require.EqualError(t, err, `unknown kind "oracle"`)
}

// TestConfigure_TurnsOffPgxpoolsOwnPing: pgxpool's default pings a
// connection idle for more than 1 s, which the PgBouncer console rejects,
// and retries silently inside Acquire.
func TestConfigure_TurnsOffPgxpoolsOwnPing(t *testing.T) {
	for _, kind := range []config.Kind{config.KindPostgres, config.KindPgBouncer} {
		p, err := New(Options{Target: "t", Kind: kind, DSN: "postgres://u@127.0.0.1:1/db", ProbePool: config.ProbePool{MaxConnections: 1, MinConnections: 1, StatementTimeout: time.Second}})
		require.NoError(t, err)
		require.False(t, p.cfg.ShouldPing(context.Background(), pgxpool.ShouldPingParams{IdleDuration: time.Hour}))
		require.Equal(t, int32(0), p.cfg.MinConns, "the pool keeps MinConns itself")
		require.Equal(t, time.Duration(0), p.cfg.MaxConnLifetime)
		require.Equal(t, neverIdle, p.cfg.MaxConnIdleTime, "IdleClose zero: never")
		_, sent := p.cfg.ConnConfig.RuntimeParams["statement_timeout"]
		require.Equal(t, kind == config.KindPostgres, sent, "statement_timeout only on postgres")
		require.NoError(t, p.Close(context.Background()))
	}
}

func TestJanitorPeriod_FollowsTheShortestDeadlineWithinBounds(t *testing.T) {
	require.Equal(t, 10*time.Second, janitorPeriod(0, 0))
	require.Equal(t, 10*time.Second, janitorPeriod(time.Minute, 10*time.Minute))
	require.Equal(t, time.Second, janitorPeriod(2*time.Second, time.Minute))
	require.Equal(t, 2*time.Second, janitorPeriod(time.Minute, 4*time.Second))
	require.Equal(t, 10*time.Millisecond, janitorPeriod(time.Millisecond, 0))
}

func TestRetryable_SkipsAuthenticationAndMissingDatabase(t *testing.T) {
	require.False(t, retryable(&pgconn.PgError{Code: "28P01"}))
	require.False(t, retryable(fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "28000"})))
	require.False(t, retryable(&pgconn.PgError{Code: "3D000"}))
	require.True(t, retryable(&pgconn.PgError{Code: "57P01"}))
	require.True(t, retryable(errors.New("dial tcp: connection refused")))
	require.False(t, retryable(fmt.Errorf("tls: %w", x509.UnknownAuthorityError{})))
	require.False(t, retryable(fmt.Errorf("tls: %w", x509.HostnameError{Host: "db1"})))
	require.False(t, retryable(fmt.Errorf("tls: %w", x509.CertificateInvalidError{Reason: x509.Expired})))
	require.False(t, retryable(fmt.Errorf("dial: %w", fileError{errors.New("read password: gave up")})))
}
