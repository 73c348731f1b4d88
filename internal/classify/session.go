package classify

// Session is the analysis of one Query or Parse text, which may hold several statements
// separated by ';'.
//
// PinParam, SearchPath.Value and Deallocate alias either the analysed text or a buffer inside
// the Session: they stay valid until the text is modified or the Session is passed to
// AnalyzeSession again, and a copy of the Session value still points into the original's buffer.
// Copy them to keep them longer.
type Session struct {
	// Pin is the first pinning construct found, in text order, or None.
	Pin Reason
	// PinParam is the parameter name for SessionSet, lower-cased; nil for other reasons. It is
	// "set_config" when a set_config call's first argument is not a plain string literal, and
	// "set" for a SET whose name cannot be read. A name longer than the internal buffer (128
	// bytes) is given as written, aliasing the text.
	PinParam []byte
	// SearchPath reports a session-level change of search_path; the last statement that changes
	// it wins.
	//
	// Set: a statement changed it. SET [SESSION] search_path {TO|=} <value> and SET SCHEMA
	// <value> give Value, the value text exactly as written (quotes and any comments inside
	// kept), from its first token to the end of its last, aliasing the text.
	//
	// Reset (with Set): SET search_path TO DEFAULT, RESET search_path, RESET ALL or DISCARD ALL
	// put it back to its default; Value is nil.
	//
	// SET LOCAL and set_config(..., true) only last until the transaction ends and are not
	// reported; set_config('search_path', ..., false) pins instead (SessionSet).
	SearchPath struct {
		Set   bool
		Reset bool
		Value []byte
	}
	// DiscardAll: DISCARD ALL was seen. DeallocateAll: DEALLOCATE [PREPARE] ALL or DISCARD ALL
	// was seen.
	DiscardAll, DeallocateAll bool
	// Deallocate is the name in the last DEALLOCATE [PREPARE] name, nil if none: an unquoted
	// name lower-cased, a quoted one without its quotes (and with "" undoubled and Unicode
	// escapes decoded), truncated to 63 bytes as the server does.
	Deallocate []byte
	// Refs lists, in text order, the statements that act on prepared statements by name
	// (see RefKind). Name is decoded as Deallocate is (nil when it cannot be read, or for
	// RefDeallocateAll); Start and End locate the name token in the text, so that a caller can
	// replace it. At most maxRefs are kept; RefsOverflow reports that there were more.
	Refs         []StmtRef
	RefsOverflow bool
	// ResetAll: RESET ALL or DISCARD ALL returns every parameter to its session default.
	// Resets lists, lower-cased, the parameters that RESET name or SET [SESSION] name {TO|=}
	// DEFAULT return to their session default, at most maxResets; ResetsOverflow reports more,
	// or a name that could not be read (treat it as ResetAll).
	ResetAll       bool
	Resets         [][]byte
	ResetsOverflow bool
	// Statements counts the non-empty statements.
	Statements int
	// TxControl: a statement is BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT,
	// SAVEPOINT, RELEASE, PREPARE TRANSACTION, COMMIT PREPARED or ROLLBACK PREPARED.
	TxControl bool

	pinBuf     [128]byte             // holds PinParam, unless the name is too long for it
	deallocBuf [maxIdentLen + 1]byte // holds Deallocate
	refs       [maxRefs]StmtRef
	refNames   [maxRefs][maxIdentLen + 1]byte
	resets     [maxResets][]byte
	resetNames [maxResets][64]byte
}

// StmtRef is a statement that acts on prepared statements by name (see Session.Refs).
type StmtRef struct {
	Kind       RefKind
	Name       []byte // nil when the name cannot be read
	Start, End int    // the name token in the text
}

// RefKind says what a StmtRef's statement does.
type RefKind uint8

const (
	RefExecute       RefKind = iota // EXECUTE name, EXPLAIN ... EXECUTE name, CREATE TABLE ... AS EXECUTE name
	RefDeallocate                   // DEALLOCATE [PREPARE] name
	RefDeallocateAll                // DEALLOCATE [PREPARE] ALL, DISCARD ALL: every name
	RefPrepare                      // PREPARE name ...: defines name
)

const (
	maxRefs   = 8
	maxResets = 4
)

