package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"pgtide/internal/evloop"

	"golang.org/x/sys/unix"
)

// Sockets accepted by an endpoint's listener, on the event loops as pgtide accepts them, have
// TCP_NODELAY and TCP keep-alive on, with Go's default timings, inherited from the listener.
func TestClientKeepAlive(t *testing.T) {
	ln, err := clientListenConfig.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := evloop.NewGroup(1)
	if err != nil {
		t.Skip(err)
	}
	defer g.Close()
	got := make(chan *evloop.Conn, 1)
	l, err := g.Listen(ln, func(c *evloop.Conn) { got <- c }, func(error) time.Duration { return time.Second })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var a *evloop.Conn
	select {
	case a = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("not accepted")
	}
	defer a.Close()
	raw, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
			{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		} {
			if v, err := unix.GetsockoptInt(int(fd), o.level, o.opt); err != nil || v != o.want {
				t.Errorf("%s: %d %v, want %d", o.name, v, err, o.want)
			}
		}
	})
}
