package classify

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// refMaySetSessionState is MaySetSessionState as it was first written: every word compared at
// every index. The table-driven one must answer as it does.
func refMaySetSessionState(sql []byte) bool {
	for i, c := range sql {
		for _, w := range triggerWords[c|0x20] {
			if hasFold(sql[i:], w) {
				return true
			}
		}
	}
	return false
}

// checkFast checks, for one text, that the fast path agrees with the full analysis whenever it
// answers (whatever Functions says: it answers only texts that call nothing), that what it read
// before giving up holds no session-state word it missed, that MaySetSessionState agrees with
// refMaySetSessionState, that Classify agrees with ClassifyRoute and MaySetSessionState, and that
// an answer it calls text-only is the same whatever Functions says. It reports whether the fast
// path answered.
func checkFast(t *testing.T, sql []byte) bool {
	t.Helper()
	if len(sql) > MaxRouteLen {
		return false
	}
	orig := bytes.Clone(sql)
	info, may, stop, ok := fastRoute(sql)
	if !bytes.Equal(sql, orig) {
		t.Fatal("input modified")
	}
	wantMay := refMaySetSessionState(sql)
	if got := MaySetSessionState(sql); got != wantMay {
		t.Fatalf("MaySetSessionState(%q) = %v, want %v", sql, got, wantMay)
	}
	full := classifyRoute(sql, fakeFuncs{})
	if ok {
		for _, fns := range []Functions{fakeFuncs{}, nil, allFuncs(FuncWrite), allFuncs(FuncRead)} {
			if want := classifyRoute(sql, fns); info != want {
				t.Fatalf("fast path on %q: %+v, the full analysis (%T): %+v", sql, info, fns, want)
			}
		}
		if may != wantMay {
			t.Fatalf("fast path on %q: may set session state %v, want %v", sql, may, wantMay)
		}
	} else {
		if stop < 0 || stop > len(sql) {
			t.Fatalf("fast path on %q stopped at %d", sql, stop)
		}
		if may && !wantMay || !may && triggerIn(sql, 0, stop) {
			t.Fatalf("fast path on %q, stopped at %d: may set session state %v, want %v before there",
				sql, stop, may, triggerIn(sql, 0, stop))
		}
	}
	got := Classify(sql, fakeFuncs{})
	if got.RouteInfo != full || got.MaySetSessionState != wantMay || ok && !got.TextOnly {
		t.Fatalf("Classify(%q) = %+v; want %+v, %v", sql, got, full, wantMay)
	}
	if got.TextOnly {
		for _, fns := range []Functions{nil, allFuncs(FuncWrite), allFuncs(FuncRead), allFuncs(FuncBuiltinVolatile)} {
			if other := Classify(sql, fns); other != got {
				t.Fatalf("Classify(%q) is text-only, %+v, yet with %T it is %+v", sql, got, fns, other)
			}
		}
	}
	if got := ClassifyRoute(sql, fakeFuncs{}); got != full {
		t.Fatalf("ClassifyRoute(%q) = %+v, the full analysis %+v", sql, got, full)
	}
	return ok
}

// corpusTexts returns the texts of the seed corpora of the fuzz targets named.
func corpusTexts(t testing.TB, targets ...string) [][]byte {
	var texts [][]byte
	for _, target := range targets {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				rest, found := strings.CutPrefix(line, "[]byte(")
				if !found {
					continue
				}
				// The quoted text, then ")" and maybe a comment.
				end := strings.LastIndex(rest, "\")")
				if end < 0 {
					t.Fatalf("%s: cannot read %q", f, line)
				}
				s, err := strconv.Unquote(rest[:end+1])
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				texts = append(texts, []byte(s))
			}
		}
	}
	if len(texts) == 0 {
		t.Fatal("no corpus texts")
	}
	return texts
}

// fastCommon are shapes the fast path must answer: the statements of most traffic.
var fastCommon = []string{
	"SELECT 1",
	"select abalance from pgbench_accounts where aid = 42",
	"SELECT * FROM t WHERE a IN (1, 2, 3) AND b = 'x''y' ORDER BY c DESC LIMIT 10 OFFSET 20",
	`SELECT "t"."a", "t"."b" FROM "public"."t" WHERE "t"."c" = $1 AND "t"."d" IS NOT NULL`,
	"SELECT a.x, b.y FROM a LEFT JOIN b ON b.id = a.b_id WHERE a.k = $1::int AND EXISTS (SELECT 1 FROM c WHERE c.a = a.id)",
	"SELECT x FROM t WHERE y BETWEEN 1.5 AND 2.5;",
	"(SELECT 1) UNION ALL (SELECT 2)",
	"VALUES (1, 'a'), (2, 'b')",
	"TABLE t",
	"INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id",
	"UPDATE t SET a = a + 1 WHERE id = $1",
	"DELETE FROM t WHERE id = $1",
	"BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ", "START TRANSACTION READ ONLY", "begin read write",
	"BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
	"COMMIT", "ROLLBACK;", "END", "SAVEPOINT s1", "RELEASE SAVEPOINT s1",
	"SET statement_timeout = '5s'", "SET TIME ZONE 'UTC'", "RESET ALL", "DISCARD ALL",
	"SHOW transaction_isolation", "SHOW pgtide.route",
	"CREATE TABLE t (a int, b text)", "DROP TABLE t", "TRUNCATE t", "VACUUM t", "LOCK TABLE t",
	"LISTEN c", "NOTIFY c", "DECLARE c CURSOR FOR SELECT 1", "FETCH 10 FROM c", "CLOSE c",
	"EXECUTE p(1)", "DEALLOCATE p", "DO 'x'", "CALL p()", "CHECKPOINT", "FOO BAR", "", ";", " ;; ",
}

