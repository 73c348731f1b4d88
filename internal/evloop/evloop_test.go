//go:build linux

package evloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns an adopted Conn and the plain other end of a loopback TCP connection.
func pair(t *testing.T, g *Group) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Adopt(nc, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryRead(make([]byte, 1)); err != ErrWouldBlock { // drained: OnReadable may register
		t.Fatalf("TryRead of a new connection: %v", err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// waitReading polls until a goroutine waits in c's Read.
func waitReading(t *testing.T, c *Conn) {
	t.Helper()
	waitInput(t, c, func() bool { return c.r.waiting }, "no read waits")
}

// waitInput polls until cond, which reads c's input side under c.mu, holds.
func waitInput(t *testing.T, c *Conn, cond func() bool, never string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(never)
		}
		time.Sleep(time.Millisecond)
	}
}

func newGroup(t *testing.T, n int) *Group {
	t.Helper()
	g, err := NewGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

func TestReadWriteBothWays(t *testing.T) {
	g := newGroup(t, 2)
	c, peer := pair(t, g)
	data := bytes.Repeat([]byte("pgtide evloop "), 300_000) // 4.2 MB: both sides wait for room
	errc := make(chan error, 2)
	go func() { _, err := c.Write(data); errc <- err }()
	go func() { _, err := peer.Write(data); errc <- err }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("adopted side read: %v, equal %v", err, bytes.Equal(got, data))
	}
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("peer read: %v", err)
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	peer.Close()
	if n, err := c.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want EOF", n, err)
	}
}

func TestDeadlines(t *testing.T) {
	g := newGroup(t, 1)
	c, _ := pair(t, g)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	// A deadline set in the past ends a read already waiting.
	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	waitReading(t, c)
	c.SetReadDeadline(time.Unix(1, 0))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read ended by a past deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if _, err := c.TryRead(make([]byte, 1)); err != ErrWouldBlock {
		t.Fatalf("TryRead with nothing there: %v", err)
	}
}

func TestCloseEndsWaiters(t *testing.T) {
	g := newGroup(t, 1)
	c, _ := pair(t, g)
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	ran := make(chan bool, 1)
	c2, _ := pair(t, g)
	if !c2.OnReadable(func() { ran <- OnLoop() }) {
		t.Fatal("OnReadable with nothing to read registered nothing")
	}
	if g.Waiting() != 1 {
		t.Fatalf("Waiting = %d, want 1", g.Waiting())
	}
	c.Close()
	c2.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read ended by Close: %v", err)
	}
	select {
	case <-ran: // on a goroutine, or on the loop for the hang-up Close caused
	case <-time.After(10 * time.Second):
		t.Fatal("the function registered by OnReadable did not run after Close")
	}
	if g.Waiting() != 0 || g.Len() != 0 {
		t.Fatalf("after Close: Waiting %d, Len %d", g.Waiting(), g.Len())
	}
}

// A function run by the loop that must wait hands the loop away: the loop goes on serving
// others meanwhile.
func TestHandoff(t *testing.T) {
	g := newGroup(t, 1)
	a, pa := pair(t, g)
	b, pb := pair(t, g)
	release := make(chan struct{})
	aWaits := make(chan struct{})
	aDone := make(chan bool, 1)
	if !a.OnReadable(func() {
		on := OnLoop()
		BeforeBlock()
		close(aWaits)
		<-release // waits for b's function, which only the loop can run
		aDone <- on && !OnLoop()
	}) {
		t.Fatal("OnReadable a")
	}
	if !b.OnReadable(func() {
		if !OnLoop() {
			t.Error("b's function not on the loop")
		}
		close(release)
	}) {
		t.Fatal("OnReadable b")
	}
	pa.Write([]byte("a"))
	<-aWaits
	pb.Write([]byte("b"))
	select {
	case ok := <-aDone:
		if !ok {
			t.Fatal("a's function: not on the loop first, or still on it after BeforeBlock")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not serve b while a's function waited")
	}
	// Both were readable: the bytes are still there to read.
	buf := make([]byte, 1)
	if n, err := a.TryRead(buf); n != 1 || err != nil {
		t.Fatalf("a: %d %v", n, err)
	}
	if n, err := b.TryRead(buf); n != 1 || err != nil {
		t.Fatalf("b: %d %v", n, err)
	}
	if _, err := a.TryRead(buf); err != ErrWouldBlock {
		t.Fatalf("a once read: %v", err)
	}
	// The loop is still served after the hand-off.
	got := make(chan struct{})
	if !a.OnReadable(func() { close(got) }) {
		t.Fatal("OnReadable a again")
	}
	pa.Write([]byte("x"))
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no event after the hand-off")
	}
}

