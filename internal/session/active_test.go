package session

import (
	"context"
	"pgtide/internal/wire"
	"testing"
	"unsafe"

	"pgtide/internal/classify"
	"pgtide/internal/pool"
)

// TestDropActive: an idle session lets go of its request state only when nothing of the last
// request is left in it, and takes up a new one for its next request.
func TestDropActive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pending func(s *Session)
	}{
		{"read buffer", func(s *Session) { s.br = wire.NewBufReader(nil, 16) }},
		{"held request", func(s *Session) { s.held = []byte("Q") }},
		{"analysis", func(s *Session) { s.analysis = new(classify.Session) }},
		{"skip to Sync", func(s *Session) { s.skipToSync = true }},
		{"held messages left", func(s *Session) { s.heldLeft = 1 }},
		{"armed", func(s *Session) { s.armed = true }},
		{"retryable", func(s *Session) { s.retryable = true }},
		{"dropping", func(s *Session) { s.dropping = true }},
		{"rerun", func(s *Session) { s.rerun = true }},
		{"rerunning", func(s *Session) { s.rerunning = true }},
		{"replaying", func(s *Session) { s.replaying = true }},
		{"planned messages left", func(s *Session) { s.plannedLeft = 2 }},
		{"refused statement", func(s *Session) { s.pinErr = &refusal{code: "0A000"} }},
		{"message memory", func(s *Session) { s.heldMemory = 1 }},
		{"restore to send", func(s *Session) { s.restore = []byte("SET") }},
		{"server answers awaited on a loop", func(s *Session) { s.ySrv = new(pool.Conn) }},
		{"server attached", func(s *Session) { s.server = new(pool.Conn) }},
		{"relay running", func(s *Session) { s.relayRunning = true }},
		{"relay still returning", func(s *Session) { s.relaysLive.Add(1) }},
		{"extended protocol open", func(s *Session) { s.open = true }},
		{"request pending", func(s *Session) { s.pending = 1 }},
		{"waiting for a lease", func(s *Session) { s.waiting = true }},
	} {
		s := &Session{activeState: newActive(nil, 1<<20)}
		tc.pending(s)
		if s.dropActive() || s.activeState == nil {
			t.Errorf("%s: the request state was dropped", tc.name)
		}
	}

	s := &Session{activeState: newActive(nil, 1<<20), maxMessage: 1 << 20}
	s.scratch = append(s.scratch, "rewritten"...)
	s.refPortals = map[string]refPortal{"p": {}} // ended with the last transaction
	s.heldBuf = new([heldKeep]byte)              // empty between requests
	s.lean.Store(true)
	if !s.dropActive() || s.activeState != nil {
		t.Fatal("a clean session kept its request state")
	}
	if !s.dropActive() {
		t.Error("a session with no request state reports it has one")
	}
	s.acquireActive()
	if s.activeState == nil || len(s.scratch) != 0 || s.refPortals != nil || s.lean.Load() {
		t.Fatal("acquireActive did not give a new request state")
	}
	a := s.activeState
	s.acquireActive() // has one: keeps it
	if s.activeState != a {
		t.Error("acquireActive replaced the request state in use")
	}
}

// TestSessionSizeClass: an idle client's Session fits Go's 768-byte size class (with the 8-byte
// header Go puts before objects over 512 bytes that hold pointers), and an activeState lands in
// a larger class: request states let go of leave no holes in the spans of idle sessions. A field
// added to Session that breaks this costs every idle client 128 bytes (the 896-byte class).
func TestSessionSizeClass(t *testing.T) {
	const header = 8
	if n := unsafe.Sizeof(Session{}) + header; n > 768 {
		t.Errorf("Session with its header: %d bytes, want at most 768", n)
	}
	if n := unsafe.Sizeof(activeState{}) + header; n <= 768 {
		t.Errorf("activeState with its header: %d bytes, in the Session's class or below", n)
	}
}

// TestDropWait: an idle session lets go of its wait context; one that waits keeps it.
func TestDropWait(t *testing.T) {
	s := &Session{}
	s.waitCtx, s.waitCancel = context.WithCancelCause(context.Background())
	s.waiting = true
	s.dropWaitLocked()
	if s.waitCtx == nil || s.waitCancel == nil {
		t.Fatal("a session waiting for a server connection lost its wait context")
	}
	s.waiting = false
	s.dropWaitLocked()
	if s.waitCtx != nil || s.waitCancel != nil {
		t.Fatal("an idle session kept its wait context")
	}
}
