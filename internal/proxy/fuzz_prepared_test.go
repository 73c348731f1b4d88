package proxy_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
)

// FuzzPreparedStatements is a differential test of transaction mode's prepared-statement
// translation (internal/session/prepared.go): each input decodes to a short sequence of client
// messages, sent both straight to PostgreSQL and through pgtide, and the two response streams
// must agree — message types, SQLSTATEs, command tags, rows, parameter and result types, and
// the transaction status of every ReadyForQuery. A second client ("other") may act between the
// first client's messages, on both sides: through pgtide it holds server connections (so the
// first client's next transaction runs on another one) and prepares, closes and deallocates
// statements on the connections the first client's statements are shared on.
//
// The input is read as ops, one letter each (case-insensitive) followed by its argument bytes;
// an argument byte is a digit or lower-case letter (0-9, a-z: 0-35) or any byte (its value),
// taken modulo the length of the list it indexes. Any other opcode byte is an op too (by its
// value), so every input means something.
//
//	P name text         Parse              (fuzzNames, fuzzTexts)
//	B portal name nargs Bind               (fuzzPortals, fuzzNames; nargs 0 or 1 text parameter "41")
//	D name              Describe statement
//	R portal            Describe portal
//	E portal rows       Execute            (rows 0: all, 1: one)
//	C name              Close statement
//	X portal            Close portal
//	S                   Sync
//	F                   Flush
//	Q query             simple Query       (fuzzQueries)
//	O action text       the other client   (fuzzOtherActions; text for its Parse)
//
// For example "P10B010E00S" is Parse "a" as SELECT 1, Bind it to the unnamed portal, Execute,
// Sync. A sequence left open at its end gets a Sync. Seeds: testdata/fuzz/FuzzPreparedStatements.
//
// What the generator leaves out, and why (each difference the README documents):
//   - pg_prepared_statements (shows pgtide's names) and pg_backend_pid (pgtide's own ID).
//   - A protocol Parse of a name the client has sent a SQL PREPARE of (pgtide does not
//     refuse it with 42P05 as PostgreSQL does: it pins the client).
//   - SET of parameters other than search_path, which pin (pinning is covered by SQL PREPARE).
//
// The proxy is startFuzzProxy's.
func FuzzPreparedStatements(f *testing.F) {
	fx := startFuzzProxy(f)
	f.Fuzz(func(t *testing.T, data []byte) { fx.run(t, data, false) })
}

// fuzzProxy is the pgtide the differential fuzz targets (and TestPipelinedStatements) compare
// with PostgreSQL.
type fuzzProxy struct {
	p                     *testProxy
	directAddr, proxyAddr string
}

// startFuzzProxy starts the proxy the differential targets run against: pin_policy "pin" (the
// default: nothing is refused), a pool of 4 server connections and max_prepared_statements 3,
// so that statements are evicted and re-created.
func startFuzzProxy(f *testing.F) *fuzzProxy {
	if cluster == nil {
		f.Skip("no test cluster (-short)")
	}
	watchFuzzWorker(f)
	return newFuzzProxy(quietF{f})
}

func newFuzzProxy(tb testing.TB) *fuzzProxy {
	p := startProxyTB(tb, func(c *config.Config) {
		c.Proxy.LogLevel = "warn"
		c.Proxy.PinPolicy = config.PinPolicyPin
		c.Proxy.MaxPreparedStatements = 3
		c.Cluster.PoolSize = 4
	}, nil)
	return &fuzzProxy{p: p, directAddr: cluster.Primary().Addr(), proxyAddr: p.Addr().String()}
}

// run runs one input on both sides and fails t where the answers differ; pipelined: as
// FuzzPipelinedStatements reads it.
func (fx *fuzzProxy) run(t *testing.T, data []byte, pipelined bool) {
	ops := decodeFuzzOps(data)
	// Inputs are independent: every input runs on server connections of its own (those of
	// earlier inputs close when their clients let them go), so a failure reproduces alone.
	// What one client leaves on a server connection for the next is the other client's job.
	p := fx.p
	p.Pools().Reconnect("")
	logStart := p.logLines()
	r := &fuzzRun{t: t, data: data, ops: ops, directAddr: fx.directAddr, proxyAddr: fx.proxyAddr, pipelined: pipelined}
	defer r.close()
	r.main = r.connect("main")
	for i, op := range ops {
		r.step = i
		r.do(op)
	}
	r.step = len(ops)
	r.finish()
	r.compare()
	// pgtide logs at warn or error what it did not expect (a response it cannot match, a
	// statement the server lost): none of that may follow from a client's messages.
	if lines := p.logLinesSince(logStart, "level=WARN", "level=ERROR"); len(lines) > 0 && !(bugDuplicateParseWarns && fuzzDuplicateParseWarns(lines)) {
		r.fail("pgtide logged:\n\t%s", strings.Join(lines, "\n\t"))
	}
}

