package proxy_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQL DEALLOCATE of statements that share a server statement: a client's names with the same
// text share one statement on a server connection in transaction mode, and a DEALLOCATE of
// one name must leave the others, as on PostgreSQL, where each name is a statement of its own.
// Each script runs straight on PostgreSQL and through pgtide in both pool modes, and every
// answer must be the same, error texts included.

// deallocStep is one round of a script: msgs written at once, then the answers read up to
// readies ReadyForQuery messages (1 if 0). With hold, another client first holds a server
// connection in an open transaction (through pgtide, the main client's next transaction then
// runs on another one); with release, it ends that transaction.
type deallocStep struct {
	msgs    []pgproto3.FrontendMessage
	readies int
	hold    bool
	release bool
}

func dq(sql string) deallocStep {
	return deallocStep{msgs: []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}}
}

func dmsgs(msgs ...pgproto3.FrontendMessage) deallocStep { return deallocStep{msgs: msgs} }

func dparse(name, sql string) *pgproto3.Parse { return &pgproto3.Parse{Name: name, Query: sql} }

func dbind(portal, stmt string, params ...string) *pgproto3.Bind {
	b := &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: stmt}
	for _, p := range params {
		b.Parameters = append(b.Parameters, []byte(p))
	}
	return b
}

func dexec(portal string) *pgproto3.Execute { return &pgproto3.Execute{Portal: portal} }

var dsync = &pgproto3.Sync{}

// plus is the text the scripts' shared statements are prepared from.
const plus = "SELECT $1::int + 1 AS plus"

// prepareAB parses a and b with the same text.
var prepareAB = dmsgs(dparse("a", plus), dparse("b", plus), dsync)

