// Package session owns one client connection after its startup packet: authentication, the
// greeting (ParameterStatus, BackendKeyData), and the relay between the client and whichever
// server connection it holds.
//
// Two goroutines serve an active session. The client loop (Serve) reads the client, attaches a
// server connection from the pool on the first message of a transaction and forwards raw messages
// to it. The relay reads that server and forwards raw messages to the client; it watches
// ReadyForQuery and, in transaction mode, gives the server connection back as soon as the server
// is idle and the client has no request in flight. Because the server side is always being read,
// a client that pipelines far ahead (pgx batches, JDBC batches) can never deadlock the proxy.
//
// Ownership: Session.mu guards the attachment (server, pending, open, txStatus, closing). Whoever
// sets server to nil owns giving that connection back to the pool; that is always the relay, on a
// release at ReadyForQuery or when it stops. The client writer belongs to whoever holds wmu.
package session
