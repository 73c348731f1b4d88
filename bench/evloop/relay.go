package main

import (
	"encoding/binary"
	"log"
	"syscall"

	"golang.org/x/sys/unix"
)

type role uint8

const (
	roleListener role = iota
	roleClient
	roleServer
)

type state uint8

const (
	stStartup state = iota // client: its startup message has not been answered yet
	stIdle                 // client: between transactions, no server; server: in the pool
	stQueued               // client: its request waits in the kernel for a server connection
	stLinked               // client and server lent to each other
)

// Startup-packet codes (the second int32 of a message without a type byte).
const (
	protocol30   = 196608
	cancelCode   = 80877102
	sslCode      = 80877103
	gssencCode   = 80877104
	maxStartupSz = 10000
)

// conn is one socket of a loop: a client or a server connection. It is owned by its loop. An
// idle client is this struct and nothing else: out is nil unless a write was partial.
type conn struct {
	fd       int
	role     role
	state    state
	closed   bool
	readable bool   // an input edge was seen and the socket may still hold unread bytes
	peer     *conn  // the other side while linked
	out      []byte // bytes a partial write left for this socket; from the loop's free list
	fr       framer // framing of the bytes this socket sends us
	hold     []byte // client: a startup message that arrived in pieces (rare)

	// Server connections only: what is owed to the client it is lent to.
	unanswered int  // Query, Sync and FunctionCall messages not yet answered by ReadyForQuery
	midRequest bool // extended-protocol messages forwarded after the last Sync
	txStatus   byte // of the last ReadyForQuery
}

// atRest says whether a server connection owes its client nothing and is outside a
// transaction block: the moment transaction mode gives it back.
func (s *conn) atRest() bool { return s.unanswered == 0 && !s.midRequest && s.txStatus == 'I' }

// framer follows message boundaries in a stream from the 5-byte headers alone.
type framer struct {
	hdr   [5]byte
	nhdr  int
	rest  int  // body bytes of the current message still to come
	wantZ bool // the next body byte is a ReadyForQuery's transaction status
	bad   bool // a length below 4: not the PostgreSQL protocol
}

// step skips the rest of the current message in b[i:] and reads the next header. It returns the
// index just past that header and the message type, or ok = false when b ends first (a header
// cut in two is kept for the next call).
func (f *framer) step(b []byte, i int) (next int, typ byte, ok bool) {
	if f.rest > 0 {
		skip := min(f.rest, len(b)-i)
		f.rest -= skip
		i += skip
	}
	for f.rest == 0 && i < len(b) {
		if f.nhdr == 0 && len(b)-i >= 5 {
			return i + 5, b[i], f.body(binary.BigEndian.Uint32(b[i+1:]))
		}
		f.hdr[f.nhdr] = b[i]
		f.nhdr++
		i++
		if f.nhdr == 5 {
			f.nhdr = 0
			return i, f.hdr[0], f.body(binary.BigEndian.Uint32(f.hdr[1:]))
		}
	}
	return i, 0, false
}

func (f *framer) body(length uint32) bool {
	if length < 4 || length > 1<<30 {
		f.bad = true
		return false
	}
	f.rest = int(length) - 4
	return true
}

// clientReadable moves a client on for as long as its socket may hold bytes and it can use them.
func (l *loop) clientReadable(c *conn) {
	for c.readable && !c.closed {
		switch c.state {
		case stStartup:
			l.readStartup(c)
		case stIdle:
			s := l.acquire()
			if s == nil {
				c.state = stQueued
				l.queue.push(c)
				return
			}
			l.link(c, s)
		case stQueued:
			return
		case stLinked:
			l.pumpClient(c)
			return
		}
	}
}

// read reads into the loop's scratch buffer. A short read drained the socket: later bytes raise
// a new edge, so the read that would find nothing is skipped. It returns nil on EAGAIN and
// closes c (ok = false) at the end of the stream or on an error.
func (l *loop) read(c *conn) (b []byte, ok bool) {
	n, errno := rawRead(c.fd, l.scratch)
	switch {
	case errno == unix.EAGAIN:
		c.readable = false
		return nil, true
	case errno == unix.EINTR:
		return nil, true
	case errno != 0 || n == 0:
		l.close(c)
		return nil, false
	}
	if n < len(l.scratch) {
		c.readable = false
	}
	return l.scratch[:n], true
}

// readStartup answers SSLRequest and GSSENCRequest with 'N' and the startup message with the
// greeting; anything else closes the client.
func (l *loop) readStartup(c *conn) {
	b, ok := l.read(c)
	if !ok || b == nil {
		return
	}
	if c.hold != nil {
		c.hold = append(c.hold, b...)
		b = c.hold
	}
	for len(b) >= 8 {
		size := binary.BigEndian.Uint32(b)
		if size < 8 || size > maxStartupSz {
			l.close(c)
			return
		}
		if uint32(len(b)) < size {
			break
		}
		code := binary.BigEndian.Uint32(b[4:])
		b = b[size:]
		switch code {
		case sslCode, gssencCode:
			if !l.send(c, []byte{'N'}) {
				return
			}
		case protocol30:
			if len(b) > 0 {
				l.close(c) // bytes before the greeting: not something libpq does
				return
			}
			c.hold = nil
			c.state = stIdle
			l.send(c, l.greeting)
			return
		default: // CancelRequest and other protocol versions are not supported
			l.close(c)
			return
		}
	}
	if len(b) > 0 {
		c.hold = append([]byte(nil), b...)
	} else {
		c.hold = nil
	}
}

