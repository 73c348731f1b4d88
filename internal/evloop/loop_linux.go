//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Adopt after Close.
var ErrClosed = errors.New("evloop: group closed")

// Group is a set of event loops, one per OS thread it was asked for. Its methods may be called
// from any goroutine.
type Group struct {
	loops   []*loop
	next    atomic.Uint32
	waiting atomic.Int64 // counted Conns with a function registered by OnReadable

	mu     sync.Mutex
	closed bool // guarded by mu
	// localAddrs are the local addresses counted Conns share (see Adopt); guarded by mu.
	localAddrs map[netip.AddrPort]net.Addr
}

// maxLocalAddrs bounds Group.localAddrs: a proxy's clients come in through a few listeners.
const maxLocalAddrs = 64

// loop is one epoll instance and the goroutine that currently waits on it.
type loop struct {
	g    *Group
	epfd int
	wake int // an eventfd: written by Post and by Close

	// awake: the loop will look at tasks before it next waits in epoll_wait, so Post need not
	// write wake. Set when epoll_wait returns (and by the Post that writes wake), cleared under mu
	// when the loop finds no task.
	awake atomic.Bool

	// tid is the OS thread of the goroutine that runs the loop now (locked to it), 0 while a
	// hand-off is under way; epoch counts hand-offs, so that the goroutine that gave the loop
	// away notices it and returns.
	tid   atomic.Int32
	epoch atomic.Uint64

	// The batch of events being dispatched and the index of the current one, for a hand-off
	// (the rest goes to the next goroutine). Owned by the goroutine running the loop.
	batch []unix.EpollEvent
	cur   int
	// The tasks being run and the index of the next one: a hand-off leaves the rest to the next
	// goroutine. Owned by the goroutine running the loop.
	running []func()
	next    int

	mu       sync.Mutex
	slots    []*Conn  // by slot; nil: free. Guarded by mu.
	free     []int32  // guarded by mu
	gen      uint32   // numbers registrations; guarded by mu
	conns    int      // registered Conns; guarded by mu
	tasks    []func() // posted, not yet taken by the loop; guarded by mu
	stopping bool     // Close asked the loop to end; guarded by mu
	stopped  bool     // the loop ended: Post runs its function on a goroutine; guarded by mu

	done chan struct{} // closed by the goroutine that ends the loop
}

// wakeSlot is the epoll data of a loop's wake eventfd: never a slot.
const wakeSlot = -1

// loops is every running loop of every Group, for BeforeBlock.
var loops atomic.Pointer[[]*loop]

// handoffs counts BeforeBlock's hand-offs, over every Group.
var handoffs atomic.Int64

// Handoffs returns how many times a loop was handed to a new goroutine because what it ran had to
// wait (see BeforeBlock), since the process started.
func Handoffs() int64 { return handoffs.Load() }

// NewGroup starts n loops (at least one).
func NewGroup(n int) (*Group, error) {
	g := &Group{}
	for range max(n, 1) {
		l, err := newLoop(g)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	for {
		old := loops.Load()
		var all []*loop
		if old != nil {
			all = append(all, *old...)
		}
		all = append(all, g.loops...)
		if loops.CompareAndSwap(old, &all) {
			break
		}
	}
	for _, l := range g.loops {
		go l.run(nil)
	}
	return g, nil
}

func newLoop(g *Group) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot} // level-triggered: read to clear
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	return &loop{g: g, epfd: epfd, wake: wake, done: make(chan struct{})}, nil
}

// Adopt takes over nc's socket: it returns a Conn on a duplicate of its descriptor, registered in
// one of g's loops, and closes nc (Go's poller stops watching it). Bytes nc's caller has buffered
// are the caller's. counted: the Conn is a client's, which counts in Waiting while a function is
// registered by OnReadable, and shares its local address (its listener's) with the other
// clients'. nc must be a socket (syscall.Conn); on an error nc is left open and as it was.
func (g *Group) Adopt(nc net.Conn, counted bool) (*Conn, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, errors.New("evloop: not a socket")
	}
	fd, err := dupSocket(sc)
	if err != nil {
		return nil, err
	}
	laddr := ownAddr(nc.LocalAddr())
	if counted {
		laddr = g.sharedAddr(nc.LocalAddr())
	}
	c, err := g.register(fd, counted, false, laddr, ownAddr(nc.RemoteAddr()))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	nc.Close()
	return c, nil
}

// dupSocket returns a duplicate of sc's descriptor, close-on-exec.
func dupSocket(sc syscall.Conn) (int, error) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("evloop: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(f uintptr) {
		fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("evloop: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("evloop: dup: %w", derr)
	}
	return fd, nil
}

// adoptFD registers fd, a client's socket accepted by a Listener, as a counted Conn with the
// given addresses. On an error fd is left open.
func (g *Group) adoptFD(fd int, laddr, raddr net.Addr) (*Conn, error) {
	return g.register(fd, true, false, laddr, raddr)
}

