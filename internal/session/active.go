package session

import (
	"bufio"
	"sync"

	"pgtide/internal/classify"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/wire"
)

// An idle client keeps only what outlives its requests: ten thousand idle clients are a normal
// load, so the client loop's state for the request in hand (its reader, the request held back
// for a re-run, the scratch of statement rewriting) lives apart, in an activeState taken from a
// pool when the client's next request comes and given back when the client is idle again with
// nothing of it left (releaseActive). Session embeds it by pointer: its fields read as the
// session's own, and are nil-safe to reach only while the client loop runs a request.
//
// Who touches it: the client loop, and the one reader of the server connection (the client loop
// itself when it reads inline, or a relay goroutine). It is given back only by the client loop,
// between requests, with no server connection attached and no relay goroutine alive, so no one
// else can hold it then.

// activeState is the client loop's state for the request in hand. Owned by the client loop,
// except heldState's fields the server's reader clears (see heldState).
type activeState struct {
	br         *bufio.Reader // the client's read buffer (see buffers.go); nil while waiting for the client
	r          wire.Reader   // reads br, or replay during a re-run
	skipToSync bool          // an extended-protocol request failed before reaching a server

	heldState // routing's hold-back and re-run (see route.go, retry.go)

	analysis   *classify.Session // scratch for the session analysis (see buffers.go)
	pinErr     *refusal          // the statement being forwarded is refused (see refusal)
	scratch    []byte            // for rewritten messages
	heldMemory int64             // taken from Env.Memory for the message being handled (see memory.go)
	prefix     []byte            // for a rewritten Bind's names
	restore    []byte            // a Parse reset something: the restore to send after the next Sync
	rewrite    []byte            // scratch for SQL with statement names rewritten

	// refPortals are the portals bound to statements with SQL DEALLOCATE or EXECUTE in their
	// text, with those (see bindRefs).
	refPortals map[string]refPortal
	// Scratch for resolving SQL DEALLOCATE and EXECUTE (see keyOnLocked): viaDealloc, a
	// statement's text named the connection's throwaway; tws, the throwaways of a Query's
	// statement; queryStmts, statements made for one Query only.
	viaDealloc bool
	tws        []*throwaway
	queryStmts []string

	// intent is what the request asks of its node (see planRoute); the zero value, the writer,
	// when nothing planned it.
	intent router.Intent

	// On the event loops (see loop.go): lw is the wait for a lease of a session queued for one
	// (its own lock orders the router's, Cancel's and Kill's use of it; they use it only while
	// Session.waiting); ySrv and yPhase are the server connection whose answers the session
	// waits for on a loop, and the phase of its reading; yTyp is the type of the message whose
	// lease waits in lw.
	lw     router.LeaseWait
	yTyp   byte
	ySrv   *pool.Conn
	yPhase readPhase

	attachment
}

// attachment is the state of one attachment to a server connection, reset by attachLocked: what
// was sent on it and what its answers must match. Guarded by Session.mu, but answered.
type attachment struct {
	expect   expectRing // Parse and Close sent, awaiting ParseComplete or CloseComplete
	deallocs expectRing // SQL DEALLOCATEs sent, awaiting their CommandComplete (typ 'D')
	reqSent  int        // Query, Sync and FunctionCall sent in this attachment
	reqDone  int        // ReadyForQuery received in this attachment
	// Requests pgtide sent on server on its own account, whose answers are not the client's
	// (see hidden.go); Session.hiddenN mirrors its length for the reader.
	hidden []hiddenReq
	// COPY accounting (see copy.go).
	reqs      reqLog // the client's requests not yet answered, in order
	copySyncs int    // Syncs the server ignores in the current copy-in
	// answered counts the answers to extended-protocol messages at the front of reqs (see
	// reqlog.go). Owned by the server's one reader.
	answered int
}

var activePool = sync.Pool{New: func() any { return new(activeState) }}

// newActive returns an activeState whose reader reads br (nil: none yet), refusing messages
// longer than maxMessage bytes.
func newActive(br *bufio.Reader, maxMessage int) *activeState {
	a := activePool.Get().(*activeState)
	a.br = br
	a.r.Reset(br)
	a.r.SetMax(maxMessage)
	return a
}

// acquireActive gives the session an activeState if it has none (it was idle). Owned by the
// client loop.
func (s *Session) acquireActive() {
	if s.activeState == nil {
		s.activeState = newActive(nil, s.maxMessage)
	}
}

// releaseActive gives the session's activeState back if nothing of the last request is left in
// it: called by the client loop while it waits for the client, with its read buffer and held
// request already given back (waitIdle). A session with anything pending keeps it, so no state
// is lost: a server connection attached (a transaction open, a pinned client), extended-protocol
// messages not yet ended by a Sync, a request refused and skipped to its Sync, a restore to send,
// a relay goroutine that may still read the server. (refPortals it keeps, emptied: portals end
// with the transaction, which ended with the last attachment; see attachLocked.)
func (s *Session) releaseActive() {
	a := s.activeState
	if a == nil || a.br != nil || a.held != nil || a.heldBuf != nil || a.analysis != nil ||
		a.skipToSync || a.heldLeft != 0 || a.armed || a.retryable || a.dropping || a.rerun ||
		a.rerunning || a.replaying || a.plannedLeft != 0 || a.pinErr != nil || a.heldMemory != 0 ||
		len(a.restore) != 0 || a.ySrv != nil {
		return
	}
	s.mu.Lock()
	busy := s.server != nil || s.relayRunning || s.relaysLive.Load() != 0 || s.open || s.pending != 0 || s.waiting
	s.mu.Unlock()
	if busy {
		return
	}
	s.activeState = nil
	// What is kept for the next user: the scratch buffers' room (bounded by releaseMemory) and
	// the reader's max; nothing else of this session's.
	clear(a.refPortals)
	clear(a.tws[:cap(a.tws)])
	clear(a.queryStmts[:cap(a.queryStmts)])
	a.expect.reset()
	a.deallocs.reset()
	a.reqs.reset()
	*a = activeState{
		r:          a.r,
		scratch:    a.scratch[:0],
		prefix:     a.prefix[:0],
		restore:    a.restore[:0],
		rewrite:    a.rewrite[:0],
		refPortals: a.refPortals,
		tws:        a.tws[:0],
		queryStmts: a.queryStmts[:0],
		// The next attachment resets the rest (attachLocked).
		attachment: attachment{expect: a.expect, deallocs: a.deallocs, reqs: a.reqs, hidden: a.hidden[:0]},
	}
	a.r.Reset(nil)
	a.r.DropScratch()
	activePool.Put(a)
}
