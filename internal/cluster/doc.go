// Package cluster owns the PostgreSQL servers behind pgtide: the nodes, their
// health checks, the roles those checks discover (writer or reader, never
// configured), replication lag, and the topology itself, whether it comes
// from the configured host list, from Aurora's aurora_replica_status() or
// from DNS.
//
// Configuration (a Node's address and weight) is kept apart from live state
// (up, role, lag, last check), which lives in atomics so the router reads it
// without locks on every transaction. Each node's live state is written by
// exactly one goroutine, its checker; a change of state is applied with a
// compare-and-swap and only a real change emits an Event, bumps a counter and
// logs one line. Topology changes (SetHosts, discovery) add and remove nodes
// and emit events of their own; a removed node is never reused, so a router
// holding it sees Removed() and drains it.
//
// Functions keeps, for each database a client uses, a catalog of its
// functions read from the writer's pg_proc and refreshed in the background,
// which tells the read/write classifier whether a call of a user function
// may write (it is volatile) or not.
//
// Run owns every goroutine of the package: one checker per node, with
// discovery one discovery loop, and one loader of function catalogs. They
// stop when Run's context ends (a checker also when its node is removed),
// and Run returns only after all of them have, each connection closed.
//
// Lag is measured by the same health check, one query per check: on
// PostgreSQL from the WAL functions (pg_last_wal_replay_lsn() and friends),
// on Aurora PostgreSQL, which refuses those, from aurora_replica_status().
// Which kind of server a health-check connection is on is decided once, when
// it is opened (with aurora discovery: Aurora). Each node exposes its lag in
// time and in bytes and the WAL position it had replayed; the writer's
// checks sample its WAL position, and WriterLSNAfter turns those samples
// into the position a replica must have replayed for a client to read its
// own writes. A server that answers the health query with a SQL error is
// warned about once per episode: unlike a lost connection it will not pass
// by itself.
//
// The same checker reads the node's connection ceiling (max_connections and
// the connections kept for superusers and reserved roles) and its client
// backends, everyone's, from pg_stat_activity: when it connects and every few
// seconds, a change of ceiling being an Event, or at every check with
// SetBackendsEveryCheck (budget_mode = "shared"), each reading going to
// SubscribeBackends' functions: the pools' headroom gate.
//
// Roles are a claim, not a fact: during a failover two servers may both say
// they are not in recovery. Writer then answers "none" until only one is
// left, because sending writes to both would fork the data.
package cluster
