package session

import (
	"context"
	"net"
	"strconv"

	"pgtide/internal/evloop"
	"pgtide/internal/pgtls"
)

// Event loops (package evloop): when the proxy's Group adopted the client's socket and the pool's
// adopted the server connection's, a session has no goroutine of its own. It is run by whichever
// loop saw the event it waited for, from one of three places:
//
//   - waiting for the client (waitIdle): the client loop returns errYield instead of blocking
//     in a read, and drive registers run with the client's socket (OnReadable); the loop that
//     sees the client's next bytes runs the client loop again. A session that holds a server
//     meanwhile has that server's socket watched (watchServer), unless a relay goroutine reads
//     it, for the short while one is needed (COPY, extended messages without a Sync, what the
//     server sent unasked: see relayEnds);
//   - waiting for a server's answers (relayInline, once the request is sent): relaySteps returns
//     errYieldServer when the next message is not whole in the server connection's buffer, and
//     drive registers resumeServer with the server's socket; it relays from where it stopped
//     (ySrv, yPhase), then runs the client loop;
//   - waiting for a server connection (attach): router.StartLease queues the session, for a slot
//     of the endpoint's pool_size or a connection of the pool, instead of blocking, and attach
//     returns errQueued; the wait's end posts resumeLease to the client's loop (evloop's Post),
//     which takes the lease up (router.ResumeLease) and sends the message that waited (yTyp).
//
// Between those, the code is the goroutine path's, on the loop's thread: anything else that may
// wait (a write to a client that does not read, a dial, a failover, a message larger than a
// buffer) hands the loop to a new goroutine first (evloop.BeforeBlock, called by the sockets'
// Read and Write and by the pool's and router's waits) and carries on as an ordinary goroutine,
// until its next wait for the client, a server or a queue returns it to a loop.
//
// Whatever ends a session from outside does what it did for a blocked goroutine: closing the
// client's socket, or setting a deadline on either socket, runs the registered function, on a
// new goroutine, which finds the socket closed or its deadline passed. A queued session is ended
// by its wait's end as a waiting goroutine was: a lease, query_wait_timeout, or a cancel
// (Cancel abandons the wait).