// AnalyzeSession fills s (reset first) from sql. It never allocates (returned slices alias sql
// or a buffer inside s), never panics on any input, and runs in time linear in len(sql). It does
// not modify sql.
func AnalyzeSession(sql []byte, s *Session) {
	// Field by field: the buffers need no clearing, nothing points into them after this.
	s.Pin, s.PinParam = None, nil
	s.SearchPath.Set, s.SearchPath.Reset, s.SearchPath.Value = false, false, nil
	s.DiscardAll, s.DeallocateAll, s.Deallocate = false, false, nil
	s.Statements, s.TxControl = 0, false
	s.Refs, s.RefsOverflow = s.refs[:0], false
	s.ResetAll, s.Resets, s.ResetsOverflow = false, s.resets[:0], false
	a := analyzer{src: sql, s: s}
	l := lexer{src: sql}
	var t token
	for l.next(&t) {
		a.token(&t)
	}
	a.endStatement()
}

const (
	// Sizes of the per-call state, which lives on the stack and is cleared on every call: kept
	// small because that clearing is most of the cost of analysing a short query.
	maxPrefix = 16 // leading tokens of a statement kept for the statement-level rules
	maxBody   = 6  // leading tokens after an EXPLAIN prefix
	maxFrames = 4  // nested set_config calls followed at once; deeper ones pin at once
)

// analyzer reads one text token by token. Rules that depend on how a statement starts run at
// the end of the statement over its first tokens (toks); rules that may match anywhere in a
// statement (function calls, INTO TEMP, pg_temp.) run on each token while nothing pins yet.
type analyzer struct {
	src []byte
	s   *Session
	st  stmtState

	toks   [maxPrefix]token
	body   [maxBody]token // the statement after EXPLAIN [options], for CREATE TEMP
	frames [maxFrames]frame
}

// stmtState is the per-statement state; the zero value starts a statement.
type stmtState struct {
	split   splitter // statement boundaries; split.depth is the parenthesis depth
	n       int      // tokens in the statement so far
	lastEnd int      // end of the last token

	// EXPLAIN prefix: explain is 1 while reading its options, 2 once the body has started.
	explain    uint8
	bodyStart  int
	nb         int
	prevInsert bool // the previous token was INSERT or MERGE (their INTO makes no table)

	afterAs    bool  // CREATE: the previous token was AS
	execNext   bool  // CREATE: AS EXECUTE seen; the next token names the statement
	pending    uint8 // a name seen that acts if the next token is '('
	pendingPos int
	pgTemp     bool // "pg_temp." appeared
	into       uint8
	intoPos    int
	nf         int // active frames

	cand      Reason // the earliest pin found by the token rules, at candPos
	candPos   int
	candParam param
}

// frame follows the arguments of one set_config( call.
type frame struct {
	depth     int // parenthesis depth inside the call
	pos       int // where the call's name starts
	arg       int // current argument index
	toks      int // tokens in the current argument so far
	complex   bool
	first     token // first token of the current argument
	firstLit  bool  // argument 0 is one plain string literal: body in lit0..lit1
	lit0      int
	lit1      int
	thirdTrue bool // argument 2 is the single keyword true
}

// param says where a pin's PinParam comes from until the pin is committed.
type param struct {
	kind  uint8
	c     string
	start int
	end   int
}

const (
	paramNone  uint8 = iota
	paramConst       // c
	paramLower       // src[start:end], lower-cased
)

const (
	pendSetConfig uint8 = iota + 1
	pendAdvisory
	pendPgTemp
)

const (
	intoStart  uint8 = iota + 1 // after INTO
	intoScope                   // after INTO LOCAL|GLOBAL
	intoTemp                    // after INTO [LOCAL|GLOBAL] TEMP|TEMPORARY
	intoPgTemp                  // after INTO pg_temp
)

func (a *analyzer) token(t *token) {
	st := &a.st
	if st.split.ends(t) {
		a.endStatement()
		return
	}
	idx := st.n
	if idx < maxPrefix {
		a.toks[idx] = *t
	}
	st.n++
	st.lastEnd = t.end

	if idx == 0 && a.kw(0, "explain") {
		st.explain = 1
	}
	if st.explain != 0 {
		a.explainBody(t, idx)
	}
	if st.split.depth == 0 && idx > 0 && a.kw(0, "create") {
		// CREATE TABLE ... AS EXECUTE name: wherever AS EXECUTE comes after the column list.
		word := t.kind == tkIdent
		if st.execNext {
			a.refToken(RefExecute, t)
			st.execNext = false
		} else if st.afterAs && word && eqFold(a.src[t.start:t.end], "execute") {
			st.execNext = true
		}
		st.afterAs = word && eqFold(a.src[t.start:t.end], "as")
	}
	if a.s.Pin == None {
		a.hunt(t)
	}
	st.split.step(a.src, t)
}

