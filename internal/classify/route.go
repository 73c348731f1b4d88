package classify

import "sync"

// Route is where a statement may run.
type Route uint8

const (
	RouteWriter Route = iota // the zero value: when in doubt, the writer
	RouteReader
)

// String returns "writer" or "reader" ("unknown" for any other value).
func (r Route) String() string {
	switch r {
	case RouteWriter:
		return "writer"
	case RouteReader:
		return "reader"
	}
	return "unknown"
}

// RouteReason says why a text was routed where it was, for metrics labels and debug logs. The
// reader reasons are ReasonReadOnly, ReasonReadOnlyTransaction and ReasonHintReader; every other
// reason sends the text to the writer. The zero value is ReasonUnclassified.
type RouteReason uint8

const (
	// ReasonUnclassified: a statement the classifier does not know (an unknown first keyword,
	// EXPLAIN or COPY it cannot read), nesting deeper than 63 parentheses, or a text without
	// any statement.
	ReasonUnclassified RouteReason = iota
	// ReasonReadOnly: every statement reads: SELECT, WITH, VALUES, TABLE, SHOW, EXPLAIN without
	// ANALYZE, COPY ... TO STDOUT, with nothing inside that needs the writer.
	ReasonReadOnly
	// ReasonReadOnlyTransaction: the text opens a READ ONLY transaction (see RouteInfo).
	ReasonReadOnlyTransaction
	// ReasonHintReader: a /* pgtide:reader */ or -- pgtide:reader comment.
	ReasonHintReader
	// ReasonHintWriter: a /* pgtide:writer */ or -- pgtide:writer comment.
	ReasonHintWriter
	// ReasonTooLong: the text is longer than MaxRouteLen and was not read.
	ReasonTooLong
	// ReasonTransaction: BEGIN or START TRANSACTION without READ ONLY, COMMIT, END, ROLLBACK,
	// ABORT, SAVEPOINT, RELEASE, PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED.
	ReasonTransaction
	// ReasonWrite: INSERT, UPDATE, DELETE, MERGE (also as the statement after WITH, or as the
	// query of COPY (...) TO).
	ReasonWrite
	// ReasonDDL: CREATE, ALTER, DROP, TRUNCATE, COMMENT, GRANT, REVOKE, SECURITY LABEL, IMPORT
	// FOREIGN SCHEMA, REASSIGN OWNED.
	ReasonDDL
	// ReasonModifyingCTE: INSERT, UPDATE, DELETE or MERGE in a WITH query or a subquery.
	ReasonModifyingCTE
	// ReasonLocking: FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE, FOR KEY SHARE.
	ReasonLocking
	// ReasonSelectInto: SELECT ... INTO, which creates a table.
	ReasonSelectInto
	// ReasonExplainAnalyze: EXPLAIN ANALYZE of a statement that needs the writer (it runs it).
	ReasonExplainAnalyze
	// ReasonCopyFrom: COPY ... FROM.
	ReasonCopyFrom
	// ReasonCopyToFile: COPY ... TO a file or a PROGRAM, which runs on the server's host.
	ReasonCopyToFile
	// ReasonSequence: nextval, setval, currval, lastval.
	ReasonSequence
	// ReasonAdvisoryLock: pg_advisory_* and pg_try_advisory_* functions.
	ReasonAdvisoryLock
	// ReasonSetConfig: set_config.
	ReasonSetConfig
	// ReasonTxid: txid_current, txid_current_if_assigned, pg_current_xact_id,
	// pg_current_xact_id_if_assigned: a standby cannot assign a transaction ID.
	ReasonTxid
	// ReasonWAL: pg_current_wal_lsn and the other functions that only work on a primary's WAL
	// (pg_current_wal_insert_lsn, pg_current_wal_flush_lsn, pg_switch_wal,
	// pg_create_restore_point, pg_walfile_name, ...).
	ReasonWAL
	// ReasonLargeObject: lo_* functions, loread, lowrite.
	ReasonLargeObject
	// ReasonNotify: NOTIFY, LISTEN, UNLISTEN, pg_notify.
	ReasonNotify
	// ReasonLock: LOCK [TABLE].
	ReasonLock
	// ReasonCall: CALL.
	ReasonCall
	// ReasonDo: DO.
	ReasonDo
	// ReasonMaintenance: VACUUM, ANALYZE, REFRESH MATERIALIZED VIEW, CLUSTER, REINDEX,
	// CHECKPOINT.
	ReasonMaintenance
	// ReasonVolatileFunction: a function Functions reports as FuncWrite.
	ReasonVolatileFunction
	// ReasonUnknownFunction: a function neither the classifier nor Functions knows.
	ReasonUnknownFunction
	// ReasonSessionState: SET, RESET, DISCARD, LOAD: session state lives on whichever server
	// runs them, and the session layer moves it.
	ReasonSessionState
	// ReasonPreparedStatement: PREPARE, EXECUTE, DEALLOCATE, and EXPLAIN EXECUTE: where the
	// prepared statement lives and what it does are not in the text.
	ReasonPreparedStatement
	// ReasonCursor: DECLARE, FETCH, MOVE, CLOSE.
	ReasonCursor
	// ReasonNotReplayable is the session's, never ClassifyRoute's: a request that runs a
	// read-only statement but could not be sent again on the writer if a replica refused it
	// (it defines or closes a named statement, or ends with Flush), so it goes to the writer.
	ReasonNotReplayable
	// ReasonServerRole: pg_is_in_recovery(), and SHOW of transaction_read_only,
	// default_transaction_read_only or in_hot_standby: how a client learns whether its session
	// may write (libpq's, pgx's and JDBC's checks of target_session_attrs and targetServerType).
	// The endpoint may write, so the writer answers, even inside a READ ONLY block.
	ReasonServerRole

	// NumRouteReasons is the number of RouteReason values, for metrics that initialise one
	// label per reason: 0 .. NumRouteReasons-1.
	NumRouteReasons int = iota
)

