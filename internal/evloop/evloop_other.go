//go:build !linux

package evloop

import (
	"errors"
	"net"
	"time"
)

// Outside Linux there are no loops: NewGroup fails, and its callers keep Go's own poller and a
// goroutine per connection.

var ErrWouldBlock = errors.New("evloop: would block")

type Group struct{}

type Conn struct{ net.Conn }

type Listener struct{}

func (g *Group) Listen(ln net.Listener, accepted func(*Conn), failed func(error) time.Duration) (*Listener, error) {
	return nil, errors.ErrUnsupported
}
func (l *Listener) Addr() net.Addr { return nil }
func (l *Listener) Close() error   { return nil }

func NewGroup(n int) (*Group, error) { return nil, errors.New("evloop: needs Linux (epoll)") }

func (g *Group) Adopt(nc net.Conn, counted bool) (*Conn, error) { return nil, errors.ErrUnsupported }
func (g *Group) Waiting() int                                   { return 0 }
func (g *Group) Len() int                                       { return 0 }
func (g *Group) Close()                                         {}
func (c *Conn) TryRead(p []byte) (int, error)                   { return 0, errors.ErrUnsupported }
func (c *Conn) OnReadable(fn func()) bool                       { return false }
func BeforeBlock()                                              {}
func OnLoop() bool                                              { return false }
func (c *Conn) Drained() bool                                   { return false }
func (c *Conn) Quiet() bool                                     { return false }
func (c *Conn) Wake()                                           {}
func (c *Conn) SetTry(on bool)                                  {}
func (c *Conn) Unregister() bool                                { return false }
func (c *Conn) Post(fn func())                                  { go fn() }
func Handoffs() int64                                           { return 0 }
