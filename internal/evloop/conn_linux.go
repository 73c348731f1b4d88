//go:build linux

package evloop

import (
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrWouldBlock is TryRead's answer when nothing is there to read (and Read's, in try mode: see
// SetTry). It is a net.Error that says Timeout and Temporary, as a passed read deadline does, so
// that crypto/tls over a Conn leaves its connection usable after it.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "evloop: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// Conn is a socket adopted by a Group (see Adopt): a net.Conn whose Read and Write block the
// calling goroutine as a net.TCPConn's do (with deadlines; Close ends them), plus TryRead and
// OnReadable for code that runs on a loop.
//
// Its fields are ordered to pack: an idle client is little more than its Conn and session.
type Conn struct {
	fd   int
	l    *loop
	slot int32
	gen  uint32 // set by add before the Conn is reachable from the loop; read-only after
	// The socket's addresses, read-only (see Adopt).
	laddr net.Addr
	raddr net.Addr

	// refs counts system calls in flight on fd, plus closingBit once Close was called: the
	// descriptor is closed when both are done (destroyed says by whom).
	refs      atomic.Int64
	destroyed atomic.Bool

	// hup: the loop saw the peer hang up or the socket fail. What is left to read then ends in
	// EOF or an error, which no further event announces: a short read no longer means drained.
	hup atomic.Bool

	// counted: counts in the Group's Waiting while rCont is set. Read-only.
	counted bool
	// drained: the last read took everything the socket had (it returned less than asked, or
	// nothing), so that only an edge can bring more: OnReadable needs no read first. Owned by
	// the reader.
	drained bool
	// try makes Read return ErrWouldBlock instead of waiting (SetTry). Owned by the reader.
	try    bool
	closed bool // guarded by mu

	mu    sync.Mutex
	rCont func() // OnReadable's function; guarded by mu
	r, w  side   // input and output
}

// side is one direction of a Conn: its readiness, the goroutine waiting on it and its deadline.
// Guarded by the Conn's mu, but expired, which Read and Write check without it.
type side struct {
	c       *Conn
	ch      chan struct{} // one token per wake-up; made at the first wait
	dead    int64         // the deadline, as sinceEpoch's nanoseconds; 0: none
	timer   *time.Timer   // armed for dead; nil while there is none
	expired atomic.Bool   // dead has passed
	input   bool          // the input side, whose events also run OnReadable's function
	ready   bool          // an edge came that no call has taken
	waiting bool          // a goroutine waits on ch
}

const closingBit = 1 << 40

var _ net.Conn = (*Conn)(nil)

func (c *Conn) incref() bool {
	if c.refs.Add(1)&closingBit != 0 {
		c.decref()
		return false
	}
	return true
}

func (c *Conn) decref() {
	if c.refs.Add(-1) == closingBit && c.destroyed.CompareAndSwap(false, true) {
		c.l.remove(c)
		unix.Close(c.fd)
	}
}

// sys makes a read or write system call (trap) on c's descriptor with p, raw: the descriptor is
// non-blocking, so the scheduler need not know. p must not be empty.
func (c *Conn) sys(trap uintptr, p []byte) (int, syscall.Errno) {
	if !c.incref() {
		return 0, unix.EBADF
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(c.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	c.decref()
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// opError words a failed call as the net package does.
func (c *Conn) opError(op string, e syscall.Errno) error {
	if e == unix.EBADF {
		return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: net.ErrClosed}
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError(op, e)}
}

// TryRead reads what is there without waiting: ErrWouldBlock if nothing is, io.EOF at the end of
// the stream, os.ErrDeadlineExceeded (wrapped) after the read deadline.
func (c *Conn) TryRead(p []byte) (int, error) {
	if c.r.expired.Load() {
		return 0, errTimeout
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, e := c.sys(unix.SYS_READ, p)
		switch {
		case e == 0 && n > 0:
			c.drained = n < len(p)
			return n, nil
		case e == 0:
			return 0, io.EOF
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			c.mu.Lock()
			again := c.r.ready
			c.r.ready = false
			c.mu.Unlock()
			if again { // an edge came after the read: read again
				continue
			}
			c.drained = true
			return 0, ErrWouldBlock
		}
		return 0, c.opError("read", e)
	}
}

// SetTry switches Read to TryRead's behaviour (on) or back (off), for a reader above c that
// cannot be told to try (crypto/tls). For the reader.
func (c *Conn) SetTry(on bool) { c.try = on }

// Read reads as a net.Conn does, waiting for input; on a loop it hands the loop away first
// (BeforeBlock). In try mode (SetTry) it is TryRead.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		n, err := c.TryRead(p)
		if err != ErrWouldBlock || c.try {
			return n, err
		}
		if err := c.wait(&c.r); err != nil {
			return 0, err
		}
	}
}

// wait blocks the calling goroutine until the side may be ready again, c is closed or the side's
// deadline passes. On a loop it hands the loop away first (BeforeBlock), unless an edge came
// already.
func (c *Conn) wait(sd *side) error {
	c.mu.Lock()
	ready := sd.ready
	sd.ready = false
	c.mu.Unlock()
	if ready {
		return nil
	}
	BeforeBlock()
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return c.opError(sd.op(), unix.EBADF)
	case sd.expired.Load():
		c.mu.Unlock()
		return sd.timeoutError()
	case sd.ready:
		sd.ready = false
		c.mu.Unlock()
		return nil
	}
	sd.waiting = true
	if sd.ch == nil {
		sd.ch = make(chan struct{}, 1)
	}
	ch := sd.ch
	c.mu.Unlock()
	<-ch
	return nil
}

