// Package pool owns the server connections: one pool per (node, database, user), each capped at
// pool_size, and every node capped at max_server_connections across all its pools — a hard cap
// that a connection storm cannot cross, because a slot is counted before the dial starts.
// Each node's cap may be lowered to its budget (SetNodeBudget). With a budget shared with other
// processes (budget_mode = "shared"), opening a connection also needs headroom from the latest
// reading of the node's client backends: see the headroom gate in headroom.go.
//
// A Conn is owned by exactly one party at a time: the pool while it is idle, the session that
// acquired it until it calls Release. A Conn released while a CancelRequest for its backend is
// in flight (BeginCancel) is parked, lent to no one, until the last such cancel ends
// (EndCancel), so that a cancel meant for one client cannot land on the next client's query. Clients that find their pool full wait in FIFO order, bounded
// by the caller's context (query_wait_timeout); a released connection goes straight to the longest
// waiter. Idle connections past server_idle_timeout or server_lifetime are closed by Run, which
// also keeps min_idle connections open.
//
// Connections are encrypted as server_tls says (pgtls.ServerTLS) before the login. Before an
// idle connection is lent, a peek at its socket (under TLS, when encrypted) tells whether the
// server has gone away meanwhile; records TLS takes for itself (a session ticket) do not count.
//
// For the admin console, a database can be paused (Pause: nothing is lent, acquirers wait,
// connections close as they come back) and its connections renewed (Reconnect: a per-pool
// generation, as CloseNode keeps one per node).
//
// Each dial logs in with what the Manager's Secret gives for its node and user (secret.go): the
// user's plaintext password, or a bearer token (an RDS IAM auth token) that Dial sends only over
// TLS; or, when the users file holds an md5 hash or a SCRAM verifier instead, by pass-through
// (passthrough.go): the hash answers md5, and keys a client's SCRAM login proved answer SCRAM;
// what cannot be answered is a *SecretError.
package pool
