package session

// Routing on the auto endpoint (transaction mode). Before a transaction gets a server
// connection, the client loop reads ahead — without consuming anything — to the end of the
// client's first request (a Query, or extended-protocol messages up to Sync), classifies its SQL
// (package classify) and asks the router for a reader or the writer accordingly.
//
// The safety net. A request routed to a reader that runs outside a transaction block and can be
// sent again (no Close of a named statement, no Parse of a name the client already defined,
// nothing that opens a transaction, ending with Sync) is "armed": its bytes are kept (they fit
// the client read buffer, or it goes to the writer), and the replica's answers are held back in
// the client's write buffer until the first DataRow, CommandComplete or ErrorResponse. If that
// is an ErrorResponse by which the replica refuses only because it is a standby (SQLSTATE 25006,
// read_only_sql_transaction: the statement writes after all — a function that writes inside a
// view, a reader hint on a write; see isStandbyRefusal for the others), nothing has reached the
// client: the held answers and the error are dropped, the replica connection is given back at
// its ReadyForQuery, and the kept bytes are read again by the client loop as if the client had
// sent them anew, now for the writer. Anything else ends the holding back and the answers flow as usual; a transaction is
// never moved once anything of it has reached the client, and nothing inside a transaction
// block is ever retried. A request re-run after its server connection ended (retry.go) is kept,
// held back and read again by the same means.
//
// Read-your-writes. When a transaction that may have written ends on the writer, the session
// notes the time. Its later reads may go to a replica only once that replica has replayed the
// writer's WAL position sampled by a health check that started after that time (see
// router.Intent.After); until then they go to the writer. That costs nothing per transaction:
// no round trip at commit, one clock read when a writer transaction ends.

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/wire"
)

// routeState is a session's routing state, all owned by the client loop except where noted.
type routeState struct {
	setting routeSetting // SET pgtide.route

	// The request being held back, re-run or planned is in heldState (part of activeState).

	// lastParse is the query text of the last unnamed Parse forwarded, a part of the key the
	// unnamed statement is kept under (no copy of its own), and lastInfo its classification,
	// which came from the text alone: a client that sends the same unnamed statement again and
	// again has it classified once. Empty when there is none to reuse. Owned by the client loop.
	lastParse string
	lastInfo  classify.TextInfo
	// fnsKnown is what Env knows of the database's functions, asked at the first lookup of a
	// classification (fnsResolved; see sessionFunctions). Owned by the client loop.
	fnsKnown    classify.Functions
	fnsResolved bool

	// leaseWrites: the current server connection was leased for work that may write, so its
	// release is a write commit for read-your-writes. Guarded by Session.mu.
	leaseWrites bool
	// lastWrite is when the client's last transaction that may have written ended (unix
	// nanoseconds; 0: none yet). Written by the server's reader, read by the client loop.
	lastWrite atomic.Int64
}

// heldState is the client loop's part of routing for the request in hand (in activeState).
type heldState struct {
	// held is the armed (or retryable) request, kept for a re-run; heldLeft counts its messages
	// not yet forwarded. armed is read and cleared by the server's one reader, which the client
	// loop is while armed (see readInline): it is set before the request is forwarded.
	// heldBuf is the pooled buffer behind held while it fits one (see keepHeld).
	held     []byte
	heldBuf  *[heldKeep]byte
	heldLeft int
	armed    bool
	// retryable: the held request may be run again elsewhere if its server connection ends
	// before the server answered it (see retry.go); endNotice: a warning that the server is
	// going away is among its held answers. Owned like armed.
	retryable bool
	endNotice bool
	// rerunning: the request being read again is a failover retry's, whose lease is checked
	// (see leaseAgain). Owned by the client loop.
	rerunning bool
	// Set by the reader at a replica's refusal: the answers until ReadyForQuery are dropped
	// (dropping), and the client loop then reads held again (rerun).
	dropping bool
	rerun    bool
	heldMark int // the client write buffer's fill when holding back began; -1 before
	// replay reads held again for the re-run; replaySrc is what is left of held.
	replay    *wire.BufReader
	replaySrc bytes.Reader
	replaying bool

	// planned holds what planRoute's classification found in the Query and Parse texts of the
	// request it read ahead of, in order, so that forwarding them does not read them again (see
	// textInfo): the first plannedN, of which plannedAt are taken. plannedLeft counts the
	// request's messages after the one being handled; once they are past, what is left of
	// planned is dropped (see notePlanned), so it never meets another request's texts.
	planned                          [4]classify.TextInfo
	plannedN, plannedAt, plannedLeft int
}

