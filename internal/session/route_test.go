package session

import (
	"bytes"
	"io"
	"pgtide/internal/wire"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/classify"
	"pgtide/internal/config"
	"pgtide/internal/router"
)

// frontend encodes client messages.
func frontend(t *testing.T, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// routeSession returns a transaction-mode session on the auto endpoint reading in.
func routeSession(in []byte) *Session {
	cfg := config.Defaults()
	s := &Session{env: &Env{Config: func() *config.Config { return cfg }}, txMode: true, txStatus: 'I'}
	s.activeState = newActive(wire.NewBufReader(bytes.NewReader(in), clientBufferSize), cfg.Proxy.MaxMessageSize)
	return s
}

// fakeFunctions knows one volatile user function, app.bump.
type fakeFunctions struct{}

func (fakeFunctions) Lookup(schema, name []byte) classify.FuncKind {
	if string(name) == "bump" && (len(schema) == 0 || string(schema) == "app") {
		return classify.FuncWrite
	}
	return classify.FuncUnknown
}

func TestPlanRoute(t *testing.T) {
	q := func(sql string) pgproto3.FrontendMessage { return &pgproto3.Query{String: sql} }
	parse := func(name, sql string) pgproto3.FrontendMessage { return &pgproto3.Parse{Name: name, Query: sql} }
	bind := func(stmt string) pgproto3.FrontendMessage { return &pgproto3.Bind{PreparedStatement: stmt} }
	exec := &pgproto3.Execute{}
	sync := &pgproto3.Sync{}
	describe := &pgproto3.Describe{ObjectType: 'S'}
	reader, writer := classify.RouteReader, classify.RouteWriter
	for _, tc := range []struct {
		name  string
		msgs  []pgproto3.FrontendMessage
		route classify.Route
		armed bool
		count int // messages in the request
	}{
		{"simple read", []pgproto3.FrontendMessage{q("SELECT 1")}, reader, true, 1},
		{"simple write", []pgproto3.FrontendMessage{q("INSERT INTO t VALUES (1)")}, writer, false, 1},
		{"volatile user function", []pgproto3.FrontendMessage{q("SELECT app.bump(1)")}, writer, false, 1},
		{"reader hint on a write: armed", []pgproto3.FrontendMessage{q("/* pgtide:reader */ DELETE FROM t")}, reader, true, 1},
		{"begin read only: a reader, never armed", []pgproto3.FrontendMessage{q("BEGIN READ ONLY")}, reader, false, 1},
		{"begin", []pgproto3.FrontendMessage{q("BEGIN")}, writer, false, 1},
		{"extended read", []pgproto3.FrontendMessage{parse("", "SELECT 1"), bind(""), exec, sync}, reader, true, 4},
		{"extended write", []pgproto3.FrontendMessage{parse("", "UPDATE t SET a = 1"), bind(""), exec, sync}, writer, false, 4},
		{"pipeline: a write anywhere takes the writer",
			[]pgproto3.FrontendMessage{parse("", "SELECT 1"), bind(""), exec, parse("", "INSERT INTO t VALUES (1)"), bind(""), exec, sync}, writer, false, 7},
		{"named parse of a new name and execute: replayable",
			[]pgproto3.FrontendMessage{parse("s1", "SELECT 1"), bind("s1"), exec, sync}, reader, true, 4},
		{"named parse of a defined name: not replayable, so the writer",
			[]pgproto3.FrontendMessage{parse("w", "SELECT 1"), bind("w"), exec, sync}, writer, false, 4},
		{"prepare only: a reader, armed (a standby may refuse the Parse)", []pgproto3.FrontendMessage{parse("s1", "SELECT 1"), describe, sync}, reader, true, 3},
		{"prepare of a write: the writer (a temporary table pins at Parse)",
			[]pgproto3.FrontendMessage{parse("s1", "CREATE TEMP TABLE t (a int)"), describe, sync}, writer, false, 3},
		{"unnamed prepare of a write", []pgproto3.FrontendMessage{parse("", "INSERT INTO t VALUES (1)"), describe, sync}, writer, false, 3},
		{"bind of an unknown statement", []pgproto3.FrontendMessage{bind("nope"), exec, sync}, writer, false, 3},
		{"flush instead of sync", []pgproto3.FrontendMessage{parse("", "SELECT 1"), bind(""), exec, &pgproto3.Flush{}}, writer, false, 4},
		{"function call", []pgproto3.FrontendMessage{&pgproto3.FunctionCall{Function: 1}}, writer, false, 1},
	} {
		in := frontend(t, tc.msgs...)
		in = append(in, frontend(t, q("SELECT 'next request'"))...) // not part of it
		s := routeSession(in)
		s.env.Functions = func(string) classify.Functions { return fakeFunctions{} }
		s.stmts = map[string]*clientStmt{"w": {route: classify.RouteInfo{Route: reader, Reason: classify.ReasonReadOnly}}}
		typ, _, err := s.r.Next()
		if err != nil {
			t.Fatal(err)
		}
		req := s.readAhead(typ)
		s.planRoute(&req)
		if s.intent.Route != tc.route {
			t.Errorf("%s: route %v (%v), want %v", tc.name, s.intent.Route, s.intent.Reason, tc.route)
		}
		if s.armed != tc.armed {
			t.Errorf("%s: armed %v, want %v", tc.name, s.armed, tc.armed)
		}
		if tc.armed && (s.heldLeft != tc.count || !bytes.Equal(s.held, in[:len(in)-len(frontend(t, q("SELECT 'next request'")))])) {
			t.Errorf("%s: held %d messages (%d bytes), want %d", tc.name, s.heldLeft, len(s.held), tc.count)
		}
		// Nothing was consumed: the client loop forwards the request from its first message.
		if s.r.BodyLen() < 0 || s.br.Buffered() != len(in) {
			t.Errorf("%s: planRoute consumed input", tc.name)
		}
	}
}

// TestPlanRouteStatementCache: a named statement's route comes from its Parse, classified once.
func TestPlanRouteStatementCache(t *testing.T) {
	in := frontend(t, &pgproto3.Bind{PreparedStatement: "w"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	for _, tc := range []struct {
		sql   string
		route classify.Route
	}{{"SELECT 1", classify.RouteReader}, {"INSERT INTO t VALUES (1)", classify.RouteWriter}} {
		s := routeSession(in)
		s.stmts = map[string]*clientStmt{"w": {route: classify.ClassifyRoute([]byte(tc.sql), nil)}}
		typ, _, _ := s.r.Next()
		req := s.readAhead(typ)
		s.planRoute(&req)
		if s.intent.Route != tc.route || s.armed != (tc.route == classify.RouteReader) {
			t.Errorf("Bind of %q: route %v armed %v", tc.sql, s.intent.Route, s.armed)
		}
	}
}

// TestPlanRouteTooLong: a request longer than the read buffer goes to the writer unread.
func TestPlanRouteTooLong(t *testing.T) {
	long := "SELECT '" + string(bytes.Repeat([]byte("x"), maxHeld)) + "'"
	s := routeSession(frontend(t, &pgproto3.Query{String: long}))
	typ, _, _ := s.r.Next()
	req := s.readAhead(typ)
	s.planRoute(&req)
	if s.intent.Route != classify.RouteWriter || s.armed {
		t.Fatalf("a %d-byte read: route %v armed %v, want the writer", len(long), s.intent.Route, s.armed)
	}
}

func TestIsStandbyRefusal(t *testing.T) {
	for _, tc := range []struct {
		e    pgproto3.ErrorResponse
		want bool
	}{
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, true},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "25001", Message: "x"}, false},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "cannot use serializable mode in a hot standby"}, true},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "cursors are not supported"}, false},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "XX000", Message: "cannot assign TransactionIds during recovery"}, true},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "recovery is in progress"}, true},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "XX000", Message: "cache lookup failed"}, false},
		{pgproto3.ErrorResponse{Severity: "ERROR", Code: "250060"}, false},
		{pgproto3.ErrorResponse{Severity: "ERROR", Message: "no code"}, false},
	} {
		b, err := tc.e.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := isStandbyRefusal(b[5:]); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.e, got, tc.want)
		}
	}
	for _, junk := range [][]byte{nil, {0}, {'C'}, {'C', '2', '5'}, {'S', 'E', 0, 'C'}} {
		if isStandbyRefusal(junk) {
			t.Errorf("%q: a refusal", junk)
		}
	}
}

