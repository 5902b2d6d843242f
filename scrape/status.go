package scrape

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
)

// mapStatusJSON maps poolwatch's JSON status document
// (docs/application-status.md): one pool described by top-level keys, or
// several under "pools". Unknown keys are ignored; a known key whose value
// is not a number (or null, which is absent) is an error.
func mapStatusJSON(r io.Reader) ([]Pool, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var doc map[string]json.RawMessage
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse the JSON status document: %w", err)
	}
	if doc == nil {
		return nil, errors.New("the JSON status document is null, not an object")
	}
	raw, several := doc["pools"]
	if !several {
		p, err := statusPool(doc, "")
		if err != nil {
			return nil, err
		}
		return []Pool{p}, nil
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf(`"pools" must be a list of objects: %w`, err)
	}
	if len(items) == 0 {
		return nil, errors.New(`"pools" is empty: the document reports no pool`)
	}
	pools := make([]Pool, 0, len(items))
	seen := map[string]bool{}
	for i, item := range items {
		if item == nil {
			return nil, fmt.Errorf("pools[%d] is null, not an object", i)
		}
		p, err := statusPool(item, fmt.Sprintf("pools[%d]", i))
		if err != nil {
			return nil, err
		}
		if _, named := item["name"]; !named && len(items) > 1 {
			return nil, fmt.Errorf(`pools[%d] has no "name": a document with several pools names each`, i)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("pools[%d]: duplicate pool name %q", i, p.Name)
		}
		seen[p.Name] = true
		pools = append(pools, p)
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	return pools, nil
}

// statusPool maps one pool object; at names it in errors ("" for the
// document itself).
func statusPool(obj map[string]json.RawMessage, at string) (Pool, error) {
	prefix := ""
	if at != "" {
		prefix = at + ": "
	}
	name := DefaultPoolName
	if raw, ok := obj["name"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || s == "" {
			return Pool{}, fmt.Errorf(`%s"name" must be a non-empty string`, prefix)
		}
		name = s
	}
	num := func(keys ...string) (Optional, string, error) {
		var out Optional
		var from string
		for _, k := range keys {
			raw, ok := obj[k]
			if !ok {
				continue
			}
			if from != "" {
				return Optional{}, "", fmt.Errorf("%sboth %q and %q are set: keep one", prefix, from, k)
			}
			from = k
			v, err := jsonNumber(raw)
			if err != nil {
				return Optional{}, "", fmt.Errorf("%s%q: %w", prefix, k, err)
			}
			out = v
		}
		return out, from, nil
	}
	var f [9]Optional
	var err error
	keys := [][]string{
		{"minconn", "min"}, {"maxconn", "max"}, {"in_use"}, {"idle"}, {"open"}, {"waiting"}, {"timeouts"},
		{"pool_size"}, {"pool_available"},
	}
	for i, k := range keys {
		if f[i], _, err = num(k...); err != nil {
			return Pool{}, err
		}
	}
	minC, maxC, inUse, idle, open, waiting, timeouts, size, available := f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]

	// psycopg_pool's get_stats(), keys as they are. Its counters are only
	// present once non-zero: requests_errors absent is 0.
	psycopg := size.Valid && available.Valid
	if psycopg {
		for _, conflict := range []struct {
			o    Optional
			keys string
		}{{inUse, "in_use"}, {idle, "idle"}, {open, "open"}} {
			if conflict.o.Valid {
				return Pool{}, fmt.Errorf(`%sboth psycopg_pool's "pool_size" and %q are set: keep one shape`, prefix, conflict.keys)
			}
		}
		var ps [4]Optional
		for i, k := range []string{"pool_min", "pool_max", "requests_waiting", "requests_errors"} {
			if ps[i], _, err = num(k); err != nil {
				return Pool{}, err
			}
		}
		if !minC.Valid {
			minC = ps[0]
		}
		if !maxC.Valid {
			maxC = ps[1]
		}
		if !waiting.Valid {
			waiting = ps[2]
		}
		if !timeouts.Valid {
			timeouts = ps[3]
			if !timeouts.Valid {
				timeouts = Some(0)
			}
		}
		open, inUse, idle = size, Some(math.Max(0, size.Value-available.Value)), available
	}
	if !inUse.Valid {
		return Pool{}, fmt.Errorf(`%spool %q: no "in_use" (or psycopg_pool's "pool_size" and "pool_available"): the document must say how many connections are in use`, prefix, name)
	}
	if !open.Valid {
		if !idle.Valid {
			return Pool{}, fmt.Errorf(`%spool %q: neither "idle" nor "open": the document must say how many connections are open`, prefix, name)
		}
		open = Some(inUse.Value + idle.Value)
	}
	return Pool{Name: name, Min: minC, Max: maxC, Open: open.Value, InUse: inUse.Value, Waiting: waiting, AcquireTimeouts: timeouts}, nil
}

// jsonNumber reads a JSON number that is a finite, non-negative count;
// null is absent.
func jsonNumber(raw json.RawMessage) (Optional, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return Optional{}, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return Optional{}, fmt.Errorf("must be a number, not %s", truncate(string(raw), 40))
	}
	v, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return Optional{}, fmt.Errorf("must be a finite number, not %s", n)
	}
	if v < 0 {
		return Optional{}, fmt.Errorf("must not be negative, got %s", n)
	}
	return Some(v), nil
}