// fastRefused are shapes the fast path must leave to the full analysis.
var fastRefused = []string{
	"/* pgtide:reader */ SELECT 1", "SELECT 1 -- pgtide:writer", "SELECT 1 /* x */",
	"SELECT count(*) FROM t", "SELECT public.f(1)", `SELECT "f"(1)`, "SELECT nextval('s')",
	"SELECT 1; SELECT 2", "BEGIN; SELECT 1", "SELECT * FROM t FOR UPDATE", "SELECT 1 INTO x",
	"WITH x AS (SELECT 1) SELECT * FROM x", "SELECT E'a\\'b'", "SELECT $$a$$", "SELECT U&\"a\"",
	"SELECT 'a'\n'b'", "EXPLAIN SELECT 1", "COPY t TO STDOUT", "PREPARE p AS SELECT 1",
	"SELECT 1e5", "SELECT 'x", "SELECT (SELECT 1 FROM t WHERE a IN (SELECT 1 FROM u)) AS t(a)",
	"SELECT 'é' AS é", "SELECT a & b", "SELECT \"a\"\"b\"",
}

func TestFastPath(t *testing.T) {
	for _, sql := range fastCommon {
		if !checkFast(t, []byte(sql)) {
			t.Errorf("the fast path does not answer %q", sql)
		}
	}
	for _, bc := range requestBench {
		if !checkFast(t, []byte(bc.sql)) {
			t.Errorf("the fast path does not answer the benchmark's %q", bc.sql)
		}
	}
	for _, sql := range fastRefused {
		if checkFast(t, []byte(sql)) {
			t.Errorf("the fast path answers %q", sql)
		}
	}
}

// TestFastPathAgrees runs checkFast on every text of the route and session tables, the fuzz
// corpora, and generated statements.
func TestFastPathAgrees(t *testing.T) {
	var texts [][]byte
	for _, tc := range routeCases {
		texts = append(texts, []byte(tc.sql))
	}
	for _, tc := range sessionCases {
		texts = append(texts, []byte(tc.sql))
	}
	texts = append(texts, corpusTexts(t, "FuzzClassifyRoute", "FuzzAnalyzeSession", "FuzzParseRouteCommand")...)
	answered := 0
	for _, sql := range texts {
		if checkFast(t, sql) {
			answered++
		}
	}
	t.Logf("the fast path answered %d of %d table and corpus texts", answered, len(texts))

	rng := rand.New(rand.NewPCG(14, 1))
	n := 200000
	if testing.Short() {
		n = 20000
	}
	answered = 0
	for range n {
		if checkFast(t, generateStatement(rng)) {
			answered++
		}
	}
	t.Logf("the fast path answered %d of %d generated statements", answered, n)
	if answered < n/10 {
		t.Errorf("the fast path answered only %d of %d generated statements", answered, n)
	}
}

// Vocabulary of generateStatement: every word the rules know, names (some holding
// MaySetSessionState's words), and every kind of token, mostly the ones the fast path reads.
var (
	genNames = []string{"t", "users", "pgbench_accounts", "aid", "abalance", "x", "u", "id",
		"offset_x", "settings", "temp", "dataset", "prepared_at", "holder", "loadavg", "u2", "f",
		"myread", "mywrite", "count", "nextval", "Public", "app", "pg_catalog", "set_config"}
	genTokens = []string{"(", ")", "(", ")", ",", ",", ".", ".", ";", "=", "<", ">=", "+", "-",
		"*", "/", "::", "[", "]", "%", "||", "&", "1", "42", "1.5", "0.25e3", ".5", "1_000", "$1",
		"$2", "$12", "'x'", "'it''s'", "'set'", "''", "'a'\n'b'", `"Q"`, `"a""b"`, `"set"`, `""`,
		"E'\\''", "U&'x'", `U&"d!0061t" UESCAPE '!'`, "$$x$$", "$q$a$q$", "/* c */",
		"/* pgtide:reader */", "-- pgtide:writer\n", "--x\n", "\t", "\n", "é", "\x00", "'unterminated",
		`"unterminated`, "/* open"}
	genWords = func() []string {
		var ws []string
		for w := range wordInfos {
			ws = append(ws, w)
		}
		for w := range statementStarts {
			ws = append(ws, w)
		}
		for _, w := range []string{"into", "for", "update", "share", "no", "key", "with", "only",
			"read", "write", "level", "isolation", "serializable", "transaction", "returning"} {
			ws = append(ws, w, w) // the ones the fast path acts on, more often
		}
		return ws
	}()
	genStarts = []string{"SELECT", "select", "SELECT", "INSERT INTO", "UPDATE", "DELETE FROM",
		"BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SET", "SHOW", "VALUES", "TABLE",
		"(SELECT", "WITH", "EXPLAIN", "CREATE", "RESET", "Select", "begin"}
)

