package classify

import (
	"bytes"
	"testing"
	"unsafe"
)

// within reports whether b lies inside buf's backing array (a nil b lies anywhere).
func within(b, buf []byte) bool {
	if b == nil {
		return true
	}
	if len(buf) == 0 {
		return len(b) == 0 && cap(b) == 0
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(buf))
}

// FuzzAnalyzeSession checks, for any text, that AnalyzeSession does not panic, returns slices
// that lie inside the input or the Session's buffers, answers the same way twice (also into a
// Session left over from another text), and that whitespace and a comment in front of the text
// change nothing, and that MaySetSessionState is true whenever the analysis finds something.
// Seeds: testdata/fuzz/FuzzAnalyzeSession plus the ones below.
func FuzzAnalyzeSession(f *testing.F) {
	// Each rule once.
	f.Add([]byte("SET statement_timeout = 0"))
	f.Add([]byte("SET LOCAL work_mem = '64MB'; SET TIME ZONE 'UTC'; SET NAMES 'UTF8'"))
	f.Add([]byte(`SET "MyExt"."Setting" TO 1`))
	f.Add([]byte("SET search_path TO \"$user\", public; RESET search_path; RESET ALL"))
	f.Add([]byte("SET SESSION SESSION AUTHORIZATION bob; SET ROLE NONE"))
	f.Add([]byte("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
	f.Add([]byte("SELECT set_config('x.y', (SELECT set_config('p.q', 'v', false)), true)"))
	f.Add([]byte("PREPARE q (int) AS SELECT $1; PREPARE TRANSACTION 'g'"))
	f.Add([]byte("SELECT pg_catalog.pg_try_advisory_lock_shared(1)"))
	f.Add([]byte("CREATE OR REPLACE GLOBAL TEMP VIEW v AS SELECT 1; SELECT * INTO TEMP t FROM s"))
	f.Add([]byte("EXPLAIN (ANALYZE, FORMAT json) CREATE TEMP TABLE t AS SELECT 1"))
	f.Add([]byte("LISTEN c; DECLARE c CURSOR WITH HOLD FOR SELECT 1; LOAD 'x'"))
	f.Add([]byte(`DISCARD ALL; DEALLOCATE PREPARE "Q""1"; DEALLOCATE ALL; COMMIT`))
	f.Add([]byte(`EXECUTE s(1); EXPLAIN ANALYZE EXECUTE "T"; RESET work_mem; SET a.b TO DEFAULT; RESET ALL`))
	// Lexing corners: escapes, continuation, dollar tags, nested comments, Unicode escapes.
	f.Add([]byte("SELECT E'a'\n'\\'; SET ROLE x; '"))
	f.Add([]byte("SELECT $a$ $ba$a$; SELECT $1$$"))
	f.Add([]byte("/* /* */ */ SELECT 1 -- x\r\n"))
	f.Add([]byte(`SELECT U&"d!0061t" UESCAPE '!', U&"\D83D\DE00"`))
	f.Add([]byte("CREATE FUNCTION f() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; END"))
	// Truncated constructs.
	f.Add([]byte("SELECT 'x"))
	f.Add([]byte("SELECT set_config('a', 'b'"))
	f.Add([]byte("U&\""))
	f.Add([]byte("$"))

	f.Fuzz(func(t *testing.T, sql []byte) {
		orig := bytes.Clone(sql)
		var s Session
		AnalyzeSession(sql, &s)
		if !bytes.Equal(sql, orig) {
			t.Fatal("input modified")
		}
		checkSession(t, sql, &s)

		// Deterministic, and nothing leaks from a previous analysis.
		var dirty Session
		AnalyzeSession([]byte(`SET x.y = 1; DEALLOCATE "Z"; SET search_path TO q; DISCARD ALL; BEGIN`), &dirty)
		AnalyzeSession(sql, &dirty)
		if a, b := resultOf(&s), resultOf(&dirty); a != b || s.Statements != dirty.Statements {
			t.Fatalf("not deterministic:\n%+v\n%+v", a, b)
		}

		// Leading whitespace and a comment are not part of any statement.
		padded := append([]byte(" /**/\n"), sql...)
		var p Session
		AnalyzeSession(padded, &p)
		if a, b := resultOf(&s), resultOf(&p); a != b || s.Statements != p.Statements {
			t.Fatalf("a leading comment changed the result:\n%+v\n%+v", a, b)
		}
	})
}

func checkSession(t *testing.T, sql []byte, s *Session) {
	t.Helper()
	if s.Pin > Load {
		t.Fatalf("Pin %d out of range", s.Pin)
	}
	if (s.Pin == SessionSet) != (s.PinParam != nil) {
		t.Fatalf("Pin %v with PinParam %q", s.Pin, s.PinParam)
	}
	if !within(s.PinParam, sql) && !within(s.PinParam, s.pinBuf[:]) {
		t.Fatalf("PinParam %q outside the input and the Session", s.PinParam)
	}
	if !within(s.Deallocate, sql) && !within(s.Deallocate, s.deallocBuf[:]) {
		t.Fatalf("Deallocate %q outside the input and the Session", s.Deallocate)
	}
	if len(s.Deallocate) > maxIdentLen {
		t.Fatalf("Deallocate %q longer than %d bytes", s.Deallocate, maxIdentLen)
	}
	for _, r := range s.Refs {
		if r.Start < 0 || r.End < r.Start || r.End > len(sql) || len(r.Name) > maxIdentLen {
			t.Fatalf("Ref %+v out of range", r)
		}
	}
	if len(s.Refs) > maxRefs || len(s.Resets) > maxResets {
		t.Fatalf("%d refs, %d resets", len(s.Refs), len(s.Resets))
	}
	sp := s.SearchPath
	if sp.Reset && !sp.Set || sp.Reset && sp.Value != nil || sp.Set && !sp.Reset && len(sp.Value) == 0 ||
		!sp.Set && sp.Value != nil || !within(sp.Value, sql) {
		t.Fatalf("SearchPath %+v", sp)
	}
	if s.DiscardAll && !s.DeallocateAll {
		t.Fatal("DiscardAll without DeallocateAll")
	}
	if s.Statements < 0 || s.Statements > len(sql) {
		t.Fatalf("Statements = %d for %d bytes", s.Statements, len(sql))
	}
	found := s.Pin != None || s.SearchPath.Set || s.DiscardAll || s.DeallocateAll || s.Deallocate != nil ||
		len(s.Refs) > 0 || s.RefsOverflow || s.ResetAll || len(s.Resets) > 0 || s.ResetsOverflow
	if found && !MaySetSessionState(sql) {
		t.Fatalf("MaySetSessionState(%q) = false, but the analysis found %+v", sql, resultOf(s))
	}
}

// allFuncs answers every lookup with one kind.
type allFuncs FuncKind

func (k allFuncs) Lookup(schema, name []byte) FuncKind { return FuncKind(k) }

// FuzzClassifyRoute checks, for any text, that ClassifyRoute does not panic or modify its
// input, gives a consistent answer (Route agrees with Reason, ReadOnly only with Begin) and the
// same answer twice, and that:
//   - whitespace and a comment in front of the text change nothing;
//   - a writer hint in front makes it the writer with ReasonHintWriter; a reader hint makes it
//     the reader with ReasonHintReader unless the text holds a writer hint;
//   - the text as the body of a string literal, of a quoted identifier, of a dollar-quoted
//     string or of a comment is a plain read: nothing inside them can match a rule;
//   - knowing more never moves a text to the writer: a reader with Functions that answer
//     FuncWrite to everything is a reader with nil Functions, and that is a reader with
//     Functions that answer FuncRead to everything.
//
// Seeds: testdata/fuzz/FuzzClassifyRoute, each with a comment saying what it exercises.
func FuzzClassifyRoute(f *testing.F) {
	f.Add([]byte("SELECT 1"))
	f.Add([]byte("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"))
	f.Add([]byte("BEGIN READ ONLY; SELECT pg_advisory_lock(1); COMMIT; INSERT INTO t VALUES (1)"))

	f.Fuzz(func(t *testing.T, sql []byte) {
		if len(sql) > MaxRouteLen-64 {
			return // the wrapped texts below must stay under the limit
		}
		orig := bytes.Clone(sql)
		info := ClassifyRoute(sql, fakeFuncs{})
		if !bytes.Equal(sql, orig) {
			t.Fatal("input modified")
		}
		checkRouteInfo(t, info)
		if again := ClassifyRoute(sql, fakeFuncs{}); again != info {
			t.Fatalf("not deterministic: %+v then %+v", info, again)
		}
		if SingleTransaction(sql) {
			// What it lets through is never what opens, ends or commits a transaction.
			switch info.Reason {
			case ReasonTransaction, ReasonCall, ReasonDo, ReasonMaintenance, ReasonDDL:
				t.Fatalf("SingleTransaction, yet %v", info.Reason)
			}
			if info.Begin {
				t.Fatal("SingleTransaction, yet it opens a transaction block")
			}
		}

		with := func(prefix, suffix string) RouteInfo {
			text := append(append([]byte(prefix), sql...), suffix...)
			got := ClassifyRoute(text, fakeFuncs{})
			checkRouteInfo(t, got)
			return got
		}
		if got := with(" /**/\n", ""); got != info {
			t.Fatalf("a leading comment changed the result: %+v, then %+v", info, got)
		}
		want := RouteInfo{Route: RouteWriter, Reason: ReasonHintWriter, Begin: info.Begin, ReadOnly: info.ReadOnly}
		if got := with("/* pgtide:writer */", ""); got != want {
			t.Fatalf("a writer hint: %+v", got)
		}
		if info.Reason != ReasonHintWriter {
			want = RouteInfo{Route: RouteReader, Reason: ReasonHintReader, Begin: info.Begin, ReadOnly: info.ReadOnly}
		}
		if got := with("-- pgtide:reader\n", ""); got != want {
			t.Fatalf("a reader hint: %+v, want %+v", got, want)
		}

		plain := RouteInfo{Route: RouteReader, Reason: ReasonReadOnly}
		quoted := func(q byte) []byte { return bytes.ReplaceAll(sql, []byte{q}, []byte{q, q}) }
		if got := ClassifyRoute(append(append([]byte("SELECT '"), quoted('\'')...), '\''), fakeFuncs{}); got != plain {
			t.Fatalf("inside a string literal: %+v", got)
		}
		if got := ClassifyRoute(append(append([]byte(`SELECT "`), quoted('"')...), '"'), fakeFuncs{}); got != plain {
			t.Fatalf("inside a quoted identifier: %+v", got)
		}
		if !bytes.Contains(sql, []byte("$q")) {
			if got := with("SELECT $q$", "$q$"); got != plain {
				t.Fatalf("inside a dollar-quoted string: %+v", got)
			}
		}
		if !bytes.ContainsAny(sql, "/*") {
			got := with("SELECT 1 /*", "*/")
			switch string(bytes.TrimFunc(sql, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })) {
			case "pgtide:reader":
				plain.Reason = ReasonHintReader
			case "pgtide:writer":
				plain = RouteInfo{Route: RouteWriter, Reason: ReasonHintWriter}
			}
			if got != plain {
				t.Fatalf("inside a comment: %+v, want %+v", got, plain)
			}
		}

		knowWrite := ClassifyRoute(sql, allFuncs(FuncWrite))
		knowNothing := ClassifyRoute(sql, nil)
		knowRead := ClassifyRoute(sql, allFuncs(FuncRead))
		if knowWrite.Route == RouteReader && knowNothing.Route != RouteReader ||
			knowNothing.Route == RouteReader && knowRead.Route != RouteReader {
			t.Fatalf("more knowledge, less reading: %v (all write), %v (nil), %v (all read)",
				knowWrite, knowNothing, knowRead)
		}
	})
}

// FuzzParseRouteCommand checks, for any text, that ParseRouteCommand does not panic, answers
// the same twice, gives an error only for a Set, and that a leading comment or a trailing
// semicolon changes nothing; and that what it recognises ClassifyRoute sends where any SET,
// RESET or SHOW goes. Seeds: testdata/fuzz/FuzzParseRouteCommand.
func FuzzParseRouteCommand(f *testing.F) {
	f.Add([]byte("SET pgtide.route = 'reader'"))
	f.Add([]byte("RESET pgtide.route"))
	f.Add([]byte("SHOW pgtide.route"))

	f.Fuzz(func(t *testing.T, sql []byte) {
		type result struct {
			kind  RouteCommandKind
			value Route
			auto  bool
			err   string
		}
		parse := func(text []byte) result {
			k, v, a, err := ParseRouteCommand(text)
			r := result{kind: k, value: v, auto: a}
			if err != nil {
				r.err = err.Error()
				if _, ok := err.(*RouteCommandError); !ok || k != RouteCommandSet {
					t.Fatalf("ParseRouteCommand(%q): %v with error %T", text, k, err)
				}
			}
			if k > RouteCommandReset || v > RouteReader || a && v != RouteWriter || k == RouteCommandReset && !a {
				t.Fatalf("ParseRouteCommand(%q) = %+v", text, r)
			}
			return r
		}
		got := parse(sql)
		if again := parse(sql); again != got {
			t.Fatalf("not deterministic: %+v then %+v", got, again)
		}
		if padded := parse(append([]byte("/**/ "), sql...)); padded != got {
			t.Fatalf("a leading comment changed the result: %+v then %+v", got, padded)
		}
		if ended := parse(append(bytes.Clone(sql), ';')); ended != got {
			t.Fatalf("a trailing semicolon changed the result: %+v then %+v", got, ended)
		}
		if len(sql) > MaxRouteLen {
			return
		}
		switch info := ClassifyRoute(sql, nil); got.kind {
		case RouteCommandSet, RouteCommandReset:
			if info != (RouteInfo{Route: RouteWriter, Reason: ReasonSessionState}) {
				t.Fatalf("%q is a Set, classified %+v", sql, info)
			}
		case RouteCommandShow:
			if info != (RouteInfo{Route: RouteReader, Reason: ReasonReadOnly}) {
				t.Fatalf("%q is a Show, classified %+v", sql, info)
			}
		}
	})
}