// register makes fd a Conn in one of g's loops, in turn: a listening socket (listening) for input
// only, level-triggered (see Listener.accept), any other edge-triggered (see loop.add).
func (g *Group) register(fd int, counted, listening bool, laddr, raddr net.Addr) (*Conn, error) {
	l := g.loops[int(g.next.Add(1))%len(g.loops)]
	c := &Conn{fd: fd, l: l, counted: counted, laddr: laddr, raddr: raddr}
	c.r.c, c.r.input = c, true
	c.w.c = c
	events := uint32(unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET)
	if listening {
		events = unix.EPOLLIN
	}
	if err := l.add(c, events); err != nil {
		return nil, err
	}
	return c, nil
}

// The addresses Go's net package gives a socket keep the sockaddr they were decoded from (their
// IP slices it): about 80 bytes each, for the Conn's life. A Conn keeps its own compact copies
// instead (ownAddr), and clients share the one of their listener (sharedAddr).

// ownAddr returns a TCP address as a *net.TCPAddr of its own, other addresses as they are.
func ownAddr(a net.Addr) net.Addr {
	if ta, ok := a.(*net.TCPAddr); ok && ta != nil {
		return net.TCPAddrFromAddrPort(ta.AddrPort())
	}
	return a
}

// sharedAddr returns the address equal to a that g's Conns share: ownAddr(a), kept for the
// next ones (up to maxLocalAddrs different addresses).
func (g *Group) sharedAddr(a net.Addr) net.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return a
	}
	ap := ta.AddrPort()
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.localAddrs[ap]; ok {
		return s
	}
	own := ownAddr(a)
	if len(g.localAddrs) < maxLocalAddrs {
		if g.localAddrs == nil {
			g.localAddrs = make(map[netip.AddrPort]net.Addr)
		}
		g.localAddrs[ap] = own
	}
	return own
}

// add registers c in l for events (edge-triggered, for input and output, for a connection), once
// for c's life.
func (l *loop) add(c *Conn, events uint32) error {
	// Under the Group's lock throughout: Close, once it has said closed, finds every Conn.
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	if l.g.closed {
		return ErrClosed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var slot int32
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.gen++
	c.slot, c.gen = slot, l.gen
	ev := unix.EpollEvent{Events: events, Fd: slot, Pad: int32(l.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		l.free = append(l.free, slot)
		return fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	l.slots[slot] = c
	l.conns++
	return nil
}

// remove frees c's slot; c's descriptor is about to be closed, which ends its registration.
func (l *loop) remove(c *Conn) {
	l.mu.Lock()
	if l.slots[c.slot] == c {
		l.slots[c.slot] = nil
		l.free = append(l.free, c.slot)
		l.conns--
	}
	l.mu.Unlock()
}

// Waiting returns how many Conns adopted as counted wait with a function registered by
// OnReadable: for pgtide, the clients waiting for their next request without a goroutine.
func (g *Group) Waiting() int { return int(g.waiting.Load()) }

// Len returns how many Conns g holds.
func (g *Group) Len() int {
	n := 0
	for _, l := range g.loops {
		l.mu.Lock()
		n += l.conns
		l.mu.Unlock()
	}
	return n
}

// Close closes every Conn g holds (their waiters and registered functions see them closed) and
// stops the loops. Adopt fails after it.
func (g *Group) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	for {
		old := loops.Load()
		var all []*loop
		if old != nil {
			for _, l := range *old {
				if l.g != g {
					all = append(all, l)
				}
			}
		}
		if loops.CompareAndSwap(old, &all) {
			break
		}
	}
	for _, l := range g.loops {
		l.mu.Lock()
		conns := make([]*Conn, 0, l.conns)
		for _, c := range l.slots {
			if c != nil {
				conns = append(conns, c)
			}
		}
		l.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		l.mu.Lock()
		l.stopping = true
		l.mu.Unlock()
		l.signal()
		<-l.done
		unix.Close(l.wake)
		unix.Close(l.epfd)
	}
}

// run waits on l and dispatches its events, on a goroutine locked to its thread, until Close or
// until a hand-off (BeforeBlock) gives the loop to a new goroutine. pending is what is left of
// the previous goroutine's batch.
func (l *loop) run(pending []unix.EpollEvent) {
	runtime.LockOSThread()
	l.tid.Store(int32(unix.Gettid()))
	me := l.epoch.Load()
	if len(pending) > 0 && l.dispatch(pending, me) || l.runTasks(me) {
		return
	}
	events := make([]unix.EpollEvent, 128)
	scheduled := time.Now()
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil { // a closed epfd: not while Close waits for done
			l.end()
			return
		}
		l.awake.Store(true)
		if l.dispatch(events[:n], me) || l.runTasks(me) {
			return
		}
		if now := time.Now(); now.Sub(scheduled) >= yieldEvery {
			// See yieldEvery. Between batches: the loop holds nothing of a Conn's here.
			runtime.Gosched()
			scheduled = now
		}
	}
}

// yieldEvery is how often a loop passes through Go's scheduler (runtime.Gosched). A loop's
// goroutine never does by itself: it goes in and out of epoll_wait on its P, and the scheduler
// counts a P's time from the last goroutine it scheduled there. At 10 ms (the runtime's
// forcePreemptNS) the runtime's monitor thread (sysmon) takes the P from the loop while the loop
// waits, preempts it with a signal while it runs, and, having taken a P, polls every 20 µs for
// the next millisecond and more. Measured on 2 CPUs (issue 14): that monitor used 4.4 % of a
// CPU at one pgbench client (6 µs per transaction, a sixth of pgtide's CPU) and 1.8 % at 16; a
// Gosched, which hands the P to another thread and back (two context switches), costs some
// 10-20 µs every yieldEvery.
const yieldEvery = 5 * time.Millisecond

// end is run's exit when the loop stops. Tasks posted and not run yet run on goroutines, as
// later ones will.
func (l *loop) end() {
	l.mu.Lock()
	l.stopped = true
	left := append(l.running[l.next:], l.tasks...)
	l.running, l.tasks = nil, nil
	l.mu.Unlock()
	for _, fn := range left {
		go fn()
	}
	l.tid.Store(0)
	close(l.done)
	runtime.UnlockOSThread()
}

// Post runs fn on c's loop, once the loop has handled the events it holds, and returns at once;
// it may be called from any goroutine, the loop's included. fn runs as code run for an event
// does: it must call BeforeBlock before it waits. After Close, fn runs on a new goroutine.
func (c *Conn) Post(fn func()) { c.l.post(fn) }

func (l *loop) post(fn func()) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		go fn()
		return
	}
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	if l.awake.CompareAndSwap(false, true) {
		l.signal() // the loop found no task since it woke, or sleeps
	}
}

