// Package session owns one client connection after its startup packet: authentication, the
// greeting (ParameterStatus, BackendKeyData), and the relay between the client and whichever
// server connection it holds.
//
// The client loop (Serve) reads the client, leases a server connection from the router
// (router.Lease) on the first message of a transaction — on an auto endpoint in transaction
// mode after reading ahead to the end of the request and classifying its SQL (route.go, with
// the safety net and read-your-writes; a request outside a transaction block whose server
// connection ends before it is answered may run again on another, retry.go) — and forwards raw
// messages to it. What sessions know of
// a server connection's session (settings, prepared statements) is a serverState kept with the
// connection (server.go). Someone must read that server
// and forward its messages to the client, watching ReadyForQuery to give the connection back (in
// transaction mode as soon as the server is idle and the client has no request in flight):
//
//   - The client loop itself, inline, for the common case: the client sent complete requests (a
//     Query, or extended messages up to Sync) and nothing more, and waits for the answers. No
//     other goroutine takes part, and the wait for the answer costs no read that finds nothing
//     (pool.Conn.FlushAndWait, or on the event loops TryFill). Off the event loops this is for
//     transaction-mode clients that are not pinned only.
//   - A relay goroutine otherwise: extended messages without a Sync yet (the client may wait on
//     a Flush), COPY from the client, a pipeline larger than the server connection's write
//     buffer (readAlong), whenever the client loop stops while it holds a server, and, off the
//     event loops, session mode and pinned clients (the server may send notifications while the
//     client is idle). Once started it reads the server until the connection goes back, or, on
//     the event loops, until nothing is in flight (relayEnds). Because the server side is read
//     whenever answers are owed, a client that pipelines far ahead (pgx batches, JDBC batches)
//     cannot deadlock the proxy.
//
// See readInline for the rule. On the event loops, a client idle while it holds a server (session
// mode, pinned, or inside a transaction) has that server's socket watched (watchServer): what the
// server sends unasked starts the relay, which forwards it at once. Off the loops, a
// transaction-mode client idle inside a transaction leaves its server unread until its next
// request.
//
// Where the client loop runs: with the proxy's event loops (package evloop, loop.go), a session
// has no goroutine of its own. Its waits for the client and for the inline answers are
// registrations with a loop, and the loop that sees the event runs the client loop on from
// there; anything else that must wait hands the loop to a new goroutine first, and the session
// goes back to a loop at its next wait; a client over TLS is read through crypto/tls, the loops
// waiting on the socket under it. Without event loops (outside Linux), or for a socket they could
// not take (a client over TLS on a socket they did not accept), the client loop is a goroutine,
// and a transaction-mode client idle between transactions for a second is parked
// (park.go): its goroutine ends, and the Parker runs the client loop again on a new goroutine
// when the client sends something. There, a session-mode client that got its server connection
// at login has it read by the relay from the start.
//
// pgtide sends requests of its own on a client's server connection (settings before the
// client's first request, a Parse an SQL EXECUTE or DEALLOCATE needs, a restore after a reset):
// hidden.go numbers them among the client's so the reader knows whose answers it reads. In
// transaction mode the client's prepared statements, SQL that names them and COPY are followed
// message by message (prepared.go, expect.go, copy.go), so that pgtide's records never drift
// from what the server did.
//
// Ownership: Session.mu guards the attachment (server, pending, open, txStatus, closing,
// relayRunning). Only the server's one reader (the client loop inline, or the relay) sets server
// to nil, and whoever does gives that connection back to the pool. The client writer belongs to
// whoever holds wmu. Cancel reads the attachment under mu but sends nothing under it: the pool
// keeps a connection with a cancel in flight from the next client (pool.Manager.BeginCancel).
package session