var routeReasonNames = [NumRouteReasons]string{
	ReasonUnclassified:        "unclassified",
	ReasonReadOnly:            "read_only",
	ReasonReadOnlyTransaction: "read_only_transaction",
	ReasonHintReader:          "hint_reader",
	ReasonHintWriter:          "hint_writer",
	ReasonTooLong:             "too_long",
	ReasonTransaction:         "transaction",
	ReasonWrite:               "write",
	ReasonDDL:                 "ddl",
	ReasonModifyingCTE:        "modifying_cte",
	ReasonLocking:             "locking",
	ReasonSelectInto:          "select_into",
	ReasonExplainAnalyze:      "explain_analyze",
	ReasonCopyFrom:            "copy_from",
	ReasonCopyToFile:          "copy_to_file",
	ReasonSequence:            "sequence",
	ReasonAdvisoryLock:        "advisory_lock",
	ReasonSetConfig:           "set_config",
	ReasonTxid:                "txid",
	ReasonWAL:                 "wal",
	ReasonLargeObject:         "large_object",
	ReasonNotify:              "notify",
	ReasonLock:                "lock",
	ReasonCall:                "call",
	ReasonDo:                  "do",
	ReasonMaintenance:         "maintenance",
	ReasonVolatileFunction:    "volatile_function",
	ReasonUnknownFunction:     "unknown_function",
	ReasonSessionState:        "session_state",
	ReasonPreparedStatement:   "prepared_statement",
	ReasonCursor:              "cursor",
	ReasonNotReplayable:       "not_replayable",
	ReasonServerRole:          "server_role",
}

// String returns the reason's fixed lower_snake_case label ("read_only", "modifying_cte", ...);
// "unknown" for a value of NumRouteReasons or more.
func (r RouteReason) String() string {
	if int(r) < NumRouteReasons {
		return routeReasonNames[r]
	}
	return "unknown"
}

// Route returns where a text with this reason goes.
func (r RouteReason) Route() Route {
	switch r {
	case ReasonReadOnly, ReasonReadOnlyTransaction, ReasonHintReader:
		return RouteReader
	}
	return RouteWriter
}

// FuncKind is what is known of a function by name.
type FuncKind uint8

const (
	FuncUnknown FuncKind = iota
	FuncRead             // runs on a replica without writing (immutable/stable, or volatile but harmless)
	FuncWrite            // may write or needs the primary: route to the writer
	// FuncBuiltinVolatile: a volatile built-in function (pg_catalog): a read only if the
	// classifier knows it to be harmless (random, clock_timestamp, pg_sleep, ...); any other
	// may act on the server it runs on (pg_promote, pg_terminate_backend,
	// pg_create_physical_replication_slot, pg_reload_conf, ...), so its caller takes the writer.
	FuncBuiltinVolatile
)

// Functions tells the classifier about the database's functions. schema is empty for an
// unqualified call. Both are normalised identifiers (unquoted: lower-cased; quoted: exact),
// valid only during the call: implementations must not retain them. nil Functions means
// nothing is known.
//
// For an unqualified name, the classifier cannot know which schema the search_path finds it
// in: an implementation should answer FuncWrite when any schema a client may have on its path
// has a function of that name that writes. The classifier asks even about the common pg_catalog
// functions it knows to be read-only (count, lower, now, ...) when they are called unqualified,
// so that a user's function of the same name is not missed.
type Functions interface {
	Lookup(schema, name []byte) FuncKind
}

// RouteInfo is the classification of one Query text or one Parse text.
type RouteInfo struct {
	Route  Route
	Reason RouteReason
	// Begin: the text opens an explicit transaction block (BEGIN / START TRANSACTION, not
	// inside a function body), even if it also ends it. ReadOnly: the last transaction block the
	// text opens is declared READ ONLY (BEGIN READ ONLY, START TRANSACTION READ ONLY, or BEGIN
	// ...; SET TRANSACTION READ ONLY as the first statement after it in the same text).
	//
	// Such a text goes to the reader with ReasonReadOnlyTransaction unless a statement outside
	// the read-only block needs the writer, or one inside it would behave differently on a
	// standby than in a read-only transaction on the primary (see ClassifyRoute). A write
	// inside the read-only block does not move it: the server refuses it with 25006 on either.
	Begin, ReadOnly bool
}

// MaxRouteLen is the longest text ClassifyRoute reads; a longer one goes to the writer with
// ReasonTooLong, hints and all, and without Begin or ReadOnly, which bounds the time spent on one
// message.
const MaxRouteLen = 1 << 20