// A function OnReadable registered, run for an edge, reads what came: the socket is not taken
// for drained any more, whatever the last read found.
func TestOnReadableReadsAfterEdge(t *testing.T) {
	g := newGroup(t, 1)
	c, peer := pair(t, g) // drained
	for i := range 3 {
		got := make(chan string, 1)
		if !c.OnReadable(func() {
			buf := make([]byte, 64)
			if c.Drained() {
				got <- "drained"
				return
			}
			n, err := c.TryRead(buf)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(buf[:n])
		}) {
			t.Fatalf("round %d: OnReadable did not register", i)
		}
		peer.Write([]byte("ping"))
		select {
		case s := <-got:
			if s != "ping" {
				t.Fatalf("round %d: the function read %q", i, s)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no event", i)
		}
		if !c.Drained() {
			t.Fatalf("round %d: a short read left the socket not drained", i)
		}
	}
	// Bytes beyond one read: not drained, so OnReadable asks for another read.
	peer.Write(bytes.Repeat([]byte("x"), 100))
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 10)
	for {
		if _, err := c.TryRead(buf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the 100 bytes never came")
		}
		time.Sleep(time.Millisecond)
	}
	if c.Drained() || c.OnReadable(func() {}) {
		t.Fatal("a full read took the socket for drained")
	}
}

// A peer that sends its last bytes and hangs up: once the loop has seen the hang-up, a short read
// no longer counts as drained (the end of the stream is still to be read, and if the hang-up
// came with the bytes no further event will say so).
func TestHangupAfterData(t *testing.T) {
	g := newGroup(t, 1)
	c, peer := pair(t, g)
	got := make(chan error, 1)
	if !c.OnReadable(func() {
		n, err := c.TryRead(make([]byte, 64))
		if n != 4 || err != nil {
			err = fmt.Errorf("first read: %d %v", n, err)
		}
		got <- err
	}) {
		t.Fatal("OnReadable did not register")
	}
	peer.Write([]byte("last"))
	peer.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Drained() {
		if time.Now().After(deadline) {
			t.Fatal("still drained after the peer hung up")
		}
		time.Sleep(time.Millisecond)
	}
	if c.OnReadable(func() {}) {
		t.Fatal("OnReadable registered after the peer hung up")
	}
	if _, err := c.TryRead(make([]byte, 64)); err != io.EOF {
		t.Fatalf("after the last bytes: %v, want EOF", err)
	}
}