var deallocScripts = []struct {
	name  string
	steps []deallocStep
}{
	{"a query deallocates one of two names", []deallocStep{
		prepareAB,
		dq("DEALLOCATE a; EXECUTE b(1)"),
		dmsgs(dbind("", "b", "41"), dexec(""), dsync),
		dmsgs(dbind("", "a", "1"), dexec(""), dsync),
		dq("EXECUTE a(1)"),
		{hold: true, msgs: []pgproto3.FrontendMessage{dbind("", "b", "2"), dexec(""), dsync}},
		dq("EXECUTE b(3)"),
		{release: true, msgs: []pgproto3.FrontendMessage{&pgproto3.Query{String: "EXECUTE b(4)"}}},
		dq("DEALLOCATE b"),
		dq("DEALLOCATE b"),
	}},
	{"a query deallocates one name, then the other connection", []deallocStep{
		prepareAB,
		dmsgs(dbind("", "b", "1"), dexec(""), dsync),
		{hold: true, msgs: []pgproto3.FrontendMessage{&pgproto3.Query{String: "DEALLOCATE a"}}},
		dmsgs(dbind("", "b", "2"), dexec(""), dsync),
		{release: true, msgs: []pgproto3.FrontendMessage{dbind("", "b", "3"), dexec(""), dsync}},
		dmsgs(dbind("", "a", "3"), dexec(""), dsync),
	}},
	{"both names, and a name after its DEALLOCATE", []deallocStep{
		prepareAB,
		dq("DEALLOCATE a; DEALLOCATE b"),
		dq("EXECUTE b(1)"),
		prepareAB,
		dq("DEALLOCATE a; EXECUTE a(1)"),
		dq("EXECUTE b(1); DEALLOCATE PREPARE b; EXECUTE b(2)"),
		dq("DEALLOCATE nope"),
		dq("DEALLOCATE a"),
	}},
	{"the unnamed statement's text", []deallocStep{
		prepareAB,
		dmsgs(dparse("", "DEALLOCATE a"), dbind("", ""), dexec(""), dbind("p", "b", "1"), dexec("p"), dsync),
		dmsgs(dbind("", "b", "2"), dexec(""), dsync),
		{hold: true, msgs: []pgproto3.FrontendMessage{dbind("", "b", "3"), dexec(""), dsync}},
		{release: true, msgs: []pgproto3.FrontendMessage{dbind("", "a", "3"), dexec(""), dsync}},
		dmsgs(dparse("", "DEALLOCATE b"), dsync),
		dmsgs(dbind("", ""), dexec(""), dsync),
		dmsgs(dbind("", ""), dexec(""), dsync),
	}},
	{"a named statement's text", []deallocStep{
		prepareAB,
		dmsgs(dparse("c", "DEALLOCATE a"), dbind("", "c"), dexec(""), dbind("", "b", "1"), dexec(""), dsync),
		dmsgs(dbind("", "c"), dexec(""), dsync),
		dmsgs(dbind("", "b", "1"), dexec(""), dsync),
		// Bound twice, run twice: the second finds the name gone.
		dmsgs(dparse("a", plus), dbind("p", "c"), dbind("", "c"), dexec("p"), dexec(""), dsync),
		dmsgs(dbind("", "b", "2"), dexec(""), dsync),
		// Bound before the name exists, run after it does: the name is looked up at Execute.
		dmsgs(dbind("p", "c"), dparse("a", plus), dexec("p"), dsync),
		dmsgs(dbind("", "a", "1"), dexec(""), dsync),
		dmsgs(dparse("a", plus), dsync),
		{hold: true, msgs: []pgproto3.FrontendMessage{dbind("", "c"), dexec(""), dbind("", "b", "4"), dexec(""), dsync}},
		{release: true, msgs: []pgproto3.FrontendMessage{dbind("", "c"), dexec(""), dsync}},
		dmsgs(dparse("a", plus), dparse("d", "EXECUTE c"), dbind("", "d"), dexec(""), dbind("", "b", "5"), dexec(""), dsync),
		dq("EXECUTE b(6)"),
		dq("EXECUTE a(6)"),
	}},
	{"DEALLOCATE ALL", []deallocStep{
		prepareAB,
		dq("DEALLOCATE ALL"),
		dq("EXECUTE b(1)"),
		dmsgs(dbind("", "a", "1"), dexec(""), dsync),
		prepareAB,
		dq("DEALLOCATE a; DEALLOCATE ALL; EXECUTE b(1)"),
		prepareAB,
		dmsgs(dparse("c", "DEALLOCATE a"), dparse("", "DEALLOCATE ALL"), dbind("", ""), dexec(""), dparse("a", plus),
			dbind("", "c"), dexec(""), dbind("", "b", "1"), dexec(""), dsync),
		dmsgs(dparse("b", plus), dparse("c", "DEALLOCATE a"), dparse("a", plus), dbind("", "c"), dexec(""), dsync),
		dq("EXECUTE b(2)"),
	}},
	{"protocol Close", []deallocStep{
		prepareAB,
		dmsgs(&pgproto3.Close{ObjectType: 'S', Name: "a"}, dsync),
		dmsgs(dbind("", "b", "1"), dexec(""), dsync),
		dmsgs(dbind("", "a", "1"), dexec(""), dsync),
		dq("DEALLOCATE a"),
		dq("EXECUTE b(2); DEALLOCATE b; EXECUTE b(3)"),
		prepareAB,
		dmsgs(&pgproto3.Close{ObjectType: 'S', Name: "b"}, dparse("b", "SELECT 'other' AS b"), dbind("", "b"), dexec(""), dsync),
		dq("DEALLOCATE b; EXECUTE a(1)"),
	}},
	{"names parsed under different search_path", []deallocStep{
		dmsgs(dparse("a", plus), dsync),
		dq("SET search_path TO public"),
		dmsgs(dparse("b", plus), dsync),
		dq("DEALLOCATE a; EXECUTE b(1)"),
		dq("RESET search_path"),
		dq("EXECUTE b(2)"),
		dmsgs(dparse("a", plus), dsync),
		dq("SET search_path TO public"),
		dq("DEALLOCATE b; EXECUTE a(1)"),
		dq("RESET search_path"),
	}},
	{"a query that fails halfway", []deallocStep{
		prepareAB,
		dq("SELECT 1/0; DEALLOCATE a"),
		dq("DEALLOCATE a; SELECT 1/0; DEALLOCATE b"),
		dq("EXECUTE b(1)"),
		dq("EXECUTE a(1)"),
		dq("BEGIN; DEALLOCATE b; SELECT 1/0"),
		dq("DEALLOCATE b"),
		dq("ROLLBACK"),
		dq("EXECUTE b(2)"),
		dq("BEGIN; DEALLOCATE b; ROLLBACK"),
		dq("EXECUTE b(3)"),
	}},
	{"pipelined", []deallocStep{
		{readies: 5, msgs: []pgproto3.FrontendMessage{dparse("a", plus), dparse("b", plus), dsync,
			&pgproto3.Query{String: "DEALLOCATE a; EXECUTE b(1)"}, dbind("", "b", "2"), dexec(""), dsync,
			&pgproto3.Query{String: "EXECUTE b(3); DEALLOCATE b"}, dbind("", "b", "4"), dexec(""), dsync}},
		// A name used in a later request of the pipeline than a DEALLOCATE of it that the
		// server skips is still defined.
		{readies: 5, msgs: []pgproto3.FrontendMessage{dparse("a", plus), dparse("b", plus), dsync,
			&pgproto3.Query{String: "SELECT 1/0; DEALLOCATE a"}, dbind("", "b", "1"), dexec(""), dsync,
			dbind("", "a", "7"), dexec(""), dsync,
			&pgproto3.Query{String: "DEALLOCATE b; EXECUTE b(1)"}}},
		dq("EXECUTE a(1); DEALLOCATE a; EXECUTE a(2)"),
	}},
	{"a client pinned by SQL PREPARE", []deallocStep{
		dq("PREPARE s AS SELECT 2 AS two"),
		prepareAB,
		dmsgs(dparse("c", "DEALLOCATE s"), dparse("d", "DEALLOCATE a"), dbind("", "c"), dexec(""), dbind("", "d"), dexec(""),
			dbind("", "b", "1"), dexec(""), dsync),
		dq("EXECUTE s"),
		dq("PREPARE s AS SELECT 3 AS three"),
		dmsgs(dbind("p", "c"), dbind("", "c"), dexec("p"), dexec(""), dsync),
		dq("PREPARE s AS SELECT 4 AS four; DEALLOCATE b; EXECUTE s; EXECUTE b(1)"),
		dmsgs(dbind("", "d"), dexec(""), dsync),
	}},
	{"inside an extended batch", []deallocStep{
		{readies: 2, msgs: []pgproto3.FrontendMessage{dparse("a", plus), dparse("b", plus),
			&pgproto3.Query{String: "DEALLOCATE a; EXECUTE b(1)"}, dbind("", "b", "2"), dexec(""), dsync}},
		dq("EXECUTE b(2)"),
		// Skipped after an error: nothing is deallocated.
		{readies: 1, msgs: []pgproto3.FrontendMessage{dparse("a", plus), dparse("", "SELECT 1/0"), dbind("", ""), dexec(""),
			&pgproto3.Query{String: "DEALLOCATE a; EXECUTE b(1)"}, dsync}},
		dq("EXECUTE a(3); EXECUTE b(3)"),
	}},
}