// ClassifyRoute classifies sql (a Query message's text or a Parse's query text, without the NUL)
// as one that may run on a reader or one that needs the writer. It never allocates (given a
// Functions that does not), never panics, does not modify sql, and runs in time linear in
// len(sql).
//
// It is conservative: a text goes to a reader only when every statement in it is provably a
// read. Statements are split as the server splits them (see the package doc) and each is judged
// by how it starts and by what it holds at any depth: data-modifying WITH queries, locking
// clauses, SELECT INTO, and function calls. A call is a name, possibly schema-qualified,
// followed by '('; keyword syntax that takes parentheses (EXISTS, COALESCE, CAST,
// numeric(10, 2), AS t(a, b), FILTER, OVER, ...) is not a call. A call of a function the
// classifier knows to need the writer (nextval, set_config, pg_advisory_lock, ...) sends the
// text there; one it knows to read is fine; any other name is asked of fns, and one that fns
// does not know (or nil fns) sends the text to the writer with ReasonUnknownFunction.
//
// A comment whose whole text is pgtide:writer or pgtide:reader, anywhere outside literals and
// quoted identifiers, forces the route (the writer if both appear); a reader hint overrides
// even an INSERT, which the reader refuses with 25006.
//
// A text that opens a READ ONLY transaction block goes to the reader, and the statements inside
// that block count only if a read-only transaction on the primary would run them but a standby
// would not, or would run them differently: advisory locks, currval and lastval, transaction ID
// and WAL functions, LISTEN, NOTIFY, LOCK, CHECKPOINT, COPY TO a file, PREPARE TRANSACTION,
// statements the classifier does not know, and SET TRANSACTION READ WRITE or SET
// transaction_read_only (which may make the block read-write). The block ends at COMMIT, END,
// ROLLBACK or ABORT (not AND CHAIN, not ROLLBACK TO); what follows it counts again.
func ClassifyRoute(sql []byte, fns Functions) RouteInfo {
	if len(sql) <= MaxRouteLen {
		if info, _, _, ok := fastRoute(sql); ok {
			return info
		}
	}
	return classifyRoute(sql, fns)
}

// TextInfo is what Classify finds in one Query or Parse text.
type TextInfo struct {
	RouteInfo               // ClassifyRoute's answer
	MaySetSessionState bool // MaySetSessionState's answer
	// TextOnly: the answer comes from the text alone, without asking Functions (it calls no
	// function the classifier does not know itself), so it holds for the same text later.
	TextOnly bool
}

// Classify answers ClassifyRoute(sql, fns) and MaySetSessionState(sql) together, in one pass
// over the text when it is a statement of a common shape (see fastRoute). The session layer
// asks both questions of every Query and Parse text on the auto endpoint. It never allocates
// (given a Functions that does not).
func Classify(sql []byte, fns Functions) TextInfo {
	if len(sql) > MaxRouteLen {
		return TextInfo{RouteInfo: RouteInfo{Route: RouteWriter, Reason: ReasonTooLong},
			MaySetSessionState: MaySetSessionState(sql), TextOnly: true}
	}
	info, may, stop, ok := fastRoute(sql)
	if ok {
		return TextInfo{RouteInfo: info, MaySetSessionState: may, TextOnly: true}
	}
	r := router{src: sql, fns: fns}
	// What the fast path read before it gave up holds no word it missed.
	return TextInfo{RouteInfo: r.classify(), MaySetSessionState: may || triggerIn(sql, stop, len(sql)),
		TextOnly: !r.asked}
}

// classifyRoute is ClassifyRoute's full analysis, the one definition of the rules.
func classifyRoute(sql []byte, fns Functions) RouteInfo {
	if len(sql) > MaxRouteLen {
		return RouteInfo{Route: RouteWriter, Reason: ReasonTooLong}
	}
	r := router{src: sql, fns: fns}
	return r.classify()
}

// classify reads r.src (at most MaxRouteLen bytes) for classifyRoute.
func (r *router) classify() RouteInfo {
	l := lexer{src: r.src}
	var t token
	for {
		l.pos = r.gap(l.pos)
		if !l.next(&t) {
			break
		}
		r.token(&t)
	}
	r.endStatement()
	if r.pendingBegin {
		r.need(ReasonTransaction)
	}
	info := RouteInfo{Begin: r.begin, ReadOnly: r.readOnly}
	switch {
	case r.hintWriter:
		info.Reason = ReasonHintWriter
	case r.hintReader:
		info.Reason = ReasonHintReader
	case r.writer:
		info.Reason = r.reason
	case r.roSeen:
		info.Reason = ReasonReadOnlyTransaction
	case r.stmts > 0:
		info.Reason = ReasonReadOnly
	default:
		info.Reason = ReasonUnclassified
	}
	info.Route = info.Reason.Route()
	return info
}

// router reads one text for ClassifyRoute.
type router struct {
	src   []byte
	fns   Functions
	asked bool // a function was looked up (in fns, or found unknown for want of fns)
	sp    splitter
	st    routeStmt

	// What the text so far has shown.
	hintWriter, hintReader bool
	stmts                  int
	writer                 bool        // a statement needs the writer...
	reason                 RouteReason // ...and the first one that did, why
	begin, readOnly        bool        // RouteInfo's
	inBlock                bool        // a transaction block this text opened is open
	inRO                   bool        // ... and it is READ ONLY
	roSeen                 bool        // a READ ONLY block was opened
	pendingBegin           bool        // the last statement was a BEGIN without READ ONLY
}

// stmtKind is how a statement is read, decided by its first token.
type stmtKind uint8