// Known pgtide bugs this target found, which it steers around until they are fixed (so that it
// keeps looking for others): set each to false with its fix, and add its reproduction to the
// seeds.
const (
	// bugSkippedQuery: a Query sent after extended messages and before their Sync, which the
	// server skips after an error in them, still waits for a ReadyForQuery of its own, and the
	// client's next request hangs (Parse "" "SELEC 1", Query "SELECT 1", Sync; then any
	// request). Avoided: the generator sends a Sync before every Query.
	bugSkippedQuery = false
	// bugUnnamedAfterError: a Parse or Close of the unnamed statement that fails or that the
	// server skips after an error still changes the client's unnamed statement in pgtide (P00S
	// E20 P04S B000E00S: the rows of the skipped Parse's text). A skipped Close of it — the
	// client's, or the one pgtide sends before a Bind or Describe of the unnamed statement
	// when the server holds another client's — leaves the server's statement to whoever comes
	// next (O31 E20D0S D0S: the other client's statement described). Avoided: a Close, Bind or
	// Describe of the unnamed statement goes first in its batch (after a Sync), unless the
	// batch parsed it; after a batch with an error and a Parse of the unnamed statement, Binds
	// and Describes of it are left out until a Query or an unnamed Parse without error.
	bugUnnamedAfterError = false
	// bugDuplicateParseWarns: a Parse of a name the client already has (answered 42P05
	// through a Describe of a stand-in name) is taken for a statement the server lost: pgtide
	// logs a warning and drops and re-creates every statement of that server connection.
	// Avoided: that warning is not counted.
	bugDuplicateParseWarns = false
	// bugNamedSQLRefs: SQL EXECUTE and DEALLOCATE of the client's protocol-level statements
	// are translated in a Query and in the unnamed statement only; in a named statement they
	// reach the server with the client's name (Parse "b" "EXECUTE a" after Parse "a": 26000
	// where PostgreSQL runs a). A named DEALLOCATE ALL is followed only when its
	// CommandComplete comes back, so a Bind of a name later in the same pipeline is sent with
	// the dropped server-side name: the 26000 names pgtide_<n>, and pgtide warns that the
	// server lost its statements (P19 B010E00 B010S). Avoided: the generator parses such
	// texts unnamed.
	bugNamedSQLRefs = false
	// bugDuplicateParseFirst: a Parse of a name the client already has gets 42P05 even where
	// PostgreSQL reports another error first: a text that does not parse (42601), a failed
	// transaction (25P02; P10S Q7 Qb P10S). Normalised: those pairs of errors compare equal.
	bugDuplicateParseFirst = false
	// bugUnnamedSQLRefs: SQL EXECUTE and DEALLOCATE in the unnamed statement are translated
	// and followed at its Parse, for that batch on that server connection only. Its names are
	// dropped at the Parse (P10 P08 B010E00S: 26000 where PostgreSQL binds a, not deallocated
	// until the Execute); run in a later batch the DEALLOCATE is not followed (P10S P08S
	// B000E00S B010E00S: 26000 names pgtide_<n>, and pgtide warns that the server lost its
	// statements); on another server connection its text names the first one's statement
	// (P10S P07S O00 B000E00S: 26000 pgtide_<n> where PostgreSQL returns 1). Avoided: such a
	// Parse is followed at once by its Bind and Execute, and the unnamed statement is not
	// bound or described again.
	bugUnnamedSQLRefs = false
	// bugSharedDeallocate: a client's names with the same text share one server statement, and
	// an SQL DEALLOCATE of one name dropped it for the others too on that server connection
	// (P11P21S Qe: Parse "a" and "b" as the same text, then the Query "DEALLOCATE a; EXECUTE
	// b(1)": 26000 naming pgtide_<n> where PostgreSQL runs b). Avoided: a Query or Parse whose
	// DEALLOCATE names a statement whose text another of the client's names was last parsed
	// with is left out.
	bugSharedDeallocate = false
	// bugExecuteBoundEarly: an SQL EXECUTE in a protocol statement's text is resolved when a
	// portal of the statement is bound, not when the portal runs, as on PostgreSQL: a statement
	// of that name parsed or closed in between is not seen (P27 B120 P10 E10 S: Parse "b"
	// "EXECUTE a", Bind "p" to b, Parse "a" "SELECT 1", Execute "p": 26000 where PostgreSQL runs
	// a; P10 P27 B120 C1 P14 E10 S: the rows of the a closed before the Execute, not of the new
	// one). Found by TestPipelinedStatements; not particular to pipelining. Avoided: a Bind of a
	// statement that may have such a text is followed at once by an Execute of its portal.
	bugExecuteBoundEarly = true
)