// routeSetting is the session's pgtide.route.
type routeSetting uint8

const (
	routeAuto routeSetting = iota
	routeWriter
	routeReader
)

func (r routeSetting) String() string {
	switch r {
	case routeWriter:
		return "writer"
	case routeReader:
		return "reader"
	}
	return "auto"
}

// routes reports whether the session's transactions are routed by their SQL: transaction mode on
// an auto endpoint (the route and the mode its endpoint had at login). In session mode an auto
// endpoint sends the whole session to the writer: the session's statements cannot be known when
// it gets its server connection.
func (s *Session) routes() bool { return s.txMode && s.route == router.Auto }

// aheadRequest is the client's request that starts with its current message, read ahead of
// before it gets a server connection (see peekRequest), for planRoute and armRetry.
type aheadRequest struct {
	bytes    []byte
	msgs     int
	last     byte // the type of its last message, when complete
	complete bool
	sendable int8 // sendableAgain's answer: 0 not asked yet, 1 yes, -1 no
}

// readAhead reads ahead to the end of the client's request that starts with the current message
// (of type typ), without consuming anything (see peekRequest).
func (s *Session) readAhead(typ byte) aheadRequest {
	req, msgs, last, complete := s.peekRequest(typ)
	return aheadRequest{bytes: req, msgs: msgs, last: last, complete: complete}
}

// beforeRequest does what the request that starts with the current message (of type typ) needs
// before it gets a server connection, reading ahead of it once: routing (planRoute) and keeping
// it for a failover retry (armRetry). Called by the client loop.
func (s *Session) beforeRequest(typ byte) {
	var req aheadRequest
	if s.routes() || s.retries() {
		req = s.readAhead(typ)
	}
	if s.routes() {
		s.planRoute(&req)
	}
	s.armRetry(&req)
}

// sendableAgain is Session.sendableAgain of the request, asked once.
func (r *aheadRequest) sendableAgain(s *Session) bool {
	if r.sendable == 0 {
		r.sendable = -1
		if s.sendableAgain(r.bytes) {
			r.sendable = 1
		}
	}
	return r.sendable > 0
}

// planRoute sets s.intent for the request read ahead of (req), and arms the safety net when it
// can. Called by the client loop when the session has no server connection.
func (s *Session) planRoute(req *aheadRequest) {
	s.armed, s.heldLeft, s.plannedN, s.plannedAt = false, 0, 0, 0
	if s.setting == routeWriter {
		s.intent = router.Intent{Route: classify.RouteWriter, Reason: classify.ReasonHintWriter}
		return
	}
	if !req.complete {
		// Too long to read ahead of (or the client failed): the writer, whatever it is.
		s.intent = router.Intent{Route: classify.RouteWriter, Reason: classify.ReasonTooLong}
		return
	}
	p := s.classifyRequest(req)
	s.plannedLeft = req.msgs - 1
	if s.setting == routeReader {
		p.route, p.reason = classify.RouteReader, classify.ReasonHintReader
	}
	if p.route == classify.RouteReader && s.setting != routeReader && s.replicasUnsafe() {
		p.route, p.reason = classify.RouteWriter, classify.ReasonSessionState
	}
	in := router.Intent{Route: p.route, Reason: p.reason}
	armable := p.replayable && !p.begin
	if p.route == classify.RouteReader && p.executes && !armable && !p.begin && p.reason != classify.ReasonHintReader {
		// It runs something on a replica that could not be taken back: the writer.
		in = router.Intent{Route: classify.RouteWriter, Reason: classify.ReasonNotReplayable}
	}
	if in.Route == classify.RouteReader && s.env.Config().Proxy.ReadYourWrites == config.ReadYourWritesLSN {
		if t := s.lastWrite.Load(); t != 0 {
			in.After = time.Unix(0, t)
		}
	}
	s.intent = in
	if in.Route == classify.RouteReader && armable {
		// Even a request that only prepares: a standby may refuse the Parse itself (a session
		// whose transactions default to serializable).
		s.mu.Lock()
		idle := s.txStatus == 'I'
		s.mu.Unlock()
		if idle {
			s.keepHeld(req.bytes)
			s.heldLeft, s.armed, s.heldMark = req.msgs, true, -1
		}
	}
}