const (
	kFixed   stmtKind = iota // the first keyword decided; the rest is not read
	kQuery                   // SELECT, WITH, VALUES, TABLE, '(': scanned at every depth
	kExplain                 // EXPLAIN: options, then the explained statement
	kCopy                    // COPY
	kBegin                   // BEGIN, START
	kSet                     // SET: SET TRANSACTION READ ONLY|WRITE matters
	kEnd                     // COMMIT, END, ROLLBACK, ABORT
	kPrepare                 // PREPARE: a statement, or PREPARE TRANSACTION
	kShow                    // SHOW: the parameter matters
)

// routeStmt is the per-statement state; the zero value starts a statement.
type routeStmt struct {
	n    int // tokens so far
	kind stmtKind

	has    bool        // the statement needs the writer...
	reason RouteReason // ...for this reason (the first found)...
	force  bool        // ...even inside a READ ONLY block

	p1, p2 prev // the last two tokens read by the kinds that look back

	// kQuery: the dotted name that ended at p1 (chain parts, the last two kept), and what came
	// before its first part.
	parts       int
	name        token
	nameWord    wordInfo
	schema      token
	beforeChain prev
	chainDot    bool   // p1 is the '.' after a name of the chain
	withList    uint64 // bit d: a WITH list is open at depth d
	exprClose   uint64 // bit d: the ')' closing depth d ends DISTINCT ON (...) or OPERATOR(...)
	inCopy      bool   // the query is COPY's: INSERT ... after '(' is a write, not a CTE
	deep        bool   // parentheses nest deeper than maxRouteDepth

	// kBegin, kSet: transaction modes, the last READ ONLY / READ WRITE wins.
	mode   txMode
	serial bool // ISOLATION LEVEL SERIALIZABLE: a hot standby refuses it, read-only or not
	setTx  bool // kSet: SET [LOCAL|SESSION] TRANSACTION
	readRO bool // kSet: the parameter is transaction_read_only

	// kExplain.
	explain     uint8 // explainStart ...
	analyze     bool
	optStart    bool // the next token names an option
	optAnalyze  bool // the current option is ANALYZE
	optValue    bool // ... and its value so far
	analyzeBody bool // the explained statement is a query being scanned

	// kCopy.
	copyState uint8

	// kEnd.
	endTo, endPrepared bool
}

// prev is what the rules keep of an earlier token, packed in a word (copied on every token):
// bits 0-7 its kind (0: none, the start of a statement or of an explained query), 8-15 its byte
// (tkPunct), 16-31 its wordInfo (tkIdent), bit 32 whether it is a ')' that ends DISTINCT ON
// (...) or OPERATOR(...), after which an expression follows, and bits 33-63 where it starts.
type prev uint64

func makePrev(kind tokKind, c byte, w wordInfo, start int) prev {
	return prev(kind) | prev(c)<<8 | prev(w)<<16 | prev(start)<<33
}

func (p prev) kind() tokKind { return tokKind(p) }

func (p prev) w() wordInfo { return wordInfo(p >> 16) }

func (p prev) start() int { return int(p >> 33) }

func (p prev) exprClose() bool { return p&(1<<32) != 0 }

func (p prev) punct(c byte) bool { return p.kind() == tkPunct && byte(p>>8) == c }

func (p prev) is(w word) bool { return p.kind() == tkIdent && p.w().id() == w }

// level is the depth of the statement's own query: 1 inside COPY (...), else 0.
func (st *routeStmt) level() int {
	if st.inCopy {
		return 1
	}
	return 0
}

type txMode uint8

const (
	modeNone txMode = iota
	modeReadOnly
	modeReadWrite
)

const (
	explainStart   uint8 = iota // after EXPLAIN [ANALYZE] [VERBOSE]
	explainOptions              // inside EXPLAIN (...)
	explainBody                 // after the options: the explained statement starts
	explainStarted              // the explained statement has started
)

const (
	copyStart uint8 = iota // after COPY [BINARY]
	copyTable              // a table name: FROM or TO follows
	copyQuery              // inside COPY (query)
	copyAfter              // after the query's ')': TO follows
	copyTo                 // TO: the target follows
	copyDone
)

// maxRouteDepth is the deepest parenthesis nesting the scan follows (its per-depth state is a
// bit in a uint64); deeper text goes to the writer with ReasonUnclassified.
const maxRouteDepth = 63

// gap reads the whitespace and comments from i, noting hints, and returns where the next token
// starts.
func (r *router) gap(i int) int { return skipComments(r.src, i, r.comment) }

// comment notes a hint in c, a whole comment with its delimiters.
func (r *router) comment(c []byte) {
	var body []byte
	if c[0] == '-' {
		body = c[2:]
	} else {
		if len(c) < 4 || c[len(c)-2] != '*' || c[len(c)-1] != '/' {
			return // unterminated: the server rejects the text anyway
		}
		body = c[2 : len(c)-2]
	}
	for len(body) > 0 && isSpace(body[0]) {
		body = body[1:]
	}
	for len(body) > 0 && isSpace(body[len(body)-1]) {
		body = body[:len(body)-1]
	}
	switch string(body) {
	case "pgtide:writer":
		r.hintWriter = true
	case "pgtide:reader":
		r.hintReader = true
	}
}

// tokenComments notes hints in the comments the lexer reads as part of a token: between the
// segments of a continued string literal ('a' -- c <newline> 'b') and around the UESCAPE of a
// U&"..." identifier.
func (r *router) tokenComments(t *token) {
	switch {
	case t.flags&flagCont != 0:
		src := r.src
		for i := t.body0; i < t.body1; i++ {
			switch {
			case src[i] == '\\' && t.kind == tkEString:
				i++
			case src[i] == '\'' && i+1 < t.body1 && src[i+1] == '\'':
				i++
			case src[i] == '\'':
				i = r.gap(i + 1) // the next segment's opening quote
			}
		}
	case t.kind == tkUIdent && t.c != 0:
		i := r.gap(t.body1 + 1)
		r.gap(i + len("uescape"))
	}
}

