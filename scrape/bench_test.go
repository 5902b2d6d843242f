package scrape

import (
	"fmt"
	"testing"
	"time"
)

// clientsN builds a SHOW CLIENTS result of n client rows from the
// recorded 1.18 rows: mostly clients idle between transactions (unlinked),
// some waiting, some running a query, a few leaked, and the agent's own row.
func clientsN(tb testing.TB, n int) *table {
	tb.Helper()
	rec := readFixture(tb, "pgbouncer-1.18", "show_clients")
	c := colIndex(rec.cols, "application_name", "port", "ptr", "link", "state", "wait", "wait_us")
	find := func(app string) [][]byte {
		for _, r := range rec.rows {
			if string(r[c[0]]) == app {
				return r
			}
		}
		tb.Fatalf("no recorded row %q", app)
		return nil
	}
	leaked, waiting, running, own := find("leaky-0"), find("leaky-3"), find("sleeper"), find("poolwatch")
	// An unlinked client idle between transactions: 1.18 shows it active
	// with an empty link.
	idle := append([][]byte(nil), leaked...)
	idle[c[3]] = []byte{}
	running = append([][]byte(nil), running...)
	running[c[4]] = []byte("active")

	out := &table{cols: rec.cols}
	for i := 0; i < n-1; i++ {
		var tmpl [][]byte
		switch {
		case i%1000 == 0:
			tmpl = leaked // 5 per 5,000
		case i%100 == 1:
			tmpl = waiting // 50
		case i%100 == 2:
			tmpl = running // 50
		default:
			tmpl = idle
		}
		row := append([][]byte(nil), tmpl...)
		row[c[1]] = []byte(fmt.Sprint(10000 + i))
		row[c[2]] = []byte(fmt.Sprintf("0x55a34f%06x", i))
		if len(tmpl[c[3]]) > 0 {
			row[c[3]] = []byte(fmt.Sprintf("0x55a350%06x", i))
		}
		out.rows = append(out.rows, row)
	}
	out.rows = append(out.rows, own)
	return out
}

// BenchmarkScanClients5000 measures the agent's cost of mapping a SHOW
// CLIENTS result of 5,000 recorded client rows (the part of a round that
// grows with PgBouncer's clients). The rows are already decoded, as pgx
// hands them over (RawValues); network and PgBouncer time are not included.
func BenchmarkScanClients5000(b *testing.B) {
	tbl := clientsN(b, 5000)
	modes := newModeResolver([]poolRow{{database: "app", user: "app", mode: "transaction"}}, nil, nil, false)
	b.ReportAllocs()
	b.ResetTimer()
	var leaks int
	for i := 0; i < b.N; i++ {
		scan, err := scanClients(tbl.rewind(), own118, modes)
		if err != nil {
			b.Fatal(err)
		}
		leaks = len(leaksOf(scan, 2*time.Second))
	}
	b.StopTimer()
	if leaks != 5 {
		b.Fatalf("found %d leaks, want 5", leaks)
	}
}

func TestClientsN_HasTheIntendedMix(t *testing.T) {
	tbl := clientsN(t, 5000)
	modes := newModeResolver([]poolRow{{database: "app", user: "app", mode: "transaction"}}, nil, nil, false)
	scan, err := scanClients(tbl, own118, modes)
	if err != nil {
		t.Fatal(err)
	}
	if scan.rows != 5000 || !scan.ownFound || len(scan.candidates) != 5 {
		t.Fatalf("rows %d own %v candidates %d", scan.rows, scan.ownFound, len(scan.candidates))
	}
}