// notePlanned accounts for the client's next message: one more of the request planRoute read
// ahead of, or, past its end, what planRoute classified is dropped. Called by the client loop
// for every message it reads.
func (s *Session) notePlanned() {
	if s.plannedLeft > 0 {
		s.plannedLeft--
		return
	}
	s.plannedN, s.plannedAt = 0, 0
}

// replicasUnsafe reports whether the session's own settings keep its work off replicas:
// standard_conforming_strings off (the classifier reads backslashes in '...' as PostgreSQL does
// only with it on, so it could miss a statement) or serializable transactions by default (a hot
// standby refuses them, and the safety net cannot re-run a transaction block). Settings made by
// ALTER ROLE or ALTER DATABASE are not seen; for those the safety net catches single requests.
// It is worked out with the settings' handle (computeSettingsLocked), once per change.
func (s *Session) replicasUnsafe() bool {
	s.mu.Lock()
	s.settingsLocked()
	off := s.offReplicas
	s.mu.Unlock()
	return off
}

// containsFold reports whether s contains the lower-case ASCII word w, in any case.
func containsFold[T string | []byte](s T, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		j := 0
		for j < len(w) && s[i+j]|0x20 == w[j] {
			j++
		}
		if j == len(w) {
			return true
		}
	}
	return false
}

// heldKeep is the size of the pooled buffers requests are kept in (see keepHeld); a longer one
// gets a buffer of its own, dropped when the client is idle.
const heldKeep = 1 << 10

// maxHeld bounds a request pgtide reads ahead of: the client read buffer. A longer request goes
// to the writer.
const maxHeld = clientBufferSize

// peekRequest returns the bytes of the client's request that starts with the current message:
// messages up to and including a Query, Sync, Flush or FunctionCall, or the messages that fit
// the read buffer if it is longer (complete false), with their count and the type of the last
// (when complete: the one that ends the request). It blocks until the request has arrived, as
// a server would wait for its end; a client that fails meanwhile returns what there is (the
// client loop then sees the failure).
func (s *Session) peekRequest(typ byte) (req []byte, msgs int, last byte, complete bool) {
	off, n, size := 0, s.r.BodyLen(), s.br.Size()
	// What is buffered from the current message on: all that has arrived, in one Peek; a Peek
	// for more may move it.
	buf, _ := s.br.Peek(s.br.Buffered())
	for {
		end := off + wire.HeaderLen + n
		if end > size || end > len(buf) && !s.peekMore(&buf, end) {
			return req, msgs, typ, false
		}
		req, msgs, off = buf[:end], msgs+1, end
		switch typ {
		case 'Q', 'S', 'H', 'F':
			return req, msgs, typ, true
		}
		if k := off + wire.HeaderLen; k > size || k > len(buf) && !s.peekMore(&buf, k) {
			return req, msgs, typ, false
		}
		typ = buf[off]
		n = int(int32(binary.BigEndian.Uint32(buf[off+1:]))) - 4
		if n < 0 || !wire.FrontendType(typ) {
			// Malformed, or a type no client sends: the client loop reports it, or the
			// server does, which ends the connection; nothing after it is waited for.
			return req, msgs, typ, false
		}
	}
}

// peekMore is peekRequest's wait for its request's first k bytes (at most the buffer's size):
// *buf becomes all that is buffered then. It reports whether they came.
func (s *Session) peekMore(buf *[]byte, k int) bool {
	b, err := s.br.Peek(max(k, s.br.Buffered()))
	*buf = b
	return err == nil
}

// requestPlan is what classifyRequest found in a request.
type requestPlan struct {
	route      classify.Route
	reason     classify.RouteReason
	executes   bool // it runs a statement (Query, Execute, FunctionCall)
	replayable bool // it can be sent again on the writer after a refusal (see startRerun)
	begin      bool // it opens a transaction block
}