// need records that the text needs the writer; the first reason is kept.
func (r *router) need(reason RouteReason) {
	if !r.writer {
		r.writer, r.reason = true, reason
	}
}

// verdict records that the current statement needs the writer.
func (st *routeStmt) verdict(reason RouteReason, force bool) {
	if !st.has {
		st.has, st.reason, st.force = true, reason, force
	}
}

func (r *router) token(t *token) {
	r.tokenComments(t)
	if r.sp.ends(t) {
		r.endStatement()
		return
	}
	st := &r.st
	idx := st.n
	st.n++
	if idx == 0 {
		r.start(t)
	} else {
		switch st.kind {
		case kQuery:
			r.scan(t)
		case kExplain:
			r.explainToken(t, idx)
		case kCopy:
			r.copyToken(t)
		case kBegin:
			r.modeToken(t)
		case kSet:
			r.setToken(t, idx)
		case kEnd:
			r.endToken(t, idx)
		case kPrepare:
			st.p2, st.p1 = st.p1, r.prev(t)
		case kShow:
			r.showToken(t, idx)
		}
	}
	r.sp.step(r.src, t)
}

// showToken reads SHOW's parameter: the ones that say whether the session may write take the
// writer (ReasonServerRole).
func (r *router) showToken(t *token, idx int) {
	if idx != 1 || t.kind != tkIdent && t.kind != tkQIdent {
		return
	}
	w := r.src[t.start:t.end]
	if t.kind == tkQIdent {
		w = r.src[t.body0:t.body1] // PostgreSQL looks parameter names up in any case, quoted too
	}
	if showsRole(w) {
		r.st.verdict(ReasonServerRole, true)
	}
}

// showsRole reports whether w (a parameter's name, in any case) is one whose SHOW says whether
// the session may write.
func showsRole(w []byte) bool {
	return eqFold(w, "transaction_read_only") || eqFold(w, "default_transaction_read_only") || eqFold(w, "in_hot_standby")
}

// prev makes the record of t kept for later tokens.
func (r *router) prev(t *token) prev {
	var w wordInfo
	if t.kind == tkIdent {
		w = lookupWord(r.src[t.start:t.end])
	}
	return makePrev(t.kind, t.c, w, t.start)
}

// start reads a statement's first token.
func (r *router) start(t *token) {
	st := &r.st
	if t.kind == tkPunct && t.c == '(' {
		st.kind = kQuery
		r.scan(t)
		return
	}
	if t.kind != tkIdent {
		st.verdict(ReasonUnclassified, true)
		return
	}
	s := startOf(r.src[t.start:t.end])
	st.kind = s.kind
	if s.needs {
		st.verdict(s.reason, s.force)
	}
	if st.kind == kQuery {
		r.scan(t)
	}
	if r.writer && st.kind == kQuery {
		// The text needs the writer already: the rest of a query changes nothing.
		st.kind = kFixed
	}
}

// scan reads a token of a query (kQuery) at any depth.
func (r *router) scan(t *token) {
	st := &r.st
	d := r.sp.depth
	cur := r.prev(t)
	bit := uint64(1) << uint(d&63)

	switch t.kind {
	case tkIdent:
		switch cur.w().id() {
		case wUpdate, wShare, wNo, wKey:
			if st.p1.is(wFor) {
				st.verdict(ReasonLocking, false)
			}
		}
		switch cur.w().id() {
		case wInsert, wUpdate, wDelete, wMerge:
			switch {
			case st.p1.punct('(') && st.inCopy && d == 1:
				st.verdict(ReasonWrite, false) // COPY (INSERT ... RETURNING ...) TO
			case st.p1.punct('('):
				st.verdict(ReasonModifyingCTE, false) // WITH x AS (INSERT ...)
			case st.withList&bit != 0 && d == st.level():
				st.verdict(ReasonWrite, false) // WITH ... INSERT: the statement's own
			case st.withList&bit != 0:
				st.verdict(ReasonModifyingCTE, false) // WITH ... INSERT inside a WITH query
			}
		case wInto:
			if !st.p1.is(wInsert) && !st.p1.is(wMerge) {
				st.verdict(ReasonSelectInto, false)
			}
		case wWith:
			if st.p1.kind() == 0 || st.p1.punct('(') {
				st.withList |= bit
			}
		case wSelect, wValues, wTable:
			st.withList &^= bit
		}
	case tkPunct:
		switch t.c {
		case '(':
			if d >= maxRouteDepth {
				st.deep = true
				break
			}
			if st.withList&bit != 0 && st.p1.punct(')') {
				st.withList &^= bit // WITH ... (SELECT ...): the main query in parentheses
			}
			inner := bit << 1
			st.withList &^= inner
			st.exprClose &^= inner
			if st.p1.is(wOperator) || st.p1.is(wOn) && st.p2.is(wDistinct) {
				st.exprClose |= inner
			}
			if st.parts > 0 && !st.chainDot {
				r.call()
			}
		case ')':
			if st.exprClose&bit != 0 || d > maxRouteDepth {
				cur |= 1 << 32
			}
			st.withList &^= bit
			st.exprClose &^= bit
		}
	}

	// The dotted name that may be called.
	switch {
	case t.kind == tkIdent || t.kind == tkQIdent || t.kind == tkUIdent:
		if st.chainDot {
			st.schema, st.parts = st.name, st.parts+1
		} else {
			st.parts, st.beforeChain = 1, st.p1
		}
		st.name, st.nameWord, st.chainDot = *t, cur.w(), false
	case t.kind == tkPunct && t.c == '.' && st.parts > 0 && !st.chainDot:
		st.chainDot = true
	default:
		st.parts, st.chainDot = 0, false
	}
	st.p2, st.p1 = st.p1, cur
}