// TestDeallocateSharedStatement runs deallocScripts.
func TestDeallocateSharedStatement(t *testing.T) {
	compareScripts(t, deallocScripts)
}

// namedErrorScripts make PostgreSQL name a client's statement in an error.
var namedErrorScripts = []struct {
	name  string
	steps []deallocStep
}{
	{"a Bind with the wrong number of parameters", []deallocStep{
		prepareAB,
		dmsgs(dbind("", "a"), dexec(""), dsync),
		dmsgs(dbind("", "b", "1", "2"), dexec(""), dsync),
		// The second Bind fails: its name, not the first's, though both share a server statement.
		dmsgs(dbind("", "a", "1"), dexec(""), dbind("", "b"), dexec(""), dsync),
		dmsgs(dbind("", "b", "1"), dexec(""), dbind("", "a", "1", "2"), dexec(""), dsync),
		// A Parse pgtide sends first (the statement is new on this server connection).
		{hold: true, msgs: []pgproto3.FrontendMessage{dbind("", "b"), dexec(""), dsync}},
		{release: true, msgs: []pgproto3.FrontendMessage{dparse("c", "SELECT $1::text AS c"), dbind("", "c", "1", "2"), dsync}},
		dq("EXECUTE c(1, 2)"),
		dq("BEGIN"),
		dmsgs(dbind("", "c"), dexec(""), dsync),
		dq("ROLLBACK"),
	}},
	{"the failed Bind's name, dropped after it", []deallocStep{
		prepareAB,
		// The Close after the failed Bind is skipped, but pgtide's records dropped a when it
		// was sent: the error still names a, not b, which has the same text.
		dmsgs(dbind("", "a", "1", "2"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "a"}, dsync),
		dmsgs(dbind("", "a", "1", "2"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "a"}, dparse("a", "SELECT 2 AS two"), dsync),
		dmsgs(dbind("", "a", "1", "2"), dexec(""), &pgproto3.Flush{}, &pgproto3.Close{ObjectType: 'S', Name: "a"}, dsync),
		{readies: 2, msgs: []pgproto3.FrontendMessage{dbind("", "a", "1", "2"), dexec(""), dsync, &pgproto3.Query{String: "DEALLOCATE a"}}},
		{readies: 2, msgs: []pgproto3.FrontendMessage{dbind("", "b"), dexec(""), dsync, &pgproto3.Query{String: "DEALLOCATE a"}}},
		{readies: 2, msgs: []pgproto3.FrontendMessage{dbind("", "b"), dexec(""), dsync, &pgproto3.Query{String: "DISCARD ALL"}}},
	}},
	{"SQL EXECUTE of names that share a text", []deallocStep{
		prepareAB,
		dq("EXECUTE a(1, 2)"),
		dq("EXECUTE b(1, 2)"),
		dq("EXECUTE a(1); EXECUTE a(1, 2)"),
		// (Not "EXECUTE a(1); EXECUTE b(1, 2)": which of the two failed is not in the error,
		// and pgtide keeps its own name; see rewordNameLocked.)
		dq("BEGIN"),
		dq("EXECUTE b(1, 2)"),
		dq("ROLLBACK"),
	}},
	{"texts that look like pgtide's names", []deallocStep{
		prepareAB,
		dmsgs(dbind("", "a", `"pgtide_1"`), dexec(""), dsync),
		dmsgs(dbind("", "a", `x"pgtide_123456789"y`), dexec(""), dsync),
		dq(`SELECT '"pgtide_1"'::int`),
		dq(`SELECT * FROM "pgtide_1"`),
		dq(`DO $$ BEGIN RAISE EXCEPTION 'wrong number of parameters for prepared statement "pgtide_1"' USING ERRCODE = '42601'; END $$`),
	}},
}

