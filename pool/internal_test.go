package pool

import (
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestBackoff_DoublesAndIsCapped(t *testing.T) {
	require.Equal(t, time.Duration(0), backoff(0, 3))
	require.Equal(t, 100*time.Millisecond, backoff(100*time.Millisecond, 1))
	require.Equal(t, 200*time.Millisecond, backoff(100*time.Millisecond, 2))
	require.Equal(t, 400*time.Millisecond, backoff(100*time.Millisecond, 3))
	require.Equal(t, maxBackoff, backoff(time.Second, 10))
	require.Equal(t, maxBackoff, backoff(time.Minute, 1))
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
}

func TestRedactSecrets_RemovesPasswordsInBothDSNForms(t *testing.T) {
	for in, want := range map[string]string{
		"failed: host=x password=hunter2 user=u":           "failed: host=x password=xxxxx user=u",
		"failed: host=x password='hun ter2' user=u":        "failed: host=x password=xxxxx user=u",
		"cannot parse postgres://u:hunter2@h:5432/db: bad": "cannot parse postgres://u:xxxxx@h:5432/db: bad",
		"no secret here": "no secret here",
	} {
		require.Equal(t, want, redactSecrets(in))
	}
	err := redactedError{fmt.Errorf("x: %w", errors.New("password=hunter2"))}
	require.Equal(t, "x: password=xxxxx", err.Error())
	require.NotNil(t, errors.Unwrap(err))
}