// classifyRequest classifies the messages of req (whole messages, see peekRequest): the writer if
// any of them needs it. Unknown messages take the writer. What it finds in the texts is kept in
// s.planned for forwarding them.
func (s *Session) classifyRequest(req *aheadRequest) requestPlan {
	p := requestPlan{route: classify.RouteReader, reason: classify.ReasonReadOnly}
	// Statements parsed by this request, for its Binds (a few: more are looked up as defined
	// before, which a statement parsed here is not, so they take the writer).
	var parses [4]parsedStmt
	parsed := 0
	sendable := req.sendable >= 0 // worked out in the same walk as sendableAgain's, if not yet
	for typ, body, rest, ok := nextMessage(req.bytes); ok; typ, body, rest, ok = nextMessage(rest) {
		switch typ {
		case 'Q':
			p.executes = true
			p.take(s.planText(trimNul(body)))
		case 'P':
			name, query, ok := twoCStrings(body)
			if !ok {
				// Malformed: the client loop ends the session when it forwards it.
				p.take(classify.RouteInfo{Route: classify.RouteWriter, Reason: classify.ReasonUnclassified})
				continue
			}
			if sendable && len(name) > 0 && req.sendable == 0 && s.defined(name) {
				sendable = false
			}
			// A Parse takes its statement's route even when nothing runs it yet: what a
			// statement does to the session (a temporary table pins the client) starts at Parse.
			info := s.planText(query)
			p.take(info)
			if parsed < len(parses) {
				parses[parsed] = parsedStmt{name, info}
				parsed++
			}
		case 'B':
			_, stmt, ok := twoCStrings(body) // portal, statement
			if !ok {
				p.take(classify.RouteInfo{Route: classify.RouteWriter, Reason: classify.ReasonUnclassified})
				continue
			}
			info, found := classify.RouteInfo{}, false
			for i := parsed - 1; i >= 0 && !found; i-- { // parsed earlier in this request
				info, found = parses[i].info, string(parses[i].name) == string(stmt)
			}
			if !found {
				info = s.statementRoute(stmt)
			}
			p.take(info)
		case 'E':
			p.executes = true
		case 'H':
			sendable = false
		case 'C':
			if closesStatement(body) {
				sendable = false
			}
		case 'D', 'S':
		default: // FunctionCall and anything unexpected
			p.executes = true
			p.take(classify.RouteInfo{Route: classify.RouteWriter, Reason: classify.ReasonUnclassified})
		}
	}
	if req.sendable == 0 {
		req.sendable = -1
		if sendable {
			req.sendable = 1
		}
	}
	p.replayable = req.sendable > 0
	return p
}

// take accounts for the route of one of the request's statements: the writer if any needs it.
func (p *requestPlan) take(info classify.RouteInfo) {
	if info.Begin {
		p.begin = true
	}
	if info.Route == classify.RouteWriter && p.route == classify.RouteReader {
		p.route, p.reason = classify.RouteWriter, info.Reason
	} else if p.route == classify.RouteReader && info.Reason != classify.ReasonReadOnly {
		p.reason = info.Reason // a read-only transaction, a reader hint: say so
	}
}

// planText classifies a Query or Parse text of the request planRoute reads ahead of, keeping
// what it finds in s.planned for forwarding the text.
func (s *Session) planText(text []byte) classify.RouteInfo {
	info := s.classifyText(text)
	if s.plannedN < len(s.planned) {
		s.planned[s.plannedN] = info
		s.plannedN++
	}
	return info.RouteInfo
}

// sendableAgain reports whether req (whole messages, see peekRequest) could be sent again on
// another server connection, none of its answers having reached the client: it closes no named
// statement, parses no statement name the client had already defined (sent again, it would meet
// its own definition; a new name is forgotten before, see replayHeld), and does not end with
// Flush (the client reads answers before its Sync: they cannot be held back).
// classifyRequest works the same out in its own walk of the request.
func (s *Session) sendableAgain(req []byte) bool {
	for typ, body, rest, ok := nextMessage(req); ok; typ, body, rest, ok = nextMessage(rest) {
		switch typ {
		case 'H':
			return false
		case 'C':
			if closesStatement(body) {
				return false
			}
		case 'P':
			if name, _, ok := cbytes(body); ok && len(name) > 0 && s.defined(name) {
				return false
			}
		}
	}
	return true
}