// call judges the name that ended just before a '(' (st.name, with st.schema if qualified).
func (r *router) call() {
	st := &r.st
	before := st.beforeChain
	if before.is(wAs) || r.castBefore(before) {
		return // a type modifier or a column alias list: AS t(a, b), ::numeric(10, 2)
	}
	qualified := st.parts >= 2
	if !qualified {
		if st.name.kind == tkIdent && r.syntax(st.nameWord, before) {
			return
		}
		switch {
		case before.punct(')') && !before.exprClose():
			return // an alias's column list: FROM f() AS x(a), FROM f() x(a)
		case before.is(wWith), before.is(wRecursive),
			before.punct(',') && r.sp.depth <= maxRouteDepth && st.withList&(1<<uint(r.sp.depth)) != 0:
			return // a WITH query's column list
		case before.is(wTablesample):
			return // the sampling method
		}
	}

	var nameBuf, schemaBuf [maxIdentLen + 1]byte
	name, ok := r.ident(&st.name, nameBuf[:])
	var schema []byte
	if ok && qualified {
		schema, ok = r.ident(&st.schema, schemaBuf[:])
	}
	if !ok {
		st.verdict(ReasonUnknownFunction, false) // the server rejects the name anyway
		return
	}
	if !qualified || string(schema) == "pg_catalog" {
		b, known := builtins[string(name)]
		if !known {
			b, known = builtinPrefix(name)
		}
		if known {
			switch {
			case b.write:
				st.verdict(b.reason, b.force)
			case !qualified && r.lookup(false) == FuncWrite:
				// A function of the same name in a user's schema may come first on the path.
				st.verdict(ReasonVolatileFunction, false)
			}
			return
		}
	}
	switch r.lookup(qualified) {
	case FuncRead:
	case FuncWrite, FuncBuiltinVolatile:
		st.verdict(ReasonVolatileFunction, false)
	default:
		st.verdict(ReasonUnknownFunction, false)
	}
}

// syntax reports whether the unquoted word w (with info wi) followed by '(' is syntax rather
// than a call, given the token before it.
func (r *router) syntax(wi wordInfo, before prev) bool {
	if wi&wiConstruct != 0 {
		return true
	}
	switch wi.id() {
	case wSets: // GROUPING SETS (...)
		return before.is(wGrouping)
	case wMaterialized: // AS [NOT] MATERIALIZED (...)
		return before.is(wAs) || before.is(wNot)
	case wVarying: // character varying(20), bit varying(5)
		return before.is(wCharacter) || before.is(wChar) || before.is(wBit) || before.is(wNchar)
	case wSecond: // INTERVAL '1' SECOND(3), DAY TO SECOND(3)
		return before.is(wTo) || isStringKind(before.kind())
	case wZone: // AT TIME ZONE (...)
		return before.is(wTime)
	case wBy: // ORDER BY (...), GROUP BY (...), PARTITION BY (...)
		return before.is(wOrder) || before.is(wGroup) || before.is(wPartition)
	case wFirst, wNext: // FETCH FIRST (n) ROWS ONLY
		return before.is(wFetch)
	case wColumns: // JSON_TABLE(... COLUMNS (...))
		return isStringKind(before.kind()) || before.kind() == tkQIdent ||
			before.kind() == tkIdent && before.w()&wiReserved == 0
	case wOperator: // OPERATOR(pg_catalog.+)
		return true
	case wJoin: // a JOIN (...) after a FROM item: a table name or alias, ')', '*', LEFT ...
		return before.punct(')') || before.punct('*') || before.kind() == tkQIdent ||
			before.kind() == tkUIdent || before.kind() == tkIdent && before.w()&wiReserved == 0
	}
	return false
}

// castBefore reports whether p is the second ':' of a '::' cast.
func (r *router) castBefore(p prev) bool {
	return p.punct(':') && p.start() > 0 && r.src[p.start()-1] == ':'
}

// ident returns the normalised text of the name token t (see Functions): a slice of the text
// when it needs no change, else written into buf (of maxIdentLen+1 bytes). ok is false for a
// name the server would reject.
func (r *router) ident(t *token, buf []byte) (name []byte, ok bool) {
	if name, ok := r.alias(t); ok {
		return name, true
	}
	w := identWriter{buf: buf}
	w.ident(r.src, t, false)
	if w.bad || w.overflow {
		return nil, false
	}
	return w.bytes(), true
}

// alias returns the normalised text of the name token t if the text holds it as it is.
func (r *router) alias(t *token) ([]byte, bool) {
	switch t.kind {
	case tkIdent:
		w := r.src[t.start:t.end]
		return w, len(w) <= maxIdentLen && !hasUpper(w)
	case tkQIdent:
		body := r.src[t.body0:t.body1]
		return body, t.flags&flagOpen == 0 && len(body) <= maxIdentLen && !containsByte(body, '"')
	}
	return nil, false
}

