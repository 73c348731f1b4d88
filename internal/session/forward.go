package session

import (
	"pgtide/internal/classify"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// forward sends the client's current message (of type typ) to srv. In session mode and for
// messages that carry no session state it is a raw copy; in transaction mode statements are
// translated and SQL is checked for state that pins. In both modes a reset of what the client
// gave at startup is followed by a restore (see reset.go).
func (s *Session) forward(srv *pool.Conn, typ byte) error {
	if (typ == 'Q' || typ == 'F') && s.skipping.Load() {
		// An error the reader saw after attach counted this request took it back: the server
		// skips it (see reqlog.go).
		return s.r.Skip()
	}
	if typ == 'S' && s.restore != nil {
		return s.forwardSyncRestore(srv)
	}
	if !s.txMode {
		switch {
		case !s.watchResets:
		case typ == 'Q':
			return s.forwardQuerySession(srv)
		case typ == 'P':
			if err := s.noteParseResets(); err != nil {
				return err
			}
		}
		return s.r.Forward(srv.Writer)
	}
	switch typ {
	case 'Q':
		return s.forwardQuery(srv)
	case 'P':
		if s.maxPrepared == 0 {
			return s.forwardParseRaw(srv)
		}
		return s.forwardParse(srv)
	case 'B':
		if s.maxPrepared > 0 {
			return s.forwardBind(srv)
		}
	case 'D', 'C':
		if s.maxPrepared > 0 {
			return s.forwardDescribeClose(srv, typ)
		}
	case 'E':
		if len(s.refPortals) > 0 {
			if err := s.executeRefs(srv); err != nil {
				return err
			}
		}
	}
	return s.r.Forward(srv.Writer)
}

// forwardQuery checks a simple Query for session state, then sends it (or its refusal), with
// the statement names of SQL EXECUTE and DEALLOCATE translated and a restore after a reset.
func (s *Session) forwardQuery(srv *pool.Conn) error {
	body, err := s.r.Body()
	if err != nil {
		return err
	}
	query := body
	if n := len(query); n > 0 && query[n-1] == 0 {
		query = query[:n-1]
	}
	a, err := s.checkPins(query, true, s.textInfo(query, false).MaySetSessionState)
	if err != nil {
		return err
	}
	s.mu.Lock()
	// A simple Query replaces the unnamed statement, on the server and for the client. After
	// extended-protocol messages not ended by a Sync, the server skips it if one of them
	// failed, and keeps the unnamed statement it had: which, pgtide does not know, and the next
	// client of the connection must not run it (see unnamedLocked).
	// The client's is given back if the server skips the Query (see expectSkippableLocked).
	inBatch := s.open
	var prev clientStmt
	if inBatch {
		prev = s.unnamed
		stateOf(srv).setUnnamed(srv, unnamedUnknown)
	} else {
		stateOf(srv).setUnnamed(srv, "")
	}
	s.unnamed = clientStmt{}
	if inBatch && (s.pinErr != nil || a == nil) {
		s.expectSkippableLocked(prev) // nothing of pgtide's goes before it
	}
	s.mu.Unlock()
	if s.pinErr != nil {
		q := refusalQuery(s.pinErr)
		s.pinErr = nil
		out := wire.AppendHeader(s.scratch[:0], 'Q', len(q)+1)
		out = append(append(out, q...), 0)
		s.scratch = out
		_, err := srv.Writer.Write(out)
		return err
	}
	if a == nil { // the common statement
		out := wire.AppendHeader(srv.Writer.AvailableBuffer(), 'Q', len(body))
		if _, err := srv.Writer.Write(out); err != nil {
			return err
		}
		_, err = srv.Writer.Write(body)
		return err
	}
	if a.ResetAll {
		s.setting = routeAuto // RESET ALL and DISCARD ALL reset pgtide.route too
	}
	restore := s.restoreSQL(a)
	if len(a.Refs) > 0 {
		pre, q := s.resolveRefs(srv, a, s.scratch[:0], query)
		s.scratch = pre
		if q != nil {
			query = q
		}
		if _, err := srv.Writer.Write(pre); err != nil {
			return err
		}
	}
	if inBatch {
		s.mu.Lock()
		s.expectSkippableLocked(prev) // after the statements pgtide parsed for it
		s.mu.Unlock()
	}
	s.registerRestore(restore)
	writeQuery(srv, query)
	if restore != nil {
		writeQuery(srv, restore)
	}
	if inBatch {
		stateOf(srv).setUnnamed(srv, unnamedUnknown) // not writeQuery's "": the server may skip them
	}
	return nil
}

// expectSkippableLocked queues the expectation of the simple Query being sent inside an
// extended-protocol batch (see expectation.typ): the server skips it if a message before it
// since the last Sync fails, and the client keeps its unnamed statement prev then. Queued as the
// Query goes out, after what pgtide sends ahead of it. Requires mu.
func (s *Session) expectSkippableLocked(prev clientStmt) {
	s.queueLocked(expectation{typ: 'Q', action: actForward, batch: s.reqSent - 1, // its own number (see attach)
		unnamed: true, prev: prev})
}

// registerRestore registers the restore sql (if any) as the hidden request after the client's
// current one, before that is written: the reader holds back the client's ReadyForQuery for it.
func (s *Session) registerRestore(sql []byte) {
	if sql == nil {
		return
	}
	s.mu.Lock()
	s.hideLocked(s.reqSent, true)
	s.mu.Unlock()
}

// forwardSyncRestore sends a Sync that ends a batch with a reset in it, then the restore.
func (s *Session) forwardSyncRestore(srv *pool.Conn) error {
	restore := s.restore
	s.restore = nil
	s.registerRestore(restore)
	if err := s.r.Forward(srv.Writer); err != nil {
		return err
	}
	writeQuery(srv, restore)
	return nil
}

// forwardQuerySession sends a simple Query in session mode, with a restore after a reset.
func (s *Session) forwardQuerySession(srv *pool.Conn) error {
	body, err := s.r.Body()
	if err != nil {
		return err
	}
	var restore []byte
	if classify.MaySetSessionState(body) {
		a := s.analysisScratch()
		classify.AnalyzeSession(body[:max(len(body)-1, 0)], a)
		restore = s.restoreSQL(a)
	}
	s.registerRestore(restore)
	out := wire.AppendHeader(srv.Writer.AvailableBuffer(), 'Q', len(body))
	if _, err := srv.Writer.Write(out); err != nil {
		return err
	}
	if _, err = srv.Writer.Write(body); err != nil {
		return err
	}
	if restore != nil {
		writeQuery(srv, restore)
	}
	return nil
}

// noteParseResets looks at a Parse in session mode for a reset that needs a restore after the
// batch's Sync.
func (s *Session) noteParseResets() error {
	head, err := s.r.PeekBody(s.r.MaxPeek())
	if err != nil {
		return err
	}
	if _, rest, ok := cbytes(head); ok {
		if query, _, ok := cbytes(rest); ok && classify.MaySetSessionState(query) {
			a := s.analysisScratch()
			classify.AnalyzeSession(query, a)
			if r := s.restoreSQL(a); r != nil {
				s.restore = r
			}
		}
	}
	return nil
}

// forwardParseRaw checks a Parse's SQL for session state and sends it unchanged (statement
// translation off).
func (s *Session) forwardParseRaw(srv *pool.Conn) error {
	head, err := s.r.PeekBody(s.r.MaxPeek())
	if err != nil {
		return err
	}
	if _, rest, ok := cbytes(head); ok {
		if query, _, ok := cbytes(rest); ok {
			a, err := s.checkPins(query, false, s.textInfo(query, false).MaySetSessionState)
			if err != nil {
				return err
			}
			if a != nil {
				if r := s.restoreSQL(a); r != nil {
					s.restore = r
				}
			}
			s.pinErr = nil // cannot refuse without rewriting; the client is pinned instead
		}
	}
	return s.r.Forward(srv.Writer)
}

// relayMessage forwards one server message (not ReadyForQuery) to the client, following the
// session state it reports. Requires wmu and s.w (see writer).
func (s *Session) relayMessage(srv *pool.Conn, typ byte) error {
	sr := srv.Reader
	switch typ {
	case 'S':
		return s.parameterStatus(srv, true)
	case '2', 'n', 'T', 'I', 's':
		s.noteAnswered() // see reqlog.go
	case '1', '3':
		s.noteAnswered()
		if !s.txMode || s.maxPrepared == 0 {
			break
		}
		if err := sr.Skip(); err != nil {
			return err
		}
		if out := s.onParseOrCloseComplete(typ); out != 0 {
			_, err := s.w.Write(wire.AppendHeader(s.w.AvailableBuffer(), out, 0))
			return err
		}
		return nil
	case 'G': // CopyInResponse
		s.mu.Lock()
		s.copyIn = s.onCopyInLocked()
		s.mu.Unlock()
	case 'C':
		s.noteAnswered()
		s.copyIn = 0 // a COPY's CommandComplete ends copy-in; outside one this is a no-op
		// Only DEALLOCATE [ALL] and DISCARD ALL matter (see onCommandCompleteLocked); a length
		// check keeps every other tag to a comparison or three.
		if n := sr.BodyLen(); !s.txMode || n != len("DEALLOCATE ALL\x00") && n != len("DISCARD ALL\x00") && n != len("DEALLOCATE\x00") {
			break
		}
		body, err := sr.Body()
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.onCommandCompleteLocked(srv, body)
		s.mu.Unlock()
		_, err = s.w.Write(wire.AppendMessage(s.w.AvailableBuffer(), 'C', body))
		return err
	case 'E':
		body, err := sr.Body()
		if err != nil {
			return err
		}
		return s.relayError(srv, body)
	}
	return sr.Forward(s.w)
}

// relayError forwards an ErrorResponse body from srv to the client, following what it means for
// the session. Requires wmu and s.w.
func (s *Session) relayError(srv *pool.Conn, body []byte) error {
	countError(s.env.Errors, wire.ErrorCode(body))
	srv.Counters().ServerErrors.Add(1)
	s.mu.Lock()
	s.failed = true
	if s.copyIn != 0 {
		s.copyIn = 0
		s.onCopyFailedLocked()
	}
	var bound *clientStmt
	if s.txMode {
		bound = s.failedBindLocked()
	}
	s.skipAfterErrorLocked()
	reworded := len(s.duplicate) > 0 && s.rewordDuplicateLocked(&body)
	if !reworded && s.txMode && s.deallocs.len() > 0 {
		reworded = s.rewordMissLocked(&body)
	}
	if !reworded && s.txMode {
		s.onErrorLocked(srv, body)
		s.rewordNameLocked(&body, bound)
	}
	if sev := string(wire.ErrorSeverity(body)); sev == wire.SeverityFatal || sev == "PANIC" {
		s.fatalRelayed = true
	}
	s.mu.Unlock()
	_, err := s.w.Write(wire.AppendMessage(s.w.AvailableBuffer(), 'E', body))
	return err
}

// applyPendingLocked applies the effects of the Query that this ReadyForQuery ends, unless it
// failed. Requires mu.
func (s *Session) applyPendingLocked(srv *pool.Conn, status byte) {
	ok := !s.failed && status != 'E'
	s.failed = false
	if c := s.pendingExtra; c != nil {
		s.pendingExtra = nil
		if ok {
			if c.value == "" {
				delete(s.extra, c.name)
			} else {
				s.setExtraLocked(c.name, c.value)
			}
			s.settingsChangedLocked()
			stateOf(srv).setExtra(c.name, c.value)
		}
	}
	if r := s.pendingReset; r != nil {
		s.pendingReset = nil
		if ok {
			s.applyResetLocked(srv, r)
		}
	}
}
