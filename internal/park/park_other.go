//go:build !linux

package park

import (
	"errors"
	"syscall"
)

// ErrClosed is returned by Park after Close.
var ErrClosed = errors.New("park: parker closed")

// Parker is unavailable outside Linux: New fails, and its callers keep a goroutine per idle
// connection.
type Parker struct{}

// Ticket is one connection's place in a Parker.
type Ticket struct{}

// New fails outside Linux.
func New() (*Parker, error) { return nil, errors.New("park: needs Linux (epoll)") }

// Park fails outside Linux.
func (p *Parker) Park(c syscall.Conn, t *Ticket, wake func()) error { return errors.ErrUnsupported }

// Unpark reports false outside Linux: nothing is ever parked.
func (p *Parker) Unpark(t *Ticket) bool { return false }

// Len is 0 outside Linux.
func (p *Parker) Len() int { return 0 }

// Close does nothing outside Linux.
func (p *Parker) Close() {}
