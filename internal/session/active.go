package session

import (
	"pgtide/internal/classify"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/wire"
)

// An idle client keeps only what outlives its requests: ten thousand idle clients are a normal
// load, so the client loop's state for the request in hand (its reader, the request held back
// for a re-run, the routing plan, the scratch of statement rewriting, the records of its server
// connection) lives apart, in an activeState. A client idle for ParkAfter lets go of it (see
// trimIdle and park in park.go), and its next read makes a new one (acquireActive, in tryClient
// and waitIdle). A client that keeps sending keeps its activeState: the common transaction pays
// nothing for this. Session embeds it by pointer: its fields read as the session's own, and may
// be reached only while the session has one (the client loop's code between a request's first
// message and its next wait for the client).
//
// Who touches it: the client loop, and the one reader of the server connection (the client loop
// itself when it reads inline, or a relay goroutine). It is dropped only while the session waits
// for the client, with no server connection attached and no relay goroutine alive, by the
// session's owner then, so no one else can hold it.

// activeState is the client loop's state for the request in hand. Owned by the client loop,
// except heldState's fields the server's reader clears (see heldState).
type activeState struct {
	// first is the resume buffer (resumeReader's): what ends the session's wait for the client.
	first      [resumeSize]byte
	br         *wire.BufReader // the client's read buffer (see buffers.go); nil while waiting for the client
	r          wire.Reader     // reads br, or replay during a re-run
	skipToSync bool            // an extended-protocol request failed before reaching a server
	// fatalRelayed: the server's FATAL (or PANIC) went to the client, which needs no word of
	// pgtide's when the connection then ends (see relayStopped). Per attachment (reset by
	// attachLocked); here for its size.
	fatalRelayed bool

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
	ySrv   *pool.Conn
	yTyp   byte
	yPhase readPhase

	// settled, while the client loop waits for the answers that settle its statement names
	// (see awaitSettled), is closed by the server's reader when they are in.
	settled chan struct{}

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
	// execNames are the latest names the client's SQL EXECUTEs used (see rewordNameLocked).
	execNames []execName
	// settle is what the requests not yet answered changed of the client's statement names and
	// the server's statements (see settle.go); nil until the first such change.
	settle *settleState
}

// newActive returns an activeState whose reader reads br (nil: none yet), refusing messages
// longer than maxMessage bytes.
func newActive(br *wire.BufReader, maxMessage int) *activeState {
	a := &activeState{br: br}
	a.r.Reset(br)
	a.r.SetMax(maxMessage)
	return a
}

// acquireActive gives the session an activeState if it has none (it was trimmed while idle).
// Owned by the client loop.
func (s *Session) acquireActive() {
	if s.activeState == nil {
		s.activeState = newActive(nil, s.maxMessage)
		s.src.first = &s.activeState.first
		s.lean.Store(false)
	}
}

// dropActive lets go of the session's activeState if nothing of the last request is left in it:
// called, by whoever owns the session while it waits for the client (trimIdle, park), with its
// read buffer and held request already given back (waitIdle). A session with anything pending
// keeps it, so no state is lost: a server connection attached (a transaction open, a pinned client),
// extended-protocol messages not yet ended by a Sync, a request refused and skipped to its Sync,
// a restore to send, a relay goroutine that may still read the server. (refPortals go with it:
// portals end with the transaction, which ended with the last attachment; see attachLocked. So
// does the held buffer, empty between requests, to the collector rather than to heldPool.)
// It reports whether the session has no activeState now.
func (s *Session) dropActive() bool {
	a := s.activeState
	if a == nil {
		return true
	}
	if a.br != nil || a.held != nil || a.analysis != nil ||
		a.skipToSync || a.heldLeft != 0 || a.armed || a.retryable || a.dropping || a.rerun ||
		a.rerunning || a.replaying || a.plannedLeft != 0 || a.pinErr != nil || a.heldMemory != 0 ||
		len(a.restore) != 0 || a.ySrv != nil {
		return false
	}
	s.mu.Lock()
	busy := s.server != nil || s.relayRunning || s.relaysLive.Load() != 0 || s.open || s.pending != 0 || s.waiting
	s.mu.Unlock()
	if busy {
		return false
	}
	// Not pooled: a wave of idle clients would leave thousands in a pool until the collector
	// ran twice. The next request, a second or more away, allocates its own.
	s.activeState, s.src.first = nil, nil
	return true
}
