package session

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/evloop"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/wire"
)

// Serve runs the client loop until the client leaves or the session is ended, then gives the
// server connection, if any, back, closes the client's connection and calls ended with the
// session (nil: nothing). It returns then, or earlier, when the session is parked or waits on an
// event loop (see park.go and loop.go): ended is then called by whichever goroutine runs the
// session last. ended is a function the caller makes once for all its sessions, so that an idle
// session keeps no closure of its own. What ends a session from outside is Kill, Drain or
// Shutdown.
func (s *Session) Serve(ended func(*Session)) {
	s.ended = ended
	s.runFn = s.run
	s.mu.Lock()
	if s.server != nil && !s.relayRunning && s.lc == nil {
		// A session-mode client's own server connection, taken at login: read from now on, so
		// that a server ending the session (pg_terminate_backend, a shutdown) ends the client's
		// at once, as a direct connection would, even before its first request. On the loops,
		// watchServer does.
		s.startRelayLocked()
	}
	s.mu.Unlock()
	s.run()
}

// run runs the client loop on the calling goroutine until the session ends, is parked, or waits
// on an event loop; after a park the Parker calls it again on a new goroutine, after a wait for
// the client the loop does (see loop.go).
func (s *Session) run() {
	s.unwatchServer()
	s.drive(s.clientLoop(context.Background()))
}

// drive takes the client loop's result: it hands the session to whatever it waits for, or ends
// the session.
func (s *Session) drive(err error) {
	for {
		sig, _ := err.(loopSignal)
		switch sig {
		case errPark:
			if s.park() {
				return // the session is the Parker's now: touch nothing
			}
			err = s.clientLoop(context.Background())
			continue
		case errYield:
			if s.watchServer() {
				err = s.clientLoop(context.Background())
				continue
			}
			if s.lc.OnReadable(s.runFn) {
				return // the session is the loop's now: touch nothing
			}
			s.unwatchServer()
			err = s.clientLoop(context.Background())
			continue
		case errYieldServer:
			if s.ySrv.LoopConn().OnReadable(s.srvFn) {
				return // likewise
			}
			err = s.continueRelay()
			continue
		case errQueued:
			return // the session is a queue's now (see loop.go): touch nothing
		}
		break
	}
	if err != nil && !isNetErr(err) {
		s.log().Debug("client session ended", "err", err)
	}
	s.mu.Lock()
	if s.waitCancel != nil {
		s.waitCancel(nil)
	}
	s.mu.Unlock()
	s.detach()
	if s.relayStarted {
		evloop.BeforeBlock() // the relay may still be ending
		s.relays.Wait()
	}
	s.conn.Close()
	s.releaseBuffers()
	if s.ended != nil {
		s.ended(s)
	}
}

// batchOpen reports whether the server has anything of the client's not yet answered in full: an
// extended-protocol batch not ended by a Sync, or a request in flight. A message after it goes
// to the server, which answers what came before it first.
func (s *Session) batchOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open || s.skipping.Load() || s.server != nil || s.pending > 0
}

// clientLoop reads the client's messages and sends them on, until it must stop (its error), or
// the session waits for the client or a server on a loop (errYield, errYieldServer) or is queued
// (errQueued).
func (s *Session) clientLoop(ctx context.Context) error {
	err := s.clientMessages(ctx)
	if sig, _ := err.(loopSignal); sig != errQueued { // queued: the session may be running elsewhere already
		s.releaseMemory()
	}
	return err
}

func (s *Session) clientMessages(ctx context.Context) error {
	for {
		s.releaseMemory()
		if s.activeState != nil && s.replaying && !s.replayDone() {
			// Re-running a request a replica refused (see route.go) or whose server connection
			// ended (retry.go): read it from the copy.
		} else if s.activeState == nil || s.br == nil || s.r.Buffered() == 0 {
			// Nothing from the client is waiting: give the read buffer back while blocked.
			if err := s.waitIdle(); err != nil {
				return err
			}
		}
		typ, _, err := s.r.Next()
		s.noteProgress()
		if err != nil {
			if wire.IsProtocolError(err) {
				s.fail(&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation, Message: err.Error()})
			}
			return err
		}
		if typ == 'X' { // Terminate: the server connection stays with the pool
			return nil
		}
		if !wire.FrontendType(typ) && !s.batchOpen() {
			// As PostgreSQL, at once: waiting for the request's end would wait forever. (In an
			// extended-protocol batch the server has part of, it goes to the server, which
			// answers the messages before it and then ends the connection, as PostgreSQL
			// would; so it does when skipping to the Sync after an error.)
			err := &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
				Message: "invalid frontend message type " + strconv.Itoa(int(typ))}
			s.fail(err)
			return err
		}
		s.notePlanned()
		if s.skipToSync {
			if err := s.r.Skip(); err != nil {
				return err
			}
			if typ == 'S' {
				s.skipToSync = false
				if err := s.send(wire.AppendReadyForQuery(nil, 'I')); err != nil {
					return err
				}
			}
			continue
		}
		if done, err := s.routeCommand(typ); done || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		if s.holdsWhole(typ) {
			// Before a server connection is taken: waiting for memory holds none.
			if err := s.takeMemory(ctx); err != nil {
				if err := s.refuse(typ, err); err != nil {
					return err
				}
				continue
			}
		}
		srv, err := s.attach(ctx, typ)
		if err == nil && srv != nil { // nil: the request was answered with an error
			err = s.sendAttached(srv, typ)
		}
		if err != nil {
			return err
		}
	}
}

