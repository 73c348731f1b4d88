package pool

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"pgtide/internal/evloop"
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
	// Params holds the current values of the parameters the server reports (ParameterStatus):
	// from login, then updated by whoever reads the connection's messages.
	Params map[string]string

	// SessionState is what the holder keeps about the server's session (package session: the
	// prepared statements and settings pgtide created on it). It stays with the connection for
	// its life, so the next holder finds them; the pool never reads it, and drops it (nil) when
	// it resets the server's session itself (server_reset_query). Owned by the holder.
	SessionState any

	paramsVersion uint64 // bumped by every change to Params
	execs         uint64 // simple queries run by Exec

	netConn  net.Conn  // the socket; under tls when encrypted
	tls      *tls.Conn // what the protocol is spoken on when encrypted; nil in plain text
	tlsInfo  string    // how tls is encrypted (pgtls.Describe), set by Dial after the login; read-only after
	key      Key
	counters *Counters // the pool's, set when dialed
	pool     *pool     // the pool it counts in, set when dialed; guarded by Manager.mu
	created  time.Time
	lastUsed time.Time // set by the pool on release; guarded by Manager.mu
	gen      uint64    // the node's generation when dialed; guarded by Manager.mu
	pgen     uint64    // the pool's generation when dialed (Reconnect); guarded by Manager.mu
	cancels  int       // CancelRequests in flight for this backend (BeginCancel); guarded by Manager.mu
	parked   bool      // released while cancels > 0: lent to no one until they end; guarded by Manager.mu

	// For alive, set up once at dial so a check allocates nothing.
	raw     syscall.RawConn
	peekFn  func(uintptr) bool
	peekBuf [1]byte
	peeked  peekResult
	broken  bool
	// For FlushAndWait, likewise.
	flushWaitFn func(uintptr) bool
	flushed     bool
	flushErr    error
	// counted is the socket as Reader and Writer see it, counting what each moves.
	counted counted
	// What counted had counted when last added to counters (see Manager.Release).
	sentMark, receivedMark uint64
	answeredAt             uint64 // sent when the server last owed nothing (see MarkAnswered)
}

// counted is a connection's stream (the socket, or TLS over it) counting the bytes written (by
// the Writer's one writer) and read (by the Reader's one reader): each count has one owner.
type counted struct {
	net.Conn
	sent, received uint64
	loop           *evloop.Conn // the socket, when adopted by event loops (under TLS, if any); else nil
}

func (c *counted) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent += uint64(n)
	return n, err
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.received += uint64(n)
	return n, err
}

// countTraffic adds the bytes sent and read since the last call to the pool's counters. The
// caller owns c (it is being given back).
func (c *Conn) countTraffic() {
	c.counters.BytesSent.Add(int64(c.counted.sent - c.sentMark))
	c.counters.BytesReceived.Add(int64(c.counted.received - c.receivedMark))
	c.sentMark, c.receivedMark = c.counted.sent, c.counted.received
}

// Key returns the pool the connection belongs to.
func (c *Conn) Key() Key { return c.key }

// NetConn returns the socket, for deadlines and for closing it to interrupt a blocked read or
// write. On an encrypted connection it is the socket under TLS: never read or write it.
func (c *Conn) NetConn() net.Conn { return c.netConn }

// Encrypted reports whether the connection speaks TLS: with server_tls = "prefer" a server that
// refuses TLS gets plain text, so whoever sends a secret that must not travel in the clear checks
// this first.
func (c *Conn) Encrypted() bool { return c.tls != nil }

// MarkBroken records that the connection must not be reused: its protocol state is unknown.
func (c *Conn) MarkBroken() { c.broken = true }

func (c *Conn) close() {
	c.netConn.SetWriteDeadline(time.Now().Add(time.Second))
	if !c.broken {
		// Terminate: a clean goodbye in the server's log. Over TLS the server ends the session
		// when it reads it: no close_notify is needed after it (nor waited for).
		c.counted.Conn.Write([]byte{'X', 0, 0, 0, 4})
	}
	c.netConn.Close()
}