// closesStatement reports whether a Close message's body closes a named statement.
func closesStatement(body []byte) bool { return len(body) > 2 && body[0] == 'S' }

// defined reports whether the client has defined a statement named name.
func (s *Session) defined(name []byte) bool {
	s.mu.Lock()
	defined := s.stmts[string(name)] != nil
	s.mu.Unlock()
	return defined
}

// nextMessage splits the first whole message off req (see peekRequest), ok false when none is left.
func nextMessage(req []byte) (typ byte, body, rest []byte, ok bool) {
	if len(req) < wire.HeaderLen {
		return 0, nil, nil, false
	}
	n := int(binary.BigEndian.Uint32(req[1:])) - 4
	if n < 0 || wire.HeaderLen+n > len(req) {
		return 0, nil, nil, false
	}
	return req[0], req[wire.HeaderLen : wire.HeaderLen+n], req[wire.HeaderLen+n:], true
}

// twoCStrings returns the first two NUL-terminated strings of a message body.
func twoCStrings(body []byte) (first, second []byte, ok bool) {
	first, rest, ok := cbytes(body)
	if !ok {
		return nil, nil, false
	}
	second, _, ok = cbytes(rest)
	return first, second, ok
}

// textInfo returns what the classifier finds in the SQL text of the Query or Parse being
// forwarded: what planRoute found, in order, or else a classification now: in full when route
// is true (the statement's route is kept for its executions on the auto endpoint), else only
// MaySetSessionState, which every endpoint needs for pins.
func (s *Session) textInfo(text []byte, route bool) classify.TextInfo {
	if s.plannedAt < s.plannedN {
		s.plannedAt++
		return s.planned[s.plannedAt-1]
	}
	if route {
		return s.classifyText(text)
	}
	return classify.TextInfo{MaySetSessionState: classify.MaySetSessionState(text)}
}

// classifyText classifies a Query or Parse text (see classify.Classify), or takes the answer
// kept for the last Parse when the text is the same.
func (s *Session) classifyText(text []byte) classify.TextInfo {
	if len(s.lastParse) == len(text) && s.lastParse == string(text) {
		return s.lastInfo
	}
	s.fnsKnown, s.fnsResolved = nil, false
	return classify.Classify(text, (*sessionFunctions)(s))
}

// noteParse keeps the classification of the text of an unnamed Parse being forwarded for
// classifyText, when it holds for later: key is the Parse body after the name, as kept for the
// statement (its query text is the part before the first NUL). A long text is not kept: it
// would outlive the unnamed statement.
func (s *Session) noteParse(key string, query []byte, info classify.TextInfo) {
	if !info.TextOnly || len(key) <= len(query) || len(query) > maxParseReuse {
		s.lastParse, s.lastInfo = "", classify.TextInfo{}
		return
	}
	s.lastParse, s.lastInfo = key[:len(query)], info
}

// maxParseReuse is the longest Parse text whose classification noteParse keeps.
const maxParseReuse = 1 << 10

// sessionFunctions is the classifier's view of the session's database's functions: it asks Env
// only when the classifier first looks a function up (most texts call none), once per
// classification (see classifyText).
type sessionFunctions Session

func (f *sessionFunctions) Lookup(schema, name []byte) classify.FuncKind {
	s := (*Session)(f)
	if !s.fnsResolved {
		s.fnsKnown, s.fnsResolved = s.env.functions(s.key.Database), true
	}
	if s.fnsKnown == nil {
		return classify.FuncUnknown // as for nil Functions
	}
	return s.fnsKnown.Lookup(schema, name)
}

// parsedStmt is a statement a request parses ("" for the unnamed one), and its route.
type parsedStmt struct {
	name []byte
	info classify.RouteInfo
}

// statementRoute returns the route of the client's prepared statement name ("" for the unnamed
// one): the classification of its Parse, or the writer for a statement pgtide does not know.
func (s *Session) statementRoute(name []byte) classify.RouteInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(name) == 0 {
		return s.unnamed.route
	}
	if def := s.stmts[string(name)]; def != nil {
		return def.route
	}
	return classify.RouteInfo{Route: classify.RouteWriter, Reason: classify.ReasonUnclassified}
}

