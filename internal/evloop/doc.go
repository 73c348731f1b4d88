// Package evloop runs established connections on event loops: epoll instances, each waited on by
// one goroutine locked to its OS thread, instead of a goroutine per connection parked in Go's
// netpoller.
//
// Why: on a path where every transaction is a request and an answer, the goroutine-per-connection
// design pays two goroutine park/wake cycles per transaction (the wait for the client, then for
// the server), which on pgbench's SELECT cost more user-space instructions than PgBouncer's whole
// transaction (BENCHMARKS.md, issue 14). A loop runs the code waiting for an event on its own
// thread, in the same stack frame as the epoll_wait that reported it, and reads a batch of events
// per wake-up.
//
// How pgtide uses it: a Group adopts a connection's socket (Adopt): the returned *Conn owns a
// duplicate of the descriptor, registered once, edge-triggered, in one loop; the net.Conn it came
// from is closed, so Go's poller no longer watches it. A Conn is a net.Conn with blocking
// semantics (deadlines, Close ending a blocked call) for code that runs on ordinary goroutines,
// and two calls for code that runs on a loop:
//
//   - TryRead reads without waiting (ErrWouldBlock);
//   - OnReadable registers a function that runs once the Conn is readable (or closed, or its read
//     deadline passed): on the loop's thread when the loop saw the event, on a new goroutine when
//     Close or a deadline caused it.
//
// Code running on a loop must never wait for anything that only another connection of the same
// loop could bring. Before it might wait (a blocking Read or Write of a Conn, a pool wait), it
// calls BeforeBlock (Read and Write do it themselves): when the caller is a loop, the loop is
// handed to a new goroutine with the rest of its batch of events, and the caller goes on as an
// ordinary goroutine that may block. So a loop is never blocked for longer than a non-blocking
// step takes, and whatever is rare (a slow client, a pool wait, a dial) costs one goroutine.
//
// Ownership: a Conn's readiness, waiters, deadlines and registered function are guarded by its
// mu; its descriptor is closed by whichever of Close and the last in-flight system call ends
// last (refs), so a descriptor number reused by a later connection is never read or written
// for this one. A loop's slot table is guarded by the loop's mu; events carry the slot and a
// generation, so an event for a closed Conn whose slot was reused is dropped.
package evloop