// sendAttached forwards the client's current message, of type typ, to srv (attach's), and, when
// the client has nothing more in flight, sends what is buffered and sees to the answers (see
// readInline). It returns the client loop's error, if it must stop.
func (s *Session) sendAttached(srv *pool.Conn, typ byte) error {
	if 5+s.r.BodyLen() > srv.Writer.Available() {
		// This message goes out to the socket now (see readAlong).
		s.readAlong(srv)
	}
	srv.WriteMu.Lock()
	err := s.forward(srv, typ)
	s.releaseMemory()
	last := false // the last message of an armed request: its answers are read now
	if s.heldLeft > 0 {
		s.heldLeft--
		last = s.heldLeft == 0
	}
	more := s.r.Buffered() > 0 && !last
	// Only after a message that ends a request (Sync, Query, FunctionCall) may the next one have
	// to wait (see settle.go): the other messages of a pipeline cost no look under mu.
	settle := err == nil && more && (typ == 'S' || typ == 'Q' || typ == 'F') && s.mustSettle(typ)
	if err != nil || more && !settle {
		// More from the client is waiting: it goes out with this message.
		srv.WriteMu.Unlock()
		return err
	}
	// The client has nothing more in flight: send what we have in one segment, and see to
	// the answers.
	if s.readInline(srv) {
		srv.WriteMu.Unlock() // no relay goroutine: nobody else writes to srv
		if err := s.relayInline(srv); err != nil {
			return err
		}
		if s.rerun {
			s.startRerun()
		}
		return nil
	}
	err = srv.Writer.Flush()
	srv.WriteMu.Unlock()
	if err == nil && settle {
		s.awaitSettled() // a relay reads the answers (see settle.go)
	}
	return err
}

// readInline decides who reads srv's answers once the client loop has sent srv everything the
// client sent:
//
//   - the client loop itself (inline; readInline returns true), for the common case of a client
//     that sent complete requests (Query, or extended messages up to Sync) and now waits for
//     their answers: it relays them until nothing is outstanding, which saves a goroutine
//     hand-off per request;
//   - the relay goroutine otherwise, started here if it is not running: extended messages
//     without a Sync yet (the client may be waiting on a Flush, or still sending), COPY from the
//     client, and off the event loops session mode and pinned clients (the server may send
//     notifications while the client is idle; on the loops watchServer sees them).
//
// Off the loops, an idle transaction-mode client inside a transaction leaves srv unread until its
// next request (a server that ends the session meanwhile is seen on that request).
func (s *Session) readInline(srv *pool.Conn) (inline bool) {
	s.mu.Lock()
	switch {
	case s.relayRunning || s.server != srv:
	case s.pending == 0 && !s.open:
		// Nothing asked (COPY messages outside a COPY, which the server ignores): srv is read
		// with the client's next request.
	case s.open || (!s.txMode || s.pinned) && !s.answersOnLoop(srv):
		// Only the client loop holds answers back (see route.go, retry.go); armed and retryable
		// are set only while no relay runs, so they are cleared before one starts, never beside
		// one. (A server kept between requests is watched while the client is idle on the
		// loops: see watchServer.)
		s.armed, s.retryable = false, false
		s.startRelayLocked()
	default:
		inline = true
	}
	s.mu.Unlock()
	return inline
}

// relayInline sends what the client loop forwarded and relays the answers to the client, until
// nothing is outstanding (see readInline). A nil error with srv gone: the request is to be read
// again, for another server connection (see serverFailed). errYieldServer: the answers are waited
// for on an event loop (see loop.go).
func (s *Session) relayInline(srv *pool.Conn) error {
	if s.answersOnLoop(srv) {
		if err := srv.Writer.Flush(); err != nil {
			return s.serverFailed(srv, err, srv.Writer.Buffered() > 0)
		}
		s.yPhase = phaseNext
		return s.relaySteps(srv, &s.yPhase, true)
	}
	phase := phaseNext
	if err := srv.FlushAndWait(); err != nil {
		return s.serverFailed(srv, err, srv.Writer.Buffered() > 0)
	}
	return s.relaySteps(srv, &phase, false)
}