// explainBody finds where the statement after EXPLAIN [ANALYZE] [VERBOSE] or EXPLAIN (options)
// starts, and keeps its first tokens: EXPLAIN ANALYZE runs CREATE TABLE AS.
func (a *analyzer) explainBody(t *token, idx int) {
	st := &a.st
	if st.explain == 1 {
		if idx == 0 {
			return
		}
		if a.punctAt(1, '(') {
			// The option list, up to and including the ')' that closes it (depth is updated
			// after this runs).
			if idx == 1 || st.split.depth > 0 {
				return
			}
		} else if t.kind == tkIdent {
			if w := a.src[t.start:t.end]; eqFold(w, "analyze") || eqFold(w, "analyse") || eqFold(w, "verbose") {
				return
			}
		}
		st.explain = 2
		st.bodyStart = idx
	}
	if k := idx - st.bodyStart; k < maxBody {
		a.body[k] = *t
		st.nb = k + 1
	}
}

// hunt runs the rules that may match anywhere in a statement.
func (a *analyzer) hunt(t *token) {
	st := &a.st
	src := a.src
	pending := st.pending
	st.pending = 0
	prevInsert := st.prevInsert
	st.prevInsert = false
	isPunct := t.kind == tkPunct

	// The argument lists of open set_config calls.
	if st.nf > 0 {
		f := &a.frames[st.nf-1]
		if f.depth == st.split.depth {
			switch {
			case isPunct && t.c == ')':
				a.closeFrame()
			case isPunct && t.c == ',':
				f.finishArg(src)
				f.arg++
			default:
				f.toks++
				if f.toks == 1 {
					f.first = *t
				}
				if isPunct && t.c == '(' {
					f.complex = true
				}
			}
		}
	}

	// SELECT ... INTO [LOCAL|GLOBAL] TEMP|TEMPORARY [TABLE] name, INTO pg_temp.name.
	if st.into != 0 {
		a.intoStep(t)
	} else if t.kind == tkIdent && eqFold(src[t.start:t.end], "into") && !prevInsert && !a.kw(0, "import") {
		st.into, st.intoPos = intoStart, t.start
	}

	switch {
	case isPunct && t.c == '(':
		switch pending {
		case pendSetConfig:
			if st.nf < maxFrames {
				a.frames[st.nf] = frame{depth: st.split.depth + 1, pos: st.pendingPos}
				st.nf++
			} else {
				a.candidate(SessionSet, st.pendingPos, param{kind: paramConst, c: "set_config"})
			}
		case pendAdvisory:
			a.candidate(AdvisoryLock, st.pendingPos, param{})
		}
	case isPunct && t.c == '.':
		if pending == pendPgTemp {
			st.pgTemp = true
		}
	case t.kind == tkIdent:
		w := src[t.start:t.end]
		st.pending = nameKind(w, true)
		st.prevInsert = eqFold(w, "insert") || eqFold(w, "merge")
	case t.kind == tkQIdent || t.kind == tkUIdent:
		var buf [32]byte
		if name := quotedName(src, t, buf[:]); name != nil {
			st.pending = nameKind(name, false)
		}
	}
	if st.pending != 0 {
		st.pendingPos = t.start
	}
}

// nameKind says whether an identifier names something hunt acts on; fold compares without
// regard to ASCII case (unquoted identifiers), otherwise exactly (quoted ones).
func nameKind(w []byte, fold bool) uint8 {
	eq := func(s string) bool {
		if fold {
			return eqFold(w, s)
		}
		return string(w) == s
	}
	switch len(w) {
	case len("pg_temp"):
		if eq("pg_temp") {
			return pendPgTemp
		}
	case len("set_config"):
		if eq("set_config") {
			return pendSetConfig
		}
	case len("pg_advisory_lock"):
		if eq("pg_advisory_lock") {
			return pendAdvisory
		}
	case len("pg_try_advisory_lock"):
		if eq("pg_try_advisory_lock") {
			return pendAdvisory
		}
	case len("pg_advisory_lock_shared"):
		if eq("pg_advisory_lock_shared") {
			return pendAdvisory
		}
	case len("pg_try_advisory_lock_shared"):
		if eq("pg_try_advisory_lock_shared") {
			return pendAdvisory
		}
	}
	return 0
}

