package session

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// retrySession returns a transaction-mode session reading in, with statement
// "w" defined as an INSERT and "r" as a SELECT, and the unnamed statement a SELECT.
func retrySession(in []byte) *Session {
	s := stmtSession(in)
	s.env.Routes = new(RouteCounter)
	s.stmts = map[string]*clientStmt{
		"w": {key: "INSERT INTO t VALUES ($1)\x00\x00\x00"},
		"r": {key: "SELECT $1::int\x00\x00\x00"},
	}
	s.unnamed.key = "SELECT 1\x00\x00\x00"
	return s
}

func TestArmRetry(t *testing.T) {
	q := func(sql string) pgproto3.FrontendMessage { return &pgproto3.Query{String: sql} }
	parse := func(name, sql string) pgproto3.FrontendMessage { return &pgproto3.Parse{Name: name, Query: sql} }
	bind := func(stmt string) pgproto3.FrontendMessage { return &pgproto3.Bind{PreparedStatement: stmt} }
	exec, sync := &pgproto3.Execute{}, &pgproto3.Sync{}
	long := string(bytes.Repeat([]byte("x"), clientBufferSize))
	for _, tc := range []struct {
		name  string
		msgs  []pgproto3.FrontendMessage
		after []pgproto3.FrontendMessage // sent behind the request
		setup func(*Session)
		want  bool
	}{
		{"simple query", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, nil, nil, true},
		{"extended, up to Sync", []pgproto3.FrontendMessage{parse("", "SELECT 1"), bind(""), exec, sync}, nil, nil, true},
		{"bind of a defined statement", []pgproto3.FrontendMessage{bind("w"), exec, sync}, nil, nil, true},
		{"parse of a new name", []pgproto3.FrontendMessage{parse("n", "SELECT 1"), bind("n"), exec, sync}, nil, nil, true},
		{"parse of a defined name", []pgproto3.FrontendMessage{parse("w", "SELECT 1"), bind("w"), exec, sync}, nil, nil, false},
		{"close of a named statement", []pgproto3.FrontendMessage{&pgproto3.Close{ObjectType: 'S', Name: "w"}, sync}, nil, nil, false},
		{"ends with Flush", []pgproto3.FrontendMessage{parse("", "SELECT 1"), bind(""), exec, &pgproto3.Flush{}}, nil, nil, false},
		{"function call", []pgproto3.FrontendMessage{&pgproto3.FunctionCall{Function: 1}}, nil, nil, false},
		{"another request behind it", []pgproto3.FrontendMessage{q("SELECT 1")}, []pgproto3.FrontendMessage{q("SELECT 2")}, nil, false},
		{"longer than the read buffer", []pgproto3.FrontendMessage{q("SELECT '" + long + "'")}, nil, nil, false},
		{"inside a transaction block", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, nil, func(s *Session) { s.txStatus = 'T' }, false},
		{"pinned", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, nil, func(s *Session) { s.pinned = true }, false},
		{"session mode", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, nil, func(s *Session) { s.txMode = false }, false},
		{"retry_on_failover off", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, nil,
			func(s *Session) { s.env.Config().Proxy.RetryOnFailover = false }, false},
	} {
		req := frontend(t, tc.msgs...)
		s := retrySession(append(req, frontend(t, tc.after...)...))
		if tc.setup != nil {
			tc.setup(s)
		}
		typ, _, err := s.r.Next()
		if err != nil {
			t.Fatal(err)
		}
		ahead := s.readAhead(typ)
		s.armRetry(&ahead)
		if s.retryable != tc.want {
			t.Errorf("%s: retryable %v, want %v", tc.name, s.retryable, tc.want)
		}
		if s.retryable && (!bytes.Equal(s.held, req) || s.heldLeft != len(tc.msgs) || s.heldMark != -1) {
			t.Errorf("%s: held %q (%d messages, mark %d), want the request", tc.name, s.held, s.heldLeft, s.heldMark)
		}
		if s.r.BodyLen() < 0 {
			t.Errorf("%s: armRetry consumed input", tc.name)
		}
	}
}

