package session

import (
	"maps"
	"unique"

	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// forward sends the client's current message (of type typ) to srv. In session mode and for
// messages that carry no session state it is a raw copy; in transaction mode statements are
// translated and SQL is checked for state that pins.
func (s *Session) forward(srv *pool.Conn, typ byte) error {
	if !s.txMode {
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
	}
	return s.r.Forward(srv.Writer)
}

// forwardQuery checks a simple Query for session state, then sends it (or its refusal).
func (s *Session) forwardQuery(srv *pool.Conn) error {
	body, err := s.r.Body()
	if err != nil {
		return err
	}
	query := body
	if n := len(query); n > 0 && query[n-1] == 0 {
		query = query[:n-1]
	}
	if err := s.checkPins(query, true); err != nil {
		return err
	}
	s.mu.Lock()
	// A simple Query replaces the unnamed statement, on the server and for the client.
	s.unnamedKey = ""
	srv.UnnamedKey = ""
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
	out := wire.AppendHeader(srv.Writer.AvailableBuffer(), 'Q', len(body))
	if _, err := srv.Writer.Write(out); err != nil {
		return err
	}
	_, err = srv.Writer.Write(body)
	return err
}

// forwardParseRaw checks a Parse's SQL for session state and sends it unchanged (statement
// translation off).
func (s *Session) forwardParseRaw(srv *pool.Conn) error {
	head, err := s.r.PeekBody(s.r.MaxPeek())
	if err != nil {
		return err
	}
	if _, rest, ok := cstr(head); ok {
		if query, _, ok := cstr(rest); ok {
			if err := s.checkPins([]byte(query), false); err != nil {
				return err
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
	case 'S': // ParameterStatus: the client's and the server connection's setting changed
		body, err := sr.Body()
		if err != nil {
			return err
		}
		s.mu.Lock()
		srv.RecordParameterStatus(body)
		if name, rest, ok := cstr(body); ok {
			if value, _, ok := cstr(rest); ok {
				s.params[name] = value
				s.settings = unique.Handle[string]{}
			}
		}
		s.mu.Unlock()
		_, err = s.w.Write(wire.AppendMessage(s.w.AvailableBuffer(), 'S', body))
		return err
	case '1', '3':
		if !s.txMode || s.maxPrepared == 0 {
			break
		}
		if err := sr.Skip(); err != nil {
			return err
		}
		if out := s.onParseOrCloseComplete(srv, typ); out != 0 {
			_, err := s.w.Write(wire.AppendHeader(s.w.AvailableBuffer(), out, 0))
			return err
		}
		return nil
	case 'G': // CopyInResponse
		s.mu.Lock()
		s.copyIn = s.onCopyInLocked()
		s.mu.Unlock()
	case 'C':
		s.copyIn = 0 // a COPY's CommandComplete ends copy-in; outside one this is a no-op
	case 'E':
		s.mu.Lock()
		s.failed = true
		if s.copyIn != 0 {
			s.copyIn = 0
			s.onCopyFailedLocked()
		}
		dup := len(s.duplicate) > 0
		s.mu.Unlock()
		if !dup {
			break
		}
		body, err := sr.Body()
		if err != nil {
			return err
		}
		_, err = s.w.Write(wire.AppendMessage(s.w.AvailableBuffer(), 'E', s.rewordDuplicate(body)))
		return err
	}
	return sr.Forward(s.w)
}

// preambleMessage handles a response to the settings sent at attach, which the client must not
// see. It reports whether more of the preamble's responses are to come.
func (s *Session) preambleMessage(srv *pool.Conn, typ byte) (bool, error) {
	sr := srv.Reader
	switch typ {
	case 'S':
		body, err := sr.Body()
		if err != nil {
			return false, err
		}
		s.mu.Lock()
		srv.RecordParameterStatus(body)
		s.mu.Unlock()
		return true, nil
	case 'E':
		body, err := sr.Body()
		if err != nil {
			return false, err
		}
		code, msg := wire.ParseErrorFields(body)
		// The values came from the server itself, so this should not happen; the server
		// connection's settings are now unknown, so it is not reused.
		s.logger.Warn("restoring the client's settings on a server connection failed", "code", code, "err", msg)
		srv.MarkBroken()
		return true, nil
	case 'Z':
		return false, sr.Skip()
	}
	return true, sr.Skip()
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
				s.extra[c.name] = c.value
			}
			s.settings = unique.Handle[string]{}
			srv.SetExtra(c.name, c.value)
		}
	}
	if s.pendingDeallocate {
		s.pendingDeallocate = false
		if ok {
			clear(s.stmts)
			s.unnamedKey = ""
			srv.ForgetAllStatements()
		}
	}
	if s.pendingDiscard {
		s.pendingDiscard = false
		if ok {
			// DISCARD ALL returns settings to the session's defaults: the server connection's
			// own, and for the client the ones it started with.
			srv.ClearExtra()
			s.extra = maps.Clone(s.startupExtra)
			s.settings = unique.Handle[string]{}
		}
	}
}