func (a *analyzer) intoStep(t *token) {
	st := &a.st
	var w []byte
	if t.kind == tkIdent {
		w = a.src[t.start:t.end]
	}
	var buf [len("pg_temp")]byte
	switch st.into {
	case intoStart:
		switch {
		case eqFold(w, "local") || eqFold(w, "global"):
			st.into = intoScope
		case eqFold(w, "temp") || eqFold(w, "temporary"):
			st.into = intoTemp
		case eqFold(w, "pg_temp") || (t.kind == tkQIdent || t.kind == tkUIdent) &&
			string(quotedName(a.src, t, buf[:])) == "pg_temp":
			st.into = intoPgTemp
		default:
			st.into = 0
		}
	case intoScope:
		if eqFold(w, "temp") || eqFold(w, "temporary") {
			st.into = intoTemp
		} else {
			st.into = 0
		}
	case intoTemp:
		// "INTO temp FROM t" makes a table named temp; a name or TABLE after TEMP makes a
		// temporary table.
		st.into = 0
		if t.kind == tkQIdent || t.kind == tkUIdent || t.kind == tkIdent && !clauseWord(w) {
			a.candidate(TempObject, st.intoPos, param{})
		}
	case intoPgTemp:
		st.into = 0
		if t.kind == tkPunct && t.c == '.' {
			a.candidate(TempObject, st.intoPos, param{})
		}
	}
}

// clauseWord reports whether w is a reserved word that may follow a SELECT INTO target.
func clauseWord(w []byte) bool {
	for _, k := range [...]string{"from", "where", "group", "having", "window", "order", "limit",
		"offset", "fetch", "for", "union", "intersect", "except"} {
		if eqFold(w, k) {
			return true
		}
	}
	return false
}

func (f *frame) finishArg(src []byte) {
	one := f.toks == 1 && !f.complex
	switch f.arg {
	case 0:
		if one {
			f.lit0, f.lit1, f.firstLit = plainLiteral(src, f.first)
		}
	case 2:
		f.thirdTrue = one && f.first.kind == tkIdent && eqFold(src[f.first.start:f.first.end], "true")
	}
	f.toks, f.complex = 0, false
}

// closeFrame ends the innermost set_config call at its ')'. Only a third argument that is
// literally true makes the setting transaction-local; anything else may be false.
func (a *analyzer) closeFrame() {
	st := &a.st
	f := &a.frames[st.nf-1]
	st.nf--
	f.finishArg(a.src)
	if f.arg == 2 && f.thirdTrue {
		return
	}
	if !f.firstLit {
		a.candidate(SessionSet, f.pos, param{kind: paramConst, c: "set_config"})
		return
	}
	switch classifyParam(a.src[f.lit0:f.lit1]) {
	case paramTracked, paramTxScoped:
	case paramRole:
		a.candidate(Role, f.pos, param{})
	default:
		// search_path too: its value here is an expression, not text pgtide can replay.
		a.candidate(SessionSet, f.pos, param{kind: paramLower, start: f.lit0, end: f.lit1})
	}
}

// plainLiteral returns the body of t if it is a single string literal whose body is its value:
// '...' or E'...' without escapes, or a dollar-quoted string.
func plainLiteral(src []byte, t token) (int, int, bool) {
	if t.flags&(flagCont|flagOpen) != 0 {
		return 0, 0, false
	}
	body := src[t.body0:t.body1]
	switch t.kind {
	case tkString:
		return t.body0, t.body1, !containsByte(body, '\'')
	case tkEString:
		return t.body0, t.body1, !containsByte(body, '\'') && !containsByte(body, '\\')
	case tkDollar:
		return t.body0, t.body1, true
	}
	return 0, 0, false
}

// candidate records a pin found by the token rules; the earliest in the statement wins.
func (a *analyzer) candidate(r Reason, pos int, p param) {
	st := &a.st
	if st.cand == None || pos < st.candPos {
		st.cand, st.candPos, st.candParam = r, pos, p
	}
}

// endStatement applies the statement-level rules and commits the statement's pin, if it is the
// first: a rule matched by how the statement starts comes before anything inside it.
func (a *analyzer) endStatement() {
	st := &a.st
	if st.n > 0 {
		a.s.Statements++
		a.statement()
		if a.s.Pin == None && st.cand != None {
			a.commit(st.cand, st.candParam)
		}
	}
	a.st = stmtState{}
}

