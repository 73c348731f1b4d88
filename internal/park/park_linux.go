//go:build linux

package park

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Park after Close.
var ErrClosed = errors.New("park: parker closed")

// Parker is an epoll set of parked connections and the goroutine that waits on it. Its methods
// may be called from any goroutine.
type Parker struct {
	epfd int
	stop int // an eventfd: written by Close to end run

	mu     sync.Mutex
	slots  []*Ticket // by slot; nil: free. Guarded by mu.
	free   []int32   // free slots; guarded by mu
	gen    uint32    // numbers parks, so that a stale event is told from the slot's next park; guarded by mu
	parked int       // tickets parked; guarded by mu
	closed bool      // guarded by mu

	done chan struct{} // closed when run has returned
}

// Ticket is one connection's place in a Parker. The zero value is an unparked ticket. Its fields
// are the Parker's, guarded by its lock.
type Ticket struct {
	parked bool
	slot   int32
	gen    uint32
	wake   func()
}

// stopSlot is the epoll data of the stop eventfd: never a slot.
const stopSlot = -1

// New returns a running Parker. Close stops it.
func New() (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("park: epoll_create1: %w", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("park: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: stopSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stop, &ev); err != nil {
		unix.Close(stop)
		unix.Close(epfd)
		return nil, fmt.Errorf("park: epoll_ctl: %w", err)
	}
	p := &Parker{epfd: epfd, stop: stop, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// Park hands c to p until c has something to read, is closed by its peer or fails: then p calls
// wake on a new goroutine, and c is its caller's again. t is c's ticket, not parked already. On
// an error (p closed, c not a socket), nothing is parked and wake is never called.
func (p *Parker) Park(c syscall.Conn, t *Ticket, wake func()) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("park: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if t.parked {
		return errors.New("park: ticket parked twice")
	}
	var slot int32
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = int32(len(p.slots))
		p.slots = append(p.slots, nil)
	}
	p.gen++
	// One-shot, level-triggered: bytes already waiting are reported at once, and the event
	// disarms the registration, which stays until c is closed and is re-armed by the next park.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: slot, Pad: int32(p.gen)}
	var cerr error
	err = rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if cerr == unix.ENOENT {
			cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.free = append(p.free, slot)
		return fmt.Errorf("park: epoll_ctl: %w", err)
	}
	*t = Ticket{parked: true, slot: slot, gen: p.gen, wake: wake}
	p.slots[slot] = t
	p.parked++
	return nil
}

// Unpark takes t's connection back from p before it woke, and reports whether it did: true
// means the wake function will not be called and the caller owns the connection again (and
// decides what runs it); false means t was not parked (its wake function has run or is about
// to).
func (p *Parker) Unpark(t *Ticket) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !t.parked {
		return false
	}
	p.releaseLocked(t)
	return true
}

func (p *Parker) releaseLocked(t *Ticket) {
	p.slots[t.slot] = nil
	p.free = append(p.free, t.slot)
	p.parked--
	t.parked, t.wake = false, nil
}

// Len returns how many connections are parked.
func (p *Parker) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parked
}

// Close stops p and wakes every connection still parked (each wake function runs, on its own
// goroutine, and finds its connection as it is). Park fails after it.
func (p *Parker) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.closed = true
	var wakes []func()
	for _, t := range p.slots {
		if t != nil {
			wakes = append(wakes, t.wake)
			p.releaseLocked(t)
		}
	}
	p.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(p.stop, one[:])
	<-p.done
	unix.Close(p.stop)
	unix.Close(p.epfd)
	for _, w := range wakes {
		go w()
	}
}

// run waits for parked connections to wake, until Close.
func (p *Parker) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	var wakes []func()
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // only a bad epfd: Close has run
		}
		stopped := false
		p.mu.Lock()
		for _, ev := range events[:n] {
			if ev.Fd == stopSlot {
				stopped = true
				continue
			}
			if int(ev.Fd) >= len(p.slots) {
				continue
			}
			// A stale event (its park was undone by Unpark, and the slot may be parked
			// again) has another generation.
			if t := p.slots[ev.Fd]; t != nil && t.gen == uint32(ev.Pad) {
				wakes = append(wakes, t.wake)
				p.releaseLocked(t)
			}
		}
		p.mu.Unlock()
		for i, w := range wakes {
			go w()
			wakes[i] = nil
		}
		wakes = wakes[:0]
		if stopped {
			return
		}
	}
}