// answersOnLoop reports whether the client loop waits for srv's inline answers on an event loop:
// both sockets are the loops'.
func (s *Session) answersOnLoop(srv *pool.Conn) bool { return s.lc != nil && srv.LoopConn() != nil }

// relaySteps is relayInline's reading of the answers. onLoop: srv's answers are waited for on an
// event loop; then, when the next message is not whole in srv's buffer yet, it returns
// errYieldServer, with ySrv set, and continueRelay takes up from there.
func (s *Session) relaySteps(srv *pool.Conn, phase *readPhase, onLoop bool) error {
	for {
		if onLoop && !srv.TryFill() {
			s.ySrv = srv
			return errYieldServer
		}
		res, err := s.serverStep(srv, phase, true)
		if res == stepReleased {
			return err // srv went back: only the client can have failed
		}
		if err != nil {
			return s.serverFailed(srv, err, false)
		}
		switch res {
		case stepIdle, stepCopyIn:
			// srv stays attached.
			s.mu.Lock()
			// Pinned by the statement that just ended: off the loops the relay reads srv
			// between requests (on them, watchServer does).
			if res == stepCopyIn || s.pinned && !onLoop {
				s.startRelayLocked()
			} else {
				srv.MarkAnswered()
			}
			s.mu.Unlock()
			return nil
		}
	}
}

// readAlong starts the relay reading srv before the client loop writes to srv's socket while
// answers are owed (a pipeline larger than srv's write buffer: many queries sent at once, or a
// large message after others): otherwise the server, writing answers no one reads, stops reading
// requests, and the client loop, writing them, waits for it forever.
func (s *Session) readAlong(srv *pool.Conn) {
	s.mu.Lock()
	if !s.relayRunning && s.server == srv && (s.pending > 0 || s.open) {
		// As readInline: only the client loop holds answers back.
		s.armed, s.retryable = false, false
		s.startRelayLocked()
	}
	s.mu.Unlock()
}

// startRelayLocked starts the relay goroutine reading s.server. Requires mu.
func (s *Session) startRelayLocked() {
	s.relayRunning, s.relayStarted = true, true
	s.relaysLive.Add(1)
	s.relays.Add(1)
	go s.relayFn() // a func value made once: starting the relay allocates nothing
}

// attach returns the server connection the current message (of type typ) goes to, acquiring one
// if the session has none, and accounts for the message. A nil Conn with a nil error means the
// client was answered with an ErrorResponse and the message consumed.
func (s *Session) attach(ctx context.Context, typ byte) (*pool.Conn, error) {
	s.mu.Lock()
	if s.closing && s.server == nil {
		s.mu.Unlock()
		return nil, errShutdown
	}
	srv := s.server
	if srv == nil && (typ == 'd' || typ == 'c' || typ == 'f') {
		// What is left of a COPY that failed and ended the transaction: the server would ignore
		// it, so it needs no server connection.
		s.mu.Unlock()
		return nil, s.r.Skip()
	}
	if srv == nil {
		if !s.replaying {
			// Both read ahead of the client: not under mu.
			s.mu.Unlock()
			s.beforeRequest(typ)
			s.mu.Lock()
		}
		s.waiting = true
		if s.waitCtx == nil {
			s.waitCtx, s.waitCancel = context.WithCancelCause(context.Background())
		}
		wctx := s.waitCtx
		s.mu.Unlock()
		var node *cluster.Node
		var err error
		switch {
		case s.rerunning:
			s.rerunning = false
			srv, node, err = s.leaseAgain(wctx)
		case s.lc != nil && s.heldMemory == 0:
			var queued bool
			s.yTyp = typ // before the wait is queued: resumeLease reads it
			srv, node, err, queued = s.env.Router.StartLease(wctx, s.endpoint, s.route, s.key, s.intent, &s.lw, s.leaseFn)
			if queued {
				return nil, errQueued
			}
			err = s.clientError(err)
		default:
			srv, node, err = s.acquire(wctx, wire.SeverityError)
		}
		return s.leased(ctx, typ, wctx, srv, node, err)
	}
	return s.accountLocked(typ, srv)
}

