package scrape

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/config"
)

// newPostgres returns the Scraper of a PostgreSQL server. Its role should
// have pg_monitor (or pg_read_all_stats): without it, PostgreSQL hides the
// backend_type and state of other roles' backends, so they are not counted
// at all, and Result.LimitedVisibility is set. Of t it uses the name and
// labels, LeakThreshold (a backend idle in a transaction for strictly longer
// is leaked), MaxPools (0 or less means DefaultMaxPools) and
// ApplicationPools (matched in order: a backend belongs to the first that
// matches it).
func newPostgres(t config.Target) *postgres {
	s := &postgres{cfg: t}
	for _, ap := range t.ApplicationPools {
		s.names = append(s.names, ap.Name)
		s.apps = append(s.apps, globToLike(ap.ApplicationName))
		s.users = append(s.users, globToLike(ap.User))
		s.dbs = append(s.dbs, globToLike(ap.Database))
	}
	for _, g := range t.Applications {
		s.seenLikes = append(s.seenLikes, globToLike(g))
	}
	return s
}

type postgres struct {
	cfg                     config.Target
	names, apps, users, dbs []string
	// seenLikes are the LIKE patterns of cfg.Applications, in order.
	seenLikes []string
}

// applicationsSQL counts, for the cross-checks of application targets, the
// client backends whose application_name matches each pattern ($1, in
// order), by client address, in any state; the agent's own backend is left
// out. A backend is counted under every pattern it matches.
const applicationsSQL = `SELECT g.ord::int8, host(a.client_addr), count(*)
FROM unnest($1::text[]) WITH ORDINALITY AS g(app_like, ord)
JOIN pg_stat_activity a ON a.application_name LIKE g.app_like ESCAPE E'\\'
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
GROUP BY 1, 2`

// activitySQL is the one statement a postgres round sends: PostgreSQL
// aggregates pg_stat_activity and answers one small row, whatever the
// number of backends. docs/metrics.md quotes it; keep the two in step.
// Which backend is leaked is postgresLeakedSQL (leaks.go).
//
// $1..$4: the application pools' names and LIKE patterns, in config order
// (an empty user or database pattern matches any); $5: the leak threshold in
// seconds; $6: the culprit limit; $7: whether to send the culprits' query
// text (log_query_text). Without it, the text never leaves the server: only
// its first keyword (queryKeywordSQL) and query_id (PostgreSQL 14+, read
// through to_jsonb so that one statement serves every version) do.
const activitySQL = `WITH pools AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
    WITH ORDINALITY AS p(name, app_like, user_like, db_like, ord)
), b AS (
  SELECT a.pid, a.state, a.application_name, a.usename, a.datname,
         host(a.client_addr) AS client_addr, a.client_port,
         a.xact_start, a.query,
         extract(epoch FROM now() - a.state_change)::float8 AS idle_s,
         extract(epoch FROM now() - a.xact_start)::float8 AS xact_s,
         ` + postgresLeakedSQL + ` AS leaked,
         CASE WHEN ` + postgresLeakedSQL + ` THEN to_jsonb(a) ->> 'query_id' END AS query_id,
         (SELECT p.name FROM pools p
           WHERE a.application_name LIKE p.app_like ESCAPE E'\\'
             AND (p.user_like = '' OR a.usename LIKE p.user_like ESCAPE E'\\')
             AND (p.db_like = '' OR a.datname LIKE p.db_like ESCAPE E'\\')
           ORDER BY p.ord LIMIT 1) AS pool
  FROM pg_stat_activity a
  WHERE a.backend_type = 'client backend'
)
SELECT current_setting('max_connections')::int8,
       current_setting('superuser_reserved_connections')::int8,
       nullif(current_setting('reserved_connections', true), '')::int8,
       (SELECT count(*) FROM b),
       (SELECT count(*) FROM b WHERE leaked),
       (SELECT coalesce(max(idle_s), 0) FROM b WHERE leaked),
       (SELECT coalesce(json_agg(g), '[]')::text FROM (
          SELECT pool, count(*) AS open,
                 count(*) FILTER (WHERE state <> 'idle') AS in_use,
                 count(*) FILTER (WHERE leaked) AS leaked,
                 coalesce(max(idle_s) FILTER (WHERE leaked), 0) AS oldest
          FROM b WHERE pool IS NOT NULL GROUP BY pool) g),
       (SELECT coalesce(json_agg(l), '[]')::text FROM (
          SELECT pool, application_name, usename, datname, client_addr, client_port,
                 pid, xact_start::text AS xact_start, idle_s, xact_s, query_id,
                 upper(substring(query FROM ` + queryKeywordSQL + `)) AS keyword,
                 CASE WHEN $7::bool THEN left(query, 200) END AS query
          FROM b WHERE leaked ORDER BY idle_s DESC LIMIT $6) l),
       pg_has_role('pg_read_all_stats', 'USAGE')`