// TestShowRoute: SHOW pgtide.route's answer is what a client decodes from PostgreSQL's SHOW.
func TestShowRoute(t *testing.T) {
	b := appendShowRoute(nil, "reader")
	fe := pgproto3.NewFrontend(bytes.NewReader(b), nil)
	rd, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	desc := rd.(*pgproto3.RowDescription)
	if len(desc.Fields) != 1 || string(desc.Fields[0].Name) != "pgtide.route" || desc.Fields[0].DataTypeOID != 25 {
		t.Fatalf("RowDescription %+v", desc)
	}
	dr, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if row := dr.(*pgproto3.DataRow); len(row.Values) != 1 || string(row.Values[0]) != "reader" {
		t.Fatalf("DataRow %+v", row)
	}
	cc, err := fe.Receive()
	if err != nil || string(cc.(*pgproto3.CommandComplete).CommandTag) != "SHOW" {
		t.Fatalf("CommandComplete %+v %v", cc, err)
	}
}

// TestFingerprint: the same statement with other parameter values has the same fingerprint,
// another statement another one.
func TestFingerprint(t *testing.T) {
	s := routeSession(nil)
	s.stmts = map[string]*clientStmt{"s1": {key: "SELECT $1\x00\x00\x00"}}
	req := func(msgs ...pgproto3.FrontendMessage) string { return s.fingerprint(frontend(t, msgs...)) }
	bindArgs := func(stmt, arg string) pgproto3.FrontendMessage {
		return &pgproto3.Bind{PreparedStatement: stmt, Parameters: [][]byte{[]byte(arg)}}
	}
	extended := func(sql, arg string) string {
		return req(&pgproto3.Parse{Query: sql}, bindArgs("", arg), &pgproto3.Execute{}, &pgproto3.Sync{})
	}
	if extended("INSERT INTO t VALUES ($1)", "1") != extended("INSERT INTO t VALUES ($1)", "2") {
		t.Error("parameters change the fingerprint of an unnamed statement")
	}
	if extended("INSERT INTO t VALUES ($1)", "1") == extended("INSERT INTO u VALUES ($1)", "1") {
		t.Error("two statements share a fingerprint")
	}
	if req(bindArgs("s1", "a"), &pgproto3.Sync{}) != req(bindArgs("s1", "b"), &pgproto3.Sync{}) {
		t.Error("parameters change the fingerprint of a named statement")
	}
	if req(&pgproto3.Query{String: "SELECT 1"}) == req(&pgproto3.Query{String: "SELECT 2"}) {
		t.Error("two queries share a fingerprint")
	}
}