// fuzzDuplicateParseWarns reports whether every one of lines is bugDuplicateParseWarns.
func fuzzDuplicateParseWarns(lines []string) bool {
	for _, l := range lines {
		if !strings.Contains(l, "lost prepared statements") || !strings.Contains(l, "pgtide_duplicate_") {
			return false
		}
	}
	return true
}

// quietF keeps the proxy's log out of the fuzz target's output (F.Log may not be called while
// the target runs); the log recorder still has every line, for the reports.
type quietF struct{ *testing.F }

func (quietF) Log(...any) {}

// fuzzText is a statement text for Parse.
type fuzzText struct {
	sql   string
	oids  []uint32 // parameter types given in the Parse
	nargs int      // parameters the statement takes
	refs  bool     // names or drops prepared statements (see bugNamedSQLRefs)
}

var (
	fuzzNames   = []string{"", "a", "b", "nope"}
	fuzzPortals = []string{"", "p", "nope"}
	fuzzTexts   = []fuzzText{
		{sql: "SELECT 1 AS one"},
		{sql: "SELECT $1::int + 1 AS plus", nargs: 1},
		{sql: "SELEC 1"},                                // fails at Parse (42601)
		{sql: "SELECT 1 / (random() * 0)::int AS boom"}, // fails at Execute (22012)
		{sql: "SELECT generate_series(1, 3) AS g"},
		{sql: "SELECT $1 AS x", oids: []uint32{23}, nargs: 1},
		{sql: "SELECT $1 AS x", oids: []uint32{25}, nargs: 1}, // the same text, another statement
		{sql: "EXECUTE a", refs: true},
		{sql: "DEALLOCATE a", refs: true},
		{sql: "DEALLOCATE ALL", refs: true},
		{sql: "BEGIN"},
		{sql: "COMMIT"},
		{sql: "EXECUTE b(2)", refs: true},
		{sql: "DEALLOCATE b", refs: true},
	}
	fuzzQueries = []string{
		"PREPARE a AS SELECT 1 AS one",
		"PREPARE b(int) AS SELECT $1 + 1 AS plus",
		"EXECUTE a",
		"EXECUTE b(5)",
		"DEALLOCATE a",
		"DEALLOCATE b",
		"DEALLOCATE ALL",
		"BEGIN",
		"COMMIT",
		"ROLLBACK",
		"DISCARD ALL",
		"SELEC 1",
		"SELECT 1 / (random() * 0)::int AS boom",
		"SELECT 1 AS one",
		"DEALLOCATE a; EXECUTE b(1)",
		"SET search_path TO public",
		"RESET ALL",
		"EXPLAIN (COSTS OFF) EXECUTE a",
		"DEALLOCATE a; DEALLOCATE b",
		"DEALLOCATE b; EXECUTE a",
		"DEALLOCATE a; EXECUTE a",
	}
	// fuzzOtherActions are what the other client does, each a whole request.
	fuzzOtherActions = []string{"BEGIN", "COMMIT", "Parse a, Bind, Execute, Sync",
		"Parse unnamed, Describe, Bind, Execute, Sync", "Close a, Sync", "DEALLOCATE ALL"}
)

// fuzzMaxOps bounds an input's ops (an input takes about a millisecond per op, and 100 ms
// per Flush).
const fuzzMaxOps = 30

// fuzzOp is one decoded op: kind is its letter, args index the lists above.
type fuzzOp struct {
	kind byte
	args [3]int
}

// fuzzOpArgs is the number of argument bytes of each op.
var fuzzOpArgs = map[byte]int{'P': 2, 'B': 3, 'D': 1, 'R': 1, 'E': 2, 'C': 1, 'X': 1, 'S': 0, 'F': 0, 'Q': 1, 'O': 2}

const fuzzOpKinds = "PBDRECXSFQO"

func decodeFuzzOps(data []byte) []fuzzOp {
	var ops []fuzzOp
	for len(data) > 0 && len(ops) < fuzzMaxOps {
		b := data[0]
		data = data[1:]
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		if strings.IndexByte(fuzzOpKinds, b) < 0 {
			b = fuzzOpKinds[int(b)%len(fuzzOpKinds)]
		}
		op := fuzzOp{kind: b}
		for i := range fuzzOpArgs[b] {
			if len(data) > 0 {
				op.args[i] = fuzzArg(data[0])
				data = data[1:]
			}
		}
		ops = append(ops, op)
	}
	return ops
}

func fuzzArg(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'z':
		return int(b-'a') + 10
	}
	return int(b)
}

func pick[T any](list []T, i int) T { return list[i%len(list)] }