// activityRow is the statement's one row.
type activityRow struct {
	maxConnections, superuserReserved int64
	reserved                          *int64
	open, leaked                      int64
	oldest                            float64
	appsJSON, leaksJSON               string
	seesAll                           bool
}

type appCounts struct {
	Pool   string  `json:"pool"`
	Open   float64 `json:"open"`
	InUse  float64 `json:"in_use"`
	Leaked float64 `json:"leaked"`
	Oldest float64 `json:"oldest"`
}

// queryKeywordSQL is the regular expression (a PostgreSQL string literal)
// whose one capturing group is a query's first keyword: the first word
// after any whitespace and comments.
const queryKeywordSQL = `'^(?:[[:space:]]|--[^\n]*(?:\n|$)|/\*(?:[^*]|\*+[^*/])*\*+/)*([[:alpha:]_]+)'`

type leakRow struct {
	Pool            *string  `json:"pool"`
	ApplicationName *string  `json:"application_name"`
	Usename         *string  `json:"usename"`
	Datname         *string  `json:"datname"`
	ClientAddr      *string  `json:"client_addr"`
	ClientPort      *int     `json:"client_port"`
	PID             int      `json:"pid"`
	XactStart       *string  `json:"xact_start"`
	IdleSeconds     float64  `json:"idle_s"`
	XactSeconds     *float64 `json:"xact_s"`
	QueryID         *string  `json:"query_id"`
	Keyword         *string  `json:"keyword"`
	Query           *string  `json:"query"`
}

// Scrape runs the round's one statement. It uses the connection's default
// exec mode; the statement's parameters are typed, so it works with the
// extended and the simple protocol alike.
func (s *postgres) Scrape(ctx context.Context, q Querier) *Result {
	res := newResult(config.KindPostgres, &s.cfg)
	var row activityRow
	var queryErr, appsErr error
	var apps []ApplicationConnections
	err := q.Do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		res.Version = postgresVersion(conn.PgConn().ParameterStatus("server_version"))
		queryErr = conn.QueryRow(ctx, activitySQL,
			s.names, s.apps, s.users, s.dbs, s.cfg.LeakThreshold.Seconds(), MaxLeaks, s.cfg.LogQueryText,
		).Scan(&row.maxConnections, &row.superuserReserved, &row.reserved,
			&row.open, &row.leaked, &row.oldest, &row.appsJSON, &row.leaksJSON, &row.seesAll)
		if queryErr == nil && len(s.seenLikes) > 0 {
			apps, appsErr = s.countApplications(ctx, conn)
		}
		return nil
	})
	if err != nil {
		res.Errors = append(res.Errors, QueryError{Query: QueryConnect, Err: err})
		return res
	}
	if queryErr != nil {
		res.Errors = append(res.Errors, QueryError{Query: QueryActivity, Err: fmt.Errorf("pg_stat_activity: %w", queryErr)})
		return res
	}
	if err := s.fill(res, &row); err != nil {
		res.Errors = append(res.Errors, QueryError{Query: QueryActivity, Err: err})
	}
	if appsErr != nil {
		res.Errors = append(res.Errors, QueryError{Query: QueryActivity, Err: fmt.Errorf("count connections by application_name: %w", appsErr)})
	}
	res.Applications = apps
	return res
}

// countApplications runs applicationsSQL.
func (s *postgres) countApplications(ctx context.Context, conn *pgx.Conn) ([]ApplicationConnections, error) {
	rows, err := conn.Query(ctx, applicationsSQL, s.seenLikes)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]ApplicationConnections, len(s.cfg.Applications))
	for i, g := range s.cfg.Applications {
		out[i] = ApplicationConnections{ApplicationName: g, ByAddress: map[string]float64{}}
	}
	for rows.Next() {
		var ord, n int64
		var addr *string
		if err := rows.Scan(&ord, &addr, &n); err != nil {
			return nil, err
		}
		if ord < 1 || int(ord) > len(out) {
			continue
		}
		ac := &out[ord-1]
		ac.Total += float64(n)
		if addr != nil {
			if a, ok := canonicalIP(*addr); ok {
				ac.ByAddress[a] += float64(n)
			}
		}
	}
	return out, rows.Err()
}

