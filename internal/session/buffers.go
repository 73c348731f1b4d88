package session

import (
	"bufio"
	"io"
	"net"
	"pgtide/internal/wire"
	"sync"

	"pgtide/internal/classify"
)

// Buffers: an idle client holds none. Ten thousand mostly idle clients is a normal load, so the
// client's read and write buffers come from pools when it becomes active and go back when it is
// idle again (between transactions in transaction mode, when nothing is buffered). An idle client
// loop waits for the next message by reading one byte into the session itself.

// clientBufferSize is the size of a client's read and write buffers while it is active. Larger
// messages are streamed through.
const clientBufferSize = 8 << 10

var (
	readerPool   = sync.Pool{New: func() any { return wire.NewBufReader(nil, clientBufferSize) }}
	writerPool   = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientBufferSize) }}
	heldPool     = sync.Pool{New: func() any { return new([heldKeep]byte) }}
	analysisPool = sync.Pool{New: func() any { return new(classify.Session) }}
)

// loginBufferSize is the read buffer of a connection that has not logged in yet: enough for a
// startup packet's usual size and the authentication exchange (larger messages still work, read
// past the buffer). It is dropped, not pooled, when the client first goes idle, so a burst of
// logins leaves no pooled buffers behind.
const loginBufferSize = 1 << 10

// NewClientReader returns a buffered reader over conn for the startup phase; the session created
// from it takes it over.
func NewClientReader(conn net.Conn) *wire.BufReader {
	return wire.NewBufReader(conn, loginBufferSize)
}

// resumeReader is what a session's pooled reader reads from after an idle wait: the bytes that
// ended the wait, then the connection. The wait reads into first, which is big enough for a
// typical request, so an idle client's next request costs one read, not two. first is the
// activeState's (see active.go): a trimmed or parked client has none.
type resumeReader struct {
	conn  net.Conn
	first *[resumeSize]byte
	n, at int32 // first[at:n] is still to be replayed
}

const resumeSize = 256

func (r *resumeReader) Read(p []byte) (int, error) {
	if r.at < r.n {
		k := copy(p, r.first[r.at:r.n])
		r.at += int32(k)
		return k, nil
	}
	return r.conn.Read(p)
}

var _ io.Reader = (*resumeReader)(nil)

// waitIdle gives the read buffer back and blocks until the client sends something. It is called
// by the client loop whenever nothing from the client is buffered.
func (s *Session) waitIdle() error {
	if s.activeState != nil {
		if s.br != nil {
			if s.br.Size() == clientBufferSize {
				s.br.Reset(nil)
				readerPool.Put(s.br)
			}
			s.br = nil
			s.r.Reset(nil)
			s.r.DropScratch()
		}
		s.dropHeld()
	}
	if s.lc != nil {
		return s.tryClient()
	}
	parkable := s.canPark && !s.noPark
	if parkable {
		s.idleState.Store(idleWaiting)
	}
	s.acquireActive()
	n, err := s.conn.Read(s.src.first[:])
	if parkable && s.endIdleWait(n, err) {
		return errPark
	}
	return s.resumeWith(n, err)
}

// resumeWith is waitIdle's end after its read returned n bytes or err: the bytes become the
// start of the pooled read buffer.
func (s *Session) resumeWith(n int, err error) error {
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	s.src.n, s.src.at = int32(n), 0 // n ≤ resumeSize
	s.br = readerPool.Get().(*wire.BufReader)
	s.br.Reset(&s.src)
	s.r.Reset(s.br)
	return nil
}

// keepHeld makes held a copy of req, the request about to be forwarded, kept for a re-run (see
// route.go and retry.go), in the session's held buffer if it fits. The buffer comes from a pool
// and stays with the activeState, for the client's next requests: it goes when the activeState
// does (dropActive) or back to the pool when the session ends (releaseBuffers). Owned by the
// client loop.
func (s *Session) keepHeld(req []byte) {
	if s.heldBuf == nil {
		s.heldBuf = heldPool.Get().(*[heldKeep]byte)
	}
	s.held = append(s.heldBuf[:0], req...)
}

// dropHeld lets go of the held request, and gives the analysis scratch back: the client is idle,
// or gone.
func (s *Session) dropHeld() {
	s.held = nil
	if s.analysis != nil {
		analysisPool.Put(s.analysis)
		s.analysis = nil
	}
}

// analysisScratch returns the session's scratch for classify.AnalyzeSession (1.6 KB, so
// pooled rather than kept by every idle client), valid until the client is next idle. Owned by
// the client loop.
func (s *Session) analysisScratch() *classify.Session {
	if s.analysis == nil {
		s.analysis = analysisPool.Get().(*classify.Session)
	}
	return s.analysis
}

// writer returns the client's write buffer, taking one from the pool if it has none.
// Requires wmu.
func (s *Session) writer() *bufio.Writer {
	if s.w == nil {
		s.w = writerPool.Get().(*bufio.Writer)
		s.w.Reset(&s.out)
	}
	return s.w
}

// idleWriter gives the write buffer back if everything in it has been sent. Requires wmu.
func (s *Session) idleWriter() {
	if s.w != nil && s.w.Buffered() == 0 {
		s.w.Reset(nil)
		writerPool.Put(s.w)
		s.w = nil
	}
}

// releaseBuffers gives back both buffers when the session ends.
func (s *Session) releaseBuffers() {
	s.lockWriter()
	if s.w != nil {
		s.w.Reset(nil)
		writerPool.Put(s.w)
		s.w = nil
	}
	s.wmu.Unlock()
	if s.activeState == nil {
		return
	}
	if s.br != nil && s.br.Size() == clientBufferSize {
		s.br.Reset(nil)
		readerPool.Put(s.br)
	}
	s.br = nil
	s.dropHeld()
	if s.heldBuf != nil {
		heldPool.Put(s.heldBuf)
		s.heldBuf = nil
	}
}