// signal wakes the loop from epoll_wait (or keeps it from sleeping in it).
func (l *loop) signal() {
	one := [8]byte{1}
	unix.Write(l.wake, one[:])
}

// runTasks runs the tasks posted to l until none is left, and reports whether the calling
// goroutine gave the loop away meanwhile (it must return then).
func (l *loop) runTasks(me uint64) (gone bool) {
	for {
		for l.next < len(l.running) {
			fn := l.running[l.next]
			l.running[l.next] = nil
			l.next++ // before fn: a hand-off within fn leaves the rest to the next goroutine
			fn()
			if l.epoch.Load() != me {
				return true
			}
		}
		l.mu.Lock()
		if len(l.tasks) == 0 {
			l.awake.Store(false) // under mu: a Post after this signals, one before it is run
			l.mu.Unlock()
			return false
		}
		l.running, l.tasks = l.tasks, l.running[:0]
		l.next = 0
		l.mu.Unlock()
	}
}

// dispatch handles a batch of events and reports whether the calling goroutine gave the loop
// away meanwhile (it must return then) or the loop stopped.
func (l *loop) dispatch(evs []unix.EpollEvent, me uint64) (gone bool) {
	l.batch = evs
	stopped := false
	for i, ev := range evs {
		l.cur = i
		if ev.Fd == wakeSlot {
			var buf [8]byte
			unix.Read(l.wake, buf[:]) // cleared: tasks are run after the batch
			l.mu.Lock()
			stopped = l.stopping
			l.mu.Unlock()
			continue
		}
		l.mu.Lock()
		var c *Conn
		if int(ev.Fd) < len(l.slots) {
			c = l.slots[ev.Fd]
		}
		l.mu.Unlock()
		if c == nil || c.gen != uint32(ev.Pad) {
			continue // closed, maybe with its slot taken again since
		}
		if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.writable()
		}
		if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.hup.Store(true)
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.readable(true)
			if l.epoch.Load() != me {
				return true
			}
		}
	}
	l.batch = nil
	if stopped {
		l.end()
		return true
	}
	return false
}

// BeforeBlock must be called before anything that may wait for long (for another connection, a
// lock held across I/O, a timer). On a goroutine that runs a loop, it hands the loop to a new
// goroutine, with the rest of the batch of events being dispatched, and unlocks the caller from
// its thread: the caller may wait then, and returns into the loop's dispatch only to end. On any
// other goroutine it does nothing (at the cost of one gettid when loops run).
func BeforeBlock() {
	if l := current(); l != nil {
		l.handoff()
	}
}

// OnLoop reports whether the caller is the goroutine that runs a loop now.
func OnLoop() bool { return current() != nil }

// current returns the loop the calling goroutine runs, or nil. The caller is locked to its thread
// while it compares thread IDs: a goroutine that is not could be moved, between gettid and the
// comparison, off a thread that a loop's goroutine then locks, and take itself for that loop.
// Locked, it shares its thread with no loop's goroutine unless it is that goroutine.
func current() *loop {
	all := loops.Load()
	if all == nil || len(*all) == 0 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := int32(unix.Gettid())
	for _, l := range *all {
		if l.tid.Load() == tid {
			return l
		}
	}
	return nil
}

// handoff gives l to a new goroutine. Called by the goroutine that runs l.
func (l *loop) handoff() {
	handoffs.Add(1)
	var rest []unix.EpollEvent
	if l.batch != nil && l.cur+1 < len(l.batch) {
		rest = append(rest, l.batch[l.cur+1:]...)
	}
	l.batch = nil
	l.tid.Store(0)
	l.epoch.Add(1)
	runtime.UnlockOSThread()
	go l.run(rest)
}