// AdoptSocket serves the session on g's loops once the client has logged in, before Serve, when
// it can be: nothing read ahead of the login. A client a loop accepted (see proxy's
// loopaccept.go) has the loops' socket already, under TLS or not; another's (a Unix-domain
// socket's) is adopted by g. It reports whether the session is served on the loops.
func (s *Session) AdoptSocket(g *evloop.Group) bool {
	if g == nil || s.br != nil && s.br.Buffered() > 0 {
		return false
	}
	if tc, ok := s.conn.(*pgtls.Conn); ok {
		// Over TLS the session reads and writes through crypto/tls as before; the loops wait
		// on the socket under it (see tryClientTLS).
		lc, ok := tc.Socket().(*evloop.Conn)
		if !ok {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closing {
			return false
		}
		s.adoptedLocked(lc)
		return true
	}
	s.wmu.Lock() // wmu then mu, the relay's order
	s.mu.Lock()
	defer s.wmu.Unlock()
	defer s.mu.Unlock()
	if s.closing {
		// Kill, a timeout or a drain has begun, and may close the socket it knows at any
		// moment: a duplicate taken now would outlive that close.
		return false
	}
	lc, ok := s.conn.(*evloop.Conn) // accepted by a loop (see proxy's loopaccept.go)
	if !ok {
		var err error
		if lc, err = g.Adopt(s.conn, true); err != nil {
			return false
		}
	}
	s.conn, s.src.conn = lc, lc
	s.ext.Store(&connRef{lc})
	if s.br != nil {
		s.br.Reset(lc) // the login's reader, empty: it reads the adopted socket until dropped
	}
	s.adoptedLocked(lc)
	return true
}

// adoptedLocked makes lc, the client's socket (under TLS, if any), the one the session waits on,
// with the func values its waits register. Requires mu.
func (s *Session) adoptedLocked(lc *evloop.Conn) {
	s.lc = lc
	s.srvFn = s.resumeServer
	resume := s.resumeLease
	s.leaseFn = func() { lc.Post(resume) }
	s.wakeFn = lc.Wake
}

// watchServer is the client loop's last step before it waits for the client on a loop while it
// holds a server connection (session mode, a pinned client, a transaction left open): the server
// may send something before the client does (a NotificationResponse, a ParameterStatus, a
// NoticeResponse, or an ErrorResponse before it ends the session), which the client must get
// then, as from a direct connection. So the server's socket is watched too: an event on it wakes
// the client's registration (wakeFn, evloop's Wake), and the client loop, finding nothing from
// the client, comes back here, finds the server's bytes and starts the relay, which reads and
// forwards them, and whatever the server sends after, until nothing is in flight (see
// relayEnds; its wake-up of the client's registration brings the client loop back here). A
// session that holds no server, or whose relay runs, watches nothing. It reports whether it
// started the relay: the client loop then goes on, to wait for the client on its loop.
func (s *Session) watchServer() (relayed bool) {
	s.mu.Lock()
	srv := s.server
	watch := srv != nil && !s.relayRunning
	s.mu.Unlock()
	if !watch {
		return false
	}
	if lc := srv.LoopConn(); lc != nil {
		for range 2 {
			// What is there already, buffered or (under TLS, or when the last read did not
			// take everything) on the socket: nothing, the common case, leaves the socket
			// drained, to be watched.
			if srv.TryFill() || srv.Reader.Buffered() > 0 {
				break // a message, whole or not, or a failed read: the relay takes it
			}
			if lc.OnReadable(s.wakeFn) {
				s.watching = true
				return false
			}
			// An edge came since the last read: read again.
		}
	}
	s.mu.Lock()
	s.startRelayLocked() // srv is still the session's: only its reader, this loop, changes it
	s.mu.Unlock()
	return true
}

// unwatchServer takes back watchServer's registration when the client loop runs again. If the
// watch fired already, its wake-up of the client is spent or still to come (a read that finds
// nothing), and what the server sent is read with the answers to the client's next request, or
// by the relay the next watchServer starts.
func (s *Session) unwatchServer() {
	if !s.watching {
		return
	}
	s.watching = false
	s.mu.Lock()
	srv := s.server // the one watched: only its reader (this loop) changes it
	s.mu.Unlock()
	if srv != nil {
		srv.LoopConn().Unregister()
	}
}

// loopSignal is an error with which the client loop stops without ending the session: drive
// hands the session on. A type of its own, so that drive's and the loop's checks of a returned
// error (several per request) compare two words rather than call the runtime's interface
// comparison.
type loopSignal uint8

const (
	errYield       loopSignal = iota + 1 // waits for the client on an event loop
	errYieldServer                       // waits for the server on an event loop
	// errQueued: the session waits for a server connection in a queue (the endpoint's or the
	// pool's), with no goroutine; resumeLease runs on the client's loop when the wait ends.
	errQueued
	errPark // ends the client loop to park the session (see run)
)

func (e loopSignal) Error() string {
	switch e {
	case errYield:
		return "session: waits for the client on an event loop"
	case errYieldServer:
		return "session: waits for the server on an event loop"
	case errQueued:
		return "session: queued for a server connection"
	case errPark:
		return "session: parked"
	}
	return "session: loop signal " + strconv.Itoa(int(e))
}

// tryClient is waitIdle's read for a client served on the loops: what is there, or errYield.
func (s *Session) tryClient() error {
	if s.conn != net.Conn(s.lc) {
		return s.tryClientTLS()
	}
	if s.lc.Drained() {
		// The last read took everything there was: only the loop's next event can bring more
		// (and if one came already, OnReadable says so, and the read comes next time).
		return errYield
	}
	s.acquireActive()
	n, err := s.lc.TryRead(s.src.first[:])
	if err == evloop.ErrWouldBlock {
		return errYield
	}
	return s.resumeWith(n, err)
}

// tryClientTLS is tryClient for a client over TLS. The read goes through crypto/tls even when
// the socket has nothing more: crypto/tls may hold a record it read and has not given out yet.
// In try mode the socket's ErrWouldBlock comes through crypto/tls, which keeps the connection
// usable after it (a temporary error), with any part of a record it read kept for the next read.
func (s *Session) tryClientTLS() error {
	s.acquireActive()
	s.lc.SetTry(true)
	n, err := s.conn.Read(s.src.first[:])
	s.lc.SetTry(false)
	if n == 0 && err == evloop.ErrWouldBlock {
		return errYield
	}
	if err == evloop.ErrWouldBlock {
		err = nil
	}
	return s.resumeWith(n, err)
}

// resumeServer runs when the server connection the session waits for on a loop has something to
// read (or was closed, or its read deadline passed).
func (s *Session) resumeServer() { s.drive(s.continueRelay()) }

// continueRelay relays the answers of ySrv from where relaySteps stopped, then goes on as the
// client loop does after relayInline.
func (s *Session) continueRelay() error {
	srv := s.ySrv
	s.ySrv = nil
	if err := s.relaySteps(srv, &s.yPhase, true); err != nil {
		return err
	}
	if s.rerun {
		s.startRerun()
	}
	return s.clientLoop(context.Background())
}

// resumeLease runs on the client's loop when the session's wait for a lease (started by attach
// with router.StartLease) has ended.
func (s *Session) resumeLease() { s.drive(s.continueAttach()) }

// continueAttach goes on with the lease for the message of type yTyp, then as the client loop
// does after attach.
func (s *Session) continueAttach() error {
	typ := s.yTyp
	s.mu.Lock()
	wctx := s.waitCtx
	s.mu.Unlock()
	c, n, err, queued := s.env.Router.ResumeLease(wctx, &s.lw, s.route, s.key, s.intent, s.leaseFn)
	if queued {
		return errQueued // for the pool, once the endpoint's pool_size let it through
	}
	srv, err := s.leased(context.Background(), typ, wctx, c, n, s.clientError(err))
	if err == nil && srv != nil {
		err = s.sendAttached(srv, typ)
	}
	if err != nil {
		return err
	}
	return s.clientLoop(context.Background())
}

// Relaying reports whether a relay goroutine reads the session's server connection now (see
// readInline and relayEnds).
func (s *Session) Relaying() bool { return s.relaysLive.Load() != 0 }
