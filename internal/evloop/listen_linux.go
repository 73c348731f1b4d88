//go:build linux

package evloop

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listening on a loop. A connection accepted by Go's net package is registered in Go's poller
// first, and costs four more system calls when a Group adopts it (a dup, a registration in the
// loop, a deregistration from Go's poller, a close), and a hand-off between threads: the
// goroutine waiting in Accept wakes on Go's poller, the login on another. A Listener accepts on
// a loop instead, from the loop's own wake-up, and registers each connection in a loop directly.

// Listener is a listening TCP socket served by a loop (see Group.Listen).
type Listener struct {
	c        *Conn // the listening socket; its reader is the loop's accept
	g        *Group
	addr     net.Addr
	accepted func(*Conn)
	failed   func(error) time.Duration
	acceptFn func() // accept, made once
	retryFn  func() // accept after a pause, made once

	mu    sync.Mutex
	retry *time.Timer // a pause after a failure to accept; guarded by mu
}

// Listen takes over ln's socket, as Adopt takes over a connection's (ln is closed; its socket
// stays open under the Listener), and accepts its connections on one of g's loops, each as soon
// as the loop sees it. Each accepted connection is registered in one of g's loops, in turn, as a
// counted Conn sharing ln's address, and given to accepted on the listening loop's thread:
// accepted must not wait (it may Post to the Conn's loop). A failure to accept other than the
// socket's closing (out of descriptors, ...) is given to failed, which returns how long to pause
// before accepting again; the loop goes on with its other Conns meanwhile. A connection aborted
// before it was accepted is skipped. ln must be a *net.TCPListener.
func (g *Group) Listen(ln net.Listener, accepted func(*Conn), failed func(error) time.Duration) (*Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, errors.New("evloop: not a TCP listener")
	}
	fd, err := dupSocket(tl)
	if err != nil {
		return nil, err
	}
	addr := ownAddr(ln.Addr())
	c, err := g.register(fd, false, true, addr, nil)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ln.Close()
	l := &Listener{c: c, g: g, addr: addr, accepted: accepted, failed: failed}
	l.acceptFn = l.accept
	l.retryFn = func() {
		l.c.listenEvents(unix.EPOLLIN)
		l.accept()
	}
	c.Post(l.acceptFn)
	return l, nil
}

// Addr returns the address the Listener listens on.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops accepting and closes the socket. Connections accepted already are not affected.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.retry != nil {
		l.retry.Stop()
	}
	l.mu.Unlock()
	return l.c.Close()
}

// maxAccepts bounds the connections a loop accepts per wake-up: the loop goes back to epoll_wait
// after as many, so that a flood of connections delays the transactions of the loop's clients by
// one batch of logins at most, not by the whole backlog (the listening socket is registered
// level-triggered: epoll_wait reports it again at once while connections wait).
const maxAccepts = 16

// accept accepts the connections waiting, up to maxAccepts, then waits on the loop for the next:
// the listening Conn's reader, on its loop (or on a goroutine after Close, when it finds the
// socket closed).
func (l *Listener) accept() {
	for range maxAccepts {
		fd, sa, e := l.c.accept4()
		switch e {
		case 0:
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EAGAIN:
			l.c.rearm(l.acceptFn)
			return
		case unix.EBADF:
			return // closed
		default:
			if l.c.isClosed() {
				return // Close shut the socket down under an accept4
			}
			pause := l.failed(&net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: os.NewSyscallError("accept4", e)})
			// The connections waiting keep the socket readable: no events until the retry,
			// or the loop would spin on them.
			l.c.listenEvents(0)
			l.mu.Lock()
			if !l.c.isClosed() {
				l.retry = time.AfterFunc(pause, func() { l.c.Post(l.retryFn) })
			}
			l.mu.Unlock()
			return
		}
		c, err := l.g.adoptFD(fd, l.g.localAddr(fd, l.addr), sockaddrAddr(sa))
		if err != nil {
			unix.Close(fd) // the Group is closing
			continue
		}
		l.accepted(c)
	}
	l.c.rearm(l.acceptFn) // more may wait: the next wake-up, at once
}

// accept4 accepts a connection on c, a listening socket: non-blocking and close-on-exec, as Go's
// net package makes its sockets.
// (syscall's, not x/sys/unix's Accept4, which asks the socket's protocol of each connection.)
func (c *Conn) accept4() (int, syscall.Sockaddr, syscall.Errno) {
	if !c.incref() {
		return -1, nil, unix.EBADF
	}
	fd, sa, err := syscall.Accept4(c.fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
	c.decref()
	if err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return -1, nil, e
		}
		return -1, nil, unix.EINVAL
	}
	return fd, sa, 0
}

// rearm registers fn to run at c's next readable event, as OnReadable does, for a listening
// socket, registered level-triggered (see loop.add): its events come while connections wait,
// whether or not the last accept took them all.
func (c *Conn) rearm(fn func()) {
	c.mu.Lock()
	if !c.closed {
		c.rCont = fn
		c.r.ready = false
	}
	c.mu.Unlock()
}

// listenEvents sets the events a listening socket's registration asks for: EPOLLIN, or none
// during a pause after a failure to accept.
func (c *Conn) listenEvents(events uint32) {
	if !c.incref() {
		return
	}
	ev := unix.EpollEvent{Events: events, Fd: c.slot, Pad: int32(c.gen)}
	unix.EpollCtl(c.l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev) // fails only for a closed socket
	c.decref()
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// sockaddrAddr is a socket address as a *net.TCPAddr (nil for a family TCP does not have). An
// IPv6 zone is given by its interface index, which net resolves as it would a name.
func sockaddrAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	case *syscall.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			ip = ip.WithZone(strconv.FormatUint(uint64(a.ZoneId), 10))
		}
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(a.Port)))
	}
	return nil
}

// localAddr is the local address of fd, accepted by a socket listening on listen: listen itself,
// shared, unless it is a wildcard address, which says nothing of the one the client reached.
func (g *Group) localAddr(fd int, listen net.Addr) net.Addr {
	if ta, ok := listen.(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		return g.sharedAddr(listen)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return listen
	}
	if a := sockaddrAddr(sa); a != nil {
		return g.sharedAddr(a)
	}
	return listen
}