// leased takes the outcome of attach's wait for a server connection (srv and node, or err, a
// *wire.Error): it answers the client if there is none, or attaches it and accounts for the
// message, as attach does.
func (s *Session) leased(ctx context.Context, typ byte, wctx context.Context, srv *pool.Conn, node *cluster.Node, err error) (*pool.Conn, error) {
	s.mu.Lock()
	s.waiting = false
	if s.closing {
		// Killed or drained while it waited: the client was told it is ended, so its request
		// must not reach a server now (see stopWaitLocked).
		s.mu.Unlock()
		if err == nil {
			s.env.Router.Release(s.endpoint, srv, node, false)
		}
		return nil, errShutdown
	}
	if context.Cause(wctx) == errClientCancel {
		// The client cancelled the request while it waited (see Cancel). It has not
		// reached a server, even if a connection came at the last moment: end it as
		// PostgreSQL ends a cancelled statement.
		s.waitCtx, s.waitCancel = context.WithCancelCause(ctx)
		s.mu.Unlock()
		if err == nil {
			s.env.Router.Release(s.endpoint, srv, node, false)
		}
		s.log().Debug("request cancelled by the client while waiting for a server connection")
		return nil, s.refuse(typ, errCanceled)
	}
	if err != nil {
		s.mu.Unlock()
		s.log().Warn("request refused: no server connection", "err", err.(*wire.Error).Message)
		return nil, s.refuse(typ, err)
	}
	s.key = srv.Key()
	s.attachLocked(srv, node)
	if s.routes() {
		s.leaseWrites = s.intent.Route == classify.RouteWriter
		s.env.Routes.count(s.intent)
		if s.armed && node.Role() != cluster.RoleReader {
			s.armed = false // a read that fell back to the writer: no refusal to hold back for
			if !s.retryable {
				s.heldLeft = 0
			}
		}
	}
	return s.accountLocked(typ, srv)
}

// accountLocked accounts for the message of type typ about to go to srv, the session's server
// connection. Requires mu, which it releases.
func (s *Session) accountLocked(typ byte, srv *pool.Conn) (*pool.Conn, error) {
	if s.skipping.Load() {
		// An extended-protocol message failed: the server skips everything until a Sync, and
		// so does pgtide (see reqlog.go). Not a message of a type no client sends: the server
		// ends the connection at that even while it skips, and so it does here.
		if typ != 'S' && wire.FrontendType(typ) {
			s.mu.Unlock()
			return nil, s.r.Skip()
		}
		s.skipping.Store(false)
	}
	s.countLocked(typ)
	if s.busySince == 0 {
		s.busySince = time.Now().UnixNano()
	}
	s.mu.Unlock()
	return srv, nil
}

// countLocked accounts for the client message of type typ about to be sent to the server (see
// reqlog.go). Requires mu.
func (s *Session) countLocked(typ byte) {
	switch typ {
	case 'Q', 'F':
		s.pending++
		s.reqSent++
		s.reqs.push(logQuery)
	case 'S':
		if s.copySeg {
			s.copySyncs++ // ignored by the server in copy-in (see copy.go)
			break
		}
		s.pending++
		s.reqSent++
		s.open = false
		s.reqs.push(logSync)
	case 'd':
		// COPY data belongs to a request already counted.
	case 'c', 'f':
		s.copySeg = false
		s.reqs.push(logCopyDone)
	case 'E':
		s.open = true
		s.logLocked(logExecute)
	case 'H':
		if !s.copySeg { // ignored by the server in copy-in
			s.open = true
		}
	case 'P', 'C':
		s.open = true // a request until Sync
		s.logLocked(logParse)
	default:
		s.open = true // Bind, Describe
		s.logLocked(logExtended)
	}
}

// attachLocked makes srv (on node, counted by the router) the session's server connection, with
// a fresh account of its requests, and brings its settings in line with the client's in a hidden
// request that goes out with the client's first message. Requires mu.
func (s *Session) attachLocked(srv *pool.Conn, node *cluster.Node) {
	s.server = srv
	s.node = node
	s.attachedAt = time.Now().UnixNano()
	s.busySince = s.attachedAt // the message that attached it is on its way
	s.pending, s.open = 0, false
	s.reqSent, s.reqDone = 0, 0
	s.expect.reset()
	s.deallocs.reset()
	clear(s.refPortals) // portals end with the transaction, which ended with the last attachment
	s.resetHiddenLocked()
	s.reqs.reset()
	s.answered = 0
	clear(s.execNames)
	s.execNames = s.execNames[:0]
	s.fatalRelayed = false
	if s.settle != nil {
		s.settle.reset()
	}
	s.skipping.Store(false)
	s.copySeg, s.copySyncs, s.copyUnsure, s.copyIn = false, 0, false, 0
	if preamble := s.paramSync(srv); len(preamble) > 0 {
		s.hideLocked(s.reqSent, false)
		writeQuery(srv, preamble) // buffered
	}
}

