package session

// Expectations: every Parse and Close pgtide sends a server in transaction mode (the client's
// and its own), and every SQL DEALLOCATE, is queued here, in order, saying what to do with its
// ParseComplete, CloseComplete or CommandComplete and how to undo its bookkeeping if the server
// skips it. The queue is a ring: a pipeline of any length costs O(1) per message (a pgx batch of
// 100,000 queries queues as many).

// Expectation actions.
const (
	actForward byte = iota // the client's own message: pass the response on
	actSwallow             // pgtide's message: the client must not see the response
)

type expectation struct {
	typ    byte // '1' (ParseComplete), '3' (CloseComplete) or 'D' (a DEALLOCATE's CommandComplete)
	action byte
	batch  int    // the ReadyForQuery (request number) that ends this message's batch
	seq    uint64 // order of sending, across Session.expect and Session.deallocs
	// What the message did to the records when it was sent, undone if the server skips it:
	stmt   *statement  // a Parse creating stmt on the server: forgotten unless confirmed
	closed string      // a Close of this server-side statement: an orphan again if skipped
	name   string      // the client's statement name, for its own Parse, Close or DEALLOCATE
	def    *clientStmt // the client statement its Parse created, or its Close or DEALLOCATE removed
	// A DEALLOCATE ALL (or DISCARD ALL) removed all of these.
	saved map[string]*clientStmt
	all   bool
	// tw: a Parse, Close or SQL DEALLOCATE of this throwaway statement, which the server held
	// before it if twHeld (see "SQL DEALLOCATE" in prepared.go). miss: a DEALLOCATE of tw that
	// must fail as PostgreSQL's of the client's name (in name) would, since the client has no
	// such statement: the server's error names tw, and is reworded (see rewordMissLocked).
	tw     *throwaway
	twHeld bool
	miss   bool
	// unnamed: a Parse or Close of the unnamed statement. PostgreSQL drops the old unnamed
	// statement when a new one's Parse starts, so if a Parse failed the server holds none, and
	// if it was skipped the one before: for the server connection, pgtide no longer knows
	// which. The client's own (actForward) also changed the client's unnamed statement, from
	// prev, which it has again if the message was skipped.
	unnamed bool
	prev    clientStmt
	// failed: the server answered this message with the ErrorResponse (see
	// skipAfterErrorLocked), rather than skipping it.
	failed bool
	// skipped: a Query ('Q') the server skips after an error before it (see
	// dropRequestsLocked).
	skipped bool
}

// expectRing is a FIFO of expectations. The zero value is empty and ready to use.
type expectRing struct {
	buf  []expectation // len is a power of two, or 0
	head int           // index of the front
	n    int
}

func (r *expectRing) len() int { return r.n }

// at returns the i-th expectation from the front; i < len().
func (r *expectRing) at(i int) *expectation { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *expectRing) push(e expectation) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = e
	r.n++
}

// pop removes k expectations from the front.
func (r *expectRing) pop(k int) {
	for i := 0; i < k; i++ {
		*r.at(i) = expectation{} // drop references to statements
	}
	r.head = (r.head + k) & (len(r.buf) - 1)
	r.n -= k
}

// reset empties the ring, keeping its buffer.
func (r *expectRing) reset() { r.pop(r.n) }

func (r *expectRing) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 8
	}
	buf := make([]expectation, size)
	for i := 0; i < r.n; i++ {
		buf[i] = *r.at(i)
	}
	r.buf, r.head = buf, 0
}