// functions returns what is known of database's functions, nil for nothing.
func (e *Env) functions(database string) classify.Functions {
	if e.Functions == nil {
		return nil
	}
	return e.Functions(database)
}

// trimNul drops a Query body's terminating NUL.
func trimNul(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}

// holdBack decides, for a server message of type typ (not ReadyForQuery) answering an armed or
// retryable request, whether the answers so far stay held back (true), or the transaction is
// committed to this server and they flow (false, s.armed and s.retryable cleared). Called by the
// reader with wmu held.
func (s *Session) holdBack(typ byte, bodyLen int) bool {
	switch typ {
	case '1', '2', 't', 'T', 'n', '3':
		// Parse/Bind/Close complete, parameter and row descriptions, NoData: what the server
		// sends before it runs anything.
	case 'N', 'S':
		// Notices and parameter changes: held for the safety net. A statement that sent one
		// ran, which ends a failover retry (heldMessage keeps it for a server's warning that it
		// is going away).
		if typ == 'S' {
			s.retryable = false
		}
	default:
		s.armed, s.retryable = false, false
		return false
	}
	// Held while they fit the write buffer, which must not flush.
	if (s.armed || s.retryable) && wire.HeaderLen+bodyLen < s.w.Available() {
		return true
	}
	s.armed, s.retryable = false, false
	return false
}

// heldMessage handles a server message (not ReadyForQuery) while an armed or retryable
// request's answers are held back or a refused one's dropped. It returns true when it consumed
// the message; false when the message is to be relayed as usual (the transaction is now
// committed to this server). errRerun: the server ended the connection, and the request is to
// run elsewhere (see retry.go). Called by the reader with wmu held.
func (s *Session) heldMessage(srv *pool.Conn, typ byte) (bool, error) {
	sr := srv.Reader
	if s.dropping {
		return true, sr.Skip()
	}
	if s.heldMark < 0 {
		// Only what is written from now on can be taken back (see refusedByReplica).
		s.heldMark = s.w.Buffered()
	}
	switch typ {
	case 'E':
		body, err := sr.Body()
		if err != nil {
			return true, err
		}
		if s.armed && isStandbyRefusal(body) && s.heldMark == 0 {
			s.refusedByReplica()
			return true, nil
		}
		if s.retryable && s.rerunAfterError(body) {
			return true, errRerun
		}
		// Any other error is the client's answer: relay it as relayMessage would.
		s.armed, s.retryable = false, false
		return true, s.relayError(srv, body)
	case 'N':
		if s.retryable {
			body, err := sr.PeekBody(sr.MaxPeek())
			if err != nil {
				return true, err
			}
			if isShutdownWarning(body) {
				s.endNotice = true // the end of the connection decides (see mayRerun)
			} else {
				s.retryable = false
			}
		}
	}
	if s.holdBack(typ, sr.BodyLen()) {
		// Relayed into the write buffer, which is not flushed until the holding back ends.
		return true, s.relayMessage(srv, typ)
	}
	return false, nil
}

// isStandbyRefusal reports whether an ErrorResponse body is a replica refusing work only because
// it is a standby, which the writer would have done: SQLSTATE 25006 (read_only_sql_transaction:
// a write), or one of the errors a hot standby raises for what needs a primary, recognised by
// SQLSTATE and PostgreSQL's English message (with lc_messages set to another language only 25006
// is): 0A000 "cannot use serializable mode in a hot standby", and 55000 or XX000 "… during
// recovery" / "recovery is in progress" (WAL, transaction IDs, restore points).
func isStandbyRefusal(body []byte) bool {
	code, msg := wire.ParseErrorFields(body) // an error: not the hot path
	switch code {
	case "25006":
		return true
	case "0A000":
		return strings.Contains(msg, "hot standby")
	case "55000", "XX000":
		return strings.Contains(msg, "during recovery") || strings.Contains(msg, "recovery is in progress")
	}
	return false
}