var errShutdown = errors.New("session: shutting down")

// errClientCancel ends a wait for a server connection: the client sent a CancelRequest.
var errClientCancel = errors.New("session: cancelled by the client")

// errCanceled is what the client sees for a request cancelled before it reached a server, as
// PostgreSQL words it.
var errCanceled = &wire.Error{Severity: wire.SeverityError, Code: wire.CodeQueryCanceled,
	Message: "canceling statement due to user request"}

// acquire leases a server connection for the client's next transaction (see router.Lease),
// counted by the router on its node until released. A failure is a *wire.Error with the given
// severity.
func (s *Session) acquire(ctx context.Context, severity string) (*pool.Conn, *cluster.Node, error) {
	c, n, err := s.env.Router.Lease(ctx, s.endpoint, s.route, s.key, s.intent)
	if err != nil {
		return nil, nil, err.(*router.LeaseError).ClientError(severity)
	}
	s.key = c.Key()
	return c, n, nil
}

// clientError is acquire's account of a lease's outcome, for the router's other ways to lease:
// a *router.LeaseError becomes the client's *wire.Error (severity ERROR).
func (s *Session) clientError(err error) error {
	if err != nil {
		return err.(*router.LeaseError).ClientError(wire.SeverityError)
	}
	return nil
}

// refuse answers a request that could not get a server connection, or was cancelled while it
// waited for one, as PostgreSQL answers a failed request: ErrorResponse, then ReadyForQuery once
// the request is over (at Sync for the extended protocol). It returns an error only when the
// session must end.
func (s *Session) refuse(typ byte, err error) error {
	we := err.(*wire.Error)
	countError(s.env.Errors, we.Code)
	if err := s.r.Skip(); err != nil {
		return err
	}
	msg := we.Append(nil)
	if we.Severity == wire.SeverityFatal {
		s.send(msg)
		return err
	}
	switch typ {
	case 'Q', 'F', 'S':
		msg = wire.AppendReadyForQuery(msg, 'I')
	default:
		s.skipToSync = true
	}
	return s.send(msg)
}

// relay reads srv in its own goroutine (see readInline) until srv is given back, fails, or is
// interrupted by detach; or, for a session served on the event loops, until the client has
// nothing in flight (see relayEnds).
func (s *Session) relay() {
	defer s.relays.Done()
	defer s.relaysLive.Add(-1) // the relay touches nothing of the session's after this
	s.mu.Lock()
	srv := s.server
	s.mu.Unlock()
	phase := phaseNext
	for {
		res, err := s.serverStep(srv, &phase, false)
		if res == stepReleased {
			return
		}
		if err != nil {
			s.relayStopped(srv, err)
			return
		}
		if res != stepCopyIn && s.relayEnds(srv) {
			return
		}
	}
}

// relayEnds ends the relay of a session served on the event loops (both sockets the loops')
// when nothing is in flight: the last request answered (or only a message the server sent
// unasked relayed), nothing of srv's buffered, no COPY, hidden request, skipping, settling wait
// or interruption under way, and no FATAL relayed (the relay reads on to the server's end). The
// client loop reads srv from then on: inline with the client's next request, and between
// requests through watchServer, which the relay's wake-up of the client's registration (wakeFn)
// makes it run. So a session that needed a relay for a while (a notification while idle, COPY,
// extended messages without a Sync) is served on the loops again, with no goroutine, as before
// it. It reports whether the relay is to end.
//
// A ReadyForQuery that copyUnsure says may still come (see copy.go) does not keep the relay:
// unasked, it is found by watchServer, whose relay forwards it; ahead of the answers to the
// client's next request, it ends the client loop's inline reading early, and the rest comes the
// same way. The client gets the server's messages in order either way, as before.
func (s *Session) relayEnds(srv *pool.Conn) bool {
	if s.lc == nil || srv.LoopConn() == nil || srv.Reader.Buffered() > 0 {
		return false
	}
	s.mu.Lock()
	end := s.relayRunning && s.server == srv && s.pending == 0 && !s.open && !s.closing &&
		!s.interrupted && !s.copySeg && !s.skipping.Load() && s.hiddenN.Load() == 0 &&
		(s.activeState == nil || s.settled == nil && !s.fatalRelayed) // after a FATAL: its end
	if end {
		s.relayRunning = false
	}
	s.mu.Unlock()
	if end {
		s.wakeFn() // the client loop, idle on its loop, watches srv (see drive)
	}
	return end
}