func (op fuzzOp) String() string {
	a := op.args
	switch op.kind {
	case 'P':
		t := pick(fuzzTexts, a[1])
		return fmt.Sprintf("Parse %q %q %v", pick(fuzzNames, a[0]), t.sql, t.oids)
	case 'B':
		return fmt.Sprintf("Bind portal %q statement %q with %d parameters", pick(fuzzPortals, a[0]), pick(fuzzNames, a[1]), a[2]%2)
	case 'D':
		return fmt.Sprintf("Describe statement %q", pick(fuzzNames, a[0]))
	case 'R':
		return fmt.Sprintf("Describe portal %q", pick(fuzzPortals, a[0]))
	case 'E':
		return fmt.Sprintf("Execute %q rows %d", pick(fuzzPortals, a[0]), a[1]%2)
	case 'C':
		return fmt.Sprintf("Close statement %q", pick(fuzzNames, a[0]))
	case 'X':
		return fmt.Sprintf("Close portal %q", pick(fuzzPortals, a[0]))
	case 'S':
		return "Sync"
	case 'F':
		return "Flush"
	case 'Q':
		return fmt.Sprintf("Query %q", pick(fuzzQueries, a[0]))
	case 'O':
		return fmt.Sprintf("other client: %s (%q)", pick(fuzzOtherActions, a[0]), pick(fuzzTexts, a[1]).sql)
	}
	return "?"
}

// fuzzTimeout bounds every wait for a response: longer than the proxy's query_wait_timeout
// (10 s), so a request waiting for a server connection ends with pgtide's error, not here.
const fuzzTimeout = 15 * time.Second

// fuzzWriteTimeout bounds the writes of a whole input: an input writes a few kilobytes at most,
// so a write that blocks means the reader stopped reading.
const fuzzWriteTimeout = 2 * time.Minute

// fuzzQuiet is how long the direct connection must stay silent after a Flush before its
// answers so far count as all of them. A slow server only moves messages to the next round:
// the streams are compared whole.
const fuzzQuiet = 100 * time.Millisecond

// fuzzRun is one input's run: a pair of clients (direct and through pgtide) per client role.
type fuzzRun struct {
	t                     *testing.T
	data                  []byte
	ops                   []fuzzOp
	step                  int
	directAddr, proxyAddr string
	main, other           *fuzzPair
	pipelined             bool              // FuzzPipelinedStatements: no waiting for answers
	pending               bool              // pipelined: main has sent messages not yet answered
	open                  bool              // main has sent extended messages since its last Sync
	batchStart            int               // main's messages from PostgreSQL before this batch's answers
	batchParsedUnnamed    bool              // this batch has a Parse of the unnamed statement
	unnamedSuspect        bool              // see bugUnnamedAfterError
	unnamedRefs           bool              // see bugUnnamedSQLRefs
	notes                 map[int][]string  // what the run did to each op to steer around bugs
	sqlPrepared           map[string]bool   // names the main client sent a SQL PREPARE of
	parsed                map[string]string // the text of each name the main client last parsed
	executes              map[string]bool   // names (and "") the main client parsed an SQL EXECUTE as
}

// namesItself reports whether statement name, parsed as sql, would run or drop itself through
// SQL EXECUTE and DEALLOCATE of the statements the main client parsed (whether or not those
// Parses succeeded).
func (r *fuzzRun) namesItself(name, sql string) bool {
	for range 8 {
		target, ok := strings.CutPrefix(sql, "EXECUTE ")
		if !ok {
			target, ok = strings.CutPrefix(sql, "DEALLOCATE ")
			return ok && target == name
		}
		target, _, _ = strings.Cut(target, "(")
		if target == name {
			return true
		}
		if sql, ok = r.parsed[target]; !ok {
			return false
		}
	}
	return true
}

// deallocatesShared reports whether sql has a DEALLOCATE of a name whose text another name of
// the main client's was last parsed with (see bugSharedDeallocate).
func (r *fuzzRun) deallocatesShared(sql string) bool {
	for _, stmt := range strings.Split(sql, ";") {
		name, ok := strings.CutPrefix(strings.TrimSpace(stmt), "DEALLOCATE ")
		if !ok {
			continue
		}
		for other, text := range r.parsed {
			if other != name && text == r.parsed[name] {
				return true
			}
		}
	}
	return false
}

// fuzzPair is one client role, connected to both.
type fuzzPair struct {
	name            string
	direct, proxied *fuzzClient
}

// fuzzClient is one connection and what it received.
type fuzzClient struct {
	conn   net.Conn
	fe     *pgproto3.Frontend
	got    []string // each message received, as compared
	detail []string // the same message with what is not compared (error texts), for reports
}

func (r *fuzzRun) connect(name string) *fuzzPair {
	pair := &fuzzPair{name: name}
	var err error
	if pair.direct, err = dialFuzzClient(r.directAddr); err != nil {
		r.t.Fatalf("%s: connecting to PostgreSQL: %v", name, err)
	}
	if pair.proxied, err = dialFuzzClient(r.proxyAddr); err != nil {
		pair.direct.conn.Close()
		r.fail("%s: connecting to pgtide: %v", name, err)
	}
	return pair
}

