// Package sharding is the end-to-end test of examples/sharding/: two
// poolwatch agents sharing one configuration, in front of PostgreSQL 15 and
// PgBouncer 1.18 targets (internal/testenv), scraped through /probe by
// Debian's Prometheus 2.42 running the example's own prometheus.yml and
// file_sd list, with only the agents' addresses and the scrape interval
// (1s) changed.
//
// It shows that every target is scraped exactly once, by the agent of its
// hashmod shard, and that each agent holds connections only to the targets
// of its shard, as seen by the agents, by Prometheus and by the servers.
//
// A missing postgres, pgbouncer or prometheus fails the tests (unless
// POOLWATCH_TEST_SKIP names it, outside CI; see internal/testenv).
//
// There is no non-test code here.
package sharding