// stepResult says what serverStep's message meant for whoever reads the server.
type stepResult int

const (
	stepMore     stepResult = iota // more is to come
	stepIdle                       // a ReadyForQuery answered the last request sent; srv stays attached
	stepReleased                   // a ReadyForQuery ended the transaction; srv was given back
	stepCopyIn                     // the server waits for COPY data from the client
)

// serverStep reads a message from srv and forwards it to the client, with any more messages
// already buffered (or handles the answers to a hidden request, see hidden.go; *phase is the
// caller's record of whose request it reads, phaseNext at the start of one).
// At a ReadyForQuery it accounts for the request it ends and, in transaction mode, gives srv back
// when the client has nothing in flight. Only the one reader of srv calls it: the client loop
// (inline) or the relay. A stepReleased result may come with the error of writing to the client.
func (s *Session) serverStep(srv *pool.Conn, phase *readPhase, inline bool) (stepResult, error) {
	sr := srv.Reader
	typ, _, err := sr.Next()
	if err != nil {
		return stepMore, err
	}
	if *phase == phaseNext {
		*phase = s.nextPhase()
	}
	hidden := *phase != phaseClient
	s.wmu.Lock()
	w := s.writer()
	if hidden && typ != 'Z' {
		err = s.hiddenMessage(srv, typ, *phase == phaseRestore)
		s.wmu.Unlock()
		return stepMore, err
	}
	for typ != 'Z' {
		if s.armed || s.retryable || s.dropping {
			held, err := s.heldMessage(srv, typ)
			if err != nil || held {
				s.wmu.Unlock()
				return stepMore, err
			}
		}
		if err = s.relayMessage(srv, typ); err != nil {
			s.wmu.Unlock()
			return stepMore, err
		}
		if typ == 'G' || typ == 'W' || sr.Buffered() < 5 || inline && s.answersOnLoop(srv) && !sr.Ready() {
			// The server waits for COPY data, or sent nothing more yet (whole, when the
			// answers are waited for on a loop, which must not wait for the rest): the client
			// gets what there is.
			err = w.Flush()
			s.wmu.Unlock()
			if err == nil && (typ == 'G' || typ == 'W') {
				return stepCopyIn, nil
			}
			return stepMore, err
		}
		// The next message's header is here: keep going without letting go of the client.
		if typ, _, err = sr.Next(); err != nil {
			s.wmu.Unlock()
			return stepMore, err
		}
	}
	body, err := sr.Body()
	if err == nil && len(body) != 1 {
		err = &wire.MalformedError{Type: 'Z', Len: len(body) + 4}
	}
	if err != nil {
		s.wmu.Unlock()
		return stepMore, err
	}
	status := body[0]
	if !hidden {
		s.noteProgress()
		cs := srv.Counters()
		cs.Queries.Add(1)
		if status == 'I' {
			cs.Transactions.Add(1)
		}
	}

	var quiet, idle, release, reset, interrupted, closing, unsure bool
	var node *cluster.Node
	// decideLocked gives srv back if the client has nothing in flight. Requires mu.
	decideLocked := func() {
		quiet = s.pending == 0 && !s.open
		idle = quiet && s.txStatus == 'I'
		release = idle && (s.txMode && !s.pinned || s.closing)
		reset = !s.txMode || s.pinned
		if release {
			s.noteReleaseLocked()
			s.server, node, s.node = nil, s.node, nil
			s.relayRunning = false
			interrupted, s.interrupted = s.interrupted, false
			unsure = s.copyUnsure
		}
		closing = s.closing
	}
	// Account for the request before the client can see its end: a client that sends its
	// next statement the moment it reads this ReadyForQuery must find the session idle.
	s.mu.Lock()
	if s.pending > 0 {
		s.pending--
	}
	if !hidden && s.busySince != 0 {
		now := time.Now().UnixNano()
		srv.Counters().QueryNanos.Add(now - s.busySince)
		s.busySince = 0
		if s.pending > 0 || s.open {
			s.busySince = now // the next pipelined request's time starts here
		}
	}
	s.txStatus = status
	// The client sees one ReadyForQuery per request of its own: a restore's stands in for the
	// one of the request it follows (see hidden.go).
	var showReady bool
	if hidden {
		showReady = *phase == phaseRestore
		s.hiddenDoneLocked()
	} else {
		s.reqs.popRequest()
		s.answered = 0 // the messages it answered were before it
		// Whatever was held back goes out with this ReadyForQuery.
		s.armed, s.retryable = false, false
		s.onReadyLocked(srv)
		s.applyPendingLocked(srv, status)
		showReady = !s.restoreNextLocked() && !s.dropping
	}
	*phase = phaseNext
	if inline {
		// The client loop is here, not reading the client: nothing can be in flight that is not
		// accounted for yet, so decide now. wmu is still held, so a shutdown notice cannot
		// overtake the ReadyForQuery.
		decideLocked()
	}
	s.mu.Unlock()
	if showReady {
		w.Write(wire.AppendReadyForQuery(w.AvailableBuffer(), status))
	}
	err = w.Flush() // nothing to send after most hidden requests: no write
	if inline && idle && err == nil {
		s.idleWriter() // between transactions the write buffer goes back
	}
	s.wmu.Unlock()
	if !inline {
		if err != nil {
			return stepMore, err
		}
		// Give the server connection back only if the client has not sent anything since.
		s.mu.Lock()
		decideLocked()
		s.mu.Unlock()
		if idle {
			s.wmu.Lock()
			s.idleWriter()
			s.wmu.Unlock()
		}
	}
	if !release {
		if err == nil && quiet {
			return stepIdle, nil
		}
		return stepMore, err
	}
	if interrupted {
		// detach or Kill set a read deadline just before we took mu; no one can after.
		srv.NetConn().SetReadDeadline(time.Time{})
	}
	// The server has answered everything, but the client loop may still be returning from the
	// Flush that sent it: wait for that before anyone else may write.
	srv.WriteMu.Lock()
	srv.WriteMu.Unlock()
	if unsure {
		srv.MarkBroken() // a ReadyForQuery may still come (see copy.go)
	}
	s.env.Router.Release(s.endpoint, srv, node, reset)
	if closing {
		s.endAtBoundary()
	}
	return stepReleased, err
}