func dialFuzzClient(addr string) (*fuzzClient, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetWriteDeadline(time.Now().Add(fuzzWriteTimeout)) // the whole input's writes
	c := &fuzzClient{conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
	c.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "postgres", "database": "postgres"}})
	if err := c.fe.Flush(); err != nil {
		conn.Close()
		return nil, err
	}
	for {
		conn.SetReadDeadline(time.Now().Add(fuzzTimeout))
		m, err := c.fe.Receive()
		if err != nil {
			conn.Close()
			return nil, err
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			conn.Close()
			return nil, fmt.Errorf("login: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return c, nil
		}
	}
}

func (r *fuzzRun) close() {
	for _, pair := range []*fuzzPair{r.main, r.other} {
		if pair == nil {
			continue
		}
		for _, c := range []*fuzzClient{pair.direct, pair.proxied} {
			c.fe.Send(&pgproto3.Terminate{})
			c.fe.Flush()
			c.conn.Close()
		}
	}
}

func (pair *fuzzPair) send(msgs ...pgproto3.FrontendMessage) {
	for _, m := range msgs {
		pair.direct.fe.Send(m)
		pair.proxied.fe.Send(m)
	}
}

// write writes what pair has buffered to both connections.
func (r *fuzzRun) write(pair *fuzzPair) {
	if err := pair.direct.fe.Flush(); err != nil {
		r.t.Fatalf("%s: writing to PostgreSQL: %v", pair.name, err)
	}
	if err := pair.proxied.fe.Flush(); err != nil {
		r.fail("%s: writing to pgtide: %v", pair.name, err)
	}
}

// round writes what pair has buffered to both connections and reads each one's answer with
// read: PostgreSQL's first.
func (r *fuzzRun) round(pair *fuzzPair, read func(*fuzzClient) error) {
	r.write(pair)
	if err := read(pair.direct); err != nil {
		r.fail("%s: reading from PostgreSQL: %v", pair.name, err)
	}
	if err := read(pair.proxied); err != nil {
		r.fail("%s: reading from pgtide: %v", pair.name, err)
	}
}