// TestStatementNamesInErrors: PostgreSQL's errors that name a prepared statement name the
// client's, not the server statement pgtide created for it.
func TestStatementNamesInErrors(t *testing.T) {
	compareScripts(t, namedErrorScripts)
}

// compareScripts runs each script straight on PostgreSQL and through pgtide in both pool modes,
// and fails at the first answer that differs, error texts included, or if pgtide logs a warning.
func compareScripts(t *testing.T, scripts []struct {
	name  string
	steps []deallocStep
}) {
	t.Helper()
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := trustProxy(t, mode, 2)
			for _, sc := range scripts {
				t.Run(sc.name, func(t *testing.T) {
					logStart := p.logLines()
					want := runDeallocScript(t, cluster.Primary().Addr(), sc.steps)
					got := runDeallocScript(t, p.Addr().String(), sc.steps)
					for i := range max(len(want), len(got)) {
						var w, g string
						if i < len(want) {
							w = want[i]
						}
						if i < len(got) {
							g = got[i]
						}
						if w != g {
							t.Fatalf("answers differ from message %d:\nPostgreSQL:\n\t%s\npgtide:\n\t%s", i,
								strings.Join(want, "\n\t"), strings.Join(got, "\n\t"))
						}
					}
					if lines := p.logLinesSince(logStart, "level=WARN", "level=ERROR"); len(lines) > 0 {
						t.Fatalf("pgtide logged:\n\t%s", strings.Join(lines, "\n\t"))
					}
				})
			}
		})
	}
}