// alive reports whether the connection looks usable without a round trip: an idle server sends
// nothing unless it is going away (a FATAL before closing, as after pg_terminate_backend or a
// shutdown), so readable data or EOF on an idle connection means it is dead. A plain-text socket
// on the event loops is watched while idle, as PgBouncer watches its idle servers: when the loop
// has seen nothing arrive since the last answer was read (evloop.Conn.Quiet), that answers. Any
// other socket, or one the loop saw something on, costs one non-blocking recv. Either way it
// allocates nothing, and what arrives after the check is the retry's to handle (session's
// retry.go), as it would be after a peek.
//
// Over TLS the socket may also be readable with records that carry no application data and
// that the TLS layer takes for itself (a TLS 1.3 NewSessionTicket or KeyUpdate): those are read
// through TLS, briefly, to tell them from the server going away (see tlsQuiet). A FATAL the
// server sent together with the connection's last answer may sit unread in TLS's own buffer;
// the server's close follows it at once, and that the peek sees.
func (c *Conn) alive() bool {
	if c.Reader.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true // not a socket (tests)
	}
	if lc := c.counted.loop; lc != nil && c.tls == nil && lc.Quiet() {
		return true
	}
	switch c.peekSocket() {
	case peekEmpty:
		return true
	case peekData:
		return c.tls != nil && c.tlsQuiet()
	}
	return false
}

// peekResult is what a peek at an idle socket found.
type peekResult uint8

const (
	peekEmpty peekResult = iota // nothing to read
	peekData                    // bytes to read
	peekGone                    // end of stream, or an error
)

// peekSocket looks at the socket without reading or waiting.
func (c *Conn) peekSocket() peekResult {
	c.peeked = peekGone
	if err := c.raw.Read(c.peekFn); err != nil {
		return peekGone
	}
	return c.peeked
}

// peek is the RawConn callback for peekSocket.
func (c *Conn) peek(fd uintptr) bool {
	// Raw: a MSG_DONTWAIT call never blocks, so the scheduler need not know of it.
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case e == 0 && n > 0:
		c.peeked = peekData
	case e == syscall.EAGAIN:
		c.peeked = peekEmpty
	default: // EOF (n == 0 without error), or an error
		c.peeked = peekGone
	}
	return true // never wait for readiness
}

// tlsQuietWait bounds each read tlsQuiet makes: what made the socket readable is there already,
// so the wait only ends a read that has taken every record and found no application data.
const tlsQuietWait = 5 * time.Millisecond

// tlsQuiet reads through TLS what made an idle encrypted connection's socket readable, and
// reports whether it was only records the TLS layer takes for itself (then the connection is
// fine). Application data (an ErrorResponse before the server closes), close_notify, an alert or
// EOF mean the server is going away. It gives up, as dead, after a few rounds of records arriving
// while it reads.
func (c *Conn) tlsQuiet() bool {
	for range 4 {
		c.netConn.SetReadDeadline(time.Now().Add(tlsQuietWait))
		// Through counted, so the bytes count; any data read is lost, with the connection.
		n, err := c.counted.Read(c.peekBuf[:])
		c.netConn.SetReadDeadline(time.Time{}) // passed, it would fail the peek too
		if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
		// Only records TLS took for itself, so far; a timeout leaves the TLS connection usable
		// (crypto/tls treats it as temporary). Did more arrive meanwhile?
		switch c.peekSocket() {
		case peekEmpty:
			return true
		case peekGone:
			return false
		}
	}
	return false
}

