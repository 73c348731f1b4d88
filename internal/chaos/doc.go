// Package chaos owns pgtide's fault-injection suite. Run starts a throwaway cluster
// (internal/pgcluster: a primary and two streaming replicas), runs the proxy under test as a
// separate process (pgtide with its auto, writer and reader endpoints, or PgBouncer in front of
// the primary for comparison), drives a paced mixed load through it and injects one fault at a
// time, each between healthy periods. For every fault it measures what the clients saw: their
// errors by SQLSTATE class, the longest gap in successful writes and in successful reads, the
// longest any one client went without a success, the proxy's server connections per node
// against their cap, and whether every write a client saw acknowledged is on the primary
// afterwards.
//
// It is a test tool, not part of pgtide's binary: `make chaos` runs the whole suite
// (bench/chaos) and cmd/pgtide's TestChaos a short version under `make test`.
//
// Run owns every goroutine, process, listener and temporary directory it starts; all of them
// are gone when it returns.
package chaos
