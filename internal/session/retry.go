package session

// Failover retry (retry_on_failover). A transaction-mode request sent outside a transaction
// block — a simple Query, or extended-protocol messages up to Sync, that the client sent alone
// (nothing of its next request behind it) and that fits the client read buffer — is kept
// (held, as route.go keeps a request for the safety net) and read inline by the client loop.
// Its answers are held back while they are acknowledgements the server sends before it runs
// anything (ParseComplete, BindComplete, descriptions, NoData, CloseComplete). If the server
// connection ends before any other answer, nothing has reached the client, and the request is
// run again, once, on the server connection the router gives it anew (after a failover: the new
// writer, once there is one; one that answers an empty query first, see leaseAgain), unless it
// may have committed already:
//
//   - FATAL 57P01 (admin_shutdown: a fast shutdown, pg_terminate_backend) as its first answer,
//     or its last bytes never left pgtide: it did not commit. PostgreSQL acts on SIGTERM only
//     at points where it checks for interrupts, holds interrupts off while it commits, and
//     puts CommandComplete in its output buffer before such a point comes again (right after
//     the commit for a simple Query, before the commit at Sync for the extended protocol), so a
//     FATAL that follows a commit always follows its CommandComplete. Re-run if every statement
//     in it commits only at its end (classify.SingleTransaction: queries and DML; not CALL or
//     DO, whose procedures may commit midway, nor transaction control or utility commands).
//   - The connection ended without that — end of file or a reset (the backend was killed, the
//     host or the network failed), a warning that the server is going away (57P02 after another
//     backend crashed, 57P01 at an immediate shutdown: both sent from a SIGQUIT handler, which
//     runs at once, even between the commit record reaching disk and CommandComplete) — or any
//     notice arrived first (with synchronous replication a backend terminated while it waits
//     for its standby warns that the transaction "has already committed locally", then closes):
//     it may have committed. Re-run only if every statement in it provably reads
//     (classify.ClassifyRoute: ReasonReadOnly), and never after a notice other than those
//     warnings.
//
// Statements it binds by name are judged by the text they were parsed from; the judging happens
// only once the connection has failed. Functions may act outside the transaction (dblink,
// sequences): a re-run repeats that, as it would for a client that retries.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"syscall"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// retries reports whether the session's requests may be run again after a failover (see the
// top of this file).
func (s *Session) retries() bool { return s.txMode && s.env.Config().Proxy.RetryOnFailover }

// armRetry keeps the request read ahead of (req) for a failover retry when it may be one (see
// the top of this file). Called by the client loop before the request gets a server connection,
// after planRoute (which may keep it already).
func (s *Session) armRetry(req *aheadRequest) {
	s.retryable, s.endNotice = false, false
	if !s.armed {
		s.heldLeft = 0
	}
	if !s.retries() {
		return
	}
	if !req.complete || s.br.Buffered() != len(req.bytes) {
		return // too long to keep, or the client sent more behind it
	}
	if req.last != 'Q' && req.last != 'S' {
		return // Flush: answers the client reads before its Sync; FunctionCall: no SQL to judge
	}
	s.mu.Lock()
	idle := s.txStatus == 'I' && !s.pinned
	s.mu.Unlock()
	if !idle || !req.sendableAgain(s) {
		return
	}
	if !s.armed {
		s.keepHeld(req.bytes)
	}
	s.heldLeft, s.heldMark, s.retryable = req.msgs, -1, true
}

// endKind is how a server connection ended under a retryable request.
type endKind uint8

const (
	endTerminated endKind = iota // FATAL 57P01 before any other answer: it did not commit
	endUnsent                    // its last bytes never left pgtide: it did not commit
	endLost                      // anything else: it may have committed
)

func (e endKind) String() string {
	switch e {
	case endTerminated:
		return "terminated (57P01)"
	case endUnsent:
		return "unsent"
	}
	return "lost"
}

// errRerun: the server ended the connection under a retryable request that is to run again
// elsewhere (see serverFailed).
var errRerun = errors.New("session: the server connection ended before answering; running the request again")

