package session

import (
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Hidden requests: pgtide sometimes sends a request of its own on the client's server connection,
// between the client's: the settings that bring a server connection in line with the client's
// before its first request (the preamble), the Parse a client's SQL EXECUTE or DEALLOCATE needs
// first, and the SETs that put the client's startup values back after a reset. Each takes a
// request number, like the client's (reqSent), so the reader of the server knows from the count
// of ReadyForQuery messages whose answers it is reading: a hidden request's are not shown to the
// client, except those of a restore, which completes the client's request before it: its
// ParameterStatus messages tell the client what its settings are now, and its ReadyForQuery is
// the one the client sees for that request (the request's own is held back), so the client's
// next request cannot overtake the restore.
//
// A hidden request is registered, under mu, before anything that follows it is written to the
// server, and the reader decides whose answers it reads when the first message of a request
// arrives (readPhase), so a relay goroutine reading concurrently cannot misattribute them.

// hiddenReq is a request pgtide sent on its own account.
type hiddenReq struct {
	req     int  // its request number (see reqSent)
	restore bool // a restore after a reset: its ParameterStatus messages go to the client too
}

// readPhase is what the reader of a server connection knows about the request it reads.
type readPhase uint8

const (
	phaseNext    readPhase = iota // at the start of a request: to be looked up (nextPhase)
	phaseClient                   // the client's own
	phaseHidden                   // pgtide's: nothing reaches the client
	phaseRestore                  // pgtide's restore: ParameterStatus reaches the client
)

// hideLocked registers request number req as hidden and accounts for it as outstanding. req is
// either reqSent (a request sent after everything so far) or a number taken from a client request
// not yet written, which then moves up one (see resolveRefs). Requires mu.
func (s *Session) hideLocked(req int, restore bool) {
	s.hidden = append(s.hidden, hiddenReq{req: req, restore: restore})
	s.hiddenN.Add(1)
	s.reqSent++
	s.pending++
}

// nextPhase says whose answers the request now starting on the server carries. Without hidden
// requests, the common case, it takes no lock.
func (s *Session) nextPhase() readPhase {
	if s.hiddenN.Load() == 0 {
		return phaseClient
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hidden) > 0 && s.hidden[0].req == s.reqDone {
		if s.hidden[0].restore {
			return phaseRestore
		}
		return phaseHidden
	}
	return phaseClient
}

// restoreNextLocked reports whether the request after the one just answered is a restore.
// Requires mu.
func (s *Session) restoreNextLocked() bool {
	return len(s.hidden) > 0 && s.hidden[0].req == s.reqDone && s.hidden[0].restore
}

// hiddenDoneLocked accounts for the ReadyForQuery that ends the first hidden request. Requires mu.
func (s *Session) hiddenDoneLocked() {
	s.reqDone++
	n := copy(s.hidden, s.hidden[1:])
	s.hidden = s.hidden[:n]
	s.hiddenN.Add(-1)
	s.settledLocked(false)
}

// resetHiddenLocked forgets hidden requests at the start of an attachment. Requires mu.
func (s *Session) resetHiddenLocked() {
	s.hidden = s.hidden[:0]
	s.hiddenN.Store(0)
}

// hiddenMessage handles a message (not ReadyForQuery) answering a hidden request. Requires wmu
// and s.w.
func (s *Session) hiddenMessage(srv *pool.Conn, typ byte, restore bool) error {
	sr := srv.Reader
	switch typ {
	case 'S':
		return s.parameterStatus(srv, restore)
	case 'E':
		body, err := sr.Body()
		if err != nil {
			return err
		}
		if s.retryable && s.rerunAfterError(body) {
			return errRerun // a request before the client's: the client's did not run
		}
		code, msg := wire.ParseErrorFields(body)
		s.mu.Lock()
		aborted := s.txStatus == 'E'
		s.mu.Unlock()
		if restore && aborted {
			// The client's transaction failed before the restore ran: the reset it follows
			// failed too, or will be rolled back with it, and the restore's SETs with it.
			return nil
		}
		// The values came from the client's own session or the server itself, so this should
		// not happen; the server connection's state is now unknown, so it is not reused.
		s.log().Warn("a statement pgtide sent on the client's server connection failed", "code", code, "err", msg)
		srv.MarkBroken()
		return nil
	}
	return sr.Skip()
}

// parameterStatus handles a ParameterStatus from srv: the server connection's setting changed,
// and, if show, the client's, which is told. Requires wmu and s.w.
func (s *Session) parameterStatus(srv *pool.Conn, show bool) error {
	body, err := srv.Reader.Body()
	if err != nil {
		return err
	}
	s.mu.Lock()
	srv.RecordParameterStatus(body)
	if show {
		s.recordParameterStatusLocked(body)
	}
	s.mu.Unlock()
	if show {
		_, err = s.w.Write(wire.AppendMessage(s.w.AvailableBuffer(), 'S', body))
	}
	return err
}

// recordParameterStatusLocked follows a ParameterStatus body the client is shown. Requires mu.
func (s *Session) recordParameterStatusLocked(body []byte) {
	if name, rest, ok := cstr(body); ok {
		if value, _, ok := cstr(rest); ok && s.params[name] != value {
			s.ownParamsLocked()
			s.params[name] = value
			s.settingsChangedLocked()
		}
	}
}

// writeQuery writes a simple Query of sql to srv's buffer. A simple Query destroys the server's
// unnamed statement.
func writeQuery(srv *pool.Conn, sql []byte) {
	q := wire.AppendHeader(srv.Writer.AvailableBuffer(), 'Q', len(sql)+1)
	q = append(append(q, sql...), 0)
	srv.Writer.Write(q)
	stateOf(srv).setUnnamed(srv, "")
}