// relayStopped handles the end of the relay other than a release: the server failed, the client
// could not be written to, or detach interrupted the read.
func (s *Session) relayStopped(srv *pool.Conn, err error) {
	interrupted := errors.Is(err, os.ErrDeadlineExceeded)
	s.mu.Lock()
	told := s.activeState != nil && s.fatalRelayed
	// Clean: detach interrupted a relay with nothing in flight, on a server that is still whole
	// (one that sent a FATAL is ending: the client may have left before its end was read).
	clean := interrupted && !told && s.pending == 0 && !s.open && s.txStatus == 'I' && srv.Reader.Buffered() == 0
	node := s.node
	s.server, s.node = nil, nil
	s.relayRunning, s.interrupted = false, false
	closing := s.closing
	reset := !s.txMode || s.pinned
	unsure := s.copyUnsure
	s.settledLocked(true)
	s.mu.Unlock()
	if clean && unsure {
		srv.MarkBroken() // a ReadyForQuery may still come (see copy.go)
	}
	if clean {
		s.mu.Lock()
		s.noteReleaseLocked()
		s.mu.Unlock()
		// Only detach interrupts a clean relay, after the client loop ended: nothing is writing.
		srv.NetConn().SetReadDeadline(time.Time{})
		s.env.Router.Release(s.endpoint, srv, node, reset)
		return
	}
	srv.MarkBroken()
	srv.NetConn().Close() // unblocks a client loop writing to it
	srv.WriteMu.Lock()
	srv.WriteMu.Unlock()
	s.env.Router.Release(s.endpoint, srv, node, false)
	switch {
	case closing:
	case s.clientClosed.Load():
		// The client went away while its results were being written (or stopped reading them):
		// the server connection, cut in the middle of an answer, cannot be lent again.
		s.log().Info("client connection failed while its results were relayed; closing its server connection",
			"server", srv.Key().Node, "err", err)
	default:
		// The server went away under the client (crash, restart, terminated backend): the
		// client's session or transaction is lost, so end it, as a direct connection would.
		// A server that said why with a FATAL the client got has told it already.
		s.log().Warn("server connection lost", "server", srv.Key().Node, "err", err)
		if !told {
			s.fail(&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeConnectionFailure,
				Message: "pgtide: the server connection was lost: " + wire.NetFailure(err)})
		} else {
			s.ext.Load().SetWriteDeadline(time.Now().Add(time.Second)) // as fail's
			s.send(nil)                                                // what was relayed, the FATAL last
		}
	}
	s.closeClient() // ends the client loop
}

// detach stops the relay (if any) once the client loop has ended; the relay gives the server
// back, reset for reuse when it was idle, closed otherwise.
func (s *Session) detach() {
	s.mu.Lock()
	s.closing = true
	if s.server != nil && !s.relayRunning {
		s.startRelayLocked() // nobody reads the server (see readInline): the relay ends it
	}
	s.interruptLocked()
	s.mu.Unlock()
}