func (r *fuzzRun) do(op fuzzOp) {
	a := op.args
	m := r.main
	r.pending = r.pending || op.kind != 'O'
	switch op.kind {
	case 'P':
		t := pick(fuzzTexts, a[1])
		name := pick(fuzzNames, a[0])
		if t.refs && name != "" && bugNamedSQLRefs {
			name = ""
			r.note("parsed unnamed (bugNamedSQLRefs)")
		}
		if t.refs && name != "" && r.namesItself(name, t.sql) {
			// Documented (README, Transaction mode): a statement whose SQL EXECUTE or DEALLOCATE
			// names itself, directly or through others, cannot be created under pgtide's names.
			r.note("left out: the statement would name itself")
			return
		}
		if name != "" {
			if r.parsed == nil {
				r.parsed = make(map[string]string)
			}
			r.parsed[name] = t.sql
		}
		if bugSharedDeallocate && r.deallocatesShared(t.sql) {
			r.note("left out (bugSharedDeallocate)")
			return
		}
		if r.sqlPrepared[name] {
			// Documented (README, Transaction mode): a protocol Parse of a name the client
			// created with SQL PREPARE is not refused with 42P05 as on PostgreSQL, but pins.
			r.note("left out: the name was SQL PREPAREd")
			return
		}
		r.batchParsedUnnamed = r.batchParsedUnnamed || name == ""
		if strings.HasPrefix(t.sql, "EXECUTE ") {
			if r.executes == nil {
				r.executes = make(map[string]bool)
			}
			r.executes[name] = true // whether or not it succeeds, and for good
		}
		m.send(&pgproto3.Parse{Name: name, Query: t.sql, ParameterOIDs: t.oids})
		if name == "" {
			r.unnamedRefs = t.refs && bugUnnamedSQLRefs
			if r.unnamedRefs {
				m.send(&pgproto3.Bind{}, &pgproto3.Execute{})
				r.note("then Bind, Execute (bugUnnamedSQLRefs)")
			}
		}
	case 'B':
		if !r.unnamedOK(pick(fuzzNames, a[1])) {
			return
		}
		var params [][]byte
		if a[2]%2 == 1 {
			params = [][]byte{[]byte("41")}
		}
		m.send(&pgproto3.Bind{DestinationPortal: pick(fuzzPortals, a[0]), PreparedStatement: pick(fuzzNames, a[1]), Parameters: params})
		if bugExecuteBoundEarly && r.executes[pick(fuzzNames, a[1])] {
			m.send(&pgproto3.Execute{Portal: pick(fuzzPortals, a[0])})
			r.note("then Execute (bugExecuteBoundEarly)")
		}
	case 'D':
		if !r.unnamedOK(pick(fuzzNames, a[0])) {
			return
		}
		m.send(&pgproto3.Describe{ObjectType: 'S', Name: pick(fuzzNames, a[0])})
	case 'R':
		m.send(&pgproto3.Describe{ObjectType: 'P', Name: pick(fuzzPortals, a[0])})
	case 'E':
		m.send(&pgproto3.Execute{Portal: pick(fuzzPortals, a[0]), MaxRows: uint32(a[1] % 2)})
	case 'C':
		if pick(fuzzNames, a[0]) == "" && r.open && bugUnnamedAfterError {
			r.syncFirst("bugUnnamedAfterError")
		}
		m.send(&pgproto3.Close{ObjectType: 'S', Name: pick(fuzzNames, a[0])})
	case 'X':
		m.send(&pgproto3.Close{ObjectType: 'P', Name: pick(fuzzPortals, a[0])})
	case 'S':
		r.sync()
		return
	case 'F':
		m.send(&pgproto3.Flush{})
		if r.pipelined {
			r.write(m) // a write point: the answers are read at the end
		} else {
			r.flushRound()
		}
		return
	case 'Q':
		q := &pgproto3.Query{String: pick(fuzzQueries, a[0])}
		if bugSharedDeallocate && r.deallocatesShared(q.String) {
			r.note("left out (bugSharedDeallocate)")
			return
		}
		if name, ok := strings.CutPrefix(q.String, "PREPARE "); ok {
			if r.sqlPrepared == nil {
				r.sqlPrepared = make(map[string]bool)
			}
			r.sqlPrepared[name[:1]] = true // whether or not it succeeds, and for good
		}
		if r.open && bugSkippedQuery {
			r.syncFirst("bugSkippedQuery")
		}
		// A Query drops the unnamed statement, on both sides (so does the empty Query that
		// ends a Query inside a batch, below).
		r.unnamedSuspect, r.unnamedRefs = false, false
		if r.pipelined {
			// Skipped if an error came before it since the last Sync; the pipeline's end tells.
			m.send(q)
			return
		}
		if !r.open {
			m.send(q)
			r.round(m, (*fuzzClient).readReady)
			r.batchStart = len(m.direct.got)
			return
		}
		// A Query inside an extended batch: PostgreSQL skips it if an error came before it
		// since the last Sync, so whether it answers with a ReadyForQuery is not known here.
		// A Sync and an empty Query (answered EmptyQueryResponse, ReadyForQuery, even in a
		// failed transaction; nothing else sends it) mark the end.
		m.send(q, &pgproto3.Sync{}, &pgproto3.Query{})
		r.round(m, (*fuzzClient).readEmptyReady)
		r.open, r.batchParsedUnnamed, r.batchStart = false, false, len(m.direct.got)
		return
	case 'O':
		if r.pipelined && r.pending {
			// The other client acts while the main client waits for nothing, so that what it
			// finds on the server connections (through pgtide) does not depend on timing.
			r.note("the pipeline ends first")
			r.endPipeline()
		}
		r.doOther(a[0], pick(fuzzTexts, a[1]))
		return
	}
	r.open = true
}

// finish ends the main client's input: a Sync where a batch is open; a pipeline's answers.
func (r *fuzzRun) finish() {
	switch {
	case r.pipelined:
		r.endPipeline()
	case r.open:
		r.sync()
	}
}

// endPipeline ends what the main client pipelined with a Sync and an empty Query, writes it and
// reads every answer. How many ReadyForQuery messages come is not known in advance (a Query after
// an error before it in the same batch is skipped, without one), but the empty Query's
// EmptyQueryResponse and ReadyForQuery come last, after everything else: nothing else sends it.
func (r *fuzzRun) endPipeline() {
	m := r.main
	m.send(&pgproto3.Sync{}, &pgproto3.Query{})
	r.round(m, (*fuzzClient).readEmptyReady)
	r.open, r.batchParsedUnnamed, r.pending = false, false, false
}

// sync ends the main client's batch with a Sync and reads the answers (pipelined: the answers
// are read at the pipeline's end).
func (r *fuzzRun) sync() {
	m := r.main
	m.send(&pgproto3.Sync{})
	if r.pipelined {
		r.open, r.batchParsedUnnamed = false, false
		return
	}
	r.round(m, (*fuzzClient).readReady)
	if r.batchParsedUnnamed && bugUnnamedAfterError {
		r.unnamedSuspect = false
		for _, got := range m.direct.got[r.batchStart:] {
			if strings.HasPrefix(got, "ErrorResponse") {
				r.unnamedSuspect = true
			}
		}
	}
	r.open, r.batchParsedUnnamed, r.batchStart = false, false, len(m.direct.got)
}

