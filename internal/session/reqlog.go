package session

// The client's messages the server answers, and the ones it skips after an error.
//
// Every Query, FunctionCall and Sync gets one ReadyForQuery, and attach counts them in pending;
// the reader of the server connection gives it back when the count reaches zero. An error in an
// extended-protocol message breaks that rule (PostgreSQL's protocol-flow "Extended Query",
// and postgres.c's ignore_till_sync): the server then discards every message until the next
// Sync, a Query or FunctionCall among them too, which then gets no ReadyForQuery. To know which
// Queries were skipped, pgtide has to know which message failed: one before a Query (which the
// server then skips) or the Query itself (which gets its ReadyForQuery as usual).
//
// So attach logs, in order, every message the server answers (reqLog), and the reader counts
// the messages that end an extended message's answer (answered): ParseComplete, BindComplete,
// CloseComplete, RowDescription or NoData (Describe), CommandComplete, EmptyQueryResponse or
// PortalSuspended (Execute). The first logged message not yet answered is the one an
// ErrorResponse is about. The messages pgtide sends of its own accord among the client's (a
// Parse that re-creates a statement before a Bind, the Close of an evicted one) are logged too,
// in the place they are sent.
//
// The log also serves COPY (see copy.go), which breaks the rule the other way.

// Kinds of client messages in a reqLog.
const (
	logQuery    byte = 'Q' // Query or FunctionCall: answered by a ReadyForQuery
	logSync     byte = 'S' // Sync: answered by a ReadyForQuery
	logExecute  byte = 'E' // Execute: may start a COPY
	logParse    byte = 'p' // Parse or Close (in transaction mode, each has an expectation)
	logExtended byte = 'x' // Bind or Describe
	logBind     byte = 'b' // Bind of a client's named statement under pgtide's name (see reqLog.stmts)
	logCopyDone byte = 'c' // CopyDone or CopyFail: ends a copy-in; the server answers nothing
)

// extended reports whether a log entry is an extended-protocol message that the server answers
// before the batch's Sync.
func extended(k byte) bool {
	return k == logExecute || k == logParse || k == logExtended || k == logBind
}

// compactEvery is how many answered messages the reader lets accumulate before it drops their
// entries from the log: the log stays as long as what is in flight, plus this.
const compactEvery = 64

// reqLog is a ring of the client's messages the server answers, from the oldest not yet
// answered by a ReadyForQuery. It allocates only when it grows past its largest size so far.
type reqLog struct {
	buf []byte
	// stmts runs parallel to buf: for a logBind entry, the client's statement, whose name
	// PostgreSQL's error for the Bind names (see Session.failedBindLocked). nil until the first
	// logBind; other entries' are stale and never read.
	stmts []*clientStmt
	head  int
	n     int
}

func (l *reqLog) reset() { l.head, l.n = 0, 0 }

func (l *reqLog) len() int { return l.n }

// at returns the i'th entry from the oldest.
func (l *reqLog) at(i int) byte { return l.buf[(l.head+i)%len(l.buf)] }

func (l *reqLog) set(i int, k byte) { l.buf[(l.head+i)%len(l.buf)] = k }

// stmt returns the i'th entry's statement (see stmts).
func (l *reqLog) stmt(i int) *clientStmt {
	if l.stmts == nil {
		return nil
	}
	return l.stmts[(l.head+i)%len(l.buf)]
}

// setBind makes the i'th entry a logBind of the client's statement def.
func (l *reqLog) setBind(i int, def *clientStmt) {
	if l.stmts == nil {
		l.stmts = make([]*clientStmt, len(l.buf))
	}
	l.set(i, logBind)
	l.stmts[(l.head+i)%len(l.buf)] = def
}

// move copies entry from to entry to, with its statement.
func (l *reqLog) move(from, to int) {
	f, t := (l.head+from)%len(l.buf), (l.head+to)%len(l.buf)
	l.buf[t] = l.buf[f]
	if l.stmts != nil {
		l.stmts[t] = l.stmts[f]
	}
}

func (l *reqLog) push(k byte) {
	if l.n == len(l.buf) {
		size := max(16, 2*len(l.buf))
		buf := make([]byte, size)
		var stmts []*clientStmt
		if l.stmts != nil {
			stmts = make([]*clientStmt, size)
		}
		for i := 0; i < l.n; i++ {
			buf[i] = l.at(i)
			if stmts != nil {
				stmts[i] = l.stmt(i)
			}
		}
		l.buf, l.stmts, l.head = buf, stmts, 0
	}
	l.buf[(l.head+l.n)%len(l.buf)] = k
	l.n++
}

// pushBeforeLast logs k before the last entry: a message pgtide sends ahead of the client's
// message just logged.
func (l *reqLog) pushBeforeLast(k byte) {
	if l.n == 0 {
		l.push(k)
		return
	}
	l.push(k)
	l.move(l.n-2, l.n-1)
	l.set(l.n-2, k)
}

// popRequest drops the entries up to and including the oldest request (Query or Sync): the one a
// ReadyForQuery answers.
func (l *reqLog) popRequest() {
	for l.n > 0 {
		k := l.buf[l.head]
		l.head = (l.head + 1) % len(l.buf)
		l.n--
		if k == logQuery || k == logSync {
			return
		}
	}
}

// remove drops the count entries starting at the i'th, moving the i entries before them.
func (l *reqLog) remove(i, count int) {
	for j := i - 1; j >= 0; j-- {
		l.move(j, j+count)
	}
	l.head = (l.head + count) % len(l.buf)
	l.n -= count
}

