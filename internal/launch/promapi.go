package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// DefaultPromAPITimeout bounds one call of a PromAPI whose Timeout is 0.
const DefaultPromAPITimeout = 15 * time.Second

// maxAPIAnswer bounds the size of one API answer.
const maxAPIAnswer = 16 << 20

// PromAPI is a small client of Prometheus' HTTP API (v1): what poolwatch's
// end-to-end tests and its demo ask Prometheus. It is safe for concurrent
// use. An answer whose status is not "success" is an error naming its
// errorType and error.
type PromAPI struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// Timeout bounds each call; 0 means DefaultPromAPITimeout.
	Timeout time.Duration
}

// Sample is one series of a query result: for a vector its value at the
// evaluation time, for a matrix its values over the range, oldest first,
// and their timestamps (Times[i] is the time of Values[i]).
type Sample struct {
	Metric map[string]string
	Value  float64     // vector
	Values []float64   // matrix
	Times  []time.Time // matrix
}

// QueryResult is the answer of an instant or range query.
type QueryResult struct {
	// Type is "vector", "matrix", "scalar" or "string".
	Type string
	// Samples holds the elements of a vector or matrix.
	Samples []Sample
}

// Len returns how many series a vector or matrix result holds; a scalar or
// string result counts as 1.
func (r QueryResult) Len() int {
	if r.Type == "scalar" || r.Type == "string" {
		return 1
	}
	return len(r.Samples)
}

// RuleGroup is a group of /api/v1/rules.
type RuleGroup struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Rules []Rule `json:"rules"`
}

// Rule is one rule of a RuleGroup.
type Rule struct {
	Type      string `json:"type"` // "alerting" or "recording"
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	Query     string `json:"query"`
}

// ScrapeTarget is one entry of /api/v1/targets.
type ScrapeTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Labels           map[string]string `json:"labels"`
	ScrapePool       string            `json:"scrapePool"`
	ScrapeURL        string            `json:"scrapeUrl"`
	Health           string            `json:"health"`
	LastError        string            `json:"lastError"`
}

// get calls path with params and decodes the data of a successful answer
// into data.
func (p PromAPI) get(ctx context.Context, path string, params url.Values, data any) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultPromAPITimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := p.URL + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", path, err)
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req) //nolint:gosec // G704: a Prometheus started by a test or the demo on 127.0.0.1
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIAnswer+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(body) > maxAPIAnswer {
		return fmt.Errorf("%s: HTTP %d, answer longer than %d bytes", path, resp.StatusCode, maxAPIAnswer)
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: HTTP %d, not JSON: %w: %.300s", path, resp.StatusCode, err, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: HTTP %d, %s: %s", path, resp.StatusCode, env.ErrorType, env.Error)
	}
	if err := json.Unmarshal(env.Data, data); err != nil {
		return fmt.Errorf("%s: decode data: %w", path, err)
	}
	return nil
}

// promTime formats t as the API's Unix seconds.
func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// Query runs an instant query evaluated at at; the zero time means the
// server's now.
func (p PromAPI) Query(ctx context.Context, expr string, at time.Time) (QueryResult, error) {
	params := url.Values{"query": {expr}}
	if !at.IsZero() {
		params.Set("time", promTime(at))
	}
	return p.query(ctx, "/api/v1/query", params)
}

// Vector runs an instant query now and returns its elements; a result that
// is not a vector is an error.
func (p PromAPI) Vector(ctx context.Context, expr string) ([]Sample, error) {
	r, err := p.Query(ctx, expr, time.Time{})
	if err != nil {
		return nil, err
	}
	if r.Type != "vector" {
		return nil, fmt.Errorf("query %q: result type %q, want vector", expr, r.Type)
	}
	return r.Samples, nil
}