// unnamedOK steers a Bind or Describe of statement name around bugUnnamedAfterError: false to
// leave it out, and a Sync first where pgtide may close another client's unnamed statement.
func (r *fuzzRun) unnamedOK(name string) bool {
	switch {
	case name != "":
		return true
	case r.unnamedRefs:
		r.note("left out (bugUnnamedSQLRefs)")
		return false
	case !bugUnnamedAfterError:
		return true
	case r.unnamedSuspect:
		r.note("left out (bugUnnamedAfterError)")
		return false
	case r.open && !r.batchParsedUnnamed:
		r.syncFirst("bugUnnamedAfterError")
	}
	return true
}

// syncFirst ends the main client's batch before the current op, to steer around bug.
func (r *fuzzRun) syncFirst(bug string) {
	r.note("Sync first (" + bug + ")")
	r.sync()
}

// note adds what the run did to the current op, for reports.
func (r *fuzzRun) note(s string) {
	if r.notes == nil {
		r.notes = make(map[int][]string)
	}
	r.notes[r.step] = append(r.notes[r.step], s)
}

// flushRound reads what the main client's Flush brought: whatever PostgreSQL sent until it was
// quiet, then as many messages through pgtide (which must flush too: a client waiting on a Flush
// gets its answers, or hangs).
func (r *fuzzRun) flushRound() {
	m := r.main
	r.write(m)
	n := 0
	for {
		m.direct.conn.SetReadDeadline(time.Now().Add(fuzzQuiet))
		if err := m.direct.receive(); err != nil {
			if errors.Is(err, errFuzzTimeout) {
				break
			}
			r.fail("main: reading from PostgreSQL after Flush: %v", err)
		}
		n++
	}
	for range n {
		if err := m.proxied.receiveWithin(fuzzTimeout); err != nil {
			r.fail("main: reading from pgtide after Flush (PostgreSQL sent %d messages): %v", n, err)
		}
	}
}

// doOther runs one of fuzzOtherActions on the other client, on both sides. The main client's
// messages so far are written first (not a protocol Flush), so each side sees the same order.
func (r *fuzzRun) doOther(action int, text fuzzText) {
	r.write(r.main)
	if r.other == nil {
		r.other = r.connect("other")
	}
	o := r.other
	var params [][]byte
	if text.nargs == 1 {
		params = [][]byte{[]byte("7")}
	}
	switch action % len(fuzzOtherActions) {
	case 0:
		o.send(&pgproto3.Query{String: "BEGIN"})
	case 1:
		o.send(&pgproto3.Query{String: "COMMIT"})
	case 2:
		name := "a"
		if text.refs && bugNamedSQLRefs {
			name = ""
			r.note("other client parses unnamed (bugNamedSQLRefs)")
		}
		if text.sql == "EXECUTE a" || text.sql == "DEALLOCATE a" {
			name = "" // a statement cannot name itself under pgtide's names (see namesItself)
			r.note("other client parses unnamed: the statement would name itself")
		}
		o.send(&pgproto3.Parse{Name: name, Query: text.sql, ParameterOIDs: text.oids},
			&pgproto3.Bind{PreparedStatement: name, Parameters: params}, &pgproto3.Execute{}, &pgproto3.Sync{})
	case 3:
		o.send(&pgproto3.Parse{Query: text.sql, ParameterOIDs: text.oids}, &pgproto3.Describe{ObjectType: 'S'},
			&pgproto3.Bind{Parameters: params}, &pgproto3.Execute{}, &pgproto3.Sync{})
	case 4:
		o.send(&pgproto3.Close{ObjectType: 'S', Name: "a"}, &pgproto3.Sync{})
	case 5:
		o.send(&pgproto3.Query{String: "DEALLOCATE ALL"})
	}
	r.round(o, (*fuzzClient).readReady)
}

var errFuzzTimeout = errors.New("no answer")

// receive reads one message, within the read deadline already set.
func (c *fuzzClient) receive() error {
	m, err := c.fe.Receive()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errFuzzTimeout
		}
		return err
	}
	got, detail := describeFuzzMessage(m)
	c.got = append(c.got, got)
	c.detail = append(c.detail, detail)
	return nil
}

func (c *fuzzClient) receiveWithin(d time.Duration) error {
	c.conn.SetReadDeadline(time.Now().Add(d))
	if err := c.receive(); err != nil {
		if errors.Is(err, errFuzzTimeout) {
			return fmt.Errorf("%w within %v (a hang)", err, d)
		}
		return err
	}
	return nil
}

func (c *fuzzClient) last(n int) string {
	if len(c.got) < n {
		return ""
	}
	return c.got[len(c.got)-n]
}

// readReady reads up to a ReadyForQuery.
func (c *fuzzClient) readReady() error {
	for {
		if err := c.receiveWithin(fuzzTimeout); err != nil {
			return err
		}
		if strings.HasPrefix(c.last(1), "ReadyForQuery") {
			return nil
		}
	}
}

