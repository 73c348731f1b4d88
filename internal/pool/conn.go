package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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

// DialOptions are what a dial needs beyond the key.
type DialOptions struct {
	Password       string
	ConnectTimeout time.Duration
	MaxMessageSize int
	// Dial opens the TCP connection; nil means net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Dial opens and logs in a server connection for key. Authentication (scram-sha-256, md5,
// password or trust, as the server asks) is pgconn's; after login pgtide takes over the socket.
// A server's refusal comes back as a *pgconn.PgError.
func Dial(ctx context.Context, key Key, o DialOptions) (*Conn, error) {
	host, port, err := net.SplitHostPort(key.Node)
	if err != nil {
		return nil, err
	}
	cs := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable max_protocol_version=3.0",
		quote(host), quote(port), quote(key.User), quote(key.Database))
	cfg, err := pgconn.ParseConfig(cs)
	if err != nil {
		return nil, err
	}
	cfg.Password = o.Password
	cfg.ConnectTimeout = o.ConnectTimeout
	if o.Dial != nil {
		cfg.DialFunc = o.Dial
	} else {
		d := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 5 * time.Minute}
		cfg.DialFunc = d.DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return nil, pgErr
		}
		return nil, err
	}
	hj, err := pc.Hijack()
	if err != nil {
		pc.Close(context.Background())
		return nil, err
	}
	now := time.Now()
	br := bufio.NewReaderSize(hj.Conn, wire.BufferSize)
	return &Conn{
		Reader:   wire.NewReader(br, o.MaxMessageSize),
		Writer:   bufio.NewWriterSize(hj.Conn, wire.BufferSize),
		PID:      hj.PID,
		Secret:   hj.SecretKey,
		Params:   hj.ParameterStatuses,
		netConn:  hj.Conn,
		key:      key,
		created:  now,
		lastUsed: now,
	}, nil
}

// quote quotes a connection-string value.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