// runDeallocScript runs steps on a new connection to addr and returns every answer, with error
// texts, and the step each came from.
func runDeallocScript(t *testing.T, addr string, steps []deallocStep) []string {
	t.Helper()
	var clients [2]*fuzzClient
	for i := range clients {
		c, err := dialFuzzClient(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.conn.Close() })
		clients[i] = c
	}
	main, other := clients[0], clients[1]
	otherQuery := func(sql string) {
		other.fe.Send(&pgproto3.Query{String: sql})
		if err := other.fe.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := other.readReady(); err != nil {
			t.Fatalf("other client: %s: %v", sql, err)
		}
	}
	for i, st := range steps {
		if st.hold {
			otherQuery("BEGIN; SELECT 1")
		}
		for _, m := range st.msgs {
			main.fe.Send(m)
		}
		if err := main.fe.Flush(); err != nil {
			t.Fatal(err)
		}
		n := len(main.detail)
		for range max(st.readies, 1) {
			if err := main.readReady(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		for j := n; j < len(main.detail); j++ {
			main.detail[j] = itoa(i) + ": " + main.detail[j]
		}
		if st.release {
			otherQuery("ROLLBACK")
		}
	}
	return main.detail
}

// skippedScripts pipeline a request after one whose Parse or Close the server skipped, because
// an earlier message of its batch failed.
var skippedScripts = []struct {
	name  string
	steps []deallocStep
}{
	{"a skipped Close, then the name", []deallocStep{
		prepareAB,
		{readies: 2, msgs: []pgproto3.FrontendMessage{dbind("", "a", "1", "2"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "a"}, dsync,
			dbind("", "a", "1"), dexec(""), dsync}},
		dmsgs(dbind("", "a", "2"), dexec(""), dsync),
	}},
	{"a skipped Parse, then the name", []deallocStep{
		{readies: 2, msgs: []pgproto3.FrontendMessage{dparse("", "SELECT 1/0"), dbind("", ""), dexec(""), dparse("c", "SELECT 3 AS three"), dsync,
			dbind("", "c"), dexec(""), dsync}},
		dmsgs(dbind("", "c"), dexec(""), dsync),
		dmsgs(dparse("c", "SELECT 4 AS four"), dbind("", "c"), dexec(""), dsync),
	}},
	{"a skipped Parse of a name in use", []deallocStep{
		prepareAB,
		{readies: 2, msgs: []pgproto3.FrontendMessage{dparse("", "SELECT 1/0"), dbind("", ""), dexec(""),
			&pgproto3.Close{ObjectType: 'S', Name: "a"}, dparse("a", "SELECT 5 AS five"), dsync,
			dbind("", "a", "1"), dexec(""), dsync}},
		dmsgs(dbind("", "a", "1"), dexec(""), dsync),
	}},
	{"a skipped Parse of a shared text", []deallocStep{
		dmsgs(dparse("a", plus), dsync),
		{readies: 2, msgs: []pgproto3.FrontendMessage{dparse("", "SELECT 1/0"), dbind("", ""), dexec(""), dparse("b", plus), dsync,
			dbind("", "b", "1"), dexec(""), dbind("", "a", "1"), dexec(""), dsync}},
		dmsgs(dparse("b", plus), dbind("", "b", "1"), dexec(""), dsync),
	}},
	{"a skipped Close, pinned", []deallocStep{
		dq("PREPARE s AS SELECT 2 AS two"), // pins the client: a relay goroutine reads its answers
		prepareAB,
		{readies: 3, msgs: []pgproto3.FrontendMessage{dbind("", "a", "1", "2"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "a"}, dsync,
			dbind("", "a", "1"), dexec(""), dsync,
			dparse("", "SELECT 1/0"), dbind("", ""), dexec(""), dparse("c", "SELECT 3 AS three"), dsync,
			dbind("", "c"), dexec(""), dsync}},
		dmsgs(dbind("", "a", "2"), dexec(""), dsync),
		dq("EXECUTE s"),
	}},
	{"a skipped Close, in a pipeline larger than a buffer", []deallocStep{
		prepareAB,
		{readies: 3, msgs: []pgproto3.FrontendMessage{dbind("", "a", "1", "2"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "a"}, dsync,
			&pgproto3.Query{String: "SELECT '" + strings.Repeat("x", 20000) + "' = '' AS big"},
			dbind("", "a", "1"), dexec(""), dsync}},
		dmsgs(dbind("", "a", "2"), dexec(""), dsync),
	}},
	{"a skipped Query, then a Parse, in one request", []deallocStep{
		// The Query is skipped after the failed Execute: the Sync after the Parse ends the
		// request, whose number the skipped Query no longer takes.
		{readies: 2, msgs: []pgproto3.FrontendMessage{dexec(""), &pgproto3.Query{String: "SELECT 1"}, dparse("x", "SELECT 1"), dsync, dsync}},
		dq("SELECT 42"),
		{readies: 2, msgs: []pgproto3.FrontendMessage{dexec(""), &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Close{ObjectType: 'S', Name: "c"}, dsync,
			dbind("", "x"), dexec(""), dsync}},
		dq("SELECT 43"),
	}},
	{"a skipped Query, then a Parse, in one request, pinned", []deallocStep{
		dq("PREPARE s AS SELECT 2 AS two"), // pins the client: a relay goroutine reads its answers
		{readies: 2, msgs: []pgproto3.FrontendMessage{dexec(""), &pgproto3.Query{String: "SELECT 1"}, dparse("x", "SELECT 1"), dsync, dsync}},
		dq("SELECT 42"),
		{readies: 2, msgs: []pgproto3.FrontendMessage{dexec(""), &pgproto3.Query{String: "SELECT 1"}, dparse("y", "SELECT 1"), dsync,
			dbind("", "y"), dexec(""), dsync}},
		dq("EXECUTE s"),
	}},
	{"a pipeline that prepares and closes a statement per request", []deallocStep{
		{readies: 4, msgs: []pgproto3.FrontendMessage{
			dparse("q1", "SELECT 1 AS one"), dbind("", "q1"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "q1"}, dsync,
			dparse("q2", "SELECT 2 AS two"), dbind("", "q2"), dexec(""), &pgproto3.Close{ObjectType: 'S', Name: "q2"}, dsync,
			dparse("q1", "SELECT 3 AS three"), dbind("", "q1"), dexec(""), dsync,
			dbind("", "q1"), dexec(""), dsync}},
	}},
	{"a skipped unnamed Parse, then a skipped Close of it", []deallocStep{
		dq("CREATE TEMP TABLE IF NOT EXISTS rv (x int)"),
		{readies: 2, msgs: []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'S', Name: "nosuch"}, dparse("", "SELECT 'never parsed'"), dsync,
			dexec(""), &pgproto3.Close{ObjectType: 'S', Name: ""}, dsync}},
		dmsgs(dbind("", ""), dexec(""), dsync),
		{readies: 2, msgs: []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'S', Name: "nosuch"}, dparse("", "SELECT 'never parsed'"), dsync,
			dexec(""), &pgproto3.Describe{ObjectType: 'S', Name: ""}, &pgproto3.Close{ObjectType: 'S', Name: ""}, &pgproto3.Query{String: "SELECT 2"}, dsync}},
		dmsgs(&pgproto3.Describe{ObjectType: 'S', Name: ""}, dsync),
	}},
	{"an unnamed statement, a skipped Parse of another, then a Query", []deallocStep{
		{readies: 2, msgs: []pgproto3.FrontendMessage{dparse("", "SELECT 1 AS one"), dexec("nosuch"), dparse("", "SELECT 2 AS two"), dsync,
			&pgproto3.Query{String: "SELECT 5"}}},
		dmsgs(dbind("", ""), dexec(""), dsync),
	}},
	{"a skipped Close in an aborted transaction", []deallocStep{
		prepareAB,
		{readies: 3, msgs: []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}, dparse("", "SELECT 1/0"), dbind("", ""), dexec(""),
			&pgproto3.Close{ObjectType: 'S', Name: "b"}, dsync,
			&pgproto3.Query{String: "ROLLBACK"}}},
		dmsgs(dbind("", "b", "1"), dexec(""), dsync),
	}},
}

