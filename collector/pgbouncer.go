package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolwatch/poolwatch/scrape"
)

// bouncerDescs are the descriptors of the PgBouncer series beyond the pool
// model: the rest of SHOW STATS, SHOW LISTS and SHOW MEM (docs/metrics.md,
// "Statistics", "Lists" and "Memory").
type bouncerDescs struct {
	xactTime, queryTime, received, sent, assignments, clientParses, serverParses, binds *prometheus.Desc
	listItems                                                                           *prometheus.Desc
	memBytes, memObjects, memObjectSize                                                 *prometheus.Desc
}

func newBouncerDescs(nd func(name, help string, labels []string) *prometheus.Desc) *bouncerDescs {
	dl := []string{"target", "database"}
	cl := []string{"target", "cache"}
	return &bouncerDescs{
		xactTime:     nd("pgbouncer_transaction_seconds_total", "Time server connections spent in transactions for clients, idle in transaction included (SHOW STATS total_xact_time).", dl),
		queryTime:    nd("pgbouncer_query_seconds_total", "Time server connections spent running queries for clients (SHOW STATS total_query_time).", dl),
		received:     nd("pgbouncer_received_bytes_total", "Network traffic received from clients (SHOW STATS total_received).", dl),
		sent:         nd("pgbouncer_sent_bytes_total", "Network traffic sent to clients (SHOW STATS total_sent).", dl),
		assignments:  nd("pgbouncer_server_assignments_total", "Times a server connection was assigned to a client (SHOW STATS total_server_assignment_count, PgBouncer 1.23+).", dl),
		clientParses: nd("pgbouncer_client_parses_total", "Prepared-statement Parse messages received from clients (SHOW STATS total_client_parse_count, PgBouncer 1.21+).", dl),
		serverParses: nd("pgbouncer_server_parses_total", "Prepared-statement Parse messages sent to servers (SHOW STATS total_server_parse_count, PgBouncer 1.21+).", dl),
		binds:        nd("pgbouncer_binds_total", "Bind messages of prepared statements (SHOW STATS total_bind_count, PgBouncer 1.21+).", dl),

		listItems: nd("pgbouncer_list_items", "Items in one of PgBouncer's internal lists (SHOW LISTS): used_clients, free_servers, dns_names...", []string{"target", "list"}),

		memBytes:      nd("pgbouncer_memory_bytes", "Memory held by one of PgBouncer's slab caches (SHOW MEM memtotal).", cl),
		memObjects:    nd("pgbouncer_memory_objects", "Objects of one of PgBouncer's slab caches, used or free (SHOW MEM used, free).", []string{"target", "cache", "state"}),
		memObjectSize: nd("pgbouncer_memory_object_size_bytes", "Size of one object of the cache (SHOW MEM size).", cl),
	}
}

// collect sends the PgBouncer series of r: nothing for other kinds, whose
// Results carry none of these.
func (d *bouncerDescs) collect(ch chan<- prometheus.Metric, name string, r *scrape.Result) {
	for _, s := range r.Stats {
		optionalCounter(ch, d.xactTime, s.TransactionSeconds, name, s.Database)
		optionalCounter(ch, d.queryTime, s.QuerySeconds, name, s.Database)
		optionalCounter(ch, d.received, s.ReceivedBytes, name, s.Database)
		optionalCounter(ch, d.sent, s.SentBytes, name, s.Database)
		optionalCounter(ch, d.assignments, s.ServerAssignments, name, s.Database)
		optionalCounter(ch, d.clientParses, s.ClientParses, name, s.Database)
		optionalCounter(ch, d.serverParses, s.ServerParses, name, s.Database)
		optionalCounter(ch, d.binds, s.Binds, name, s.Database)
	}
	seen := make(map[string]bool, len(r.Lists))
	for _, l := range r.Lists {
		if !seen[l.List] { // a duplicate row would be a duplicate series
			seen[l.List] = true
			gauge(ch, d.listItems, l.Items, name, l.List)
		}
	}
	clear(seen)
	for _, m := range r.Memory {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		optionalGauge(ch, d.memBytes, m.TotalBytes, name, m.Name)
		optionalGauge(ch, d.memObjects, m.Used, name, m.Name, "used")
		optionalGauge(ch, d.memObjects, m.Free, name, m.Name, "free")
		optionalGauge(ch, d.memObjectSize, m.ObjectBytes, name, m.Name)
	}
}

func optionalCounter(ch chan<- prometheus.Metric, d *prometheus.Desc, o scrape.Optional, labels ...string) {
	if o.Valid {
		counter(ch, d, o.Value, labels...)
	}
}