// refusedByReplica handles the replica's refusal (25006 and the like, see isStandbyRefusal) of an
// armed request: what was held back is dropped, and the rest of the answers until ReadyForQuery
// too; the client loop then re-runs the request on the writer. Called by the reader with wmu held.
func (s *Session) refusedByReplica() {
	s.armed = false
	s.w.Reset(&s.out) // drops what was held back: nothing of it reached the client
	s.mu.Lock()
	s.failed = true // the statement's effects are not applied (see applyPendingLocked)
	s.mu.Unlock()
	s.dropping, s.rerun = true, true
	s.env.Routes.retried(s.intent.Reason)
	if s.log().Enabled(context.Background(), slog.LevelDebug) {
		s.log().Debug("a replica refused a statement as a write; running it on the writer",
			"reason", s.intent.Reason.String(), "fingerprint", s.fingerprint(s.held))
	}
}

// fingerprint identifies the SQL of a request without its parameters: an FNV-1a hash of its
// statement texts (Query texts, Parse texts, and the texts of the named statements it binds), so
// the same statement gives the same fingerprint whatever its parameter values.
func (s *Session) fingerprint(req []byte) string {
	h := fnv.New64a()
	for typ, body, rest, ok := nextMessage(req); ok; typ, body, rest, ok = nextMessage(rest) {
		switch typ {
		case 'Q':
			h.Write(trimNul(body))
		case 'P':
			if _, query, ok := twoCStrings(body); ok {
				h.Write(query)
			}
		case 'B':
			if _, stmt, ok := twoCStrings(body); ok && len(stmt) > 0 {
				s.mu.Lock()
				if def := s.stmts[string(stmt)]; def != nil {
					h.Write([]byte(def.key))
				}
				s.mu.Unlock()
			}
		}
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// startRerun makes the client loop read the held request again, for the writer.
func (s *Session) startRerun() {
	s.rerun, s.dropping = false, false
	s.intent = router.Intent{Route: classify.RouteWriter, Reason: s.intent.Reason}
	s.replayHeld()
}

// replayHeld makes the client loop read the held request again, as if the client had sent it
// anew, for whatever server connection it gets. Statement names the held request's Parses
// defined are forgotten first: the client never saw their ParseComplete (it was held back and
// dropped), and they were new (see sendableAgain), so the re-run defines them again.
func (s *Session) replayHeld() {
	s.mu.Lock()
	for typ, body, rest, ok := nextMessage(s.held); ok; typ, body, rest, ok = nextMessage(rest) {
		if name, _, ok := twoCStrings(body); typ == 'P' && ok && len(name) > 0 {
			delete(s.stmts, string(name))
		}
	}
	s.mu.Unlock()
	s.replaySrc.Reset(s.held)
	s.replay = wire.NewBufReader(&s.replaySrc, maxHeld)
	s.r.Reset(s.replay)
	s.replaying = true
}

// replayDone reports whether the re-run has read all of the held request, and if so points the
// client loop back at the client.
func (s *Session) replayDone() bool {
	if s.replaySrc.Len() > 0 || s.replay.Buffered() > 0 {
		return false
	}
	s.replaying = false
	s.replay = nil // rare: not worth a buffer for the session's life
	s.r.Reset(s.br)
	return true
}

// noteReleaseLocked records, when a server connection leased for work that may write is given back at
// the end of a transaction, the time for read-your-writes. Requires mu.
func (s *Session) noteReleaseLocked() {
	if s.leaseWrites {
		s.leaseWrites = false
		s.lastWrite.Store(time.Now().UnixNano())
	}
}

// RouteCounter counts routing decisions: transactions by route and reason, requests re-run on
// the writer after a replica refused them (see isStandbyRefusal) by the reason they were sent to
// a replica, and, on every endpoint, requests whose server connection ended before they were
// answered, by what became of them (see retry.go). It is safe for concurrent use.
type RouteCounter struct {
	routed   [2][classify.NumRouteReasons]atomic.Int64
	retries  [classify.NumRouteReasons]atomic.Int64
	failover [NumFailoverOutcomes]atomic.Int64
}

func (c *RouteCounter) count(in router.Intent) {
	if c != nil && int(in.Reason) < classify.NumRouteReasons {
		c.routed[in.Route&1][in.Reason].Add(1)
	}
}

func (c *RouteCounter) retried(r classify.RouteReason) {
	if c != nil && int(r) < classify.NumRouteReasons {
		c.retries[r].Add(1)
	}
}

// Routed returns how many transactions were given route r for reason why.
func (c *RouteCounter) Routed(r classify.Route, why classify.RouteReason) int64 {
	if int(why) >= classify.NumRouteReasons {
		return 0
	}
	return c.routed[r&1][why].Load()
}

// Retried returns how many requests a replica refused (see isStandbyRefusal) and the writer ran
// instead, by the reason they had been sent to a replica.
func (c *RouteCounter) Retried(why classify.RouteReason) int64 {
	if int(why) >= classify.NumRouteReasons {
		return 0
	}
	return c.retries[why].Load()
}

// routeCommand answers SET, RESET and SHOW of pgtide.route itself when the client's current
// message (of type typ) is one and nothing else of the client's is in flight; it reports whether
// it did (the message is then consumed). pgtide.route is pgtide's, never the server's: 'writer'
// and 'reader' send every later transaction of the session there, 'auto' (the default) lets the
// SQL decide. It takes effect at once and is not undone by a ROLLBACK.
func (s *Session) routeCommand(typ byte) (bool, error) {
	if typ != 'Q' || s.r.BodyLen() > maxRouteCommand {
		return false, nil
	}
	body, err := s.r.PeekBody(maxRouteCommand)
	if err != nil {
		return false, nil // the client loop sees the failure
	}
	kind, value, auto, perr := classify.ParseRouteCommand(trimNul(body))
	if kind == classify.RouteCommandNone {
		return false, nil
	}
	s.mu.Lock()
	quiet := s.pending == 0 && !s.open
	status := s.txStatus
	s.mu.Unlock()
	if !quiet {
		return false, nil // answered in order by the server instead (a harmless placeholder there)
	}
	if err := s.r.Skip(); err != nil {
		return true, err
	}
	var out []byte
	switch {
	case status == 'E':
		out = (&wire.Error{Severity: wire.SeverityError, Code: "25P02",
			Message: "current transaction is aborted, commands ignored until end of transaction block"}).Append(out)
		countError(s.env.Errors, "25P02")
	case perr != nil:
		e := perr.(*classify.RouteCommandError)
		out = (&wire.Error{Severity: wire.SeverityError, Code: e.SQLState(), Message: e.Message, Hint: e.Hint}).Append(out)
		countError(s.env.Errors, e.SQLState())
		if status == 'T' {
			status = 'E'
		}
	case kind == classify.RouteCommandShow:
		out = appendShowRoute(out, s.setting.String())
	default:
		switch {
		case auto:
			s.setting = routeAuto
		case value == classify.RouteReader:
			s.setting = routeReader
		default:
			s.setting = routeWriter
		}
		tag := "SET\x00"
		if kind == classify.RouteCommandReset {
			tag = "RESET\x00"
		}
		out = wire.AppendMessage(out, 'C', []byte(tag))
	}
	return true, s.send(wire.AppendReadyForQuery(out, status))
}

// maxRouteCommand is the longest Query body routeCommand looks at.
const maxRouteCommand = 256

// appendShowRoute appends SHOW pgtide.route's answer as PostgreSQL sends a SHOW's: one text
// column named after the setting, one row, CommandComplete "SHOW".
func appendShowRoute(out []byte, value string) []byte {
	out = wire.AppendHeader(out, 'T', 2+len(classify.RouteParam)+1+18)
	out = append(out, 0, 1)
	out = append(append(out, classify.RouteParam...), 0)
	out = append(out, 0, 0, 0, 0, 0, 0) // table OID, column number
	out = append(out, 0, 0, 0, 25)      // text
	out = append(out, 0xff, 0xff)       // typlen -1
	out = append(out, 0xff, 0xff, 0xff, 0xff, 0, 0)
	out = wire.AppendHeader(out, 'D', 2+4+len(value))
	out = append(out, 0, 1, 0, 0, 0, byte(len(value)))
	out = append(out, value...)
	return wire.AppendMessage(out, 'C', []byte("SHOW\x00"))
}