func (a *analyzer) commit(r Reason, p param) {
	s := a.s
	s.Pin = r
	switch p.kind {
	case paramConst:
		s.PinParam = s.pinBuf[:copy(s.pinBuf[:], p.c)]
	case paramLower:
		raw := a.src[p.start:p.end]
		if len(raw) > len(s.pinBuf) {
			s.PinParam = raw
			return
		}
		for i, c := range raw {
			s.pinBuf[i] = lower(c)
		}
		s.PinParam = s.pinBuf[:len(raw)]
	}
}

// pin commits a statement-level pin if nothing pins yet.
func (a *analyzer) pin(r Reason) {
	if a.s.Pin == None {
		a.s.Pin = r
	}
}

// pinName commits a SessionSet pin with the lower-cased parameter name in name, or raw when
// the name did not fit or could not be decoded.
func (a *analyzer) pinName(name, raw []byte) {
	s := a.s
	if s.Pin != None {
		return
	}
	s.Pin = SessionSet
	if name == nil {
		s.PinParam = raw
		return
	}
	s.PinParam = s.pinBuf[:copy(s.pinBuf[:], name)]
}

// tok returns the statement's token i, nil if the statement has no token i or it was not kept.
func (a *analyzer) tok(i int) *token {
	if i < 0 || i >= a.st.n || i >= maxPrefix {
		return nil
	}
	return &a.toks[i]
}

// kw reports whether token i is the unquoted keyword word (lower case).
func (a *analyzer) kw(i int, word string) bool {
	t := a.tok(i)
	return t != nil && t.kind == tkIdent && eqFold(a.src[t.start:t.end], word)
}

func (a *analyzer) punctAt(i int, c byte) bool {
	t := a.tok(i)
	return t != nil && t.kind == tkPunct && t.c == c
}

// keyword returns token i lower-cased in buf if it is an unquoted word that fits buf, else "".
// Comparing the result in a switch does not allocate.
func (a *analyzer) keyword(i int, buf []byte) []byte {
	t := a.tok(i)
	if t == nil || t.kind != tkIdent || t.end-t.start > len(buf) {
		return nil
	}
	for j, c := range a.src[t.start:t.end] {
		buf[j] = lower(c)
	}
	return buf[:t.end-t.start]
}

func isIdentKind(k tokKind) bool { return k == tkIdent || k == tkQIdent || k == tkUIdent }

// statement applies the rules that depend on how a statement starts.
func (a *analyzer) statement() {
	s := a.s
	st := &a.st
	var buf [len("deallocate")]byte
	switch string(a.keyword(0, buf[:])) {
	case "set":
		a.set()
	case "reset":
		if a.kw(1, "all") && st.n == 2 {
			s.ResetAll = true
			a.searchPathReset()
			return
		}
		var buf [64]byte
		name, next, ok := a.gucName(1, buf[:])
		if !ok || next != st.n {
			if st.n > maxPrefix {
				a.reset(nil) // a name longer than the tokens kept: some parameter
			}
			return // else not a RESET the server accepts
		}
		a.reset(name)
		if classifyParam(name) == paramSearchPath {
			a.searchPathReset()
		}
	case "prepare":
		if a.kw(1, "transaction") && st.n == 3 && isStringKind(a.toks[2].kind) {
			s.TxControl = true
			return
		}
		a.pin(Prepare)
		if t := a.tok(1); t != nil {
			a.refToken(RefPrepare, t)
		}
	case "deallocate":
		i := 1
		if a.kw(1, "prepare") && st.n > 2 {
			i = 2
		}
		if st.n != i+1 {
			return
		}
		if a.kw(i, "all") {
			s.DeallocateAll = true
			a.refToken(RefDeallocateAll, nil)
			return
		}
		if t := a.tok(i); t != nil && isIdentKind(t.kind) {
			w := identWriter{buf: s.deallocBuf[:]}
			w.ident(a.src, t, false)
			if !w.bad && !w.overflow {
				s.Deallocate = w.bytes()
			}
		}
		a.refToken(RefDeallocate, a.tok(i))
	case "execute":
		if t := a.tok(1); t != nil {
			a.refToken(RefExecute, t)
		}
	case "discard":
		if a.kw(1, "all") && st.n == 2 {
			s.DiscardAll, s.DeallocateAll, s.ResetAll = true, true, true
			a.searchPathReset()
			a.refToken(RefDeallocateAll, nil)
		}
	case "listen":
		a.pin(Listen)
	case "load":
		a.pin(Load)
	case "declare":
		// DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [WITH|WITHOUT HOLD].
		// The name may itself be "cursor", so the search starts after it.
		for i := 2; i < st.n && i < maxPrefix; i++ {
			if a.kw(i, "cursor") {
				if a.kw(i+1, "with") && a.kw(i+2, "hold") {
					a.pin(HoldCursor)
				}
				break
			}
		}
	case "create", "explain":
		if a.createTemp() {
			a.pin(TempObject)
		}
		if st.explain == 2 && st.nb >= 2 && a.body[0].kind == tkIdent && eqFold(a.src[a.body[0].start:a.body[0].end], "execute") {
			a.refToken(RefExecute, &a.body[1])
		}
	case "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release":
		s.TxControl = true
	}
}

