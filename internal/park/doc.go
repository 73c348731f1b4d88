// Package park holds idle client connections without a goroutine each.
//
// A client that waits for its next request costs pgtide a goroutine blocked in a read: its
// stack (8 KiB or more) stays for as long as the client is connected, and ten thousand mostly
// idle clients is a normal load. A Parker keeps such connections in an epoll set of its own
// instead (edge-triggered, one-shot: one wake-up per park) and, when one has something to read
// or is closed by its peer, runs its wake function on a new goroutine, which reads the
// connection as before. The connection stays registered with Go's own poller as well; nothing
// waits on it there while it is parked, so that registration costs nothing.
//
// Parking is for connections that were idle a while (the caller decides when; pgtide's sessions
// after a second), never on the request path: a park costs one epoll_ctl and a wake-up a new
// goroutine.
//
// Ownership: a Ticket belongs to its connection's owner and is read and written only by the
// Parker, under its lock. Between Park and the wake (or a successful Unpark) the Parker owns the
// connection: the owner must not read it, and must Unpark before it closes it (so that a
// descriptor number reused by a later connection is never mistaken for this one).
package park