// FlushAndWait sends what Writer holds and returns once the server has sent something to read,
// without the read that would find nothing in between (an answer takes the server longer than
// it takes to get here). It returns at once if Reader already holds data, and with
// os.ErrDeadlineExceeded when a read deadline passes, as a read would.
//
// The caller must have called MarkAnswered when it last had no request outstanding, and must
// have written at least one complete request that the server answers (Query, Sync,
// FunctionCall) since. If part of what was written has been sent already (more than Writer
// holds), it only flushes: an answer to that part may have arrived before the wait began, and
// the caller's read finds it as usual.
func (c *Conn) FlushAndWait() error {
	if c.raw == nil || c.Reader.Buffered() > 0 || c.counted.sent != c.answeredAt || c.Writer.Buffered() == 0 {
		return c.Writer.Flush()
	}
	// The poller's readiness is reset before the callback sends the request, so an answer
	// arriving at any moment after that ends the wait: it cannot be missed.
	c.flushed, c.flushErr = false, nil
	if err := c.raw.Read(c.flushWaitFn); err != nil {
		return err
	}
	return c.flushErr
}

// LoopConn returns the connection's socket when event loops adopted it (see package evloop), nil
// otherwise. Its holder may then wait for the server's answers with OnReadable and TryFill
// instead of blocking.
func (c *Conn) LoopConn() *evloop.Conn { return c.counted.loop }

// TryFill reports whether Reader holds the next message whole (or as much of it as it ever will:
// see wire.Reader.Ready), reading what the socket has without waiting. False: everything the
// socket had was read (TLS's buffered records too), and the holder waits with
// LoopConn().OnReadable and calls it again. A read that failed is left for the holder's next read
// to find (ready is then true). Only for a Conn with a LoopConn.
func (c *Conn) TryFill() (ready bool) {
	if c.Reader.Ready() {
		return true
	}
	lc := c.counted.loop
	if c.tls == nil && lc.Drained() {
		// Nothing more until the loop's next event (see evloop.Conn.OnReadable). Under TLS
		// the read goes on: crypto/tls may hold whole records it has not decrypted yet.
		return false
	}
	lc.SetTry(true)
	err := c.Reader.Fill()
	lc.SetTry(false)
	if err != nil && err != evloop.ErrWouldBlock {
		return true
	}
	return c.Reader.Ready()
}

// MarkAnswered records that the server owes nothing for what was sent so far: the holder has
// read the answer to every request. The pool marks a connection it lends.
func (c *Conn) MarkAnswered() { c.answeredAt = c.counted.sent }

// flushWait is the RawConn callback for FlushAndWait: the first call sends, the next (after the
// socket became readable) ends the wait; the caller's read then finds the data.
func (c *Conn) flushWait(uintptr) bool {
	if c.flushed {
		return true
	}
	c.flushed = true
	c.flushErr = c.Writer.Flush()
	return c.flushErr != nil
}

// Exec runs a simple query to completion and reports whether the server is left idle and healthy:
// an ErrorResponse is reported as a *ServerError once the server is ready again.
// It is used for check and reset queries and a login's settings, never for a client's request.
func (c *Conn) Exec(query string, timeout time.Duration) error {
	c.execs++ // a simple Query destroys the server's unnamed statement
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
		case 'S':
			body, err := c.Reader.Body()
			if err != nil {
				return err
			}
			c.recordParameterStatus(body)
		case 'E':
			body, err := c.Reader.Body()
			if err != nil {
				return err
			}
			qerr = parseServerError(body)
		case 'Z':
			body, err := c.Reader.Body()
			if err != nil {
				return err
			}
			c.MarkAnswered()
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

// recordParameterStatus applies a ParameterStatus body to Params.
func (c *Conn) recordParameterStatus(body []byte) {
	name, rest, ok := cstring(body)
	value, _, ok2 := cstring(rest)
	if ok && ok2 && c.Params[name] != value {
		c.Params[name] = value
		c.paramsVersion++
	}
}

// RecordParameterStatus applies a ParameterStatus message body the holder read from the server.
func (c *Conn) RecordParameterStatus(body []byte) { c.recordParameterStatus(body) }

// ParamsVersion changes whenever Params does: a holder that compared its settings with Params
// need not compare again while it is the same.
func (c *Conn) ParamsVersion() uint64 { return c.paramsVersion }

// Execs counts the simple queries Exec has run. Each destroys the server's unnamed prepared
// statement, so a holder that recorded one knows it is gone when Execs has moved.
func (c *Conn) Execs() uint64 { return c.execs }