// Goroutines that are not a loop never take themselves for one, however often the loop moves
// from goroutine to goroutine (and so from thread to thread) meanwhile.
func TestOnLoopOnlyOnTheLoop(t *testing.T) {
	g := newGroup(t, 1)
	c, peer := pair(t, g)
	stop := make(chan struct{})
	wrong := make(chan struct{}, 1)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if OnLoop() {
					select {
					case wrong <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	buf := make([]byte, 1)
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		done := make(chan bool, 1)
		if !c.OnReadable(func() {
			on := OnLoop()
			BeforeBlock() // hands the loop to a new goroutine, on whatever thread
			c.TryRead(buf)
			done <- on && !OnLoop()
		}) {
			c.TryRead(buf)
			continue
		}
		peer.Write([]byte("x"))
		if !<-done {
			t.Fatalf("round %d: the function was not on the loop, or still was after BeforeBlock", i)
		}
	}
	close(stop)
	select {
	case <-wrong:
		t.Fatal("a goroutine that is no loop took itself for one")
	default:
	}
}

// Posted functions run on the loop, in order, whoever posts them (the loop itself included); one
// that hands the loop off leaves the rest to the loop's next goroutine; after Close they run on
// goroutines.
func TestPost(t *testing.T) {
	g := newGroup(t, 1)
	c, _ := pair(t, g)
	const n = 1000
	var order []int // appended on the loop only
	done := make(chan struct{})
	release := make(chan struct{})
	for i := range n {
		c.Post(func() {
			if !OnLoop() {
				t.Errorf("task %d not on the loop", i)
			}
			order = append(order, i)
			switch i {
			case n - 1:
				// Posted by the loop, to run after this one.
				c.Post(func() {
					order = append(order, n)
					close(done)
				})
			case n / 4:
				BeforeBlock() // the tasks after this one run while it waits
				<-release
			case n/4 + 1:
				close(release)
			}
		})
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("posted tasks did not all run")
	}
	if len(order) != n+1 {
		t.Fatalf("%d tasks ran, want %d", len(order), n+1)
	}
	// The task that waited appended before it did: order holds every task once, in turn.
	for i, v := range order {
		if v != i {
			t.Fatalf("task %d ran in place %d", v, i)
		}
	}

	g.Close()
	ran := make(chan bool)
	c.Post(func() { ran <- OnLoop() })
	select {
	case on := <-ran:
		if on {
			t.Error("posted after Close: ran on a loop")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("posted after Close: did not run")
	}
}

// TestAddrs: an adopted socket reports the addresses it had, as compact copies; clients of one
// listener share their local address, other sockets keep their own.
func TestAddrs(t *testing.T) {
	g := newGroup(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []*Conn
	var peers []net.Conn
	for _, counted := range []bool{true, true, false} {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c, err := g.Adopt(nc, counted)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns, peers = append(conns, c), append(peers, peer)
	}
	for i, c := range conns {
		if got, want := c.LocalAddr().String(), ln.Addr().String(); got != want {
			t.Errorf("conn %d: local %s, want %s", i, got, want)
		}
		if got, want := c.RemoteAddr().String(), peers[i].LocalAddr().String(); got != want {
			t.Errorf("conn %d: remote %s, want %s", i, got, want)
		}
		if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
			t.Errorf("conn %d: remote address is a %T", i, c.RemoteAddr())
		}
	}
	if conns[0].LocalAddr() != conns[1].LocalAddr() {
		t.Error("two clients of one listener do not share their local address")
	}
	if conns[2].LocalAddr() == conns[0].LocalAddr() {
		t.Error("a socket that is not a client's shares the clients' local address")
	}
}

// TestUnregister: a function taken back is not run by the events that follow; registered again,
// it runs on the next, or OnReadable says the input came meanwhile.
func TestUnregister(t *testing.T) {
	g := newGroup(t, 1)
	c, peer := pair(t, g) // drained
	ran := make(chan struct{}, 1)
	fn := func() { ran <- struct{}{} }
	if c.Unregister() {
		t.Fatal("Unregister with nothing registered said it took a function")
	}
	if !c.OnReadable(fn) {
		t.Fatal("OnReadable did not register")
	}
	if g.Waiting() != 1 {
		t.Fatalf("Waiting %d with a function registered", g.Waiting())
	}
	if !c.Unregister() || g.Waiting() != 0 {
		t.Fatalf("Unregister did not take the function back (Waiting %d)", g.Waiting())
	}
	peer.Write([]byte("ping"))
	// The edge is recorded, not run: registering again finds it.
	waitInput(t, c, func() bool { return c.r.ready }, "the edge never came")
	if c.OnReadable(fn) {
		t.Fatal("OnReadable registered after an edge came")
	}
	select {
	case <-ran:
		t.Fatal("a function taken back ran")
	default:
	}
	buf := make([]byte, 8)
	if n, err := c.TryRead(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("TryRead: %q, %v", buf[:n], err)
	}
	if _, err := c.TryRead(buf); err != ErrWouldBlock {
		t.Fatalf("TryRead with nothing there: %v", err)
	}
	if !c.OnReadable(fn) {
		t.Fatal("OnReadable did not register once drained")
	}
	peer.Write([]byte("pong"))
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("a registered function did not run on input")
	}
}

// TestListen: a Listener accepts every connection on its loop, each a Conn with the peer's and
// the listener's addresses that reads and writes; after Close, nothing more is accepted.
func TestListen(t *testing.T) {
	g := newGroup(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	got := make(chan *Conn, 16)
	var onLoop []bool
	l, err := g.Listen(ln, func(c *Conn) {
		onLoop = append(onLoop, OnLoop()) // only the loop runs it: no lock
		got <- c
	}, func(err error) time.Duration { t.Errorf("accept failed: %v", err); return time.Second })
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr().String() != addr {
		t.Fatalf("Addr %v, want %s", l.Addr(), addr)
	}
	for i := range 10 {
		peer, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		var c *Conn
		select {
		case c = <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d not accepted", i)
		}
		defer c.Close()
		if c.RemoteAddr().String() != peer.LocalAddr().String() || c.LocalAddr().String() != addr {
			t.Fatalf("accepted %v -> %v, dialed %v -> %v", c.RemoteAddr(), c.LocalAddr(), peer.LocalAddr(), addr)
		}
		msg := fmt.Sprintf("hello %d", i)
		if _, err := peer.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("read %q, %v", buf, err)
		}
		if _, err := c.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:2]); err != nil || string(buf[:2]) != "ok" {
			t.Fatalf("peer read %q, %v", buf[:2], err)
		}
	}
	for i, on := range onLoop {
		if !on {
			t.Fatalf("connection %d was given off the loop", i)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break // refused: nothing listens
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still listening after Close")
		}
		time.Sleep(time.Millisecond)
	}
	if len(got) != 0 {
		t.Fatal("accepted after Close")
	}
}

