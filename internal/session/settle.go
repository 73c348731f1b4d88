package session

import (
	"encoding/binary"

	"pgtide/internal/evloop"
)

// Settling. The server skips the rest of a request after an error in it, and pgtide learns which
// of its Parses, Closes and DEALLOCATEs were skipped only at the request's ReadyForQuery
// (onReadyLocked undoes their bookkeeping then). A request pipelined after it is translated by
// those records: it would name a statement the server never created, or miss one whose Close the
// server skipped. So a request that uses a statement name an earlier request not yet answered
// defined, closed or deallocated, or a statement pgtide created on the server for it, waits for
// that request's answers (awaitSettled), as PostgreSQL takes a request up only once the one
// before is done. Other requests of the pipeline, and pipelines that change no statements, go on
// without waiting. A simple Query inside an extended-protocol batch ends a request too: what
// follows it in the batch may wait for its answer (see mustSettle).

// settleState is what the requests not yet answered changed of the client's statement names and
// of the server's statements. Guarded by Session.mu, as the attachment it belongs to.
type settleState struct {
	batch int                 // 1 + the number of the last request that changed any; 0: none
	names map[string]struct{} // client statement names defined, closed or deallocated; nil: none yet
	texts map[string]struct{} // texts of the server statements created (keys of clientStmt); nil: none yet
	all   bool                // a DEALLOCATE ALL or DISCARD ALL among them
	// unnamed: the unnamed statement was parsed or closed, by the client or by pgtide for it
	// (re-created, or another client's closed first: see unnamedLocked). Its record is undone
	// at the ReadyForQuery if the server skipped that: a Bind, Describe or Close of it (not
	// after a Parse of its own), or a Query, which drops it, must come after.
	unnamed bool
}

func (st *settleState) reset() {
	st.batch, st.all, st.unnamed = 0, false, false
	clear(st.names)
	clear(st.texts)
}

// unsettleLocked records what e, a message about to be sent, changes that a later request may
// use, if the server may skip it. Requires mu.
func (s *Session) unsettleLocked(e *expectation) {
	if e.name == "" && e.stmt == nil && e.tw == nil && e.saved == nil && !e.all && !e.unnamed {
		return
	}
	st := s.settle
	if st == nil {
		st = &settleState{}
		s.settle = st
	}
	st.batch = e.batch + 1
	st.unnamed = st.unnamed || e.unnamed
	if e.name != "" {
		st.names = addKey(st.names, e.name)
	}
	if e.stmt != nil {
		st.texts = addKey(st.texts, e.stmt.key.text)
	}
	for name := range e.saved {
		st.names = addKey(st.names, name)
	}
	// A throwaway stands for a name the client deallocates, which e.name has; its own
	// statement is pgtide's, whichever request uses it next: any SQL EXECUTE or DEALLOCATE
	// waits (see nextUsesLocked).
	st.all = st.all || e.all
}

// addKey adds k to set, made at the first key, and returns set.
func addKey(set map[string]struct{}, k string) map[string]struct{} {
	if set == nil {
		set = make(map[string]struct{})
	}
	set[k] = struct{}{}
	return set
}

// unsettledLocked reports whether requests not yet answered changed statements. Requires mu.
func (s *Session) unsettledLocked() bool {
	return s.settle != nil && s.settle.batch > s.reqDone
}

// mustSettle reports whether the client's next request, buffered after one just ended by a
// message of type typ, must wait for the answers to those before it: it uses what they changed
// (see "Settling"). A Query inside an extended-protocol batch (not ended by a Sync) ends a request
// too: the server answers it in full before it reads on, unless an error before it makes the
// server skip to the Sync, and the rest with it (the wait ends then: see skipAfterErrorLocked).
func (s *Session) mustSettle(typ byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.txMode || s.open && typ != 'Q' || !s.unsettledLocked() {
		return false
	}
	if s.replaying {
		return true // read from the held copy: not looked at, so taken to use them
	}
	buf, _ := s.br.Peek(s.br.Buffered())
	return s.nextUsesLocked(buf)
}