// QueryRange runs a range query.
func (p PromAPI) QueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) (QueryResult, error) {
	return p.query(ctx, "/api/v1/query_range", url.Values{
		"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	})
}

func (p PromAPI) query(ctx context.Context, path string, params url.Values) (QueryResult, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get(ctx, path, params, &data); err != nil {
		return QueryResult{}, err
	}
	r := QueryResult{Type: data.ResultType}
	switch data.ResultType {
	case "vector", "matrix":
		var elems []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`  // [ts, "v"] in a vector
			Values [][]any           `json:"values"` // [[ts, "v"], ...] in a matrix
		}
		if err := json.Unmarshal(data.Result, &elems); err != nil {
			return r, fmt.Errorf("%s: decode %s result: %w", path, data.ResultType, err)
		}
		r.Samples = make([]Sample, 0, len(elems))
		for _, e := range elems {
			s := Sample{Metric: e.Metric}
			var err error
			if data.ResultType == "vector" {
				s.Value, err = pointValue(e.Value)
			} else {
				s.Values = make([]float64, len(e.Values))
				s.Times = make([]time.Time, len(e.Values))
				for i, pt := range e.Values {
					if s.Values[i], err = pointValue(pt); err != nil {
						break
					}
					if s.Times[i], err = pointTime(pt); err != nil {
						break
					}
				}
			}
			if err != nil {
				return r, fmt.Errorf("%s: series %v: %w", path, e.Metric, err)
			}
			r.Samples = append(r.Samples, s)
		}
	case "scalar", "string":
	default:
		return r, fmt.Errorf("%s: unknown result type %q", path, data.ResultType)
	}
	return r, nil
}

// pointValue returns the value of a [ts, "v"] pair.
func pointValue(pt []any) (float64, error) {
	if len(pt) != 2 {
		return 0, errors.New("no [timestamp, value] pair")
	}
	s, ok := pt[1].(string)
	if !ok {
		return 0, fmt.Errorf("value %v is not a string", pt[1])
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("value %q: %w", s, err)
	}
	return v, nil
}

// pointTime returns the time of a [ts, "v"] pair (ts in seconds, with
// milliseconds).
func pointTime(pt []any) (time.Time, error) {
	if len(pt) != 2 {
		return time.Time{}, errors.New("no [timestamp, value] pair")
	}
	ts, ok := pt[0].(float64)
	if !ok {
		return time.Time{}, fmt.Errorf("timestamp %v is not a number", pt[0])
	}
	return time.UnixMilli(int64(math.Round(ts * 1000))), nil
}

// Series returns the label sets of the series that match the selector
// between start and end.
func (p PromAPI) Series(ctx context.Context, match string, start, end time.Time) ([]map[string]string, error) {
	var series []map[string]string
	if err := p.get(ctx, "/api/v1/series", url.Values{
		"match[]": {match}, "start": {promTime(start)}, "end": {promTime(end)},
	}, &series); err != nil {
		return nil, err
	}
	return series, nil
}

// LabelValues returns the distinct values of label among the series that
// match the selector between start and end, sorted: what Grafana's
// label_values(selector, label) offers.
func (p PromAPI) LabelValues(ctx context.Context, match, label string, start, end time.Time) ([]string, error) {
	series, err := p.Series(ctx, match, start, end)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range series {
		if v, ok := s[label]; ok && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Rules returns the loaded rule groups.
func (p PromAPI) Rules(ctx context.Context) ([]RuleGroup, error) {
	var data struct {
		Groups []RuleGroup `json:"groups"`
	}
	if err := p.get(ctx, "/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	return data.Groups, nil
}

// Targets returns the active and dropped scrape targets.
func (p PromAPI) Targets(ctx context.Context) (active, dropped []ScrapeTarget, err error) {
	var data struct {
		Active  []ScrapeTarget `json:"activeTargets"`
		Dropped []ScrapeTarget `json:"droppedTargets"`
	}
	if err := p.get(ctx, "/api/v1/targets", url.Values{"state": {"any"}}, &data); err != nil {
		return nil, nil, err
	}
	return data.Active, data.Dropped, nil
}