func (sd *side) op() string {
	if sd.input {
		return "read"
	}
	return "write"
}

var (
	errTimeout      = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	errWriteTimeout = &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
)

func (sd *side) timeoutError() error {
	if sd.input {
		return errTimeout
	}
	return errWriteTimeout
}

// Write writes p whole as a net.Conn does, waiting for room; on a loop it hands the loop away
// first (BeforeBlock) if it has to wait.
func (c *Conn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		if c.w.expired.Load() {
			return done, errWriteTimeout
		}
		n, e := c.sys(unix.SYS_WRITE, p[done:])
		switch {
		case e == 0:
			done += n
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			if err := c.wait(&c.w); err != nil {
				return done, err
			}
		default:
			return done, c.opError("write", e)
		}
	}
	return done, nil
}

// Drained reports whether the last read took everything the socket had then, so that only an
// event can bring more (see OnReadable): never once the peer has hung up. For the reader.
func (c *Conn) Drained() bool { return c.drained && !c.hup.Load() }

// Quiet reports whether nothing can have come in on c since the last read took everything the
// socket had: that read drained it (see Drained), and the loop has dispatched no edge, hang-up or
// close since. An event the kernel has queued and the loop not dispatched yet is not seen, so
// Quiet answers from memory, without a system call, for a question that may race anyway (a peer
// may send the moment after any check). For the reader, or whoever holds c between readers (the
// pool, an idle server connection).
func (c *Conn) Quiet() bool {
	if !c.Drained() {
		return false
	}
	c.mu.Lock()
	quiet := !c.closed && !c.r.ready
	c.mu.Unlock()
	return quiet
}

// OnReadable registers fn to run once c may have input, is closed, or its read deadline passed:
// on the loop's thread when the loop's event caused it, else on a new goroutine. It returns false,
// registering nothing, when that may be so already: the last read did not drain the socket (see
// Drained), or an edge came since; the caller reads again. At most one function is registered at
// a time. After fn is registered the caller must not touch what fn will. For the reader.
func (c *Conn) OnReadable(fn func()) bool {
	if !c.Drained() {
		return false
	}
	c.mu.Lock()
	if c.closed || c.r.ready || c.r.expired.Load() {
		c.r.ready = false
		c.drained = false
		c.mu.Unlock()
		return false
	}
	c.rCont = fn
	c.mu.Unlock()
	c.countWait(1)
	return true
}

// Unregister takes back the function OnReadable registered, if one is, so that nothing runs it,
// and reports whether one was. The caller then owns what that function would have touched, as
// the reader, until it registers a function again (OnReadable; if that returns false, the caller
// still owns it and must go on, for instance by posting the function: see Post).
func (c *Conn) Unregister() bool {
	c.mu.Lock()
	fn := c.rCont
	c.rCont = nil
	c.mu.Unlock()
	if fn == nil {
		return false
	}
	c.countWait(-1)
	return true
}

func (c *Conn) countWait(d int64) {
	if c.counted {
		c.l.g.waiting.Add(d)
	}
}

// readable wakes whoever waits for input, or records the edge. onLoop: called by the loop.
func (c *Conn) readable(onLoop bool) {
	if fn := c.wakeReader(); fn != nil {
		if onLoop {
			fn()
		} else {
			go fn()
		}
	}
}

// Wake makes c's reader look at c again, as an event on c would, from any goroutine: the
// function registered with OnReadable runs on c's loop (posted, as Post runs one), a Read that
// waits reads again, and with neither the reader's next OnReadable finds the edge. It is for a
// reason to look that comes from elsewhere (another Conn's event): the read may find nothing.
func (c *Conn) Wake() {
	if fn := c.wakeReader(); fn != nil {
		c.l.post(fn)
	}
}

// wakeReader takes what waits for c's input: a blocked reader gets its token; a registered
// function is returned, for the caller to run; with neither, the edge is recorded.
func (c *Conn) wakeReader() func() {
	c.mu.Lock()
	if c.r.waiting {
		c.r.waiting = false
		c.drained = false // the reader waits: its field is ours until the token
		ch := c.r.ch
		c.mu.Unlock()
		ch <- struct{}{}
		return nil
	}
	if fn := c.rCont; fn != nil {
		c.rCont = nil
		c.drained = false // likewise, until fn runs
		c.mu.Unlock()
		c.countWait(-1)
		return fn
	}
	c.r.ready = true
	c.mu.Unlock()
	return nil
}