func TestHeldKinds(t *testing.T) {
	q := func(sql string) pgproto3.FrontendMessage { return &pgproto3.Query{String: sql} }
	parse := func(name, sql string) pgproto3.FrontendMessage { return &pgproto3.Parse{Name: name, Query: sql} }
	bind := func(stmt string) pgproto3.FrontendMessage { return &pgproto3.Bind{PreparedStatement: stmt} }
	exec, sync := &pgproto3.Execute{}, &pgproto3.Sync{}
	for _, tc := range []struct {
		name          string
		msgs          []pgproto3.FrontendMessage
		single, reads bool
	}{
		{"insert", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, true, false},
		{"select", []pgproto3.FrontendMessage{q("SELECT 1")}, true, true},
		{"show: reads, not DML", []pgproto3.FrontendMessage{q("SHOW work_mem")}, false, true},
		{"call", []pgproto3.FrontendMessage{q("CALL p()")}, false, false},
		{"commit between writes", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2)")}, false, false},
		{"reader hint on a write", []pgproto3.FrontendMessage{q("/* pgtide:reader */ DELETE FROM t")}, true, false},
		{"extended select", []pgproto3.FrontendMessage{parse("", "SELECT $1::int"), bind(""), exec, sync}, true, true},
		{"pipeline with a write", []pgproto3.FrontendMessage{parse("", "SELECT 1"), bind(""), exec, parse("", "UPDATE t SET a = 1"), bind(""), exec, sync}, true, false},
		{"bind of a named write", []pgproto3.FrontendMessage{bind("w"), exec, sync}, true, false},
		{"bind of a named read", []pgproto3.FrontendMessage{bind("r"), exec, sync}, true, true},
		{"bind of the unnamed statement", []pgproto3.FrontendMessage{bind(""), exec, sync}, true, true},
		{"bind of a statement parsed in the request", []pgproto3.FrontendMessage{parse("n", "VACUUM"), bind("n"), exec, sync}, false, false},
		{"bind of an unknown statement", []pgproto3.FrontendMessage{bind("nope"), exec, sync}, false, false},
	} {
		s := retrySession(nil)
		s.held = frontend(t, tc.msgs...)
		if single, reads := s.heldKinds(); single != tc.single || reads != tc.reads {
			t.Errorf("%s: single %v, reads %v; want %v, %v", tc.name, single, reads, tc.single, tc.reads)
		}
	}
}

// TestMayRerun: which ends of the connection let which requests run again.
func TestMayRerun(t *testing.T) {
	write := &pgproto3.Query{String: "INSERT INTO t VALUES (1)"}
	read := &pgproto3.Query{String: "SELECT 1"}
	call := &pgproto3.Query{String: "CALL p()"}
	for _, tc := range []struct {
		name   string
		req    pgproto3.FrontendMessage
		end    endKind
		warned bool // a shutdown warning came first
		want   bool
	}{
		{"write, terminated", write, endTerminated, false, true},
		{"write, unsent", write, endUnsent, false, true},
		{"write, lost", write, endLost, false, false},
		{"write, warned then terminated", write, endTerminated, true, false},
		{"read, lost", read, endLost, false, true},
		{"read, warned then lost", read, endLost, true, true},
		{"call, terminated", call, endTerminated, false, false},
	} {
		s := retrySession(nil)
		s.held = frontend(t, tc.req)
		s.retryable, s.heldMark, s.endNotice = true, -1, tc.warned
		if got := s.mayRerun(tc.end); got != tc.want {
			t.Errorf("%s: mayRerun %v, want %v", tc.name, got, tc.want)
		}
		if s.retryable {
			t.Errorf("%s: still retryable", tc.name)
		}
		unsafe := s.env.Routes.FailoverRetries(FailoverUnsafe)
		if want := int64(0); !tc.want {
			if unsafe != 1 {
				t.Errorf("%s: %d counted unsafe, want 1", tc.name, unsafe)
			}
		} else if unsafe != want {
			t.Errorf("%s: %d counted unsafe, want 0", tc.name, unsafe)
		}
	}
	// Something in the write buffer before the held answers, a session ending: never.
	s := retrySession(nil)
	s.held = frontend(t, write)
	s.retryable, s.heldMark = true, 5
	if s.mayRerun(endTerminated) {
		t.Error("re-run with other output in the write buffer")
	}
	s.retryable, s.heldMark, s.closing = true, 0, true
	if s.mayRerun(endTerminated) {
		t.Error("re-run while the session ends")
	}
}

// TestRerunAfterError: only a FATAL 57P01 or 57P02 ends the connection for a re-run; a notice is
// a shutdown warning only as a WARNING with one of those codes.
func TestRerunAfterError(t *testing.T) {
	encode := func(m pgproto3.BackendMessage) []byte {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b[5:]
	}
	for _, tc := range []struct {
		name          string
		severity      string
		code          string
		write, reread bool // re-run for a write, for a read
	}{
		{"fast shutdown", "FATAL", "57P01", true, true},
		{"crash", "FATAL", "57P02", false, true},
		{"57P01 raised as an ERROR", "ERROR", "57P01", false, false},
		{"another FATAL", "FATAL", "53300", false, false},
	} {
		body := encode(&pgproto3.ErrorResponse{Severity: tc.severity, SeverityUnlocalized: tc.severity, Code: tc.code, Message: "m"})
		for _, sql := range []string{"INSERT INTO t VALUES (1)", "SELECT 1"} {
			s := retrySession(nil)
			s.held = frontend(t, &pgproto3.Query{String: sql})
			s.retryable, s.heldMark = true, 0
			want := tc.write
			if sql == "SELECT 1" {
				want = tc.reread
			}
			if got := s.rerunAfterError(body); got != want {
				t.Errorf("%s, %s: re-run %v, want %v", tc.name, sql, got, want)
			}
		}
	}
	for _, tc := range []struct {
		severity, code string
		want           bool
	}{{"WARNING", "57P01", true}, {"WARNING", "57P02", true}, {"NOTICE", "57P01", false}, {"WARNING", "01000", false}} {
		body := encode(&pgproto3.NoticeResponse{Severity: tc.severity, SeverityUnlocalized: tc.severity, Code: tc.code, Message: "m"})
		if got := isShutdownWarning(body); got != tc.want {
			t.Errorf("%s %s: a shutdown warning %v, want %v", tc.severity, tc.code, got, tc.want)
		}
	}
}