// generateStatement returns a random text: usually a statement's first word and then tokens of
// every kind, separated by blanks or not, in random case.
func generateStatement(rng *rand.Rand) []byte {
	var b []byte
	if rng.IntN(10) > 0 {
		b = append(b, genStarts[rng.IntN(len(genStarts))]...)
	}
	for range rng.IntN(14) {
		switch rng.IntN(10) {
		case 0, 1:
			b = append(b, ' ')
		case 2:
			b = append(b, '\n')
		case 3:
		default:
			b = append(b, ' ')
			if rng.IntN(8) == 0 {
				b = append(b, "  "...)
			}
		}
		var tok string
		switch r := rng.IntN(10); {
		case r < 4:
			tok = genWords[rng.IntN(len(genWords))]
		case r < 6:
			tok = genNames[rng.IntN(len(genNames))]
		case r < 7 && rng.IntN(20) > 0:
			tok = genTokens[rng.IntN(22)] // the punctuation
		default:
			tok = genTokens[rng.IntN(len(genTokens))]
		}
		if rng.IntN(4) == 0 {
			tok = strings.ToUpper(tok)
		}
		b = append(b, tok...)
	}
	if rng.IntN(3) == 0 {
		b = append(b, ';')
	}
	return b
}

// FuzzFastPath checks checkFast on any text: the fast path agrees with the full analysis
// whenever it answers. Seeds: the corpora of FuzzClassifyRoute, FuzzAnalyzeSession and
// FuzzParseRouteCommand, the common shapes, and testdata/fuzz/FuzzFastPath.
func FuzzFastPath(f *testing.F) {
	for _, sql := range corpusTexts(f, "FuzzClassifyRoute", "FuzzAnalyzeSession", "FuzzParseRouteCommand") {
		f.Add(sql)
	}
	for _, sql := range append(fastCommon, fastRefused...) {
		f.Add([]byte(sql))
	}
	for _, bc := range requestBench {
		f.Add([]byte(bc.sql))
	}
	f.Fuzz(func(t *testing.T, sql []byte) {
		checkFast(t, sql)
	})
}

// TestLookupWord: every word of the table is found in any case, with what the table holds of
// it, and words next to them (a byte changed, added or dropped) are not mistaken for them.
func TestLookupWord(t *testing.T) {
	all := map[string]bool{}
	for w := range wordInfos {
		all[w] = true
	}
	for w := range statementStarts {
		all[w] = true
	}
	check := func(w string) {
		t.Helper()
		e := lookup([]byte(w))
		lw := strings.ToLower(w)
		if !all[lw] {
			if e != nil {
				t.Fatalf("lookup(%q) found an entry", w)
			}
			return
		}
		if e == nil {
			t.Fatalf("lookup(%q) found nothing", w)
		}
		if e.info != wordInfos[lw] || e.start != statementStarts[lw] || e.trigger != MaySetSessionState([]byte(lw)) {
			t.Fatalf("lookup(%q) = %+v, want info %v, start %+v", w, *e, wordInfos[lw], statementStarts[lw])
		}
	}
	const identBytes = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$\x80\xc3\xff"
	for w := range all {
		check(w)
		check(strings.ToUpper(w))
		check(strings.ToUpper(w[:1]) + w[1:])
		check(w[1:])
		check(w[:len(w)-1])
		check(w + "s")
		for i := range len(w) {
			for _, c := range []byte(identBytes) {
				check(w[:i] + string(c) + w[i+1:])
			}
		}
	}
	if lookup(nil) != nil || lookup([]byte(strings.Repeat("a", maxWordLen+1))) != nil {
		t.Fatal("lookup of an empty or long word found an entry")
	}
}

func TestFastPathAllocs(t *testing.T) {
	for _, bc := range requestBench {
		sql := []byte(bc.sql)
		if n := testing.AllocsPerRun(100, func() { Classify(sql, fakeFuncs{}) }); n != 0 {
			t.Errorf("Classify(%q): %v allocations", bc.sql, n)
		}
	}
}