// interruptLocked makes a blocked read of the server (the relay's, or the client loop's inline)
// return, so the server is given back. It must run under mu: once the server has been released,
// the connection belongs to someone else.
func (s *Session) interruptLocked() {
	if s.server != nil {
		s.server.NetConn().SetReadDeadline(time.Unix(1, 0))
		s.interrupted = true
	}
}

// Shutdown asks the session to end at its next transaction boundary: at once if it is between
// transactions, otherwise when the running transaction ends.
func (s *Session) Shutdown() { s.Drain("") }

// Drain is Shutdown with the reason the client reads in its FATAL 57P01 ("" for pgtide shutting
// down): a reload removed the session's endpoint.
func (s *Session) Drain(reason string) {
	s.mu.Lock()
	s.closing = true
	if reason != "" {
		s.closeReason = reason
	}
	s.stopWaitLocked()
	boundary := s.server == nil || (s.pending == 0 && !s.open && s.txStatus == 'I')
	s.mu.Unlock()
	if boundary {
		s.endAtBoundary()
	}
}

// dropWaitLocked lets go of the wait context of a session that does not wait (an idle client's:
// see park.go); its next wait makes another. Nothing holds it then: a wait's users are done with
// it once leased has cleared waiting. Requires mu.
func (s *Session) dropWaitLocked() {
	if !s.waiting {
		s.waitCtx, s.waitCancel = nil, nil
	}
}

// stopWaitLocked ends the session's wait for a server connection, if it waits, once it is
// closing: the wait gives up its place in the queue at once, and the request that waited is
// not sent (see leased). Requires mu.
func (s *Session) stopWaitLocked() {
	if s.waiting {
		s.waitCancel(errShutdown)
		s.env.Router.AbandonLease(&s.lw, errShutdown) // a wait without a goroutine (loop.go)
	}
}

// endAtBoundary tells the client why it is ended (pgtide shutting down, unless Drain said
// otherwise) and closes its connection.
func (s *Session) endAtBoundary() {
	s.mu.Lock()
	msg := "terminating connection because pgtide is shutting down"
	if s.closeReason != "" {
		msg = "terminating connection because " + s.closeReason
	}
	s.mu.Unlock()
	s.fail(&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeAdminShutdown, Message: msg})
	s.closeClient()
}

// Kill closes the client connection now (shutdown_timeout passed, KILL_CLIENT); a transaction in
// progress is rolled back by the server when its connection is closed. A request still running
// there is cancelled first, through dial (nil: not cancelled), so the server does not go on with
// it, holding a connection slot, after pgtide has let go of the connection.
func (s *Session) Kill(dial func(network, addr string) (net.Conn, error)) {
	s.mu.Lock()
	s.closing = true
	s.stopWaitLocked()
	srv := s.server
	running := srv != nil && (s.pending > 0 || s.open) && dial != nil
	if running {
		s.env.Pools.BeginCancel(srv) // not lent to anyone until the cancel is delivered
	}
	s.interruptLocked()
	s.mu.Unlock()
	s.closeClient()
	if running {
		if err := sendCancel(dial, srv); err != nil {
			s.log().Warn("could not cancel the killed client's query", "server", srv.Key().Node, "err", err)
		}
		s.env.Pools.EndCancel(srv)
	}
}

// Cancel forwards a CancelRequest to the server running this client's request, or ends the
// request's wait for a server connection. It does nothing when the client has nothing running.
//
// No lock is held while the request goes out, so a slow server delays no answer. What the lock
// used to guarantee, that the cancel cannot hit another client's query on the same server
// connection, the pool keeps: the connection is marked under mu, while this session still holds
// it, and if it is released before the cancel has been delivered the pool lends it to no one
// until then (pool.Manager.BeginCancel).
func (s *Session) Cancel(dial func(network, addr string) (net.Conn, error)) {
	s.mu.Lock()
	if s.waiting {
		s.waitCancel(errClientCancel)
		s.env.Router.AbandonLease(&s.lw, context.Canceled) // a wait without a goroutine (loop.go)
		s.mu.Unlock()
		return
	}
	srv := s.server
	if srv == nil || (s.pending == 0 && !s.open) {
		s.mu.Unlock()
		return
	}
	s.env.Pools.BeginCancel(srv)
	s.mu.Unlock()
	defer s.env.Pools.EndCancel(srv) // delivered: the connection may be lent again
	if err := sendCancel(dial, srv); err != nil {
		s.log().Warn("could not forward cancel request", "server", srv.Key().Node, "err", err)
	}
}

// cancelTimeout bounds sending a CancelRequest and waiting for the server to close it, once the
// connection is open: the server connection is lent to no one meanwhile.
const cancelTimeout = 2 * time.Second