func isStringKind(k tokKind) bool {
	return k == tkString || k == tkEString || k == tkUString || k == tkDollar || k == tkBitString
}

// createTemp reports whether the statement (after any EXPLAIN prefix) is
// CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY ..., or a CREATE that names pg_temp.
func (a *analyzer) createTemp() bool {
	st := &a.st
	body := a.toks[:min(st.n, maxPrefix)]
	if st.explain != 0 {
		if st.explain != 2 {
			return false
		}
		body = a.body[:st.nb]
	}
	kw := func(i int, word string) bool {
		return i < len(body) && body[i].kind == tkIdent && eqFold(a.src[body[i].start:body[i].end], word)
	}
	if !kw(0, "create") {
		return false
	}
	i := 1
	if kw(i, "or") && kw(i+1, "replace") {
		i += 2
	}
	if kw(i, "global") || kw(i, "local") {
		i++
	}
	return kw(i, "temp") || kw(i, "temporary") || st.pgTemp
}

// set applies the rules for statements starting with SET.
func (a *analyzer) set() {
	st := &a.st
	i := 1
	// A scope word is a parameter name when an assignment follows it: SET local.x = 1.
	if a.kw(i, "local") && !a.nameEnds(i+1) {
		return // SET LOCAL lasts until the transaction ends
	}
	if a.kw(i, "session") && !a.nameEnds(i+1) &&
		!a.kw(i+1, "authorization") && !a.kw(i+1, "characteristics") {
		i++
	}
	if t := a.tok(i); t != nil && t.kind == tkIdent && !a.nameEnds(i+1) {
		switch w := a.src[t.start:t.end]; {
		case eqFold(w, "transaction"), eqFold(w, "constraints"), eqFold(w, "catalog"):
			// SET TRANSACTION ... and SET CONSTRAINTS are transaction-scoped; SET CATALOG can
			// only name the current database.
			return
		case eqFold(w, "time") && a.kw(i+1, "zone"), eqFold(w, "names"):
			return // timezone, client_encoding: tracked
		case eqFold(w, "schema"):
			if a.tok(i+1) != nil {
				a.searchPathSet(i + 1)
			}
			return
		case eqFold(w, "role"):
			if st.n == i+2 && a.kw(i+1, "none") {
				return
			}
			a.pin(Role)
			return
		case eqFold(w, "session"):
			switch {
			case a.kw(i+1, "authorization"):
				if st.n == i+3 && a.kw(i+2, "default") {
					return
				}
				a.pin(Role)
				return
			case a.kw(i+1, "characteristics"):
				a.pin(SessionCharacteristics)
				return
			}
		case eqFold(w, "xml") && a.kw(i+1, "option"):
			a.pinName([]byte("xmloption"), nil)
			return
		}
	}

	// SET name {TO|=} value | SET name FROM CURRENT, name possibly dotted or quoted.
	var buf [len(Session{}.pinBuf)]byte
	name, j, ok := a.gucName(i, buf[:])
	if !ok {
		// Nothing we can read as a parameter name: be conservative.
		a.pinName([]byte("set"), nil)
		return
	}
	raw := a.rawName(i, j)
	class := classifyParam(name)
	switch {
	case a.kw(j, "to") || a.punctAt(j, '='):
		v := j + 1
		isDefault := st.n == v+1 && a.kw(v, "default")
		if isDefault {
			a.reset(name)
		}
		switch class {
		case paramTracked, paramTxScoped:
		case paramSearchPath:
			if isDefault {
				a.searchPathReset()
			} else if a.tok(v) != nil {
				a.searchPathSet(v)
			}
		case paramRole:
			if !isDefault && !(st.n == v+1 && a.kw(v, "none")) {
				a.pin(Role)
			}
		default:
			if !isDefault {
				a.pinName(name, raw)
			}
		}
	case a.kw(j, "from"):
		// FROM CURRENT makes a transaction-local value (SET LOCAL) last for the session.
		switch class {
		case paramTracked, paramTxScoped:
		case paramRole:
			a.pin(Role)
		default:
			a.pinName(name, raw)
		}
	default:
		switch class {
		case paramTracked, paramTxScoped:
		case paramRole:
			a.pin(Role)
		default:
			a.pinName(name, raw)
		}
	}
}