// rerunAfterError decides, for an ErrorResponse body that came before any answer to the held
// request other than acknowledgements (or answered a hidden request before it), whether the
// request runs again elsewhere: the server ended the connection with FATAL 57P01 or 57P02, and
// mayRerun agrees. Called by the reader with wmu held.
func (s *Session) rerunAfterError(body []byte) bool {
	if string(wire.ErrorSeverity(body)) != wire.SeverityFatal {
		return false
	}
	switch string(wire.ErrorCode(body)) {
	case wire.CodeAdminShutdown:
		return s.mayRerun(endTerminated)
	case codeCrashShutdown:
		return s.mayRerun(endLost)
	}
	return false
}

// codeCrashShutdown is SQLSTATE 57P02, crash_shutdown.
const codeCrashShutdown = "57P02"

// isShutdownWarning reports whether a NoticeResponse body is a server's warning that it is going
// away at once (57P01 at an immediate shutdown or after a synchronous commit's wait was cut short,
// 57P02 after another backend crashed).
func isShutdownWarning(body []byte) bool {
	if string(wire.ErrorSeverity(body)) != "WARNING" {
		return false
	}
	code := string(wire.ErrorCode(body))
	return code == wire.CodeAdminShutdown || code == codeCrashShutdown
}

// mayRerun decides whether the retryable request, whose server connection ended as end says
// before anything of its answer reached the client, runs again; either way it is no longer
// retryable. It counts and logs a request that is not run again because it may have committed.
// Called by the server's reader, the client loop (see readInline).
func (s *Session) mayRerun(end endKind) bool {
	if !s.retryable {
		return false
	}
	s.retryable = false
	if s.heldMark > 0 {
		return false // something before the held answers is in the write buffer
	}
	s.mu.Lock()
	gone := s.closing || s.interrupted
	s.mu.Unlock()
	if gone {
		return false // the session is ending (shutdown, timeout, the client left)
	}
	single, reads := s.heldKinds()
	if reads || single && end != endLost && !s.endNotice {
		return true
	}
	s.env.Routes.failoverOutcome(FailoverUnsafe)
	s.log().Info("server connection ended before answering; not running the request again: it may have committed",
		"end", end.String(), "warned", s.endNotice, "fingerprint", s.fingerprint(s.held))
	return false
}

// heldKinds judges the held request's statements: single, every text it runs commits only at its
// end (classify.SingleTransaction); reads, every text provably reads (classify.ClassifyRoute).
// Statements it binds that it does not parse are judged by the text they were parsed from.
// Only run once a server connection has failed.
func (s *Session) heldKinds() (single, reads bool) {
	single, reads = true, true
	fns := s.env.functions(s.key.Database)
	judge := func(text []byte) {
		single = single && classify.SingleTransaction(text)
		reads = reads && classify.ClassifyRoute(text, fns).Reason == classify.ReasonReadOnly
	}
	var parsed [4][]byte // names the request parses (judged at their Parse)
	n := 0
	for typ, body, rest, ok := nextMessage(s.held); ok; typ, body, rest, ok = nextMessage(rest) {
		switch typ {
		case 'Q':
			judge(trimNul(body))
		case 'P':
			name, query, ok := twoCStrings(body)
			if !ok || n == len(parsed) {
				return false, false
			}
			judge(query)
			parsed[n] = name
			n++
		case 'B':
			_, stmt, ok := twoCStrings(body)
			if !ok {
				return false, false
			}
			seen := false
			for _, name := range parsed[:n] {
				seen = seen || bytes.Equal(name, stmt)
			}
			if seen {
				continue
			}
			text, ok := s.statementText(stmt)
			if !ok {
				return false, false
			}
			judge(text)
		case 'D', 'E', 'C', 'S':
		default:
			return false, false
		}
	}
	return single, reads
}

// statementText returns the SQL the client's statement name ("" for the unnamed one) was parsed
// from, false if pgtide does not know it.
func (s *Session) statementText(name []byte) ([]byte, bool) {
	s.mu.Lock()
	key := s.unnamed.key
	if len(name) > 0 {
		key = ""
		if def := s.stmts[string(name)]; def != nil {
			key = def.key
		}
	}
	s.mu.Unlock()
	text, _, ok := bytes.Cut([]byte(key), []byte{0})
	return text, ok
}

