package scrape

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// rowSource is a result set read as raw text values, column by name. A nil
// value is SQL NULL. The slice returned by values, and the bytes in it, are
// valid only until the next call to next: mapping functions copy what they
// keep. Live results (pgxRows) and recorded fixtures (table) both implement
// it, so every mapping function is pure and testable with recorded rows.
type rowSource interface {
	columns() []string
	next() bool
	values() [][]byte
}

// table is a recorded result set: column names and rows of raw text values
// (nil is NULL).
type table struct {
	cols []string
	rows [][][]byte
	pos  int
}

func (t *table) columns() []string { return t.cols }

func (t *table) next() bool {
	if t.pos >= len(t.rows) {
		return false
	}
	t.pos++
	return true
}

func (t *table) values() [][]byte { return t.rows[t.pos-1] }

// rewind makes the table readable again from its first row.
func (t *table) rewind() *table { t.pos = 0; return t }

// nullText is the token for NULL in the text fixture format.
const nullText = `\N`

// parseTable reads the fixture format: the first non-comment line holds the
// column names, each following line one row. Values are separated by "|"
// and trimmed of surrounding spaces or, when the header line contains a tab,
// separated by tabs and taken verbatim. `\N` is NULL. Lines starting with
// "#" and empty lines are skipped. Missing trailing values in a row are NULL;
// extra ones are dropped. This is the format of the recorded SHOW output in
// testdata/.
func parseTable(text string) *table {
	t := &table{}
	sep, trim := "|", true
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if t.cols == nil && strings.Contains(line, "\t") {
			sep, trim = "\t", false
		}
		fields := strings.Split(line, sep)
		if trim {
			for i := range fields {
				fields[i] = strings.TrimSpace(fields[i])
			}
		}
		if t.cols == nil {
			t.cols = fields
			continue
		}
		row := make([][]byte, len(t.cols))
		for i := range row {
			if i >= len(fields) || fields[i] == nullText {
				continue
			}
			row[i] = []byte(fields[i])
		}
		t.rows = append(t.rows, row)
	}
	return t
}

// pgxRows adapts pgx.Rows to rowSource.
type pgxRows struct {
	rows pgx.Rows
	cols []string
}

func (r *pgxRows) columns() []string {
	if r.cols == nil {
		fds := r.rows.FieldDescriptions()
		r.cols = make([]string, len(fds))
		for i, fd := range fds {
			r.cols[i] = fd.Name
		}
	}
	return r.cols
}

func (r *pgxRows) next() bool       { return r.rows.Next() }
func (r *pgxRows) values() [][]byte { return r.rows.RawValues() }

// showQuery runs a console command with the simple protocol (the only one
// the PgBouncer console speaks, whatever the connection's default mode) and
// hands its rows to mapFn, which must consume them. In the simple protocol
// every value arrives as text, which is what the mapping expects.
func showQuery(ctx context.Context, conn *pgx.Conn, sql string, mapFn func(rowSource) error) error {
	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	defer rows.Close()
	mapErr := mapFn(&pgxRows{rows: rows})
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	if mapErr != nil {
		return fmt.Errorf("%s: %w", sql, mapErr)
	}
	return nil
}

// colIndex maps the wanted column names to their positions in cols; -1 for
// a column the result does not have. Unknown columns are ignored. If a name
// appears twice, the first wins.
func colIndex(cols []string, names ...string) []int {
	idx := make([]int, len(names))
	for i, n := range names {
		idx[i] = -1
		for j, c := range cols {
			if c == n {
				idx[i] = j
				break
			}
		}
	}
	return idx
}

// cell returns the raw value at column i of vals, nil when the column is
// missing (i < 0 or past the row) or NULL.
func cell(vals [][]byte, i int) []byte {
	if i < 0 || i >= len(vals) {
		return nil
	}
	return vals[i]
}

// present reports whether column i has a non-NULL value in vals.
func present(vals [][]byte, i int) bool {
	return i >= 0 && i < len(vals) && vals[i] != nil
}

// str returns the value at column i as a string, "" when missing or NULL.
func str(vals [][]byte, i int) string { return string(cell(vals, i)) }

// num parses the value at column i as a finite number. Values are read as
// text, so int4, int8 and numeric columns parse alike (PgBouncer has changed
// column types between versions). Surrounding spaces are allowed: SHOW USERS
// pads pool_size. Missing, NULL, empty, garbage, NaN and ±Inf are absent.
func num(vals [][]byte, i int) Optional {
	b := bytes.TrimSpace(cell(vals, i))
	if len(b) == 0 {
		return Optional{}
	}
	if n, ok := parseUint(b); ok {
		return Some(float64(n))
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return Optional{}
	}
	return Some(f)
}

// count parses the value at column i as a count: a finite number >= 0.
func count(vals [][]byte, i int) Optional {
	v := num(vals, i)
	if !v.Valid || v.Value < 0 {
		return Optional{}
	}
	return v
}

// parseUint is the allocation-free fast path for the common case: a plain
// decimal integer of at most 15 digits (exact in a float64).
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isZero reports whether the value at column i is a number equal to 0.
func isZero(vals [][]byte, i int) bool {
	v := num(vals, i)
	return v.Valid && v.Value == 0
}

// parseClock parses PgBouncer's text timestamps ("2026-11-26 05:06:01 UTC",
// local time of the PgBouncer process, optional fractional seconds) into
// seconds since an arbitrary epoch, ignoring the zone: only differences
// between timestamps of the same output are used, and they share the zone.
// It does not allocate.
func parseClock(b []byte) (float64, bool) {
	b = bytes.TrimSpace(b)
	// YYYY-MM-DD HH:MM:SS
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || (b[10] != ' ' && b[10] != 'T') || b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	y, ok1 := parseUint(b[0:4])
	mo, ok2 := parseUint(b[5:7])
	dd, ok3 := parseUint(b[8:10])
	h, ok4 := parseUint(b[11:13])
	mi, ok5 := parseUint(b[14:16])
	s, ok6 := parseUint(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mo < 1 || mo > 12 || dd < 1 || dd > 31 || h > 24 || mi > 59 || s > 60 {
		return 0, false
	}
	secs := float64(daysFromCivil(y, mo, dd)*86400 + h*3600 + mi*60 + s)
	rest := b[19:]
	if len(rest) > 1 && rest[0] == '.' {
		frac, scale := int64(0), 1.0
		for _, c := range rest[1:] {
			if c < '0' || c > '9' {
				break
			}
			if scale < 1e9 {
				frac = frac*10 + int64(c-'0')
				scale *= 10
			}
		}
		secs += float64(frac) / scale
	}
	return secs, true
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian
// date (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
