package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// promAPI is a small client of Prometheus' HTTP API (v1).
type promAPI struct {
	base string // http://127.0.0.1:PORT
}

// apiEnvelope is the envelope of every /api/v1 answer.
type apiEnvelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// promSample is one element of a vector or matrix result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`  // [ts, "v"] in a vector
	Values [][]any           `json:"values"` // [[ts, "v"], ...] in a matrix
}

// queryResult is the data of /api/v1/query and /api/v1/query_range.
type queryResult struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
	// Samples holds the vector or matrix elements; Len counts them (a
	// scalar or string result counts as 1).
	Samples []promSample `json:"-"`
	Len     int          `json:"-"`
}

const apiTimeout = 15 * time.Second

// get calls path with params and returns the data of a successful answer.
// An error answer (bad query, evaluation error) is an error naming its type.
func (p promAPI) get(path string, params url.Values) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	u := p.base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	code, body, err := httpGet(ctx, u)
	if err != nil {
		return nil, err
	}
	var env apiEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d, not JSON: %w: %.300s", path, code, err, body)
	}
	if env.Status != "success" {
		return nil, fmt.Errorf("%s: HTTP %d, %s: %s", path, code, env.ErrorType, env.Error)
	}
	return env.Data, nil
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

func decodeQuery(data json.RawMessage) (queryResult, error) {
	var r queryResult
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decode query data: %w", err)
	}
	switch r.ResultType {
	case "vector", "matrix":
		if err := json.Unmarshal(r.Result, &r.Samples); err != nil {
			return r, fmt.Errorf("decode %s result: %w", r.ResultType, err)
		}
		r.Len = len(r.Samples)
	case "scalar", "string":
		r.Len = 1
	default:
		return r, fmt.Errorf("unknown result type %q", r.ResultType)
	}
	return r, nil
}

// query runs an instant query at t.
func (p promAPI) query(expr string, at time.Time) (queryResult, error) {
	data, err := p.get("/api/v1/query", url.Values{"query": {expr}, "time": {promTime(at)}})
	if err != nil {
		return queryResult{}, err
	}
	return decodeQuery(data)
}

// queryRange runs a range query.
func (p promAPI) queryRange(expr string, start, end time.Time, step time.Duration) (queryResult, error) {
	data, err := p.get("/api/v1/query_range", url.Values{
		"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	})
	if err != nil {
		return queryResult{}, err
	}
	return decodeQuery(data)
}

// seriesCount returns how many series match the selector between start and
// end.
func (p promAPI) seriesCount(match string, start, end time.Time) (int, error) {
	data, err := p.get("/api/v1/series", url.Values{
		"match[]": {match}, "start": {promTime(start)}, "end": {promTime(end)},
	})
	if err != nil {
		return 0, err
	}
	var series []map[string]string
	if err := json.Unmarshal(data, &series); err != nil {
		return 0, fmt.Errorf("decode series: %w", err)
	}
	return len(series), nil
}

// labelValues returns the distinct values of label among the series that
// match the selector between start and end, sorted: what Grafana's
// label_values(selector, label) offers.
func (p promAPI) labelValues(match, label string, start, end time.Time) ([]string, error) {
	data, err := p.get("/api/v1/series", url.Values{
		"match[]": {match}, "start": {promTime(start)}, "end": {promTime(end)},
	})
	if err != nil {
		return nil, err
	}
	var series []map[string]string
	if err := json.Unmarshal(data, &series); err != nil {
		return nil, fmt.Errorf("decode series: %w", err)
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

// ruleGroup is a group of /api/v1/rules.
type ruleGroup struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Rules []struct {
		Type      string `json:"type"` // "alerting" or "recording"
		Name      string `json:"name"`
		Health    string `json:"health"`
		LastError string `json:"lastError"`
		Query     string `json:"query"`
	} `json:"rules"`
}

// rules returns the loaded rule groups.
func (p promAPI) rules() ([]ruleGroup, error) {
	data, err := p.get("/api/v1/rules", nil)
	if err != nil {
		return nil, err
	}
	var r struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode rules: %w", err)
	}
	return r.Groups, nil
}

// value returns the float value of a vector sample.
func (s promSample) value() (float64, error) {
	if len(s.Value) != 2 {
		return 0, fmt.Errorf("sample %v has no value", s.Metric)
	}
	str, ok := s.Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample %v: value %v is not a string", s.Metric, s.Value[1])
	}
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return 0, fmt.Errorf("sample %v: %w", s.Metric, err)
	}
	return v, nil
}