// nameEnds reports whether token i is what follows a parameter name in SET: TO, '=', FROM
// (CURRENT) or the '.' of a dotted name.
func (a *analyzer) nameEnds(i int) bool {
	return a.kw(i, "to") || a.punctAt(i, '=') || a.kw(i, "from") || a.punctAt(i, '.')
}

// gucName reads a possibly dotted parameter name starting at token i and returns it
// lower-cased in buf, and the index of the token after it. ok is false if no name starts at i.
// name is nil (with ok true) when the name does not fit buf or cannot be decoded.
func (a *analyzer) gucName(i int, buf []byte) (name []byte, next int, ok bool) {
	return dottedName(a.src, a.toks[:min(a.st.n, maxPrefix)], i, buf)
}

// rawName is the name tokens i..j-1 as written.
func (a *analyzer) rawName(i, j int) []byte {
	first, last := a.tok(i), a.tok(j-1)
	if first == nil || last == nil || last.end < first.start {
		return nil
	}
	return a.src[first.start:last.end]
}

// refToken records a statement of kind k naming the prepared statement t (nil: none, or not
// readable; see Session.Refs).
func (a *analyzer) refToken(k RefKind, t *token) {
	s := a.s
	if len(s.Refs) == maxRefs {
		s.RefsOverflow = true
		return
	}
	r := StmtRef{Kind: k}
	if t != nil && isIdentKind(t.kind) {
		w := identWriter{buf: s.refNames[len(s.Refs)][:]}
		w.ident(a.src, t, false)
		if !w.bad && !w.overflow {
			r.Name = w.bytes()
		}
		r.Start, r.End = t.start, t.end
	}
	s.Refs = append(s.Refs, r)
}

// reset records a parameter returned to its session default; name is lower-cased, nil if it
// could not be read.
func (a *analyzer) reset(name []byte) {
	s := a.s
	if name == nil || len(name) > len(s.resetNames[0]) || len(s.Resets) == maxResets {
		s.ResetsOverflow = true
		return
	}
	k := len(s.Resets)
	s.Resets = append(s.Resets, s.resetNames[k][:copy(s.resetNames[k][:], name)])
}

// searchPathSet records SET search_path whose value starts at token v and runs to the end of
// the statement.
func (a *analyzer) searchPathSet(v int) {
	t := a.tok(v)
	sp := &a.s.SearchPath
	sp.Set, sp.Reset, sp.Value = true, false, a.src[t.start:a.st.lastEnd]
}

func (a *analyzer) searchPathReset() {
	sp := &a.s.SearchPath
	sp.Set, sp.Reset, sp.Value = true, true, nil
}

type paramClass uint8

const (
	paramOther      paramClass = iota
	paramTracked               // reported by the server in ParameterStatus: pgtide follows it
	paramSearchPath            // replayed as text
	paramRole                  // role, session_authorization
	paramTxScoped              // only ever lasts for the current transaction
)

// classifyParam classifies a parameter name, ignoring ASCII case.
func classifyParam(name []byte) paramClass {
	switch {
	case eqFold(name, "client_encoding"), eqFold(name, "datestyle"), eqFold(name, "intervalstyle"),
		eqFold(name, "timezone"), eqFold(name, "standard_conforming_strings"),
		eqFold(name, "application_name"):
		return paramTracked
	case eqFold(name, "search_path"):
		return paramSearchPath
	case eqFold(name, "role"), eqFold(name, "session_authorization"):
		return paramRole
	case eqFold(name, "transaction_isolation"), eqFold(name, "transaction_read_only"),
		eqFold(name, "transaction_deferrable"):
		return paramTxScoped
	}
	return paramOther
}