// serverFailed handles srv failing with err while the client loop reads it inline (see
// relayInline): the request runs again elsewhere if it may (see mayRerun), otherwise the session
// ends as relayStopped says. unsent: the request's last bytes never left pgtide.
func (s *Session) serverFailed(srv *pool.Conn, err error, unsent bool) error {
	rerun := errors.Is(err, errRerun)
	if !rerun && s.retryable && connectionEnded(err) {
		end := endLost
		if unsent {
			end = endUnsent
		}
		rerun = s.mayRerun(end)
	}
	if !rerun {
		s.relayStopped(srv, err)
		return err
	}
	s.rerunElsewhere(srv, err)
	return nil
}

// connectionEnded reports whether err is the server connection ending under a request: end of
// file or a reset, not a deadline (pgtide's own interruption) nor garbage from the server.
func connectionEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// rerunElsewhere gives up srv, which ended (err) under the held request before anything of its
// answer reached the client, drops what was held back, and makes the client loop read the
// request again: it gets a server connection anew, from the router, as for a new transaction.
func (s *Session) rerunElsewhere(srv *pool.Conn, err error) {
	s.mu.Lock()
	node := s.node
	s.server, s.node = nil, nil
	// The request's effects on the session are applied when it runs again.
	s.pendingExtra, s.pendingReset, s.failed = nil, nil, false
	s.mu.Unlock()
	srv.MarkBroken()
	srv.NetConn().Close()
	s.env.Router.Release(s.endpoint, srv, node, false)
	s.lockWriter()
	if s.w != nil && s.heldMark == 0 {
		s.w.Reset(&s.out) // what was held back: nothing of it reached the client
	}
	s.wmu.Unlock()
	// The re-run holds back anew for the safety net, if armed; it is not retryable again.
	s.heldMark, s.endNotice = -1, false
	s.env.Routes.failoverOutcome(FailoverRetried)
	msg := err.Error()
	if errors.Is(err, errRerun) {
		msg = "terminated by the server"
	}
	s.log().Info("server connection ended before answering; running the request again",
		"server", srv.Key().Node, "err", msg, "fingerprint", s.fingerprint(s.held))
	s.replayHeld()
	s.rerunning = true
}

// leaseAgain is acquire for a request run again after its server connection ended (see
// rerunElsewhere). A server shutting down terminates all its backends at once, idle ones too,
// and the pool's check of an idle connection cannot see a termination still on its way, so the
// connection it lends now is first asked an empty query; one that does not answer is closed and
// another leased (as many as the pool may have idle, and one more), so that the one re-run goes
// to a server that answers.
func (s *Session) leaseAgain(ctx context.Context) (*pool.Conn, *cluster.Node, error) {
	cfg := s.env.Config()
	timeout := cfg.Cluster.ServerConnectTimeout.Duration
	for try := 0; ; try++ {
		srv, node, err := s.acquire(ctx, wire.SeverityError)
		if err != nil {
			return nil, nil, err
		}
		err = srv.Exec("", timeout)
		if err == nil {
			return srv, node, nil
		}
		srv.MarkBroken()
		s.env.Router.Release(s.endpoint, srv, node, false)
		if try == cfg.Cluster.PoolSize {
			s.log().Warn("no server connection answered for a request run again", "server", srv.Key().Node, "err", err)
			return nil, nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeConnectionFailure,
				Message: "pgtide: the server connection was lost, and no other answered"}
		}
	}
}

// FailoverOutcome is what became of a request whose server connection ended before it was
// answered (see retry.go), for pgtide_failover_retries_total.
type FailoverOutcome uint8

const (
	// FailoverRetried: it ran again on another server connection.
	FailoverRetried FailoverOutcome = iota
	// FailoverUnsafe: it was not run again, because it may have committed (a write after a
	// crash, a lost connection or a warning) or may commit midway (CALL, DO, utility commands).
	FailoverUnsafe

	// NumFailoverOutcomes is the number of FailoverOutcome values.
	NumFailoverOutcomes int = iota
)

func (o FailoverOutcome) String() string {
	if o == FailoverRetried {
		return "retried"
	}
	return "unsafe"
}

func (c *RouteCounter) failoverOutcome(o FailoverOutcome) {
	if c != nil {
		c.failover[o].Add(1)
	}
}

// FailoverRetries returns how many requests outside a transaction block whose server connection
// ended before they were answered had outcome o (retry_on_failover).
func (c *RouteCounter) FailoverRetries(o FailoverOutcome) int64 {
	if int(o) >= NumFailoverOutcomes {
		return 0
	}
	return c.failover[o].Load()
}
