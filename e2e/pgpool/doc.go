// Package pgpool is poolwatch's end-to-end test of Pgpool-II exhaustion:
// PostgreSQL 15 and Pgpool-II 4.3 (internal/testenv), the poolwatch binary,
// and Debian's Prometheus loading the short variant of the rules generated
// by mixin/. Every child but the agent's runs a long query and one more
// client waits in the listen backlog; the test expects the children pool's
// in use at max, the target up, and PoolExhausted firing for
// pool="children", then resolving once the children are free.
//
// The alert is PoolExhausted's contract for Pgpool-II (design.md, "PoolExhausted,
// per kind"): the children pool of a kind="pgpool" target with every child
// in use. It is checked against whatever rules mixin/ generates on main.
//
// A missing postgres, pgpool or prometheus fails the test
// (POOLWATCH_TEST_SKIP may name them to skip it outside CI; see
// internal/testenv). There is no non-test code here.
package pgpool