// pumpClient forwards the client's bytes to its server for as long as the client may have some
// and the server takes them without backing up.
func (l *loop) pumpClient(c *conn) {
	for c.readable && c.state == stLinked && c.peer.out == nil {
		s := c.peer
		b, ok := l.read(c)
		if !ok || b == nil {
			return
		}
		end, terminate := scanRequest(c, s, b)
		if c.fr.bad || (terminate && end < 0) {
			// Not the protocol, or a Terminate whose header came in two reads and is
			// half-sent: the server's stream cannot be trusted any more.
			l.close(s)
			l.close(c)
			return
		}
		if end > 0 && !l.send(s, b[:end]) {
			return
		}
		if terminate {
			l.close(c)
			return
		}
	}
}

// scanRequest counts what the server will answer with ReadyForQuery. It returns how many bytes
// of b to forward: all of them, or those before a Terminate (terminate = true; end < 0 when the
// Terminate began in an earlier read).
func scanRequest(c, s *conn, b []byte) (end int, terminate bool) {
	for i := 0; ; {
		j, typ, ok := c.fr.step(b, i)
		if !ok {
			return len(b), false
		}
		switch typ {
		case 'Q', 'S', 'F':
			s.unanswered++
			s.midRequest = false
		case 'X':
			return j - 5, true
		case 'd', 'c', 'f': // COPY data: not a request of its own
		default:
			s.midRequest = true
		}
		i = j
	}
}

// serverReadable forwards a server's answers to the client it is lent to, and gives the server
// back when it is at rest. A server in the pool has nothing to say but its end (or a notice).
func (l *loop) serverReadable(s *conn) {
	for s.readable && !s.closed {
		c := s.peer
		if c != nil && c.out != nil {
			return // the client backs up; its output edge resumes us
		}
		b, ok := l.read(s)
		if !ok || b == nil {
			return
		}
		scanAnswer(s, b)
		if s.fr.bad {
			l.close(s)
			return
		}
		if c != nil && !l.send(c, b) {
			return
		}
		if c != nil && s.atRest() {
			l.release(c, s)
		}
	}
}

// scanAnswer tracks the server's ReadyForQuery messages.
func scanAnswer(s *conn, b []byte) {
	for i := 0; ; {
		if s.fr.wantZ {
			if i >= len(b) {
				return
			}
			s.fr.wantZ = false
			s.txStatus = b[i]
			if s.unanswered > 0 {
				s.unanswered--
			}
		}
		j, typ, ok := s.fr.step(b, i)
		if !ok {
			return
		}
		if typ == 'Z' {
			s.fr.wantZ = true
		}
		i = j
	}
}

// send writes b to c, keeping what the socket does not take in c.out (copied: b is usually the
// scratch buffer). It returns false if it closed c on a write error.
func (l *loop) send(c *conn, b []byte) bool {
	if c.out != nil {
		c.out = append(c.out, b...)
		return true
	}
	n, errno := rawWrite(c.fd, b)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		n = 0
	case errno != 0:
		l.close(c)
		return false
	}
	if n < len(b) {
		c.out = append(l.getBuf(), b[n:]...)
	}
	return true
}

// writable flushes c.out on an output edge; once it is empty, the side that was held back
// because c backed up reads again.
func (l *loop) writable(c *conn) {
	n, errno := rawWrite(c.fd, c.out)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return
	case errno != 0:
		l.close(c)
		return
	}
	if n < len(c.out) {
		c.out = c.out[:copy(c.out, c.out[n:])]
		return
	}
	l.putBuf(c.out)
	c.out = nil
	if src := c.peer; src != nil && src.readable {
		if src.role == roleClient {
			l.clientReadable(src)
		} else {
			l.serverReadable(src)
		}
	}
}

// acquire takes the most recently used idle server connection, or nil.
func (l *loop) acquire() *conn {
	for n := len(l.idle); n > 0; n = len(l.idle) {
		s := l.idle[n-1]
		l.idle = l.idle[:n-1]
		if !s.closed {
			return s
		}
	}
	return nil
}

func (l *loop) link(c, s *conn) {
	c.peer, s.peer = s, c
	c.state, s.state = stLinked, stLinked
}

// release ends the lending of s to c: s goes to the oldest waiting client or back to the pool,
// and c, if its next request is already there, asks again.
func (l *loop) release(c, s *conn) {
	c.peer, s.peer = nil, nil
	c.state = stIdle
	l.giveBack(s)
	if c.readable {
		l.clientReadable(c)
	}
}

// giveBack hands an at-rest server connection to the oldest live waiting client, or pools it.
func (l *loop) giveBack(s *conn) {
	for w := l.queue.pop(); w != nil; w = l.queue.pop() {
		if w.closed {
			continue
		}
		l.link(w, s)
		l.clientReadable(w)
		return
	}
	s.state = stIdle
	l.idle = append(l.idle, s)
}

// close closes c. A client's server goes back to the pool if it is at rest; otherwise it is
// closed too (the prototype neither drains nor rolls back). A server's client is closed with
// it (a real proxy would send the client an ErrorResponse first).
func (l *loop) close(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	if p := c.peer; p != nil {
		c.peer, p.peer = nil, nil
		switch {
		case c.role == roleServer:
			l.close(p)
		case p.atRest():
			l.giveBack(p)
		default:
			l.close(p)
		}
	}
	if c.out != nil {
		l.putBuf(c.out)
		c.out = nil
	}
	if c.role == roleServer {
		l.servers--
		log.Printf("evloop: loop %d: a server connection closed; %d left", l.id, l.servers)
	}
	l.conns[c.fd] = nil
	_ = syscall.Close(c.fd) // closing also takes it out of the epoll set
}
