package session

import (
	"bufio"
	"testing"

	"pgtide/internal/classify"
	"pgtide/internal/pool"
	"pgtide/internal/router"
)

// TestReleaseActive: an idle session gives its request state back only when nothing of the last
// request is left in it, and what goes back to the pool keeps nothing of the session's but the
// room of its scratch buffers.
func TestReleaseActive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pending func(s *Session)
	}{
		{"read buffer", func(s *Session) { s.br = bufio.NewReader(nil) }},
		{"held request", func(s *Session) { s.held = []byte("Q") }},
		{"held buffer", func(s *Session) { s.heldBuf = new([heldKeep]byte) }},
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
		s.releaseActive()
		if s.activeState == nil {
			t.Errorf("%s: the request state was given back", tc.name)
		}
	}

	s := &Session{activeState: newActive(nil, 1<<20)}
	a := s.activeState
	a.scratch = append(a.scratch, "rewritten"...)
	a.tws = append(a.tws, &throwaway{})
	a.refPortals = map[string]refPortal{"p": {}}
	a.intent = router.Intent{Route: classify.RouteReader}
	a.yTyp, a.heldMark, a.reqSent, a.answered = 'Q', -1, 3, 2
	a.hidden = append(a.hidden, hiddenReq{req: 1})
	a.expect.push(expectation{})
	a.reqs.push(logQuery)
	s.releaseActive()
	if s.activeState != nil {
		t.Fatal("a clean session kept its request state")
	}
	if len(a.scratch) != 0 || cap(a.scratch) == 0 {
		t.Errorf("scratch: len %d cap %d, want empty with its room", len(a.scratch), cap(a.scratch))
	}
	if len(a.tws) != 0 || a.tws[:1][0] != nil {
		t.Error("throwaways kept")
	}
	if len(a.refPortals) != 0 || len(a.hidden) != 0 || a.expect.len() != 0 || a.reqs.len() != 0 {
		t.Error("the last request's portals or the last attachment's records kept")
	}
	if a.intent != (router.Intent{}) || a.yTyp != 0 || a.heldMark != 0 || a.reqSent != 0 || a.answered != 0 {
		t.Errorf("scalars kept: intent %+v, yTyp %d, heldMark %d, reqSent %d, answered %d",
			a.intent, a.yTyp, a.heldMark, a.reqSent, a.answered)
	}

	s.acquireActive()
	if s.activeState == nil {
		t.Fatal("acquireActive gave no request state")
	}
	s.acquireActive() // has one: keeps it
}
