package session

import (
	"context"
	"sync"

	"pgtide/internal/evloop"
	"pgtide/internal/wire"
)

// MessageMemory bounds the memory all sessions together use for client messages held whole: a
// Query or Parse larger than the client read buffer is read into memory of its own to be
// inspected (pinning, statement names, routing) before it is sent on. Every such message takes
// its size from the MessageMemory first, waiting while others hold it, so that a thousand
// clients sending large queries at once cost at most its capacity, not a thousand times
// max_message_size. Safe for concurrent use.
type MessageMemory struct {
	mu       sync.Mutex
	capacity int64         // guarded by mu
	used     int64         // guarded by mu
	freed    chan struct{} // closed and replaced whenever memory is given back; guarded by mu
}

// NewMessageMemory returns a MessageMemory of capacity bytes.
func NewMessageMemory(capacity int64) *MessageMemory {
	return &MessageMemory{capacity: capacity, freed: make(chan struct{})}
}

// SetCapacity changes the capacity (reload); holders keep what they took.
func (m *MessageMemory) SetCapacity(capacity int64) {
	m.mu.Lock()
	m.capacity = capacity
	close(m.freed)
	m.freed = make(chan struct{})
	m.mu.Unlock()
}

// Take takes n bytes, waiting until they are free or ctx is done (then it returns ctx's
// error). A request larger than the whole capacity waits until it alone holds the memory.
func (m *MessageMemory) Take(ctx context.Context, n int64) error {
	for {
		m.mu.Lock()
		if m.used == 0 || m.used+n <= m.capacity {
			m.used += n
			m.mu.Unlock()
			return nil
		}
		freed := m.freed
		m.mu.Unlock()
		evloop.BeforeBlock() // a loop must not wait (see package evloop)
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Give gives back n bytes taken with Take.
func (m *MessageMemory) Give(n int64) {
	m.mu.Lock()
	m.used -= n
	close(m.freed)
	m.freed = make(chan struct{})
	m.mu.Unlock()
}

// Used returns the bytes held now.
func (m *MessageMemory) Used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// scratchKeep is the largest scratch buffer a session keeps between messages: a larger one,
// grown for a large message, is dropped once the message has been sent on.
const scratchKeep = 64 << 10

// errMessageMemory refuses a large message whose memory did not free up within
// query_wait_timeout.
var errMessageMemory = &wire.Error{Severity: wire.SeverityError, Code: "53200",
	Message: "out of memory: pgtide's message_memory is held by other clients' large messages",
	Hint:    "Retry, send smaller statements, or raise proxy.message_memory."}

// holdsWhole reports whether the client message of type typ, now at the reader, is one the
// session reads whole before sending it on (see MessageMemory) and is larger than the read
// buffer.
func (s *Session) holdsWhole(typ byte) bool {
	return (typ == 'Q' || typ == 'P') && s.r.BodyLen() > s.r.MaxPeek() && s.env.Memory != nil
}

// takeMemory takes the current message's size from the MessageMemory, waiting up to
// query_wait_timeout (a CancelRequest from the client ends the wait too). Owned by the client
// loop.
func (s *Session) takeMemory(ctx context.Context) error {
	n := int64(s.r.BodyLen())
	ctx, cancel := context.WithTimeout(ctx, s.env.Config().Cluster.QueryWaitTimeout.Duration)
	defer cancel()
	if err := s.env.Memory.Take(ctx, n); err != nil {
		return errMessageMemory
	}
	s.heldMemory = n
	return nil
}

// releaseMemory gives back what takeMemory took, and drops the buffers the message grew.
// Owned by the client loop; a no-op when nothing is held.
func (s *Session) releaseMemory() {
	if s.activeState != nil && s.heldMemory != 0 { // small enough to inline: called per message
		s.giveMemory()
	}
}

func (s *Session) giveMemory() {
	s.env.Memory.Give(s.heldMemory)
	s.heldMemory = 0
	s.r.DropScratch()
	if cap(s.scratch) > scratchKeep {
		s.scratch = nil
	}
	if cap(s.rewrite) > scratchKeep {
		s.rewrite = nil
	}
	if cap(s.prefix) > scratchKeep {
		s.prefix = nil
	}
}
