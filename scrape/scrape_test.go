package scrape

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/poolwatch/poolwatch/config"
)

// refusing is a Querier that cannot get a connection, as the probe pool
// answers when the target refuses it. It needs no server: Do fails before
// any connection exists.
type refusing struct{ err error }

func (r refusing) Do(context.Context, func(context.Context, *pgx.Conn) error) error { return r.err }

func TestNew_BuildsTheScraperOfEachKindFromTheTarget(t *testing.T) {
	// Every kind with a probe pool (an application target has none: it is
	// read over HTTP, application_test.go).
	for _, kind := range config.Kinds() {
		if kind == config.KindApplication {
			continue
		}
		t.Run(string(kind), func(t *testing.T) {
			labels := map[string]string{"env": "prod"}
			s, err := New(config.Target{Name: "t1", Kind: kind, Labels: labels})
			require.NoError(t, err)
			refused := errors.New("connection refused")
			res := s.Scrape(context.Background(), refusing{refused})
			assert.Equal(t, "t1", res.Target)
			assert.Equal(t, kind, res.Kind)
			assert.Equal(t, labels, res.Labels)
			assert.False(t, res.Up())
			require.Len(t, res.Errors, 1)
			assert.Equal(t, QueryConnect, res.Errors[0].Query)
			assert.ErrorIs(t, res.Errors[0], refused)
			assert.Contains(t, Queries(kind), QueryConnect)
		})
	}
}

func TestNew_RejectsAnUnknownKind(t *testing.T) {
	_, err := New(config.Target{Name: "p", Kind: "oracle"})
	require.EqualError(t, err, `target "p": no scraper for kind "oracle"`)
}

func TestFailed_IsADownRoundOfTheTarget(t *testing.T) {
	cut := errors.New("cut short")
	res := Failed(config.Target{Name: "b", Kind: config.KindPgBouncer, Labels: map[string]string{"a": "1"}}, cut)
	assert.Equal(t, "b", res.Target)
	assert.Equal(t, config.KindPgBouncer, res.Kind)
	assert.Equal(t, map[string]string{"a": "1"}, res.Labels)
	assert.False(t, res.Up())
	require.Len(t, res.Errors, 1)
	assert.Equal(t, QueryRound, res.Errors[0].Query)
	assert.ErrorIs(t, res.Errors[0], cut)
}

func TestQueries_ListsEveryQueryNameOfTheKind(t *testing.T) {
	assert.Equal(t, []string{"connect", "activity", "round"}, Queries(config.KindPostgres))
	assert.Equal(t, []string{"connect", "show_pools", "show_databases", "show_users", "show_config",
		"show_lists", "show_stats", "show_mem", "show_clients", "show_servers", "show_version", "round"}, Queries(config.KindPgBouncer))
}
