package session

import (
	"errors"
	"os"
	"syscall"
	"time"

	"pgtide/internal/evloop"
	"pgtide/internal/pgtls"
)

// Parking: a transaction-mode client idle between transactions for ParkAfter (a second by
// default) gives up its goroutine. Its connection goes to Env.Parker, which starts a goroutine
// for it again (run) when the client sends something or goes away. What is left of an idle
// client is then this struct (with no buffers: see buffers.go) and its socket.
//
// The hot path pays two atomic operations per wait for the client (waitIdle): the janitor, not
// the client loop, decides to park (ParkIfIdle). It ends the loop's blocked read with a read
// deadline in the past, under mu, where the loop clears it, so that a deadline set just as the
// client's bytes arrived cannot fail a later read. Only clients with nothing attached are parked:
// no server connection, no relay, not closing.
//
// A client over TLS is parked on its socket too. Its wait ended with a timeout, so crypto/tls
// held no decrypted bytes and no complete record (its Read returns those without waiting): at
// most the start of a record, whose rest makes the socket readable. A read timeout leaves a
// tls.Conn usable. Its buffers stay with it.
//
// Whoever closes the client's connection from outside the client loop does it with closeClient,
// which takes a parked connection back from the Parker first and runs the loop again to end the
// session.
//
// A client served on the event loops has no goroutine to give up: when it has been idle for
// ParkAfter, the janitor trims it instead (ParkIfIdle, trimIdle). It takes the session from its
// loop (evloop's Unregister: the loop will not run it meanwhile), lets go of the request state
// and the resume buffer (see active.go), and gives the session back to the loop. A parked client
// lets go of them too.

// ParkAfter is how long a client waits idle before it is parked, when Env.ParkAfter is 0.
const ParkAfter = time.Second

// The client loop's wait for the client, for ParkIfIdle (Session.idleState).
const (
	idleActive    int32 = iota // not waiting for the client, or not parkable
	idleWaiting                // blocked in waitIdle's read of a parkable client
	idleParkAsked              // ParkIfIdle ended that read with a deadline: park
)

// parkable reports whether the client may be parked at all; fixed at New.
func (s *Session) parkable() bool {
	_, ok := s.socket()
	return ok && s.env.Parker != nil && s.txMode
}

// socket returns what the Parker waits on: the client's socket, under TLS if any.
func (s *Session) socket() (syscall.Conn, bool) {
	c := s.conn
	if tc, ok := c.(*pgtls.Conn); ok {
		c = tc.Socket()
	}
	sc, ok := c.(syscall.Conn)
	return sc, ok
}

// ParkIfIdle parks the session if its client loop has been waiting for the client since before
// now minus Env.ParkAfter with nothing attached. Called by the janitor; now is unix ns.
func (s *Session) ParkIfIdle(now int64) {
	after := s.env.ParkAfter
	if after <= 0 {
		after = ParkAfter
	}
	if now-s.progressAt.Load() < int64(after) {
		return
	}
	if !s.lean.Load() {
		s.mu.Lock()
		lc := s.lc // AdoptSocket may be setting it
		s.mu.Unlock()
		if lc != nil {
			s.trimIdle(lc)
		}
	}
	if s.idleState.Load() != idleWaiting {
		return
	}
	s.mu.Lock()
	if s.server == nil && !s.relayRunning && !s.closing && s.idleState.CompareAndSwap(idleWaiting, idleParkAsked) {
		s.conn.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
}

// endIdleWait is waitIdle's after its read returned n bytes or err: it reports whether the
// session is to be parked, clearing the deadline ParkIfIdle may have set.
func (s *Session) endIdleWait(n int, err error) bool {
	if s.idleState.CompareAndSwap(idleWaiting, idleActive) {
		return false
	}
	s.mu.Lock()
	s.conn.SetReadDeadline(time.Time{})
	s.idleState.Store(idleActive)
	s.mu.Unlock()
	return n == 0 && errors.Is(err, os.ErrDeadlineExceeded)
}

// park hands the client's connection to the Parker, which runs the client loop again on a new
// goroutine when the client sends something. It reports false, and the session stops parking
// for good, if the Parker would not take it (a connection closed meanwhile is then found by the
// loop's next read).
func (s *Session) park() bool {
	s.dropActive()
	s.mu.Lock()
	s.shareParamsLocked()
	s.dropWaitLocked()
	s.mu.Unlock()
	sock, _ := s.socket()
	if err := s.env.Parker.Park(sock, &s.ticket, s.runFn); err != nil {
		s.noPark = true
		s.log().Debug("client not parked", "err", err)
		return false
	}
	return true
}

// trimIdle lets go of what a session waiting for its client on the event loops holds for
// requests: its activeState, resume buffer included. It does nothing unless the session is
// waiting for the client on its loop (registered with OnReadable), which it takes over for the
// while. lc is the session's s.lc. Called by the janitor (ParkIfIdle).
func (s *Session) trimIdle(lc *evloop.Conn) {
	s.mu.Lock()
	held := s.server != nil // session mode, pinned, or a transaction left open: nothing to trim
	s.mu.Unlock()
	if held || !lc.Unregister() {
		return // running, or waiting for a server or a queue: not idle after all
	}
	// The session is this goroutine's now, as it would be the loop's: the client loop registered
	// at its wait for the client (waitIdle), with its read buffer and held request given back.
	if s.dropActive() {
		s.mu.Lock()
		s.shareParamsLocked()
		s.dropWaitLocked()
		s.mu.Unlock()
		s.lean.Store(true)
	}
	if !lc.OnReadable(s.runFn) {
		// Input, a hang-up, a close or a deadline came meanwhile: the loop runs the session.
		lc.Post(s.runFn)
	}
}

// closeClient closes the client's connection from outside the client loop (timeouts, KILL,
// shutdown), first taking it back from the Parker if it is parked: the client loop then runs
// again, reads the closed connection and ends the session.
func (s *Session) closeClient() {
	parked := s.env.Parker != nil && s.env.Parker.Unpark(&s.ticket)
	s.ext.Load().Close()
	if parked {
		go s.runFn()
	}
}