// readEmptyReady reads up to an EmptyQueryResponse followed by a ReadyForQuery.
func (c *fuzzClient) readEmptyReady() error {
	for {
		if err := c.readReady(); err != nil {
			return err
		}
		if c.last(2) == "EmptyQueryResponse" {
			return nil
		}
	}
}

// describeFuzzMessage returns what is compared of m, and that with the rest worth reading.
func describeFuzzMessage(m pgproto3.BackendMessage) (got, detail string) {
	switch m := m.(type) {
	case *pgproto3.ErrorResponse:
		// The SQLSTATE and severity are compared, not the text: pgtide's own errors are
		// worded for the client, and PostgreSQL's texts name pgtide's statement names.
		got = "ErrorResponse " + severity(m.SeverityUnlocalized, m.Severity) + " " + m.Code
		return got, got + " " + m.Message
	case *pgproto3.NoticeResponse:
		got = "NoticeResponse " + severity(m.SeverityUnlocalized, m.Severity) + " " + m.Code
		return got, got + " " + m.Message
	case *pgproto3.CommandComplete:
		got = "CommandComplete " + string(m.CommandTag)
	case *pgproto3.DataRow:
		vals := make([]string, len(m.Values))
		for i, v := range m.Values {
			if v == nil {
				vals[i] = "NULL"
			} else {
				vals[i] = fmt.Sprintf("%q", v)
			}
		}
		got = "DataRow " + strings.Join(vals, ",")
	case *pgproto3.RowDescription:
		fields := make([]string, len(m.Fields))
		for i, fd := range m.Fields {
			fields[i] = fmt.Sprintf("%s:%d:%d", fd.Name, fd.DataTypeOID, fd.Format)
		}
		got = "RowDescription " + strings.Join(fields, ",")
	case *pgproto3.ParameterDescription:
		got = fmt.Sprintf("ParameterDescription %v", m.ParameterOIDs)
	case *pgproto3.ParameterStatus:
		got = "ParameterStatus " + m.Name + "=" + m.Value
	case *pgproto3.ReadyForQuery:
		got = "ReadyForQuery " + string(m.TxStatus)
	default:
		got = strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3.")
	}
	return got, got
}

func severity(unlocalized, localized string) string {
	if unlocalized != "" {
		return unlocalized
	}
	return localized
}

// compare fails the run if a client's two streams differ.
func (r *fuzzRun) compare() {
	for _, pair := range []*fuzzPair{r.main, r.other} {
		if pair == nil {
			continue
		}
		d, p := pair.direct.got, pair.proxied.got
		if len(d) != len(p) {
			r.fail("%s: the responses differ", pair.name)
		}
		for i := range d {
			if !fuzzSame(d[i], p[i]) {
				r.fail("%s: the responses differ", pair.name)
			}
		}
	}
}

// fuzzSame reports whether PostgreSQL's message d and pgtide's p agree.
func fuzzSame(d, p string) bool {
	if d == p {
		return true
	}
	return bugDuplicateParseFirst && p == "ErrorResponse ERROR 42P05" &&
		(d == "ErrorResponse ERROR 42601" || d == "ErrorResponse ERROR 25P02")
}

// fail reports the input, the ops and every stream, side by side, and ends the run.
func (r *fuzzRun) fail(format string, args ...any) {
	r.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, format+"\n", args...)
	fmt.Fprintf(&b, "input %q, ops:\n", r.data)
	for i, op := range r.ops {
		mark := "  "
		if i == r.step {
			mark = "->"
		}
		fmt.Fprintf(&b, "%s %2d %s", mark, i, op)
		for _, n := range r.notes[i] {
			fmt.Fprintf(&b, "; %s", n)
		}
		b.WriteString("\n")
	}
	for _, pair := range []*fuzzPair{r.main, r.other} {
		if pair == nil || pair.direct == nil || pair.proxied == nil {
			continue
		}
		fmt.Fprintf(&b, "%s client: PostgreSQL | pgtide\n", pair.name)
		d, p := pair.direct, pair.proxied
		for i := range max(len(d.got), len(p.got)) {
			var dl, pl string
			if i < len(d.got) {
				dl = d.detail[i]
			}
			if i < len(p.got) {
				pl = p.detail[i]
			}
			mark := "  "
			if i >= len(d.got) || i >= len(p.got) || !fuzzSame(d.got[i], p.got[i]) {
				mark = "!="
			}
			fmt.Fprintf(&b, "%s %-60s | %s\n", mark, dl, pl)
		}
	}
	r.t.Fatal(b.String())
}

// logLines returns how many lines the proxy has logged.
func (p *testProxy) logLines() int {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	return len(p.log.lines)
}

// logLinesSince returns the lines logged since line n that contain any of parts.
func (p *testProxy) logLinesSince(n int, parts ...string) []string {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	var out []string
	for _, l := range p.log.lines[n:] {
		for _, part := range parts {
			if strings.Contains(l, part) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}