// TestListenFailure: out of descriptors, a Listener reports the failure, pauses as told, and
// accepts the waiting connection once descriptors are free again.
func TestListenFailure(t *testing.T) {
	g := newGroup(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	failures := make(chan error, 16)
	l, err := g.Listen(ln, func(c *Conn) { got <- c }, func(err error) time.Duration {
		failures <- err
		return 10 * time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	low := lim
	low.Cur = uint64(len(fds) + 8)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	var fillers []*os.File
	defer func() {
		for _, f := range fillers {
			f.Close()
		}
	}()
	// A descriptor an earlier test's connection frees late lets an accept through: try again.
	var peers []net.Conn
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	failed := false
	for try := 0; try < 10 && !failed; try++ {
		for {
			f, err := os.Open("/dev/null")
			if err != nil {
				break
			}
			fillers = append(fillers, f)
		}
		fillers[len(fillers)-1].Close() // room for the dialing end only
		fillers = fillers[:len(fillers)-1]
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, peer)
		select {
		case err := <-failures:
			if !errors.Is(err, unix.EMFILE) {
				t.Fatalf("failure %v, want EMFILE", err)
			}
			failed = true
		case c := <-got:
			c.Close()
		case <-time.After(10 * time.Second):
			t.Fatal("neither accepted nor failed")
		}
	}
	if !failed {
		t.Fatal("never out of descriptors")
	}
	for _, f := range fillers {
		f.Close()
	}
	fillers = nil
	unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	select {
	case c := <-got:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("not accepted once descriptors were free")
	}
}

// TestQuiet: an adopted socket is quiet after a read drained it, until the loop sees the peer
// send or hang up, and never once closed or while input is left unread.
func TestQuiet(t *testing.T) {
	g := newGroup(t, 1)
	c, peer := pair(t, g) // drained by pair's TryRead
	if !c.Quiet() {
		t.Fatal("a drained socket with nothing sent is not quiet")
	}
	quietWhile := func(want bool, never string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for c.Quiet() != want {
			if time.Now().After(deadline) {
				t.Fatal(never)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := peer.Write([]byte("E")); err != nil {
		t.Fatal(err)
	}
	quietWhile(false, "still quiet after the peer sent a byte")
	// The edge came before the read that took the byte: it stays until a read finds nothing
	// (it may have been for later bytes), and then the socket is quiet again.
	buf := make([]byte, 16)
	if n, err := c.TryRead(buf); n != 1 || err != nil {
		t.Fatalf("TryRead: %d, %v", n, err)
	}
	if c.Quiet() {
		t.Fatal("quiet with an edge no read has answered")
	}
	if _, err := c.TryRead(buf); err != ErrWouldBlock {
		t.Fatalf("TryRead of a drained socket: %v", err)
	}
	if !c.Quiet() {
		t.Fatal("not quiet after a read found nothing")
	}
	// A read that fills its buffer may have left input behind: not quiet.
	if _, err := peer.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	waitInput(t, c, func() bool { return c.r.ready }, "no edge for the peer's bytes")
	if n, err := c.TryRead(buf[:1]); n != 1 || err != nil {
		t.Fatalf("TryRead: %d, %v", n, err)
	}
	if c.Quiet() {
		t.Fatal("quiet with a byte left to read")
	}
	if n, err := c.TryRead(buf); n != 1 || err != nil {
		t.Fatalf("TryRead: %d, %v", n, err)
	}
	if _, err := c.TryRead(buf); err != ErrWouldBlock {
		t.Fatalf("TryRead of a drained socket: %v", err)
	}
	if !c.Quiet() {
		t.Fatal("not quiet after the rest was read")
	}
	peer.Close()
	quietWhile(false, "still quiet after the peer hung up")

	c2, peer2 := pair(t, g)
	c2.Close()
	if c2.Quiet() {
		t.Fatal("a closed Conn is quiet")
	}
	peer2.Close()
}

// TestWake: Wake runs the function OnReadable registered, on the Conn's loop, though nothing came
// in; with none registered, the reader's next OnReadable finds the edge and registers nothing.
func TestWake(t *testing.T) {
	g := newGroup(t, 1)
	c, _ := pair(t, g)
	ran := make(chan bool, 1)
	if !c.OnReadable(func() { ran <- OnLoop() }) {
		t.Fatal("OnReadable of a drained socket registered nothing")
	}
	c.Wake()
	select {
	case onLoop := <-ran:
		if !onLoop {
			t.Error("the woken function did not run on the loop")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wake did not run the registered function")
	}
	if _, err := c.TryRead(make([]byte, 8)); err != ErrWouldBlock {
		t.Fatalf("TryRead after a wake-up with nothing sent: %v", err)
	}
	c.Wake()
	if c.OnReadable(func() { t.Error("ran") }) {
		t.Fatal("OnReadable registered after a Wake with nothing registered")
	}
	if c.Unregister() {
		t.Fatal("Unregister found a function")
	}
}