// FuzzPlanRoute: whatever a client sends, reading ahead of it never panics, never consumes
// anything, and arms the safety net or a failover retry only for a request whose held copy is
// exactly the bytes it read ahead of.
func FuzzPlanRoute(f *testing.F) {
	seeds := [][]pgproto3.FrontendMessage{
		{&pgproto3.Query{String: "SELECT 1"}},
		{&pgproto3.Query{String: "/* pgtide:reader */ INSERT INTO t VALUES (1)"}},
		{&pgproto3.Parse{Query: "SELECT $1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		{&pgproto3.Parse{Name: "s", Query: "SELECT 1"}, &pgproto3.Describe{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{}},
		{&pgproto3.Bind{PreparedStatement: "s"}, &pgproto3.Execute{}, &pgproto3.Flush{}},
	}
	for _, msgs := range seeds {
		var b []byte
		for _, m := range msgs {
			b, _ = m.Encode(b)
		}
		f.Add(b)
	}
	f.Add([]byte("P\x00\x00\x00\x04S\x00\x00\x00\x04")) // a Parse without its strings
	f.Add([]byte("B\xff\xff\xff\xff"))                  // a length past the limit
	f.Fuzz(func(t *testing.T, in []byte) {
		s := routeSession(in)
		s.stmts = map[string]*clientStmt{"s": {}}
		typ, _, err := s.r.Next()
		if err != nil {
			return // the client loop reports a bad first header
		}
		req := s.readAhead(typ)
		s.planRoute(&req)
		s.armRetry(&req)
		if (s.armed || s.retryable) && (s.heldLeft == 0 || !bytes.HasPrefix(in, s.held)) {
			t.Fatalf("armed %v, retryable %v with %d messages held, %q not a prefix of the input", s.armed, s.retryable, s.heldLeft, s.held)
		}
		if rest, _ := io.ReadAll(s.br); !bytes.Equal(rest, in) {
			t.Fatalf("planRoute or armRetry consumed input: %d of %d bytes left", len(rest), len(in))
		}
		if s.intent.Route == classify.RouteReader && s.intent.Reason == classify.ReasonUnclassified {
			t.Fatal("an unclassified request goes to a reader")
		}
	})
}

// TestReplicasUnsafe: a session whose settings make replicas unsafe sends its reads to the writer.
func TestReplicasUnsafe(t *testing.T) {
	for _, tc := range []struct {
		params, extra map[string]string
		want          bool
	}{
		{nil, nil, false},
		{map[string]string{"standard_conforming_strings": "on"}, nil, false},
		{map[string]string{"standard_conforming_strings": "off"}, nil, true},
		{nil, map[string]string{"default_transaction_isolation": startupValue("SERIALIZABLE")}, true},
		{nil, map[string]string{"default_transaction_isolation": "'serializable'"}, true},
		{nil, map[string]string{"default_transaction_isolation": "'repeatable read'"}, false},
	} {
		s := routeSession(frontend(t, &pgproto3.Query{String: "SELECT 1"}))
		s.params, s.extra = tc.params, tc.extra
		typ, _, _ := s.r.Next()
		req := s.readAhead(typ)
		s.planRoute(&req)
		if got := s.intent.Route == classify.RouteWriter; got != tc.want {
			t.Errorf("params %v extra %q: to the writer %v, want %v", tc.params, tc.extra, got, tc.want)
		}
	}
	// A change the server reports after the answer is worked out (it is kept with the settings'
	// handle) counts from the next request.
	in := frontend(t, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "SELECT 1"})
	s := routeSession(in)
	s.params = map[string]string{"standard_conforming_strings": "on"}
	for i, want := range []classify.Route{classify.RouteReader, classify.RouteWriter} {
		typ, _, _ := s.r.Next()
		req := s.readAhead(typ)
		s.planRoute(&req)
		if s.intent.Route != want {
			t.Fatalf("request %d: route %v, want %v", i, s.intent.Route, want)
		}
		s.r.Skip()
		s.mu.Lock()
		s.recordParameterStatusLocked([]byte("standard_conforming_strings\x00off\x00"))
		s.mu.Unlock()
	}
}

// TestPlannedTexts: what planRoute found in a request's texts is handed to their forwarding in
// order, once, and dropped after the request's last message, whatever was taken of it.
func TestPlannedTexts(t *testing.T) {
	in := frontend(t,
		&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Parse{Name: "s", Query: "SET x.y = 1"},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.Query{String: "SELECT 2"})
	s := routeSession(in)
	typ, _, err := s.r.Next()
	if err != nil {
		t.Fatal(err)
	}
	s.notePlanned()
	req := s.readAhead(typ)
	s.planRoute(&req)
	if s.plannedN != 2 || s.plannedLeft != 4 {
		t.Fatalf("planned %d texts, %d messages left; want 2, 4", s.plannedN, s.plannedLeft)
	}
	if got := s.textInfo([]byte("SELECT 1"), true); got.MaySetSessionState || got.Route != classify.RouteReader {
		t.Errorf("first text: %+v", got)
	}
	// The second Parse is never forwarded (an error made the client loop skip it): its entry
	// must not reach the next request.
	for range 5 {
		if err := s.r.Skip(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.r.Next(); err != nil {
			t.Fatal(err)
		}
		s.notePlanned()
	}
	if got := s.textInfo([]byte("SELECT 2"), true); got.MaySetSessionState || got.Route != classify.RouteReader {
		t.Fatalf("the next request's text took the skipped Parse's entry: %+v", got)
	}
}

// TestClassifyText: Env's functions are asked for only when a text calls a function the
// classifier does not know, and an unnamed Parse's classification is kept for the same text
// only when it came from the text alone.
func TestClassifyText(t *testing.T) {
	s := routeSession(nil)
	asked := 0
	s.env.Functions = func(string) classify.Functions { asked++; return fakeFunctions{} }
	if info := s.classifyText([]byte("SELECT abalance FROM pgbench_accounts WHERE aid = $1")); asked != 0 || !info.TextOnly {
		t.Errorf("a plain SELECT: asked %d times for functions, %+v", asked, info)
	}
	info := s.classifyText([]byte("SELECT bump(1), bump(2), lower(x)"))
	if asked != 1 || info.Route != classify.RouteWriter || info.TextOnly {
		t.Errorf("a call: asked %d times for functions, %+v", asked, info)
	}

	key := "SELECT 1\x00\x00\x00"
	s.noteParse(key, []byte("SELECT 1"), classify.TextInfo{RouteInfo: classify.RouteInfo{Reason: classify.ReasonCall}, TextOnly: true})
	if got := s.classifyText([]byte("SELECT 1")); got.Reason != classify.ReasonCall {
		t.Errorf("the same text: %+v, want the kept answer", got)
	}
	if got := s.classifyText([]byte("SELECT 2")); got.Reason != classify.ReasonReadOnly {
		t.Errorf("another text: %+v", got)
	}
	s.noteParse(key, []byte("SELECT 1"), classify.TextInfo{RouteInfo: classify.RouteInfo{Reason: classify.ReasonCall}})
	if got := s.classifyText([]byte("SELECT 1")); got.Reason != classify.ReasonReadOnly {
		t.Errorf("an answer that asked Functions was kept: %+v", got)
	}
}

// BenchmarkBeforeRequest is what the client loop does before a request on the auto endpoint
// gets a server connection: reading ahead of it, classifying it and keeping it for the safety
// net and a failover retry. The extended request's Parse is the one the client sent before (as
// pgbench -M extended sends it), whose classification is kept.
func BenchmarkBeforeRequest(b *testing.B) {
	const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	for _, bc := range []struct {
		name string
		msgs []pgproto3.FrontendMessage
	}{
		{"simple", []pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"}}},
		{"extended", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: [][]byte{[]byte("12345")}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var in []byte
			for _, m := range bc.msgs {
				in, _ = m.Encode(in)
			}
			s := routeSession(in)
			s.route = router.Auto
			s.noteParse(sql+"\x00\x00\x00", []byte(sql), classify.Classify([]byte(sql), nil))
			typ, _, err := s.r.Next()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				s.beforeRequest(typ) // consumes nothing: the same request every time
			}
		})
	}
}