// writable wakes whoever waits for room to write, or records the edge.
func (c *Conn) writable() {
	c.mu.Lock()
	if c.w.waiting {
		c.w.waiting = false
		ch := c.w.ch
		c.mu.Unlock()
		ch <- struct{}{}
		return
	}
	c.w.ready = true
	c.mu.Unlock()
}

// fire is what an event on the side does: wake its waiter (or OnReadable's function).
func (sd *side) fire() {
	if sd.input {
		sd.c.readable(false)
	} else {
		sd.c.writable()
	}
}

// Close closes c: calls waiting in Read or Write return, a function registered by OnReadable
// runs (on a new goroutine), and the descriptor is closed once no system call uses it.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", unix.EBADF)
	}
	c.closed = true
	for _, sd := range []*side{&c.r, &c.w} {
		if sd.timer != nil {
			sd.timer.Stop()
		}
	}
	c.mu.Unlock()
	c.refs.Add(1) // the descriptor stays open while Close looks at it
	if c.refs.Add(closingBit) != closingBit+1 {
		// Calls are in flight: both directions end now, even for one between its check and its
		// system call. (With none, the close below is all it takes.)
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.decref() // closes the descriptor unless a call still uses it
	c.readable(false)
	c.writable()
	return nil
}

func (c *Conn) LocalAddr() net.Addr  { return c.laddr }
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline works as net.Conn's: a time passed ends a waiting Read (and makes
// OnReadable's function run).
func (c *Conn) SetReadDeadline(t time.Time) error { c.r.setDeadline(t); return nil }

func (c *Conn) SetWriteDeadline(t time.Time) error { c.w.setDeadline(t); return nil }

// setDeadline arms the side's timer for t (zero: none); a time passed fires the side now.
func (sd *side) setDeadline(t time.Time) {
	c := sd.c
	c.mu.Lock()
	d := time.Until(t) // on the monotonic clock, when t has a reading of it (time.Now().Add)
	sd.dead = 0
	switch now := sinceEpoch(); {
	case t.IsZero():
	case int64(d) >= math.MaxInt64-now:
		sd.dead = math.MaxInt64 // never
	default:
		sd.dead = max(now+int64(d), 1) // 0 is none
	}
	expired := false
	switch {
	case t.IsZero() || d <= 0:
		if sd.timer != nil {
			sd.timer.Stop()
			sd.timer = nil // an idle connection keeps no timer (a login's deadline is cleared after it)
		}
		expired = !t.IsZero()
	case sd.timer == nil:
		sd.timer = time.AfterFunc(d, sd.timeout)
	default:
		sd.timer.Reset(d)
	}
	sd.expired.Store(expired)
	c.mu.Unlock()
	if expired {
		sd.fire()
	}
}

// epoch anchors deadlines on the monotonic clock: a side keeps its deadline as the time since
// epoch at which it passes, so that a step of the wall clock neither loses nor advances it (as
// comparing time.Time values by their monotonic readings, Go's net package's way, ensures).
var epoch = time.Now()

// sinceEpoch returns the monotonic nanoseconds since epoch.
func sinceEpoch() int64 { return int64(time.Since(epoch)) }

// timeout is the side's timer: the deadline may have passed (or been moved since).
func (sd *side) timeout() {
	c := sd.c
	c.mu.Lock()
	expired := sd.dead != 0 && sinceEpoch() >= sd.dead
	if expired {
		sd.expired.Store(true)
	}
	c.mu.Unlock()
	if expired {
		sd.fire()
	}
}

// SyscallConn gives the descriptor to functions that need it (a peek, a wait for input), as a
// net.TCPConn does; its Read and Write wait as c's do.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return rawConn{c}, nil }

type rawConn struct{ c *Conn }

func (r rawConn) Control(f func(fd uintptr)) error {
	if !r.c.incref() {
		return net.ErrClosed
	}
	f(uintptr(r.c.fd))
	r.c.decref()
	return nil
}

func (r rawConn) Read(f func(fd uintptr) bool) error  { return r.c.rawLoop(&r.c.r, f) }
func (r rawConn) Write(f func(fd uintptr) bool) error { return r.c.rawLoop(&r.c.w, f) }

// rawLoop calls f with the descriptor until it reports done, waiting on sd in between.
func (c *Conn) rawLoop(sd *side, f func(fd uintptr) bool) error {
	for {
		if sd.expired.Load() {
			return sd.timeoutError()
		}
		if !c.incref() {
			return net.ErrClosed
		}
		done := f(uintptr(c.fd))
		c.decref()
		if done {
			return nil
		}
		if err := c.wait(sd); err != nil {
			return err
		}
	}
}
