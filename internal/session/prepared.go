package session

import (
	"bytes"
	"fmt"
	"strings"

	"pgtide/internal/classify"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Prepared statements in transaction mode.
//
// A client's named statements live in the client's session (stmts: name → query text and
// parameter types). On the server they are created under pgtide's own names (statement, kept in serverState),
// shared by every client of that server connection with the same statement context (the
// settings that change what a text means, see stmtContextLocked) that uses the same text, and
// created lazily on whichever server connection runs a Bind or Describe of them: pgtide sends the
// Parse first and hides its ParseComplete.
//
// A client's own Parse always reaches the server, even when the connection has the text already:
// a fresh Parse must see the schema as it is now, as it would on PostgreSQL, not as it was when
// another client prepared the text (a column added since, a type re-created). The older
// statement is closed. A shared statement the server reports stale (cached plan must not change
// result type, a type that no longer exists) makes every statement on that connection suspect:
// they are all closed and re-created on their next use.
//
// Every Parse and Close sent to the server has an expectation (expect.go). Bookkeeping is
// updated when a message is sent, so that later messages in the same pipeline see it; when an
// error makes the server skip to Sync, the expectations left at ReadyForQuery are the messages
// it skipped, and their bookkeeping is undone, last first. The server-side effects that do not
// go through pgtide's messages — DEALLOCATE ALL, DISCARD ALL — are followed from the server's
// CommandComplete, which comes exactly when and if the server did it, whatever protocol,
// transaction or pipeline carried it.
//
// SQL DEALLOCATE. A client's names with the same text share one server statement, so an SQL
// DEALLOCATE of one name must not drop it: the others still use it. The DEALLOCATE drops a
// throwaway instead, an empty statement pgtide creates for it (whose Parse cannot fail, whatever
// became of the client's text), and the shared statement stays cached, as after a protocol
// Close. A name the client has no statement of fails as on PostgreSQL, with PostgreSQL's error.
//
//   - In a simple Query, each DEALLOCATE (and each one an EXECUTE in it runs through a protocol
//     statement's text) gets a throwaway of its own, parsed just before the Query. Names are
//     looked up in text order, as the server runs them: one the Query deallocated earlier is
//     left as written, and the server reports it missing.
//   - A protocol statement's text names the connection's throwaway (serverState.dealloc), so
//     that its server statement is shared and cached like any other. PostgreSQL looks the name
//     up when a portal of it runs, and so does pgtide, at the portal's Execute: the throwaway is
//     parsed first if the client has the name, and closed first if not, so that the server
//     fails, and its error is reworded to name the client's statement (rewordMissLocked).
//
// A throwaway's Parse, Close and DEALLOCATE are followed like the client's statements: the
// records change when they are sent and are undone if the server skips them; a throwaway left
// behind (its DEALLOCATE skipped or refused) is an orphan, closed with the next statement work.

// clientStmt is one of the client's named prepared statements.
type clientStmt struct {
	key   string             // query text and parameter types: the Parse body after the name
	route classify.RouteInfo // where executions of it go on the auto endpoint, classified at Parse
	// refs are the SQL EXECUTE and DEALLOCATE statements in its text, which name statements
	// where it runs (see keyOnLocked); their DEALLOCATEs are followed from its portals' Execute.
	refs []classify.StmtRef
	// parsed has bit i set when refs[i] named a statement of the client's at its Parse, when
	// PostgreSQL fixes the statement's result description (see keyOnLocked).
	parsed uint8
}

// expectLocked queues an expectation of a message of the batch being sent. Requires mu.
func (s *Session) expectLocked(e expectation) {
	e.batch = s.reqSent
	s.queueLocked(e)
}

// queueLocked queues an expectation, its batch set. Requires mu.
func (s *Session) queueLocked(e expectation) {
	s.expectSeq++
	e.seq = s.expectSeq
	s.unsettleLocked(&e)
	s.expect.push(e)
}

// defineLocked gives the client the statement name again, unless it has been defined since.
// Requires mu.
func (s *Session) defineLocked(name string, def *clientStmt) {
	if s.stmts == nil {
		s.stmts = make(map[string]*clientStmt)
	}
	if s.stmts[name] == nil {
		s.stmts[name] = def
	}
}

// appendParse appends a Parse message for statement name with the given key.
func appendParse(dst []byte, name, key string) []byte {
	dst = wire.AppendHeader(dst, 'P', len(name)+1+len(key))
	dst = append(dst, name...)
	dst = append(dst, 0)
	return append(dst, key...)
}

// appendClose appends a Close of the statement name.
func appendClose(dst []byte, name string) []byte {
	dst = wire.AppendHeader(dst, 'C', 1+len(name)+1)
	dst = append(dst, 'S')
	dst = append(dst, name...)
	return append(dst, 0)
}

// ensureLocked makes sure srv has the statement for key, appending the Parse (and Closes of an
// evicted statement and of orphans) to out; their responses are hidden from the client.
// Requires mu.
func (s *Session) ensureLocked(srv *pool.Conn, key stmtKey, out []byte) (*statement, []byte) {
	if st := stateOf(srv).lookup(key); st != nil {
		return st, out
	}
	out = s.closeOrphansLocked(srv, out)
	st, evicted := stateOf(srv).add(key, s.maxPrepared, s.maxPreparedBytes)
	if evicted != nil {
		out = s.hiddenCloseLocked(out, evicted.name)
	}
	out = appendParse(out, st.name, key.text)
	s.expectLocked(expectation{typ: '1', action: actSwallow, stmt: st})
	s.logHiddenLocked()
	return st, out
}

// hiddenCloseLocked appends a Close of the server-side statement name, whose CloseComplete the
// client does not see. Requires mu.
func (s *Session) hiddenCloseLocked(out []byte, name string) []byte {
	s.expectLocked(expectation{typ: '3', action: actSwallow, closed: name})
	s.logHiddenLocked()
	return appendClose(out, name)
}

// closeOrphansLocked appends Closes of srv's orphans (see serverState.orphans). Requires mu.
func (s *Session) closeOrphansLocked(srv *pool.Conn, out []byte) []byte {
	for _, name := range stateOf(srv).orphans {
		out = s.hiddenCloseLocked(out, name)
	}
	clear(stateOf(srv).orphans)
	stateOf(srv).orphans = stateOf(srv).orphans[:0]
	return out
}

// refsMode says what keyOnLocked does about a statement the server connection lacks.
type refsMode uint8

const (
	refsExpect refsMode = iota // a hidden Parse with an expectation, before an extended message
	refsHidden                 // a Parse in a hidden request of its own (the caller adds its Sync)
)

// maxRefDepth bounds how deep keyOnLocked follows statements whose text runs another by name:
// a statement that runs itself cannot be created by text under pgtide's names at all.
const maxRefDepth = 4

// keyOnLocked returns the key def's statement has on srv: its text, with the names of the
// client's statements it runs or drops (SQL EXECUTE, DEALLOCATE) replaced by theirs on srv —
// PostgreSQL has one namespace for both, and looks such names up when the statement runs, so
// they are resolved here, where and when it runs. The statements named are created on srv first
// when it lacks them, as mode says, their messages appended to out. A name the client has no
// statement of is left as it is. For a Describe (describe), so is a name that named none when
// def was parsed: PostgreSQL works out a statement's result description at its Parse, and a
// statement EXECUTEd that did not exist then gives none (NoData). A DEALLOCATE names a
// throwaway instead (see deallocTargetLocked); tws is nil but in a simple Query. Requires mu.
func (s *Session) keyOnLocked(srv *pool.Conn, def *clientStmt, out []byte, mode refsMode, describe bool, depth int, tws *[]*throwaway) (stmtKey, []byte) {
	ctx := s.stmtContextLocked()
	if len(def.refs) == 0 || depth >= maxRefDepth {
		return stmtKey{context: ctx, text: def.key}, out
	}
	text, params, _ := strings.Cut(def.key, "\x00")
	var b []byte
	last := 0
	for i, r := range def.refs {
		var name string
		if r.Kind == classify.RefDeallocate {
			var tw *throwaway
			if tw, out = s.deallocTargetLocked(srv, r, out, mode, tws); tw == nil {
				continue
			}
			name = tw.name
		} else {
			ref := s.refDefLocked(r)
			if ref == nil || describe && def.parsed&(1<<i) == 0 {
				continue
			}
			var st *statement
			st, out = s.stmtOnLocked(srv, ref, out, mode, describe, depth+1, tws)
			name = st.name
		}
		b = append(append(b, text[last:r.Start]...), name...)
		last = r.End
	}
	if b == nil {
		return stmtKey{context: ctx, text: def.key}, out
	}
	b = append(append(append(b, text[last:]...), 0), params...)
	return stmtKey{context: ctx, text: string(b)}, out
}

// deallocTargetLocked returns the throwaway that an SQL DEALLOCATE r drops in place of the
// client's statement (see "SQL DEALLOCATE" at the top of this file), or nil to leave the name
// as written. In a simple Query (tws not nil) it is a new one, parsed now as mode says and
// added to tws, if the client has the name now. In a protocol statement's text it is the
// connection's, whatever the name (looked up at Execute, see queueDeallocsLocked), except that
// a pinned client's name it has no protocol statement of is left for the server to look up (its
// SQL PREPARE may have made it). Requires mu.
func (s *Session) deallocTargetLocked(srv *pool.Conn, r classify.StmtRef, out []byte, mode refsMode, tws *[]*throwaway) (*throwaway, []byte) {
	if r.Name == nil {
		return nil, out
	}
	if tws == nil {
		if s.pinned && s.stmts[string(r.Name)] == nil {
			return nil, out
		}
		s.viaDealloc = true
		return stateOf(srv).deallocStmt(), out
	}
	if s.stmts[string(r.Name)] == nil {
		return nil, out
	}
	tw := newThrowaway()
	*tws = append(*tws, tw)
	return tw, s.parseThrowawayLocked(out, tw, mode)
}

// parseThrowawayLocked appends a Parse of tw, as mode says. Requires mu.
func (s *Session) parseThrowawayLocked(out []byte, tw *throwaway, mode refsMode) []byte {
	if mode == refsExpect {
		s.expectLocked(expectation{typ: '1', action: actSwallow, tw: tw, twHeld: tw.held})
		s.logHiddenLocked()
	}
	tw.held = true
	return appendParse(out, tw.name, throwawayKey)
}

// closeThrowawayLocked appends a Close of tw, before the client's message just logged. Requires
// mu.
func (s *Session) closeThrowawayLocked(out []byte, tw *throwaway) []byte {
	s.expectLocked(expectation{typ: '3', action: actSwallow, tw: tw, twHeld: tw.held})
	s.logHiddenLocked()
	tw.held = false
	return appendClose(out, tw.name)
}

// stmtOnLocked returns def's statement on srv (see keyOnLocked), created as mode says if srv
// lacks it. In a simple Query, a statement whose text drops throwaways of the Query's own is
// created for that Query only, under a new name, and closed after it (see resolveRefs).
// Requires mu.
func (s *Session) stmtOnLocked(srv *pool.Conn, def *clientStmt, out []byte, mode refsMode, describe bool, depth int, tws *[]*throwaway) (*statement, []byte) {
	n := 0
	if tws != nil {
		n = len(*tws)
	}
	key, out := s.keyOnLocked(srv, def, out, mode, describe, depth, tws)
	if tws != nil && len(*tws) > n {
		st := &statement{name: newStatementName(), key: key, ready: true}
		if mode == refsExpect {
			s.expectLocked(expectation{typ: '1', action: actSwallow})
			s.logHiddenLocked()
		}
		s.queryStmts = append(s.queryStmts, st.name)
		return st, appendParse(out, st.name, key.text)
	}
	if st := stateOf(srv).lookup(key); st != nil {
		return st, out
	}
	if mode == refsExpect {
		return s.ensureLocked(srv, key, out)
	}
	// A hidden request's answers are skipped by the reader, so its Parse takes no expectation;
	// its failure breaks the connection (see hiddenMessage).
	st, evicted := stateOf(srv).add(key, s.maxPrepared, s.maxPreparedBytes)
	if evicted != nil {
		out = appendClose(out, evicted.name)
	}
	st.ready = true
	return st, appendParse(out, st.name, key.text)
}

// resolveRefs makes a simple Query's SQL that names the client's protocol-level statements name
// their server-side statements instead (see keyOnLocked), and a DEALLOCATE a throwaway of its
// own (see "SQL DEALLOCATE"), and queues the Query's DEALLOCATEs (see queueDeallocsLocked), one
// statement after another in text order, as the server runs them. a is text's analysis. A
// statement srv lacks is created first by a hidden request (Parse, Sync) before the Query, which
// then takes the next request number; inside an unfinished extended batch, where a request of
// its own cannot go, by a hidden Parse with an expectation, as before an extended message. It
// returns pre with those messages appended, and the rewritten text in s.rewrite, or nil if
// nothing was rewritten. In a failed transaction nothing is rewritten: the server refuses the
// statement whatever it names.
func (s *Session) resolveRefs(srv *pool.Conn, a *classify.Session, pre, text []byte) ([]byte, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	run := deallocRun{batch: s.reqSent - 1, query: true} // the Query's own number (see attach)
	if s.txStatus == 'E' || len(s.stmts) == 0 {
		s.queueDeallocsLocked(srv, a.Refs, &run, 0)
		return pre, nil
	}
	mode := refsHidden
	if s.open {
		mode = refsExpect
	}
	start := len(pre)
	first := s.deallocs.len()
	out := s.rewrite[:0]
	last := 0
	for i, r := range a.Refs {
		var name string
		run.tws = s.tws[:0]
		switch r.Kind {
		case classify.RefDeallocate:
			var tw *throwaway
			if tw, pre = s.deallocTargetLocked(srv, r, pre, mode, &run.tws); tw != nil {
				name = tw.name
			}
		case classify.RefExecute:
			if def := s.refDefLocked(r); def != nil {
				var st *statement
				st, pre = s.stmtOnLocked(srv, def, pre, mode, false, 0, &run.tws)
				name = st.name
				s.noteExecLocked(r.Name, name)
			}
		}
		s.tws = run.tws
		s.queueDeallocsLocked(srv, a.Refs[i:i+1], &run, 0)
		clear(s.tws)
		if name != "" {
			out = append(append(out, text[last:r.Start]...), name...)
			last = r.End
		}
	}
	if mode == refsHidden && len(pre) > start {
		s.hideLocked(run.batch, false) // the Query, already counted, moves up one
		for i := first; i < s.deallocs.len(); i++ {
			s.deallocs.at(i).batch++
		}
		pre = wire.AppendHeader(pre, 'S', 0)
	}
	if len(s.queryStmts) > 0 {
		stateOf(srv).orphans = append(stateOf(srv).orphans, s.queryStmts...)
		clear(s.queryStmts)
		s.queryStmts = s.queryStmts[:0]
	}
	if last == 0 {
		return pre, nil
	}
	out = append(out, text[last:]...)
	s.rewrite = out
	return pre, out
}

// refsParsedLocked returns clientStmt.parsed for a statement with refs parsed now. Requires mu.
func (s *Session) refsParsedLocked(refs []classify.StmtRef) uint8 {
	var parsed uint8
	for i, r := range refs {
		if s.refDefLocked(r) != nil {
			parsed |= 1 << i
		}
	}
	return parsed
}

// ownRefs returns a copy of a's SQL EXECUTE and DEALLOCATE statements, for a statement that
// keeps them (see clientStmt.refs); nil if there are none, or more than classify keeps (such a
// text is sent as it is).
func ownRefs(a *classify.Session) []classify.StmtRef {
	if a == nil || a.RefsOverflow {
		return nil
	}
	var refs []classify.StmtRef
	for _, r := range a.Refs {
		switch r.Kind {
		case classify.RefExecute, classify.RefDeallocate, classify.RefDeallocateAll:
			r.Name = bytes.Clone(r.Name)
			refs = append(refs, r)
		}
	}
	return refs
}

// refDefLocked returns the client's protocol-level statement an EXECUTE or DEALLOCATE names, or
// nil. Requires mu.
func (s *Session) refDefLocked(r classify.StmtRef) *clientStmt {
	if r.Name == nil || r.Kind != classify.RefExecute && r.Kind != classify.RefDeallocate {
		return nil
	}
	return s.stmts[string(r.Name)]
}

// deallocRun is where queueDeallocsLocked's SQL runs.
type deallocRun struct {
	batch int  // the request the SQL runs in
	query bool // a simple Query, whose DEALLOCATEs drop tws (or name what the client has not)
	tws   []*throwaway
	// Else a portal's Execute: viaDealloc says its DEALLOCATE names the connection's throwaway
	// (see deallocTargetLocked), and out takes the messages to send before the Execute.
	viaDealloc bool
	out        []byte
}

// queueDeallocsLocked queues an expectation for each DEALLOCATE in refs (in text order), to be
// matched with its CommandComplete, and takes the names it removes from the client's records at
// once, so that a Parse of the same name later in the pipeline is not a duplicate; a DEALLOCATE
// the server skips or refuses gives them back. Where a DEALLOCATE names a throwaway (see "SQL
// DEALLOCATE"), it is one of run.tws in a simple Query; in a portal the connection's, made to
// exist just before the Execute if the client has the name and not to exist if not. depth counts
// the statements down that refs come from: an EXECUTE of a statement whose own text deallocates
// runs that DEALLOCATE too. Requires mu.
func (s *Session) queueDeallocsLocked(srv *pool.Conn, refs []classify.StmtRef, run *deallocRun, depth int) {
	for _, r := range refs {
		e := expectation{typ: 'D', batch: run.batch}
		switch r.Kind {
		case classify.RefExecute:
			if def := s.refDefLocked(r); def != nil && def.refs != nil && depth < maxRefDepth {
				s.queueDeallocsLocked(srv, def.refs, run, depth+1)
			}
			continue
		case classify.RefDeallocateAll:
			e.all, e.saved = true, s.stmts
			s.stmts = nil
			stateOf(srv).dropDealloc() // dropped by the server too, unless skipped
		case classify.RefDeallocate:
			def := s.refDefLocked(r)
			switch {
			case run.query:
				if def == nil || len(run.tws) == 0 {
					break // a name the client has not, or a failed transaction: as written
				}
				e.tw, run.tws = run.tws[0], run.tws[1:]
				e.name, e.def = string(r.Name), def
				delete(s.stmts, e.name)
				e.twHeld, e.tw.held = e.tw.held, false
			case run.viaDealloc:
				tw := stateOf(srv).deallocStmt()
				e.tw, e.name = tw, string(r.Name)
				if def != nil {
					if !tw.held {
						run.out = s.parseThrowawayLocked(run.out, tw, refsExpect)
					}
					e.def = def
					delete(s.stmts, e.name)
				} else {
					if tw.held {
						run.out = s.closeThrowawayLocked(run.out, tw)
					}
					e.miss = true
				}
				e.twHeld, tw.held = tw.held, false
			}
		default:
			continue
		}
		s.expectSeq++
		e.seq = s.expectSeq
		s.unsettleLocked(&e)
		s.deallocs.push(e)
	}
}

// cstr splits a NUL-terminated string off b.
func cstr(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

var errMalformedMessage = &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
	Message: "malformed extended-protocol message"}

// forwardParse handles a Parse in transaction mode.
func (s *Session) forwardParse(srv *pool.Conn) error {
	body, err := s.r.Body()
	if err != nil {
		return err
	}
	nameB, rest, ok := cbytes(body)
	if !ok {
		return errMalformedMessage
	}
	query, _, ok := cbytes(rest)
	if !ok {
		return errMalformedMessage
	}
	info := s.textInfo(query, s.routes())
	var route classify.RouteInfo
	if s.routes() {
		route = info.RouteInfo
	}
	a, err := s.checkPins(query, false, info.MaySetSessionState)
	if err != nil {
		return err
	}
	if s.pinErr != nil {
		// A refused statement (pin_policy = error, pgtide.route): the client's statement is
		// one that fails with pgtide's error when run, defined like any other, so that its Bind
		// runs that and nothing else, on whichever server connection.
		rest = []byte(refusalKey(s.pinErr))
		query = rest[:len(rest)-3]
		s.pinErr, a, body = nil, nil, nil
		info = classify.TextInfo{} // not this text's
	}
	out := s.scratch[:0]
	var refs []classify.StmtRef // SQL EXECUTE and DEALLOCATE: resolved where the statement runs
	if a != nil {
		if r := s.restoreSQL(a); r != nil {
			s.restore = r
		}
		refs = ownRefs(a)
	}
	s.mu.Lock()
	parsed := s.refsParsedLocked(refs)
	switch {
	case len(nameB) == 0:
		// The unnamed statement: passed through, but remembered so a later Bind on another
		// server connection can re-create it. Clients tend to send the same text again and
		// again, so the key is only copied when it changes.
		e := expectation{typ: '1', action: actForward, unnamed: true, prev: s.unnamed}
		if s.unnamed.key != string(rest) {
			s.unnamed.key = string(rest)
		}
		s.noteParse(s.unnamed.key, query, info)
		s.unnamed.route, s.unnamed.refs, s.unnamed.parsed = route, refs, parsed
		stateOf(srv).setUnnamed(srv, s.unnamed.key)
		if body == nil {
			out = appendParse(out, "", string(rest))
		} else {
			out = wire.AppendMessage(out, 'P', body)
		}
		s.expectLocked(e)
	case s.stmts[string(nameB)] != nil:
		// PostgreSQL refuses to redefine a statement, once it has parsed and analysed the text:
		// the text's own errors come first. So the text is parsed as the unnamed statement,
		// and then the server is made to fail with an error pgtide recognises (Describe of a
		// statement that cannot exist), which is reworded (see rewordDuplicateLocked).
		s.expectSeq++ // numbers the marker
		marker := fmt.Sprintf("pgtide_duplicate_%d_%d", s.PID, s.expectSeq)
		if s.duplicate == nil {
			s.duplicate = make(map[string]duplicateParse)
		}
		s.duplicate[marker] = duplicateParse{name: string(nameB), batch: s.reqSent}
		out = appendParse(out, "", string(rest))
		stateOf(srv).setUnnamed(srv, unnamedUnknown)
		s.expectLocked(expectation{typ: '1', action: actSwallow, unnamed: true})
		out = wire.AppendHeader(out, 'D', 1+len(marker)+1)
		out = append(append(append(out, 'S'), marker...), 0)
		s.logLocked(logExtended)
	default:
		name := string(nameB)
		key := stmtKey{context: s.stmtContextLocked(), text: string(rest)}
		def := &clientStmt{key: key.text, route: route, refs: refs, parsed: parsed}
		if s.stmts == nil {
			s.stmts = make(map[string]*clientStmt)
		}
		s.stmts[name] = def
		out = s.closeOrphansLocked(srv, out)
		// A fresh Parse, even if the connection has the text (see the top of this file): the
		// statement it replaces is closed.
		if old := stateOf(srv).lookup(key); old != nil {
			out = s.hiddenCloseLocked(out, old.name)
		}
		st, evicted := stateOf(srv).add(key, s.maxPrepared, s.maxPreparedBytes)
		if evicted != nil {
			out = s.hiddenCloseLocked(out, evicted.name)
		}
		out = appendParse(out, st.name, key.text)
		s.expectLocked(expectation{typ: '1', action: actForward, stmt: st, name: name, def: def})
	}
	s.mu.Unlock()
	s.scratch = out
	_, err = srv.Writer.Write(out)
	return err
}

// forwardBind handles a Bind in transaction mode: the statement name is translated and the
// statement created on this server connection first if needed. It allocates nothing once the
// statement exists on the server.
func (s *Session) forwardBind(srv *pool.Conn) error {
	head, err := s.r.PeekBody(s.r.MaxPeek())
	if err != nil {
		return err
	}
	portal, rest, ok := cbytes(head)
	if !ok {
		return errMalformedMessage
	}
	stmt, _, ok := cbytes(rest)
	if !ok {
		return errMalformedMessage
	}
	skip := len(portal) + 1 + len(stmt) + 1
	out := s.scratch[:0]
	var serverName string
	var refs []classify.StmtRef
	s.mu.Lock()
	s.viaDealloc = false
	if len(stmt) == 0 {
		out = s.unnamedLocked(srv, out, false)
		refs = s.unnamed.refs
	} else if def := s.stmts[string(stmt)]; def != nil {
		var st *statement
		if def.refs == nil {
			st, out = s.ensureLocked(srv, stmtKey{context: s.stmtContextLocked(), text: def.key}, out)
		} else {
			st, out = s.stmtOnLocked(srv, def, out, refsExpect, false, 0, nil)
			refs = def.refs
		}
		serverName = st.name
		s.logBindLocked(def)
	}
	s.mu.Unlock()
	if len(s.refPortals) > 0 || refs != nil {
		s.bindRefs(portal, refs, s.viaDealloc)
	}
	s.scratch = out
	if len(out) > 0 {
		if _, err := srv.Writer.Write(out); err != nil {
			return err
		}
	}
	if serverName == "" { // unnamed, or unknown to the client: the server reports it as PostgreSQL would
		return s.r.Forward(srv.Writer)
	}
	prefix := append(s.prefix[:0], portal...)
	prefix = append(prefix, 0)
	prefix = append(prefix, serverName...)
	prefix = append(prefix, 0)
	s.prefix = prefix
	return s.r.ForwardReplacing(srv.Writer, skip, prefix)
}

// refPortal is a portal bound to a statement with SQL EXECUTE or DEALLOCATE in its text.
type refPortal struct {
	refs       []classify.StmtRef // see clientStmt.refs
	viaDealloc bool               // its DEALLOCATE names the connection's throwaway (see deallocTargetLocked)
}

// bindRefs notes a Bind to portal of a statement with the given refs (see clientStmt.refs): its
// SQL DEALLOCATEs deallocate when the portal runs (see executeRefs).
func (s *Session) bindRefs(portal []byte, refs []classify.StmtRef, viaDealloc bool) {
	delete(s.refPortals, string(portal)) // a Bind replaces the portal
	if refs == nil {
		return
	}
	if s.refPortals == nil {
		s.refPortals = make(map[string]refPortal)
	}
	s.refPortals[string(portal)] = refPortal{refs: refs, viaDealloc: viaDealloc}
}

// executeRefs handles an Execute in transaction mode: a portal bound to a statement with SQL
// DEALLOCATE in its text runs it now, so its names are taken from the client's records here,
// and the throwaway it names is made to exist or not first (see queueDeallocsLocked).
func (s *Session) executeRefs(srv *pool.Conn) error {
	head, err := s.r.PeekBody(s.r.MaxPeek())
	if err != nil {
		return err
	}
	portal, _, ok := cbytes(head)
	if !ok {
		return errMalformedMessage
	}
	s.mu.Lock()
	p, ok := s.refPortals[string(portal)]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	delete(s.refPortals, string(portal)) // a utility statement runs at the portal's first Execute
	run := deallocRun{batch: s.reqSent, viaDealloc: p.viaDealloc, out: s.scratch[:0]}
	s.queueDeallocsLocked(srv, p.refs, &run, 0)
	s.mu.Unlock()
	s.scratch = run.out
	if len(run.out) == 0 {
		return nil
	}
	_, err = srv.Writer.Write(run.out)
	return err
}

// cbytes splits a NUL-terminated string off b, without copying.
func cbytes(b []byte) ([]byte, []byte, bool) {
	if len(b) > 0 && b[0] == 0 { // the unnamed statement or portal: most of them
		return b[:0], b[1:], true
	}
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// unnamedLocked makes the server's unnamed statement the client's before a Bind or Describe
// (describe) of it: re-created when the client parsed it on another server connection, or when
// the statements its text names are others there (see keyOnLocked); closed when the server holds
// another client's. Requires mu.
func (s *Session) unnamedLocked(srv *pool.Conn, out []byte, describe bool) []byte {
	key := s.unnamed.key
	if s.unnamed.refs != nil {
		var k stmtKey
		k, out = s.keyOnLocked(srv, &s.unnamed, out, refsExpect, describe, 0, nil)
		key = k.text
	}
	switch {
	case key != "" && stateOf(srv).unnamed(srv) != key:
		out = appendParse(out, "", key)
		s.expectLocked(expectation{typ: '1', action: actSwallow, unnamed: true})
		s.logHiddenLocked()
		stateOf(srv).setUnnamed(srv, key)
	case key == "" && stateOf(srv).unnamed(srv) != "":
		out = appendClose(out, "")
		s.expectLocked(expectation{typ: '3', action: actSwallow, unnamed: true})
		s.logHiddenLocked()
		stateOf(srv).setUnnamed(srv, "")
	}
	return out
}

// forwardDescribeClose handles Describe and Close in transaction mode.
func (s *Session) forwardDescribeClose(srv *pool.Conn, typ byte) error {
	body, err := s.r.Body()
	if err != nil {
		return err
	}
	if len(body) < 2 {
		return errMalformedMessage
	}
	kind := body[0]
	name, _, ok := cstr(body[1:])
	if !ok {
		return errMalformedMessage
	}
	out := s.scratch[:0]
	serverName := name
	s.mu.Lock()
	switch {
	case kind != 'S':
		// Portals live and die inside one server connection's transaction: nothing to do.
		if typ == 'C' {
			s.expectLocked(expectation{typ: '3', action: actForward})
			delete(s.refPortals, name)
		}
	case typ == 'D' && name == "":
		out = s.unnamedLocked(srv, out, true)
	case typ == 'D':
		if def := s.stmts[name]; def != nil {
			var st *statement
			st, out = s.stmtOnLocked(srv, def, out, refsExpect, true, 0, nil)
			serverName = st.name
		}
	case name == "": // Close of the unnamed statement
		s.expectLocked(expectation{typ: '3', action: actForward, unnamed: true, prev: s.unnamed})
		s.unnamed = clientStmt{}
		stateOf(srv).setUnnamed(srv, "")
	default:
		// Close of a named statement: the client forgets it (unless the server skips the
		// Close); the server keeps it cached for others. A Close of a name the server does not
		// have completes without error, as PostgreSQL's Close of an unknown name does.
		def := s.stmts[name]
		delete(s.stmts, name)
		s.expectLocked(expectation{typ: '3', action: actForward, name: name, def: def})
	}
	s.mu.Unlock()
	out = wire.AppendHeader(out, typ, 1+len(serverName)+1)
	out = append(out, kind)
	out = append(out, serverName...)
	out = append(out, 0)
	s.scratch = out
	_, err = srv.Writer.Write(out)
	return err
}

// onParseOrCloseComplete applies the next expectation to a '1' or '3' from the server and
// reports what to send the client: the message type, or 0 for nothing. Runs on the relay.
func (s *Session) onParseOrCloseComplete(typ byte) byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expect.len() == 0 || s.expect.at(0).typ != typ {
		s.log().Error("unexpected response from server; passing it on", "type", string(typ))
		return typ
	}
	e := s.expect.at(0)
	if e.stmt != nil {
		e.stmt.ready = true
	}
	action := e.action
	s.expect.pop(1)
	if action == actSwallow {
		return 0
	}
	return typ
}

// onReadyLocked undoes, last first, the bookkeeping of the messages the server skipped after an
// error in the batch that this ReadyForQuery ends (a failed Parse counts as skipped: it created
// nothing). Requires mu.
func (s *Session) onReadyLocked(srv *pool.Conn) {
	done := s.reqDone
	s.reqDone++
	n, m := 0, 0
	for n < s.expect.len() && s.expect.at(n).batch <= done {
		n++
	}
	for m < s.deallocs.len() && s.deallocs.at(m).batch <= done {
		m++
	}
	later := -1 // see unnamedWasLocked
	// Both queues' skipped entries, last sent first.
	for i, j := n-1, m-1; i >= 0 || j >= 0; {
		var e *expectation
		if j < 0 || i >= 0 && s.expect.at(i).seq > s.deallocs.at(j).seq {
			e = s.expect.at(i)
			i--
		} else {
			e = s.deallocs.at(j)
			j--
		}
		switch {
		case e.typ == 'D':
			// A DEALLOCATE skipped: its names are still defined.
			for name, def := range e.saved {
				s.defineLocked(name, def)
			}
			if e.def != nil {
				s.defineLocked(e.name, e.def)
			}
			if e.tw != nil {
				s.undoThrowawayLocked(e)
			}
		case e.tw != nil:
			s.undoThrowawayLocked(e)
		case e.typ == 'Q':
			if e.skipped {
				later = s.unnamedWasLocked(n, later, e.prev) // a skipped Query dropped nothing
			}
		case e.stmt != nil:
			if !e.stmt.ready {
				stateOf(srv).forget(e.stmt)
			}
			// A client Parse: its name was never defined.
			if e.def != nil && s.stmts[e.name] == e.def {
				delete(s.stmts, e.name)
			}
		case e.unnamed:
			stateOf(srv).setUnnamed(srv, unnamedUnknown)
			switch {
			case e.action == actSwallow:
				// pgtide's own: the client's unnamed statement is what it was.
			case e.failed && e.typ == '1':
				later = s.unnamedWasLocked(n, later, clientStmt{}) // a failed Parse leaves none
			default:
				later = s.unnamedWasLocked(n, later, e.prev)
			}
		case e.closed != "":
			stateOf(srv).orphans = append(stateOf(srv).orphans, e.closed)
		case e.def != nil:
			// A client Close: the name is still defined.
			s.defineLocked(e.name, e.def)
		}
	}
	s.expect.pop(n)
	s.deallocs.pop(m)
	for _, tw := range s.twUndone {
		if tw.held && tw != stateOf(srv).dealloc {
			tw.held = false // not the connection's now (or never was): closed with the next statement work
			stateOf(srv).orphans = append(stateOf(srv).orphans, tw.name)
		}
	}
	clear(s.twUndone)
	s.twUndone = s.twUndone[:0]
	if len(s.duplicate) > 0 { // rare: not worth starting a map iteration at every ReadyForQuery
		for marker, d := range s.duplicate {
			if d.batch <= done {
				delete(s.duplicate, marker) // its stand-in failed with the text's own error, or was skipped
			}
		}
	}
	s.settledLocked(false)
}

// unnamedWasLocked sets the client's unnamed statement to was, after a message of the client's
// that would have changed it did not (the server skipped it, or its Parse failed), unless a later
// message of the pipeline that changes it was sent already (an expectation from the after'th on,
// which this ReadyForQuery does not undo): then that one changed was, and its own undo, if it
// comes, gives was back. later is that one's index, or -1 if not looked for yet; it returns it,
// for the next call in the same ReadyForQuery (one look at most: the queue may be long). Requires
// mu.
func (s *Session) unnamedWasLocked(after, later int, was clientStmt) int {
	if later < 0 {
		for later = after; later < s.expect.len(); later++ {
			if e := s.expect.at(later); e.unnamed && e.action == actForward {
				break
			}
		}
	}
	if later < s.expect.len() {
		s.expect.at(later).prev = was
	} else {
		s.unnamed = was
	}
	return later
}

// undoThrowawayLocked undoes what a skipped message e did to a throwaway; onReadyLocked then
// makes one left behind an orphan. Requires mu.
func (s *Session) undoThrowawayLocked(e *expectation) {
	e.tw.held = e.twHeld
	s.twUndone = append(s.twUndone, e.tw)
}

// onCommandCompleteLocked follows what a CommandComplete says the server did to its prepared
// statements: DEALLOCATE ALL and DISCARD ALL dropped them all; DEALLOCATE name completes the
// oldest outstanding SQL DEALLOCATE of the request being answered (see queueDeallocsLocked),
// whose names and throwaway were taken when it was sent. tag is the CommandComplete body.
// Requires mu.
func (s *Session) onCommandCompleteLocked(srv *pool.Conn, tag []byte) {
	all := string(tag) == "DEALLOCATE ALL\x00" || string(tag) == "DISCARD ALL\x00"
	if !all && string(tag) != "DEALLOCATE\x00" {
		return
	}
	var e *expectation
	if s.deallocs.len() > 0 && s.deallocs.at(0).all == all && s.deallocs.at(0).batch == s.reqDone {
		e = s.deallocs.at(0)
	}
	if all {
		stateOf(srv).forgetAll()
		if e == nil {
			// A DEALLOCATE ALL pgtide did not see coming: the same, late.
			clear(s.stmts)
			stateOf(srv).dealloc = nil
		}
	}
	if e != nil {
		s.deallocs.pop(1)
	}
}

// duplicateParse is a Parse of a name the client has, sent as a stand-in (see forwardParse).
type duplicateParse struct {
	name  string // the client's statement name
	batch int    // the request that ends its batch: if its stand-in has not failed by then, it was skipped
}

// rewordDuplicateLocked turns the error caused by a duplicate Parse's stand-in into
// PostgreSQL's, in *body, and reports whether it did. Runs on the reader, only when a duplicate
// is outstanding. Requires mu.
func (s *Session) rewordDuplicateLocked(body *[]byte) bool {
	_, msg := wire.ParseErrorFields(*body)
	for marker, d := range s.duplicate {
		if strings.Contains(msg, `"`+marker+`"`) {
			delete(s.duplicate, marker)
			e := &wire.Error{Severity: wire.SeverityError, Code: "42P05",
				Message: fmt.Sprintf("prepared statement %q already exists", d.name)}
			*body = e.Append(nil)[wire.HeaderLen:]
			return true
		}
	}
	return false
}

// rewordMissLocked turns the server's error for a DEALLOCATE of a throwaway standing for a name
// the client has no statement of (expectation.miss) into PostgreSQL's for that name, in *body,
// and reports whether it did. Runs on the reader. Requires mu.
func (s *Session) rewordMissLocked(body *[]byte) bool {
	code, msg := wire.ParseErrorFields(*body)
	if code != "26000" {
		return false
	}
	for i := 0; i < s.deallocs.len(); i++ {
		if e := s.deallocs.at(i); e.miss && strings.Contains(msg, `"`+e.tw.name+`"`) {
			we := &wire.Error{Severity: wire.SeverityError, Code: "26000",
				Message: `prepared statement "` + e.name + `" does not exist`}
			*body = we.Append(nil)[wire.HeaderLen:]
			return true
		}
	}
	return false
}

// rewordNameLocked makes PostgreSQL's errors that name a prepared statement pgtide created
// name the client's, as PostgreSQL would have. Two errors name one, and only their exact texts
// (PostgreSQL's English, lc_messages' default) are reworded:
//
//   - 08P01 "bind message supplies 2 parameters, but prepared statement "pgtide_7" requires 1",
//     of a Bind: bound is the client's statement of the Bind the error answers (nil if it answers
//     no Bind of a named statement), and the name is its name, even when the client has closed
//     or deallocated it since (see boundNameLocked) and when several of its names share the
//     server statement;
//   - 42601 "wrong number of parameters for prepared statement "pgtide_7"", of an SQL EXECUTE:
//     the name the client's EXECUTE of that server statement used (see execName).
//
// Anything else is left as it is: a value, a relation or a message of the client's own may hold
// the same characters. An error pgtide cannot name (a statement whose text names others, see
// keyOnLocked; a simple Query whose EXECUTEs ran the server statement under two of the client's
// names, where the error does not say which one failed) keeps pgtide's name. Runs on the reader,
// on errors only. Requires mu.
func (s *Session) rewordNameLocked(body *[]byte, bound *clientStmt) {
	const (
		bindFrom  = ", but prepared statement \""
		bindTo    = "\" requires "
		execShape = "wrong number of parameters for prepared statement \""
	)
	code := wire.ErrorCode(*body)
	if string(code) != "08P01" && string(code) != "42601" {
		return
	}
	_, msg := wire.ParseErrorFields(*body)
	var start, end int // the server statement's name is msg[start:end]
	var name string
	switch {
	case string(code) == "08P01" && bound != nil && strings.HasPrefix(msg, "bind message supplies "):
		i := strings.Index(msg, bindFrom)
		if i < 0 {
			return
		}
		start = i + len(bindFrom)
		end = start + strings.Index(msg[start:], bindTo)
		if end < start || !isStatementName(msg[start:end]) {
			return
		}
		name = s.boundNameLocked(bound)
	case string(code) == "42601" && strings.HasPrefix(msg, execShape) && strings.HasSuffix(msg, "\""):
		start, end = len(execShape), len(msg)-1
		if end < start || !isStatementName(msg[start:end]) {
			return
		}
		name = s.execName(msg[start:end])
	default:
		return
	}
	if name != "" {
		*body = wire.ReplaceErrorField(*body, 'M', msg[:start]+name+msg[end:])
	}
}

// isStatementName reports whether name is one newStatementName makes.
func isStatementName(name string) bool {
	digits, ok := strings.CutPrefix(name, "pgtide_")
	if !ok || digits == "" {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// boundNameLocked returns the client's name of def: where the client has it now, or, if a Close,
// DEALLOCATE or DISCARD ALL sent since took it away, the name that removed it ("" if none).
// O(statements + messages in flight), on errors only. Requires mu.
func (s *Session) boundNameLocked(def *clientStmt) string {
	for n, d := range s.stmts {
		if d == def {
			return n
		}
	}
	for _, r := range []*expectRing{&s.expect, &s.deallocs} {
		for i := 0; i < r.len(); i++ {
			e := r.at(i)
			if e.def == def && e.name != "" {
				return e.name
			}
			for n, d := range e.saved {
				if d == def {
					return n
				}
			}
		}
	}
	return ""
}

// execName is an SQL EXECUTE's name for a server statement, as a simple Query of this attachment
// wrote it (see resolveRefs).
type execName struct{ client, server string }

// maxExecNames bounds the EXECUTE names an attachment keeps: the latest ones.
const maxExecNames = 16

// noteExecLocked records that the client's EXECUTE of client runs the server statement server.
// Requires mu.
func (s *Session) noteExecLocked(client []byte, server string) {
	for i := range s.execNames {
		if e := &s.execNames[i]; e.server == server && e.client == string(client) {
			return
		}
	}
	if len(s.execNames) == maxExecNames {
		copy(s.execNames, s.execNames[1:])
		s.execNames = s.execNames[:maxExecNames-1]
	}
	s.execNames = append(s.execNames, execName{client: string(client), server: server})
}

// execName returns the name the client's EXECUTEs of this attachment used for the server
// statement server, "" if none or more than one. Requires mu.
func (s *Session) execName(server string) string {
	var name string
	for _, e := range s.execNames {
		if e.server == server {
			if name != "" && name != e.client {
				return ""
			}
			name = e.client
		}
	}
	return name
}

// onErrorLocked drops srv's statements when the server says one of them is stale or missing:
// a schema change made a shared statement mean something a fresh Parse would not (its result
// columns, or a type it was analysed with, changed), or a statement pgtide believes in does not
// exist. Which statement failed is not said, so none is trusted (see serverState.orphanAll); the
// client whose request failed gets the server's error, as it would on PostgreSQL from its own
// stale statement. Requires mu.
func (s *Session) onErrorLocked(srv *pool.Conn, body []byte) {
	code, msg := wire.ParseErrorFields(body)
	switch {
	case code == "0A000" && strings.Contains(msg, "cached plan must not change result type"),
		code == "XX000" && strings.Contains(msg, "cache lookup failed for type"),
		code == "26000" && strings.Contains(msg, `"pgtide_`):
		stateOf(srv).orphanAll()
		stateOf(srv).dropDealloc()
		if code == "26000" {
			s.log().Warn("a server connection lost prepared statements pgtide created; re-creating them", "err", msg)
		}
	}
}