// fill maps the statement's row into res. It is pure.
func (s *postgres) fill(res *Result, row *activityRow) error {
	res.LimitedVisibility = !row.seesAll
	reserved := row.superuserReserved
	if row.reserved != nil {
		reserved += *row.reserved
	}
	pools := []Pool{{
		Name:              PoolServer,
		Max:               Some(float64(row.maxConnections - reserved)),
		Reserve:           Some(float64(reserved)),
		Open:              float64(row.open),
		InUse:             float64(row.open),
		Leaked:            float64(row.leaked),
		OldestLeakSeconds: row.oldest,
	}}

	var apps []appCounts
	if err := json.Unmarshal([]byte(row.appsJSON), &apps); err != nil {
		return fmt.Errorf("decode application pool counts: %w", err)
	}
	byName := make(map[string]appCounts, len(apps))
	for _, a := range apps {
		byName[a.Pool] = a
	}
	seen := map[string]bool{PoolServer: true}
	for _, ap := range s.cfg.ApplicationPools {
		if seen[ap.Name] {
			continue // the first declaration wins, as in matching
		}
		seen[ap.Name] = true
		a := byName[ap.Name]
		pools = append(pools, Pool{
			Name: ap.Name, Database: ap.Database, User: ap.User,
			Min: optional(ap.MinConnections), Max: optional(ap.MaxConnections),
			Open: a.Open, InUse: a.InUse,
			Leaked: a.Leaked, OldestLeakSeconds: a.Oldest,
		})
	}
	res.Pools, res.PoolsDropped = capPools(pools, &s.cfg, PoolServer)

	var leaks []leakRow
	if err := json.Unmarshal([]byte(row.leaksJSON), &leaks); err != nil {
		return fmt.Errorf("decode leaks: %w", err)
	}
	for _, l := range leaks {
		leak := Leak{
			Pool:            PoolServer,
			ApplicationName: deref(l.ApplicationName),
			User:            deref(l.Usename),
			Database:        deref(l.Datname),
			PID:             l.PID,
			Age:             seconds(l.IdleSeconds),
			QueryKeyword:    deref(l.Keyword),
			QueryID:         deref(l.QueryID),
			Query:           RedactQuery(truncate(deref(l.Query), MaxQueryLength)),
			ID:              strconv.Itoa(l.PID) + "@" + deref(l.XactStart),
		}
		if l.Pool != nil {
			leak.Pool = *l.Pool
		}
		if l.XactSeconds != nil {
			leak.TransactionAge = seconds(*l.XactSeconds)
		}
		switch {
		case l.ClientAddr != nil && l.ClientPort != nil:
			leak.ClientAddr = net.JoinHostPort(*l.ClientAddr, strconv.Itoa(*l.ClientPort))
		case l.ClientAddr != nil:
			leak.ClientAddr = *l.ClientAddr
		default:
			leak.ClientAddr = "[local]"
		}
		res.Leaks = append(res.Leaks, leak)
	}
	res.Leaks = sortLeaks(res.Leaks)
	return nil
}

// globToLike translates a shell-style glob, where only `*` (any run of
// characters) and `?` (one character) are special, into a LIKE pattern with
// `\` as the escape character: LIKE's own `%`, `_` and `\` are escaped so
// that they match themselves.
func globToLike(glob string) string {
	var b strings.Builder
	b.Grow(len(glob) + 4)
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteByte('%')
		case '?':
			b.WriteByte('_')
		case '%', '_', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// postgresVersion is the first word of server_version ("15.10" of
// "15.10 (Debian 15.10-1.pgdg120+1)").
func postgresVersion(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// optional is a declared size: absent when not declared.
func optional(v *int) Optional {
	if v == nil {
		return Optional{}
	}
	return Some(float64(*v))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func seconds(s float64) time.Duration {
	if math.IsNaN(s) || s < 0 {
		return 0
	}
	if s > math.MaxInt64/float64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s * float64(time.Second))
}

// truncate cuts s to at most n characters (runes), on a rune boundary.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}
