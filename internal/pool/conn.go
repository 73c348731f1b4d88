package pool

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"pgtide/internal/wire"
)

// Conn is one logged-in server connection.
//
// While a session holds it, the session owns Reader and Writer (and may use them from one reading
// and one writing goroutine); while it is idle, the pool owns it.
type Conn struct {
	Reader *wire.Reader
	// Writer is written by the session's client loop under WriteMu. Whoever gives the Conn back
	// takes WriteMu once first, so a Flush still returning cannot overlap the next owner's writes.
	Writer  *bufio.Writer
	WriteMu sync.Mutex
	// PID and Secret are the server's BackendKeyData, for CancelRequests.
	PID    uint32
	Secret []byte
	// Params holds the ParameterStatus values the server sent at login. Read-only.
	Params map[string]string

	netConn  net.Conn
	key      Key
	created  time.Time
	lastUsed time.Time // set by the pool on release; guarded by Manager.mu
	broken   bool
}

// Key returns the pool the connection belongs to.
func (c *Conn) Key() Key { return c.key }

// NetConn returns the underlying network connection, for deadlines and for closing it to
// interrupt a blocked read.
func (c *Conn) NetConn() net.Conn { return c.netConn }

// MarkBroken records that the connection must not be reused: its protocol state is unknown.
func (c *Conn) MarkBroken() { c.broken = true }

func (c *Conn) close() {
	c.netConn.SetWriteDeadline(time.Now().Add(time.Second))
	if !c.broken {
		c.netConn.Write([]byte{'X', 0, 0, 0, 4}) // Terminate: a clean goodbye in the server's log
	}
	c.netConn.Close()
}

// alive reports whether the connection looks usable without a round trip: an idle server sends
// nothing unless it is going away (a FATAL before closing, as after pg_terminate_backend or a
// shutdown), so readable data or EOF on an idle connection means it is dead.
func (c *Conn) alive() bool {
	if c.Reader.Buffered() > 0 {
		return false
	}
	sc, ok := c.netConn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	readable := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		readable = n > 0 || (err == nil && n == 0) // data, or EOF
		if err != nil && err != syscall.EAGAIN {
			readable = true // reset or another error: dead too
		}
		return true // never wait
	})
	return err == nil && !readable
}

// Exec runs a simple query to completion and reports whether the server is left idle and healthy.
// It is used for check and reset queries, never on a client's behalf.
func (c *Conn) Exec(query string, timeout time.Duration) error {
	c.netConn.SetDeadline(time.Now().Add(timeout))
	defer c.netConn.SetDeadline(time.Time{})
	msg := wire.AppendHeader(nil, 'Q', len(query)+1)
	msg = append(append(msg, query...), 0)
	if _, err := c.Writer.Write(msg); err != nil {
		return err
	}
	if err := c.Writer.Flush(); err != nil {
		return err
	}
	var qerr error
	for {
		typ, _, err := c.Reader.Next()
		if err != nil {
			return err
		}
		switch typ {
		case 'E':
			body, err := c.Reader.Body()
			if err != nil {
				return err
			}
			code, msg := wire.ParseErrorFields(body)
			qerr = fmt.Errorf("%s (SQLSTATE %s)", msg, code)
		case 'Z':
			body, err := c.Reader.Body()
			if err != nil {
				return err
			}
			if qerr != nil {
				return qerr
			}
			if len(body) != 1 || body[0] != 'I' {
				return errors.New("server not idle after query")
			}
			return nil
		default:
			if err := c.Reader.Skip(); err != nil {
				return err
			}
		}
	}
}