func hasUpper(b []byte) bool {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// lookupBufs holds names decoded for Functions.Lookup. A buffer on the stack would escape
// through the interface call and be allocated on every call; a pooled one is not.
var lookupBufs = sync.Pool{New: func() any { return new([2][maxIdentLen + 1]byte) }}

// lookup asks fns about the function named by st.name, in st.schema if qualified. Names the
// text holds as they are go as slices of it; others are decoded into a pooled buffer.
func (r *router) lookup(qualified bool) FuncKind {
	r.asked = true
	if r.fns == nil {
		return FuncUnknown
	}
	st := &r.st
	var schema []byte
	ok := true
	if qualified {
		schema, ok = r.alias(&st.schema)
	}
	name, nameOK := r.alias(&st.name)
	if ok && nameOK {
		return r.fns.Lookup(schema, name)
	}
	b := lookupBufs.Get().(*[2][maxIdentLen + 1]byte)
	defer lookupBufs.Put(b)
	if qualified {
		schema, _ = r.ident(&st.schema, b[0][:])
	}
	name, _ = r.ident(&st.name, b[1][:])
	return r.fns.Lookup(schema, name)
}

// explainToken reads EXPLAIN [ANALYZE] [VERBOSE] statement and EXPLAIN (option [value], ...)
// statement.
func (r *router) explainToken(t *token, idx int) {
	st := &r.st
	switch st.explain {
	case explainStart:
		switch {
		case idx == 1 && t.kind == tkPunct && t.c == '(':
			st.explain, st.optStart = explainOptions, true
			return
		case t.kind == tkIdent:
			w := r.src[t.start:t.end]
			if eqFold(w, "analyze") || eqFold(w, "analyse") {
				st.analyze = true
				return
			}
			if eqFold(w, "verbose") {
				return
			}
		}
		r.explainStatement(t)
	case explainOptions:
		if r.sp.depth > 1 {
			st.optValue = true // a value in parentheses: not plainly false
			return
		}
		if t.kind == tkPunct && (t.c == ',' || t.c == ')') {
			if st.optAnalyze {
				st.analyze = st.optValue // the last ANALYZE option wins, as in the server
			}
			st.optAnalyze, st.optStart = false, true
			if t.c == ')' {
				st.explain = explainBody
			}
			return
		}
		if st.optStart {
			st.optAnalyze = r.analyzeOption(t)
			st.optValue, st.optStart = true, false
		} else if st.optAnalyze {
			st.optValue = !falseValue(t, r.src)
		}
	case explainBody:
		r.explainStatement(t)
	default: // explainStarted, as a query: EXPLAIN ANALYZE runs it
		r.scan(t)
	}
}

// analyzeOption reports whether t names the EXPLAIN option ANALYZE: a word in any case, or a
// quoted "analyze" (the server compares option names with the identifier's text).
func (r *router) analyzeOption(t *token) bool {
	if !isIdentKind(t.kind) {
		return false
	}
	var buf [len("analyze")]byte
	w := identWriter{buf: buf[:]}
	w.ident(r.src, t, false)
	name := w.bytes()
	return !w.overflow && !w.bad && (string(name) == "analyze" || string(name) == "analyse")
}

// falseValue reports whether t, an EXPLAIN option's value, is one the server reads as false.
func falseValue(t *token, src []byte) bool {
	v := src[t.start:t.end]
	switch t.kind {
	case tkString:
		v = src[t.body0:t.body1]
	case tkIdent, tkNumber:
	default:
		return false
	}
	for _, f := range [...]string{"false", "off", "no", "f", "n", "0", "fa", "fal", "fals", "of"} {
		if eqFold(v, f) {
			return true
		}
	}
	return false
}

// explainStatement reads the first token of the statement EXPLAIN explains.
func (r *router) explainStatement(t *token) {
	st := &r.st
	st.explain = explainStarted
	var w []byte
	if t.kind == tkIdent {
		w = r.src[t.start:t.end]
	}
	query := t.kind == tkPunct && t.c == '(' || eqFold(w, "select") || eqFold(w, "with") ||
		eqFold(w, "values") || eqFold(w, "table")
	plannable := query || eqFold(w, "insert") || eqFold(w, "update") || eqFold(w, "delete") ||
		eqFold(w, "merge") || eqFold(w, "create") || eqFold(w, "declare")
	switch {
	case eqFold(w, "execute"):
		// The prepared statement lives on one connection, and may write.
		st.verdict(ReasonPreparedStatement, false)
		st.kind = kFixed
	case !plannable:
		st.verdict(ReasonUnclassified, true)
		st.kind = kFixed
	case !st.analyze || r.writer:
		st.kind = kFixed // planned, not run
	case query:
		// Runs: scan the query as a statement of its own.
		st.analyzeBody = true
		st.p1, st.p2 = 0, 0
		r.scan(t)
	default:
		st.verdict(ReasonExplainAnalyze, false)
		st.kind = kFixed
	}
}

// copyToken reads COPY [BINARY] table [(columns)] {FROM|TO} target and COPY (query) TO target.
func (r *router) copyToken(t *token) {
	st := &r.st
	d := r.sp.depth
	var w []byte
	if t.kind == tkIdent {
		w = r.src[t.start:t.end]
	}
	switch st.copyState {
	case copyStart:
		switch {
		case eqFold(w, "binary"):
		case t.kind == tkPunct && t.c == '(':
			st.copyState, st.inCopy = copyQuery, true
			st.p1 = makePrev(tkPunct, '(', 0, t.start)
		default:
			st.copyState = copyTable
		}
	case copyTable, copyAfter:
		if d > 0 {
			return // the column list
		}
		switch {
		case eqFold(w, "from"):
			st.verdict(ReasonCopyFrom, false)
			st.copyState = copyDone
		case eqFold(w, "to"):
			st.copyState = copyTo
		}
	case copyQuery:
		r.scan(t)
		if d == 1 && t.kind == tkPunct && t.c == ')' {
			st.copyState = copyAfter
		}
	case copyTo:
		if !eqFold(w, "stdout") {
			st.verdict(ReasonCopyToFile, true)
		}
		st.copyState = copyDone
	}
}

// modeToken reads transaction modes: READ ONLY, READ WRITE (the last wins).
func (r *router) modeToken(t *token) {
	st := &r.st
	cur := r.prev(t)
	if st.p1.is(wRead) {
		switch cur.w().id() {
		case wOnly:
			st.mode = modeReadOnly
		case wWrite:
			st.mode = modeReadWrite
		}
	}
	if st.p1.is(wLevel) && cur.is(wSerializable) {
		st.serial = true
	}
	st.p2, st.p1 = st.p1, cur
}

// setToken reads SET [LOCAL|SESSION] TRANSACTION modes, and SET of transaction_read_only.
func (r *router) setToken(t *token, idx int) {
	st := &r.st
	if idx <= 2 && isIdentKind(t.kind) {
		var buf [len("transaction_read_only")]byte
		w := identWriter{buf: buf[:]}
		w.ident(r.src, t, true)
		name := w.bytes()
		switch {
		case w.bad || w.overflow:
		case t.kind == tkIdent && string(name) == "transaction" &&
			(idx == 1 || st.p1.is(wLocal) || st.p1.is(wSession)):
			st.setTx = true
		case string(name) == "transaction_read_only":
			st.readRO = true
		}
	}
	r.modeToken(t)
}

// endToken reads COMMIT, END, ROLLBACK and ABORT: [WORK|TRANSACTION] [TO ...] [AND [NO] CHAIN],
// COMMIT PREPARED, ROLLBACK PREPARED.
func (r *router) endToken(t *token, idx int) {
	st := &r.st
	cur := r.prev(t)
	if idx <= 2 {
		switch cur.w().id() {
		case wTo:
			st.endTo = true
		case wPrepared:
			st.endPrepared = idx == 1
		}
	}
	st.p2, st.p1 = st.p1, cur
}

// endStatement applies the rules that need the whole statement, then what the statement means
// for the text's transaction block.
func (r *router) endStatement() {
	st := &r.st
	if st.n > 0 {
		r.stmts++
		r.finish()
	}
	r.st = routeStmt{}
	r.sp = splitter{}
}

func (r *router) finish() {
	st := &r.st
	endsBlock := false
	if st.deep {
		// Past the depths the scan follows: what ends a DISTINCT ON or a WITH list there is
		// not known, so a call may have looked like an alias's column list.
		st.verdict(ReasonUnclassified, true)
		st.force = true
	}
	switch st.kind {
	case kExplain:
		switch {
		case st.explain <= explainBody:
			st.verdict(ReasonUnclassified, true) // no statement to explain
		case st.analyzeBody && st.has:
			st.reason = ReasonExplainAnalyze
		}
	case kCopy:
		if st.copyState != copyDone {
			st.verdict(ReasonUnclassified, true)
		}
	case kPrepare:
		// PREPARE TRANSACTION 'gid', not PREPARE transaction AS ...: a prepared transaction
		// lives on the primary.
		if st.n == 3 && st.p2.is(wTransaction) && isStringKind(st.p1.kind()) {
			st.verdict(ReasonTransaction, true)
			endsBlock = true
		} else {
			st.verdict(ReasonPreparedStatement, false)
		}
	case kEnd:
		chain := st.p1.is(wChain) && st.p2.is(wAnd)
		switch {
		case st.endPrepared:
			st.force = true // COMMIT|ROLLBACK PREPARED: the primary's
		case !st.endTo && !chain:
			endsBlock = true
		}
	}

	if r.pendingBegin {
		r.pendingBegin = false
		if st.kind == kSet && st.setTx && st.mode == modeReadOnly && !st.serial {
			r.readOnly, r.inRO, r.roSeen = true, true, true
			return
		}
		r.need(ReasonTransaction) // for the BEGIN
	}

	switch {
	case st.kind == kBegin:
		if r.inBlock {
			return // the server only warns that a transaction is in progress
		}
		r.begin, r.inBlock = true, true
		r.readOnly = st.mode == modeReadOnly && !st.serial
		switch {
		case r.readOnly:
			r.inRO, r.roSeen = true, true
		case st.serial:
			// A hot standby refuses serializable transactions, even read-only ones.
			r.need(ReasonTransaction)
		default:
			r.pendingBegin = true
		}
		return
	case st.kind == kSet && r.inRO && (st.setTx && st.mode == modeReadWrite || st.readRO):
		// The block may become read-write (as its first statement).
		r.inRO, r.readOnly = false, false
		st.reason, st.force = ReasonTransaction, true
	}
	inRO := r.inRO
	if endsBlock {
		r.inBlock, r.inRO = false, false
	}
	if st.has && (!inRO || st.force) {
		r.need(st.reason)
	}
}