// TestSkippedStatementMessages runs skippedScripts.
func TestSkippedStatementMessages(t *testing.T) {
	compareScripts(t, skippedScripts)
}

// TestUnnamedStatementNotShared: a client's unnamed statement that the server kept because it
// skipped the Query meant to replace it is not run by the next client of the server connection,
// which has none: it gets PostgreSQL's 26000, as on a connection of its own.
func TestUnnamedStatementNotShared(t *testing.T) {
	p := trustProxy(t, "transaction", 1)
	y, err := dialFuzzClient(p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	y.fe.Send(&pgproto3.Parse{Query: "SELECT 'secret of y'"})
	y.fe.Send(&pgproto3.Bind{PreparedStatement: "nosuch"})
	y.fe.Send(&pgproto3.Execute{})
	y.fe.Send(&pgproto3.Query{String: "SELECT 1"})
	y.fe.Send(&pgproto3.Sync{})
	if err := y.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := y.readReady(); err != nil {
		t.Fatal(err)
	}
	y.conn.Close()
	x, err := dialFuzzClient(p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer x.conn.Close()
	x.fe.Send(&pgproto3.Bind{})
	x.fe.Send(&pgproto3.Execute{})
	x.fe.Send(&pgproto3.Sync{})
	if err := x.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := x.readReady(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(x.got, "\n")
	if strings.Contains(got, "secret") || !strings.Contains(got, "26000") {
		t.Fatalf("another client's Bind of the unnamed statement got:\n%s", got)
	}
}