// nextUsesLocked reports whether the request at the start of buf uses a statement that requests
// not yet answered changed: a Parse, Bind, Describe or Close of such a name (or of a name whose
// text pgtide created a statement for, or of the unnamed statement they parsed or closed), a
// portal of a statement with SQL in its text that names statements, or a simple Query that may
// (EXECUTE, DEALLOCATE, DISCARD, PREPARE; any, after a change of the unnamed statement, which
// it drops). A request not all in buf is taken to. Requires mu.
func (s *Session) nextUsesLocked(buf []byte) bool {
	st := s.settle
	parsedUnnamed := false // the request parsed its own unnamed statement already
	uses := func(name []byte) bool {
		if len(name) == 0 {
			return st.unnamed && !parsedUnnamed
		}
		if st.all {
			return true
		}
		if _, ok := st.names[string(name)]; ok {
			return true
		}
		if def := s.stmts[string(name)]; def != nil {
			_, ok := st.texts[def.key]
			return ok
		}
		return false
	}
	for off := 0; ; {
		if len(buf)-off < 5 {
			return true // not all here
		}
		typ := buf[off]
		n := int(binary.BigEndian.Uint32(buf[off+1:]))
		if n < 4 || n > len(buf)-off-1 {
			return true // malformed (the client loop says so), or not all here
		}
		body := buf[off+5 : off+1+n]
		off += 1 + n
		switch typ {
		case 'P':
			name := cstrBytes(body)
			if len(name) == 0 {
				parsedUnnamed = true // replaces it, whatever it was
			} else if uses(name) {
				return true
			}
			if len(name) < len(body) { // a text naming statements (see keyOnLocked)
				if text := body[len(name)+1:]; containsFold(text, "execute") || containsFold(text, "deallocate") {
					return true
				}
			}
		case 'B':
			portal := cstrBytes(body)
			if len(portal) < len(body) && uses(cstrBytes(body[len(portal)+1:])) {
				return true
			}
		case 'D', 'C':
			if len(body) > 0 && body[0] == 'S' && uses(cstrBytes(body[1:])) {
				return true
			}
		case 'E':
			if len(s.refPortals) > 0 {
				return true
			}
		case 'Q':
			return st.unnamed || containsFold(body, "execute") || containsFold(body, "deallocate") ||
				containsFold(body, "discard") || containsFold(body, "prepare")
		case 'S':
			return false
		case 'd', 'c', 'f':
			// COPY data, for the Query just sent (see mustSettle): the server answers it only
			// once it has the data, so nothing waits.
			return false
		}
	}
}

// cstrBytes returns b up to its first NUL (all of b if it has none).
func cstrBytes(b []byte) []byte {
	if name, _, ok := cbytes(b); ok {
		return name
	}
	return b
}

// awaitSettled waits, when a relay goroutine reads the server, until it has read the answers
// mustSettle waits for, or stopped. (Without one, the client loop reads them itself.)
func (s *Session) awaitSettled() {
	s.mu.Lock()
	if !s.relayRunning || !s.txMode || s.skipping.Load() || !s.unsettledLocked() {
		s.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	s.settled = ch
	s.mu.Unlock()
	evloop.BeforeBlock()
	<-ch
}

// settledLocked wakes awaitSettled once the answers it waits for are in, or with stop, when the
// reader stops or the server skips what waits (see mustSettle); and forgets what was changed once
// those answers are in. Requires mu.
func (s *Session) settledLocked(stop bool) {
	if s.activeState == nil {
		return
	}
	settled := !s.unsettledLocked()
	if settled && s.settle != nil && s.settle.batch > 0 {
		s.settle.reset()
	}
	if s.settled != nil && (stop || settled) {
		close(s.settled)
		s.settled = nil
	}
}
