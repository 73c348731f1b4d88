//go:build linux

package park

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T, l net.Listener) (client, server net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newParker(t *testing.T) *Parker {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// waitWoken waits for a wake, up to a deadline generous enough for a loaded machine.
func waitWoken(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not woken", what)
	}
}

func wakeChan() (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	return ch, func() { ch <- struct{}{} }
}

func TestWakeOnData(t *testing.T) {
	p := newParker(t)
	l := listen(t)
	c, s := pair(t, l)
	var tk Ticket
	ch, wake := wakeChan()
	if err := p.Park(s.(syscall.Conn), &tk, wake); err != nil {
		t.Fatal(err)
	}
	if p.Len() != 1 {
		t.Fatalf("Len = %d, want 1", p.Len())
	}
	c.Write([]byte("hello"))
	waitWoken(t, ch, "data")
	if p.Len() != 0 || p.Unpark(&tk) {
		t.Fatal("woken ticket still parked")
	}
	// The connection is the owner's again and reads as before.
	buf := make([]byte, 5)
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := s.Read(buf); n != 5 || err != nil {
		t.Fatalf("read after wake: %d, %v", n, err)
	}
	// Parked again (a re-arm of the same registration): woken by the next bytes only.
	if err := p.Park(s.(syscall.Conn), &tk, wake); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("woken with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	c.Write([]byte("x"))
	waitWoken(t, ch, "data after re-park")
}

func TestWakeOnDataAlreadyThere(t *testing.T) {
	p := newParker(t)
	c, s := pair(t, listen(t))
	c.Write([]byte("early"))
	// Wait until the bytes are readable, without reading them.
	rc, _ := s.(syscall.Conn).SyscallConn()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		rc.Control(func(fd uintptr) {
			var b [8]byte
			n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		})
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bytes never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	var tk Ticket
	ch, wake := wakeChan()
	if err := p.Park(s.(syscall.Conn), &tk, wake); err != nil {
		t.Fatal(err)
	}
	waitWoken(t, ch, "bytes that arrived before the park")
}

func TestWakeOnPeerClose(t *testing.T) {
	p := newParker(t)
	c, s := pair(t, listen(t))
	var tk Ticket
	ch, wake := wakeChan()
	if err := p.Park(s.(syscall.Conn), &tk, wake); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitWoken(t, ch, "peer close")
}

func TestUnpark(t *testing.T) {
	p := newParker(t)
	l := listen(t)
	c, s := pair(t, l)
	var tk Ticket
	woken := make(chan struct{}, 1)
	if err := p.Park(s.(syscall.Conn), &tk, func() { woken <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if !p.Unpark(&tk) {
		t.Fatal("Unpark of a parked ticket = false")
	}
	if p.Unpark(&tk) {
		t.Fatal("second Unpark = true")
	}
	// Its registration is still armed: the event that comes is stale, even once another
	// connection has the slot.
	c2, s2 := pair(t, l)
	var tk2 Ticket
	ch2, wake2 := wakeChan()
	if err := p.Park(s2.(syscall.Conn), &tk2, wake2); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("stale"))
	select {
	case <-woken:
		t.Fatal("an unparked ticket was woken")
	case <-ch2:
		t.Fatal("another connection's bytes woke the slot's new ticket")
	case <-time.After(100 * time.Millisecond):
	}
	c2.Write([]byte("x"))
	waitWoken(t, ch2, "the slot's new ticket")
}

func TestCloseWakesParked(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	const n = 50
	var wg sync.WaitGroup
	tickets := make([]Ticket, n)
	for i := range n {
		_, s := pair(t, l)
		wg.Add(1)
		if err := p.Park(s.(syscall.Conn), &tickets[i], wg.Done); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	wg.Wait()
	var tk Ticket
	_, s := pair(t, l)
	if err := p.Park(s.(syscall.Conn), &tk, func() {}); err != ErrClosed {
		t.Fatalf("Park after Close: %v, want ErrClosed", err)
	}
}

// TestManyParked parks a thousand connections, wakes them in any order, and checks each is
// woken exactly once.
func TestManyParked(t *testing.T) {
	p := newParker(t)
	l := listen(t)
	const n = 1000
	clients := make([]net.Conn, n)
	tickets := make([]Ticket, n)
	var mu sync.Mutex
	wokenBy := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		c, s := pair(t, l)
		clients[i] = c
		wg.Add(1)
		if err := p.Park(s.(syscall.Conn), &tickets[i], func() {
			mu.Lock()
			wokenBy[i]++
			mu.Unlock()
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := n - 1; i >= 0; i-- {
		clients[i].Write([]byte{1})
	}
	wg.Wait()
	for i, k := range wokenBy {
		if k != 1 {
			t.Fatalf("connection %d woken %d times", i, k)
		}
	}
	if p.Len() != 0 {
		t.Fatalf("Len = %d after every wake", p.Len())
	}
}
