package launch

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakePrometheus answers the API paths with canned bodies; asked returns
// the requests (path?query) it got so far.
func fakePrometheus(t *testing.T, answers map[string]string) (api PromAPI, asked func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		body, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return PromAPI{URL: srv.URL, Client: client, Timeout: 5 * time.Second}, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

func TestPromAPI_DecodesVectorsAndMatrices(t *testing.T) {
	api, asked := fakePrometheus(t, map[string]string{
		"/api/v1/query": `{"status":"success","data":{"resultType":"vector","result":[
			{"metric":{"job":"a"},"value":[1700000000.5,"3"]},
			{"metric":{"job":"b"},"value":[1700000000.5,"NaN"]}]}}`,
		"/api/v1/query_range": `{"status":"success","data":{"resultType":"matrix","result":[
			{"metric":{"job":"a"},"values":[[1,"1"],[2.125,"2.5"]]}]}}`,
	})
	ctx := context.Background()

	r, err := api.Query(ctx, "up", time.Unix(1700000000, 500e6))
	require.NoError(t, err)
	require.Equal(t, "vector", r.Type)
	require.Equal(t, 2, r.Len())
	require.Equal(t, map[string]string{"job": "a"}, r.Samples[0].Metric)
	require.Equal(t, 3.0, r.Samples[0].Value)
	require.True(t, math.IsNaN(r.Samples[1].Value))
	require.Equal(t, "/api/v1/query?query=up&time=1700000000.500", asked()[0])

	v, err := api.Vector(ctx, "up")
	require.NoError(t, err)
	require.Len(t, v, 2)
	require.Equal(t, "/api/v1/query?query=up", asked()[1], "no time: the server's now")

	m, err := api.QueryRange(ctx, "up", time.Unix(10, 0), time.Unix(20, 0), 1500*time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, 1, m.Len())
	require.Equal(t, []float64{1, 2.5}, m.Samples[0].Values)
	require.Equal(t, []time.Time{time.Unix(1, 0), time.Unix(2, 125e6)}, m.Samples[0].Times)
	require.Equal(t, "/api/v1/query_range?end=20.000&query=up&start=10.000&step=1.5", asked()[2])
}

func TestPromAPI_ReportsErrorAnswersAndNonVectors(t *testing.T) {
	api, _ := fakePrometheus(t, map[string]string{
		"/api/v1/query":       `{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}`,
		"/api/v1/query_range": `{"status":"error","errorType":"bad_data","error":"parse error"}`,
	})
	ctx := context.Background()

	r, err := api.Query(ctx, "1", time.Time{})
	require.NoError(t, err)
	require.Equal(t, 1, r.Len(), "a scalar counts as one")
	_, err = api.Vector(ctx, "1")
	require.ErrorContains(t, err, `result type "scalar", want vector`)
	_, err = api.QueryRange(ctx, "(", time.Unix(0, 0), time.Unix(1, 0), time.Second)
	require.ErrorContains(t, err, "/api/v1/query_range: HTTP 200, bad_data: parse error")
	_, err = api.Rules(ctx)
	require.ErrorContains(t, err, "/api/v1/rules: HTTP 404, not JSON")
}

func TestPromAPI_ListsSeriesLabelValuesRulesAndTargets(t *testing.T) {
	api, asked := fakePrometheus(t, map[string]string{
		"/api/v1/series": `{"status":"success","data":[
			{"__name__":"up","job":"b"},{"__name__":"up","job":"a"},{"__name__":"up","job":"b"},{"__name__":"up"}]}`,
		"/api/v1/rules": `{"status":"success","data":{"groups":[{"name":"g","file":"r.yml","rules":[
			{"type":"alerting","name":"A","health":"ok","lastError":"","query":"up == 0"},
			{"type":"recording","name":"r:up","health":"err","lastError":"boom","query":"up"}]}]}}`,
		"/api/v1/targets": `{"status":"success","data":{
			"activeTargets":[{"labels":{"job":"x"},"scrapePool":"x","scrapeUrl":"http://h/metrics","health":"up","lastError":""}],
			"droppedTargets":[{"discoveredLabels":{"__address__":"h2"}}]}}`,
	})
	ctx := context.Background()
	from, to := time.Unix(100, 0), time.Unix(200, 0)

	series, err := api.Series(ctx, "up", from, to)
	require.NoError(t, err)
	require.Len(t, series, 4)
	require.Equal(t, "/api/v1/series?end=200.000&match%5B%5D=up&start=100.000", asked()[0])
	values, err := api.LabelValues(ctx, "up", "job", from, to)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, values)

	groups, err := api.Rules(ctx)
	require.NoError(t, err)
	require.Equal(t, []RuleGroup{{Name: "g", File: "r.yml", Rules: []Rule{
		{Type: "alerting", Name: "A", Health: "ok", Query: "up == 0"},
		{Type: "recording", Name: "r:up", Health: "err", LastError: "boom", Query: "up"},
	}}}, groups)

	active, dropped, err := api.Targets(ctx)
	require.NoError(t, err)
	require.Equal(t, []ScrapeTarget{{Labels: map[string]string{"job": "x"}, ScrapePool: "x", ScrapeURL: "http://h/metrics", Health: "up"}}, active)
	require.Equal(t, []ScrapeTarget{{DiscoveredLabels: map[string]string{"__address__": "h2"}}}, dropped)
	require.Equal(t, "/api/v1/targets?state=any", asked()[len(asked())-1])
}