// logLocked logs a client message of kind k that the server answers, unless the server will not
// read it as one: inside a copy-in it fails the COPY instead, and after an error it is skipped.
// Requires mu.
func (s *Session) logLocked(k byte) {
	if !s.copySeg && !s.skipping.Load() {
		s.reqs.push(k)
	}
}

// logHiddenLocked logs a Parse or Close pgtide sends just before the client's message being
// forwarded (logged by attach). Requires mu.
func (s *Session) logHiddenLocked() {
	if !s.copySeg && !s.skipping.Load() {
		s.reqs.pushBeforeLast(logParse)
	}
}

// logBindLocked marks the client's Bind being forwarded (logged by attach, the last entry unless
// skipped) as a Bind of the client's statement def, which pgtide sends under its own name.
// Requires mu.
func (s *Session) logBindLocked(def *clientStmt) {
	// While nothing is skipped, the Bind is still the last entry: an error before it removes
	// everything up to the next Sync, the Bind too, and sets skipping (skipAfterErrorLocked).
	if !s.copySeg && !s.skipping.Load() && s.reqs.n > 0 {
		s.reqs.setBind(s.reqs.n-1, def)
	}
}

// failedBindLocked returns the client's statement of the Bind an ErrorResponse just read
// answers, nil if it answers no Bind of a client's named statement. Called by the server's
// reader before skipAfterErrorLocked. Requires mu.
func (s *Session) failedBindLocked() *clientStmt {
	s.compactLocked()
	if s.reqs.n > 0 && s.reqs.at(0) == logBind {
		return s.reqs.stmt(0)
	}
	return nil
}

// noteAnswered counts a message that ends the answer to an extended-protocol message. Called by
// the server's reader only.
func (s *Session) noteAnswered() {
	s.answered++
	if s.answered >= compactEvery {
		s.mu.Lock()
		s.compactLocked()
		s.mu.Unlock()
	}
}

// compactLocked drops the answered entries at the front of the log, so that it starts with the
// oldest message not yet answered. Requires mu; called by the server's reader only.
func (s *Session) compactLocked() {
	l := &s.reqs
	for l.n > 0 {
		k := l.at(0)
		switch {
		case k == logCopyDone:
		case extended(k) && s.answered > 0:
			s.answered--
		default:
			// A request, or the message the server is answering now: whatever else was
			// counted was a Query's own results, which its ReadyForQuery pops.
			s.answered = 0
			return
		}
		l.head = (l.head + 1) % len(l.buf)
		l.n--
	}
	s.answered = 0
}

// skipAfterErrorLocked follows an ErrorResponse from the client's request: if it answers an
// extended-protocol message, the server skips everything until the next Sync. The Queries and
// FunctionCalls among that, and the restores pgtide sent after them, get no ReadyForQuery: they
// are taken out of the count, and the requests after them renumbered. Without a Sync yet, the
// client loop drops what the client sends until its Sync (skipping). A failed Parse or Close is
// marked on its expectation (see onReadyLocked). Requires mu; called by the server's reader.
func (s *Session) skipAfterErrorLocked() {
	s.compactLocked()
	l := &s.reqs
	if l.n == 0 || !extended(l.at(0)) {
		return // a Query's or a Sync's error: its ReadyForQuery follows
	}
	if l.at(0) == logParse && s.expect.len() > 0 {
		s.expect.at(0).failed = true
	}
	skipped, queries := 0, 0
	for skipped < l.n && l.at(skipped) != logSync {
		if l.at(skipped) == logQuery {
			queries++
		}
		skipped++
	}
	l.remove(0, skipped)
	if l.n == 0 {
		s.skipping.Store(true)
		s.settledLocked(true) // what waits after a Query in the batch is skipped with it
	}
	if queries > 0 {
		s.dropRequestsLocked(s.reqDone, queries)
	}
}

// dropRequestsLocked accounts for n client requests, numbered from first, that will get no
// ReadyForQuery, with the hidden restores that follow them: the count goes down, and the
// requests after them take their numbers. Statement expectations of the dropped requests' batches
// move to the request after them, where they are settled. Requires mu.
func (s *Session) dropRequestsLocked(first, n int) {
	kept := s.hidden[:0]
	for _, h := range s.hidden {
		if h.req >= first && h.req < first+n {
			n++ // a restore after a dropped Query: dropped with it
			s.hiddenN.Add(-1)
			continue
		}
		kept = append(kept, h)
	}
	s.hidden = kept
	for i := 0; i < s.expect.len(); i++ {
		if e := s.expect.at(i); e.typ == 'Q' && e.batch >= first && e.batch < first+n {
			e.skipped = true
		}
	}
	s.pending -= n
	s.reqSent -= n
	s.renumberLocked(first, n)
}

// renumberLocked moves the expectations and hidden requests numbered first+1 to first+n (the
// requests after n requests that no longer count, numbered from first) to first, and those after
// them down by n. Requires mu.
func (s *Session) renumberLocked(first, n int) {
	renumber := func(k *int) {
		if *k > first {
			*k -= min(n, *k-first)
		}
	}
	for i := 0; i < s.expect.len(); i++ {
		renumber(&s.expect.at(i).batch)
	}
	for i := 0; i < s.deallocs.len(); i++ {
		renumber(&s.deallocs.at(i).batch)
	}
	for i := range s.hidden {
		renumber(&s.hidden[i].req)
	}
	if st := s.settle; st != nil && st.batch > 0 {
		b := st.batch - 1
		renumber(&b)
		st.batch = b + 1
	}
}
