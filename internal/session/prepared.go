package session

import (
	"bytes"
	"fmt"

	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Prepared statements in transaction mode.
//
// A client's named statements live in the client's session (stmts: name → query text and
// parameter types). On the server they are created under pgtide's own names (pool.Statement),
// shared by every client of that server connection that prepares the same text, and created
// lazily on whichever server connection runs a Bind or Describe of them: pgtide sends the Parse
// first and hides its ParseComplete. Every Parse and Close sent to the server has an
// expectation, in order, saying what to do with its ParseComplete or CloseComplete; when an
// error makes the server skip to Sync, the expectations left at ReadyForQuery are the messages it
// skipped, and their statements never came to exist.

// clientStmt is one of the client's named prepared statements.
type clientStmt struct {
	key string // query text and parameter types: the Parse body after the name
}

// Expectation actions.
const (
	actForward byte = iota // the client's own message: pass the response on
	actSwallow             // pgtide's message: the client must not see the response
	actAsParse             // a stand-in Close for a Parse pgtide did not need to send: show '1'
)

type expectation struct {
	typ    byte // '1' (ParseComplete) or '3' (CloseComplete)
	action byte
	batch  int             // reqSent when sent: the ReadyForQuery that ends this message's batch
	stmt   *pool.Statement // a Parse creating stmt on the server
	name   string          // for a client Parse of a named statement: the client's name
	def    *clientStmt
}

// expectLocked queues an expectation. Requires mu.
func (s *Session) expectLocked(typ, action byte, stmt *pool.Statement, name string, def *clientStmt) {
	s.expect = append(s.expect, expectation{typ: typ, action: action, batch: s.reqSent, stmt: stmt, name: name, def: def})
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

// ensureLocked makes sure srv has the statement for key, appending the Parse (and the Close of
// an evicted statement) to out; their responses are hidden from the client. Requires mu.
func (s *Session) ensureLocked(srv *pool.Conn, key string, out []byte) (*pool.Statement, []byte) {
	if st := srv.LookupStatement(key); st != nil {
		return st, out
	}
	st, evicted := srv.AddStatement(key, s.maxPrepared)
	if evicted != nil {
		out = appendClose(out, evicted.Name)
		s.expectLocked('3', actSwallow, nil, "", nil)
	}
	out = appendParse(out, st.Name, key)
	s.expectLocked('1', actSwallow, st, "", nil)
	return st, out
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
	if err := s.checkPins(query, false); err != nil {
		return err
	}
	if s.pinErr != nil {
		// pin_policy = error: parse a statement that fails with pgtide's error instead.
		out := appendParse(s.scratch[:0], string(nameB), refusalKey(s.pinErr))
		s.pinErr = nil
		s.mu.Lock()
		s.expectLocked('1', actForward, nil, "", nil)
		s.mu.Unlock()
		_, err := srv.Writer.Write(out)
		return err
	}
	out := s.scratch[:0]
	s.mu.Lock()
	switch {
	case len(nameB) == 0:
		// The unnamed statement: passed through, but remembered so a later Bind on another
		// server connection can re-create it. Clients tend to send the same text again and
		// again, so the key is only copied when it changes.
		if s.unnamedKey != string(rest) {
			s.unnamedKey = string(rest)
		}
		srv.UnnamedKey = s.unnamedKey
		out = wire.AppendMessage(out, 'P', body)
		s.expectLocked('1', actForward, nil, "", nil)
	case s.stmts[string(nameB)] != nil:
		name := string(nameB)
		// PostgreSQL refuses to redefine a statement. Make the server fail at this point with an
		// error pgtide recognises (Describe of a statement that cannot exist), then reword it.
		marker := fmt.Sprintf("pgtide_duplicate_%d", s.PID)
		if s.duplicate == nil {
			s.duplicate = make(map[string]string)
		}
		s.duplicate[marker] = name
		out = wire.AppendHeader(out, 'D', 1+len(marker)+1)
		out = append(append(append(out, 'S'), marker...), 0)
	default:
		name, key := string(nameB), string(rest)
		def := &clientStmt{key: key}
		if s.stmts == nil {
			s.stmts = make(map[string]*clientStmt)
		}
		s.stmts[name] = def
		if st := srv.LookupStatement(key); st != nil {
			// Already on this server: nothing to parse, but the client must get its
			// ParseComplete in order, so send a Close of a name that does not exist.
			out = appendClose(out, "pgtide_none")
			s.expectLocked('3', actAsParse, nil, "", nil)
		} else {
			st, evicted := srv.AddStatement(key, s.maxPrepared)
			if evicted != nil {
				out = appendClose(out, evicted.Name)
				s.expectLocked('3', actSwallow, nil, "", nil)
			}
			out = appendParse(out, st.Name, key)
			s.expectLocked('1', actForward, st, name, def)
		}
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
	s.mu.Lock()
	if len(stmt) == 0 {
		out = s.unnamedLocked(srv, out)
	} else if def := s.stmts[string(stmt)]; def != nil {
		var st *pool.Statement
		st, out = s.ensureLocked(srv, def.key, out)
		serverName = st.Name
	}
	s.mu.Unlock()
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

// cbytes splits a NUL-terminated string off b, without copying.
func cbytes(b []byte) ([]byte, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// unnamedLocked makes the server's unnamed statement the client's before a Bind or Describe of
// it: re-created when the client parsed it on another server connection, closed when the server
// holds another client's. Requires mu.
func (s *Session) unnamedLocked(srv *pool.Conn, out []byte) []byte {
	switch {
	case s.unnamedKey != "" && srv.UnnamedKey != s.unnamedKey:
		out = appendParse(out, "", s.unnamedKey)
		s.expectLocked('1', actSwallow, nil, "", nil)
		srv.UnnamedKey = s.unnamedKey
	case s.unnamedKey == "" && srv.UnnamedKey != "":
		out = appendClose(out, "")
		s.expectLocked('3', actSwallow, nil, "", nil)
		srv.UnnamedKey = ""
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
			s.expectLocked('3', actForward, nil, "", nil)
		}
	case typ == 'D' && name == "":
		out = s.unnamedLocked(srv, out)
	case typ == 'D':
		if def := s.stmts[name]; def != nil {
			var st *pool.Statement
			st, out = s.ensureLocked(srv, def.key, out)
			serverName = st.Name
		}
	case name == "": // Close of the unnamed statement
		s.unnamedKey = ""
		if srv.UnnamedKey != "" {
			srv.UnnamedKey = ""
		}
		s.expectLocked('3', actForward, nil, "", nil)
	default: // Close of a named statement: the client forgets it; the server keeps it cached.
		delete(s.stmts, name)
		// A Close of a name the server does not have completes without error, as PostgreSQL's
		// Close of an unknown name does.
		s.expectLocked('3', actForward, nil, "", nil)
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
func (s *Session) onParseOrCloseComplete(srv *pool.Conn, typ byte) byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.expect) == 0 || s.expect[0].typ != typ {
		s.logger.Error("unexpected response from server; passing it on", "type", string(typ))
		return typ
	}
	e := s.expect[0]
	n := copy(s.expect, s.expect[1:]) // keep the backing array for the next batch
	s.expect = s.expect[:n]
	if e.stmt != nil {
		e.stmt.Ready = true
	}
	switch e.action {
	case actSwallow:
		return 0
	case actAsParse:
		return '1'
	}
	return typ
}

// onReadyLocked drops the expectations of messages the server skipped after an error in the
// batch that this ReadyForQuery ends: their statements were never created. Requires mu.
func (s *Session) onReadyLocked(srv *pool.Conn) {
	done := s.reqDone
	s.reqDone++
	i := 0
	for ; i < len(s.expect) && s.expect[i].batch <= done; i++ {
		e := s.expect[i]
		if e.stmt != nil && !e.stmt.Ready {
			srv.ForgetStatement(e.stmt)
		}
		if e.def != nil && s.stmts[e.name] == e.def {
			delete(s.stmts, e.name)
		}
	}
	if i > 0 {
		s.expect = append(s.expect[:0], s.expect[i:]...)
	}
}

// rewordDuplicate turns the error caused by a duplicate Parse's stand-in into PostgreSQL's.
// Runs on the relay, only when a duplicate is outstanding.
func (s *Session) rewordDuplicate(body []byte) []byte {
	_, msg := wire.ParseErrorFields(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	for marker, name := range s.duplicate {
		if bytes.Contains([]byte(msg), []byte(`"`+marker+`"`)) {
			delete(s.duplicate, marker)
			e := &wire.Error{Severity: wire.SeverityError, Code: "42P05",
				Message: fmt.Sprintf("prepared statement %q already exists", name)}
			return e.Append(nil)[wire.HeaderLen:]
		}
	}
	return body
}
