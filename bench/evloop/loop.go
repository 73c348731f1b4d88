package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// scratchSize is the loop's one read buffer: every read lands here and is written on at once.
	scratchSize = 64 << 10
	// keptBuffers bounds the free list of buffers for partial writes.
	keptBuffers = 64
	// epollEvents is how many readiness events one epoll_wait returns at most.
	epollEvents = 512
	// edgeEvents is what every socket is registered for, once, for its whole life.
	edgeEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
)

// loop is one event loop: an epoll instance, the connections registered with it, its own
// listener and its own server connections. Everything in it is owned by the goroutine in run
// (locked to one OS thread) and touched by nothing else, so nothing in it is locked.
type loop struct {
	id       int
	epfd     int
	listenFD int
	greeting []byte  // the answer to every client's startup message
	conns    []*conn // by descriptor; nil where the descriptor is not ours
	idle     []*conn // server connections in the pool, most recently used last
	queue    ring    // clients with a request and no server connection yet, oldest first
	servers  int     // live server connections (idle or lent)
	scratch  []byte  // the read buffer; its contents are valid until the next read
	free     [][]byte
}

// newLoop opens the loop's listener (SO_REUSEPORT, so each loop has its own accept queue and
// the kernel spreads clients over the loops) and dials its n server connections.
func newLoop(id int, o options, n int, greeting []byte) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l := &loop{id: id, epfd: epfd, greeting: greeting, scratch: make([]byte, scratchSize)}
	if l.listenFD, err = listenReusePort(o.listen); err != nil {
		return nil, err
	}
	if err := l.register(&conn{fd: l.listenFD, role: roleListener}); err != nil {
		return nil, err
	}
	for range n {
		fd, _, err := dialServer(o)
		if err != nil {
			return nil, err
		}
		s := &conn{fd: fd, role: roleServer, txStatus: 'I'}
		if err := l.register(s); err != nil {
			return nil, err
		}
		l.idle = append(l.idle, s)
		l.servers++
	}
	return l, nil
}

// listenReusePort opens a non-blocking IPv4 listener with SO_REUSEPORT.
func listenReusePort(hostPort string) (int, error) {
	addr, err := net.ResolveTCPAddr("tcp", hostPort)
	if err != nil {
		return -1, err
	}
	sa := &unix.SockaddrInet4{Port: addr.Port}
	if addr.IP != nil {
		ip4 := addr.IP.To4()
		if ip4 == nil {
			return -1, fmt.Errorf("listen %s: the prototype listens on IPv4 only", hostPort)
		}
		copy(sa.Addr[:], ip4)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", hostPort, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// register adds c to the epoll set, edge-triggered for input and output, and to the table.
func (l *loop) register(c *conn) error {
	ev := unix.EpollEvent{Events: edgeEvents, Fd: int32(c.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add %d: %w", c.fd, err)
	}
	if c.fd >= len(l.conns) {
		grown := make([]*conn, max(c.fd+1, 2*len(l.conns), 1024))
		copy(grown, l.conns)
		l.conns = grown
	}
	l.conns[c.fd] = c
	return nil
}

// run waits for readiness and handles every event of a wake-up before waiting again. It returns
// only if epoll_wait fails.
func (l *loop) run() error {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, epollEvents)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("loop %d: epoll_wait: %w", l.id, err)
		}
		for i := range events[:n] {
			l.dispatch(events[i])
		}
	}
}

// dispatch handles one event. Output readiness first, so that bytes held back by a partial write
// leave before more are read. Hang-ups and errors count as input readiness: the read that
// follows finds the end of the stream or the error, so a stale event for a descriptor that was
// closed and reused in the same wake-up costs one read that finds nothing, never a wrong close.
func (l *loop) dispatch(ev unix.EpollEvent) {
	c := l.conns[ev.Fd]
	if c == nil {
		return
	}
	if c.role == roleListener {
		l.accept()
		return
	}
	if ev.Events&unix.EPOLLOUT != 0 && c.out != nil {
		l.writable(c)
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !c.closed {
		c.readable = true
		if c.role == roleClient {
			l.clientReadable(c)
		} else {
			l.serverReadable(c)
		}
	}
}

// accept takes every pending connection off the listener (edge-triggered: until EAGAIN).
func (l *loop) accept() {
	for {
		fd, _, err := unix.Accept4(l.listenFD, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				// EMFILE and the like: the connection stays in the backlog until the next
				// client arrives and wakes the listener again.
				log.Printf("evloop: loop %d: accept: %v", l.id, err)
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err := l.register(&conn{fd: fd, role: roleClient}); err != nil {
			log.Printf("evloop: %v", err)
			unix.Close(fd)
		}
	}
}

// getBuf lends an empty buffer for bytes a partial write left over.
func (l *loop) getBuf() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b
	}
	return make([]byte, 0, 16<<10)
}

// putBuf takes a buffer back; large ones and those beyond keptBuffers go to the collector.
func (l *loop) putBuf(b []byte) {
	if cap(b) <= scratchSize && len(l.free) < keptBuffers {
		l.free = append(l.free, b[:0])
	}
}

// rawRead and rawWrite are read(2) and write(2) on non-blocking descriptors without the Go
// scheduler's entersyscall/exitsyscall: they never block, so the scheduler need not know.
func rawRead(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

// ring is a FIFO of clients waiting for a server connection: O(1) at both ends.
type ring struct {
	buf        []*conn
	head, size int
}

func (r *ring) push(c *conn) {
	if r.size == len(r.buf) {
		grown := make([]*conn, max(16, 2*len(r.buf)))
		for i := range r.size {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = c
	r.size++
}

func (r *ring) pop() *conn {
	if r.size == 0 {
		return nil
	}
	c := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return c
}
