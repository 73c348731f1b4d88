package pool

import (
	"context"
	"testing"
	"time"

	"pgtide/internal/evloop"
	"pgtide/internal/pgtls"
	"pgtide/internal/wire"
)

// TestAliveOnLoops: an idle plain-text connection on the event loops is judged alive from what
// its loop has seen, without a peek at the socket, and dead once the server says goodbye.
func TestAliveOnLoops(t *testing.T) {
	g, err := evloop.NewGroup(1)
	if err != nil {
		t.Skip(err) // no event loops here (not Linux)
	}
	defer g.Close()
	_, cert := testCA(t)
	srv := newTLSServer(t, cert, true)
	prefer, err := pgtls.NewServerTLS(pgtls.Prefer, "") // asks for TLS, goes on without
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), Key{Node: srv.addr, Database: "db", User: "u"},
		DialOptions{ConnectTimeout: 10 * time.Second, MaxMessageSize: 1 << 20, TLS: prefer, Loops: g})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	lc := c.LoopConn()
	if lc == nil {
		t.Fatal("the connection is not on the loops")
	}
	peeks := 0
	c.peekFn = func(fd uintptr) bool { peeks++; return c.peek(fd) }
	server := <-srv.conns
	for range 3 {
		roundTrip(t, c)
	}
	// The loop may have reported the answer's arrival before the read took it: a read that finds
	// nothing settles that, as the loops' readers do before they wait.
	if _, err := lc.TryRead(make([]byte, 16)); err != evloop.ErrWouldBlock {
		t.Fatalf("TryRead of an idle connection: %v", err)
	}
	for range 5 {
		if !c.alive() {
			t.Fatal("an idle connection looks dead")
		}
	}
	if peeks != 0 {
		t.Errorf("%d peeks at a quiet socket, want none", peeks)
	}
	server.Write((&wire.Error{Severity: wire.SeverityFatal, Code: "57P01", Message: "terminating connection due to administrator command"}).Append(nil))
	server.Close()
	waitAlive(t, c, false, "after the server went away")
}
