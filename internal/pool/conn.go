package pool

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unique"

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

	// The server-side session state below is what sessions need to move clients between server
	// connections. Like Reader and Writer it belongs to the connection's holder.

	// Extra holds parameters the server does not report that pgtide has SET on this connection
	// (search_path, startup options); absent means the server's default. Read it directly;
	// change it only through SetExtra, ReplaceExtra and ClearExtra.
	Extra map[string]string
	// Settings identifies the client settings (see package session) that Params and Extra were
	// last found to match, so a client with the same settings needs no comparison; the zero
	// Handle means none. Any change to Params or Extra resets it.
	Settings unique.Handle[string]
	// Statements are the prepared statements pgtide created on this connection, by their key
	// (query text, parameter types and the settings that affect parsing), so clients preparing
	// the same statement share one.
	Statements map[StmtKey]*Statement
	// Orphans are server-side names pgtide no longer tracks that may still exist on the server
	// (a Close of them was skipped after an error, or the server reported them stale). They are
	// closed with the holder's next statement work; closing a name that does not exist is not
	// an error, so an orphan is never harmful, only wasted server memory until then.
	Orphans []string
	// UnnamedKey is the key of the unnamed statement the server holds, "" when none or unknown.
	// Any simple Query destroys the server's unnamed statement: whoever sends one clears it.
	UnnamedKey string
	stmtClock  uint64

	netConn  net.Conn
	key      Key
	created  time.Time
	lastUsed time.Time // set by the pool on release; guarded by Manager.mu
	gen      uint64    // the node's generation when dialed; guarded by Manager.mu
	cancels  int       // CancelRequests in flight for this backend (BeginCancel); guarded by Manager.mu
	parked   bool      // released while cancels > 0: lent to no one until they end; guarded by Manager.mu

	// For alive, set up once at dial so a check allocates nothing.
	raw      syscall.RawConn
	peekFn   func(uintptr) bool
	peekBuf  [1]byte
	peekDead bool
	broken   bool
	// For FlushAndWait, likewise.
	flushWaitFn func(uintptr) bool
	flushed     bool
	flushErr    error
	sent        sentCounter // bytes Writer has sent; Writer writes through it
	answeredAt  uint64      // sent when the server last owed nothing (see MarkAnswered)
}

// sentCounter is the connection's socket as Writer sees it, counting what it sends.
type sentCounter struct {
	net.Conn
	n uint64
}

func (w *sentCounter) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	w.n += uint64(n)
	return n, err
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
// shutdown), so readable data or EOF on an idle connection means it is dead. It costs one
// non-blocking recv and allocates nothing.
func (c *Conn) alive() bool {
	if c.Reader.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true // not a socket (tests)
	}
	c.peekDead = false
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	return !c.peekDead
}

// peek is the RawConn callback for alive.
func (c *Conn) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	// Data or EOF (n == 0 without error) means dead; so does any error but "nothing to read".
	c.peekDead = n > 0 || err == nil || err != syscall.EAGAIN
	return true // never wait for readiness
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
	if c.raw == nil || c.Reader.Buffered() > 0 || c.sent.n != c.answeredAt || c.Writer.Buffered() == 0 {
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

// MarkAnswered records that the server owes nothing for what was sent so far: the holder has
// read the answer to every request. The pool marks a connection it lends.
func (c *Conn) MarkAnswered() { c.answeredAt = c.sent.n }

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

// Exec runs a simple query to completion and reports whether the server is left idle and healthy.
// It is used for check and reset queries, never on a client's behalf.
func (c *Conn) Exec(query string, timeout time.Duration) error {
	c.UnnamedKey = "" // a simple Query destroys the server's unnamed statement
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
			code, msg := wire.ParseErrorFields(body)
			qerr = fmt.Errorf("%s (SQLSTATE %s)", msg, code)
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
		c.Settings = unique.Handle[string]{}
	}
}

// SetExtra records that the holder SET name to value (SQL text) on the connection; "" means
// the holder RESET it.
func (c *Conn) SetExtra(name, value string) {
	c.Settings = unique.Handle[string]{}
	if value == "" {
		delete(c.Extra, name)
		return
	}
	if c.Extra == nil {
		c.Extra = make(map[string]string)
	}
	c.Extra[name] = value
}

// ReplaceExtra records that the holder made the connection's extra settings exactly m.
func (c *Conn) ReplaceExtra(m map[string]string) {
	c.Settings = unique.Handle[string]{}
	if c.Extra == nil {
		c.Extra = make(map[string]string, len(m))
	}
	clear(c.Extra)
	for k, v := range m {
		c.Extra[k] = v
	}
}

// ClearExtra records that every extra setting is back to the server's default (DISCARD ALL).
func (c *Conn) ClearExtra() {
	c.Settings = unique.Handle[string]{}
	clear(c.Extra)
}

// RecordParameterStatus applies a ParameterStatus message body the holder read from the server.
func (c *Conn) RecordParameterStatus(body []byte) { c.recordParameterStatus(body) }

// StmtKey says what a prepared statement means. Text is the Parse body after the statement
// name (query text, then parameter types), Context identifies the settings under which it was
// parsed that change what the text means (search_path, DateStyle and the like; see package
// session): a statement parsed under other settings may resolve other objects.
type StmtKey struct {
	Context unique.Handle[string]
	Text    string
}

// Statement is a prepared statement pgtide created on a server connection.
type Statement struct {
	Name  string  // the server-side name, unique in the process
	Key   StmtKey // what it means
	Ready bool    // the server confirmed the Parse (ParseComplete)
	used  uint64  // Conn.stmtClock at last use, for eviction
}

var statementSeq atomic.Uint64

// LookupStatement returns the statement prepared (or being prepared) under key, marking it used.
func (c *Conn) LookupStatement(key StmtKey) *Statement {
	st := c.Statements[key]
	if st != nil {
		c.stmtClock++
		st.used = c.stmtClock
	}
	return st
}

// AddStatement records a new statement for key under a fresh server-side name, replacing any
// statement recorded for key (which the caller must Close on the server). If that makes more
// than max statements, it also returns the least recently used one, which the caller must Close
// too; both are already forgotten here. Eviction scans the cache: O(max), once per new statement.
func (c *Conn) AddStatement(key StmtKey, max int) (st, evicted *Statement) {
	if c.Statements == nil {
		c.Statements = make(map[StmtKey]*Statement)
	}
	c.stmtClock++
	st = &Statement{Name: "pgtide_" + strconv.FormatUint(statementSeq.Add(1), 10), Key: key, used: c.stmtClock}
	if max > 0 && len(c.Statements) >= max && c.Statements[key] == nil {
		for _, x := range c.Statements {
			if evicted == nil || x.used < evicted.used {
				evicted = x
			}
		}
		delete(c.Statements, evicted.Key)
	}
	c.Statements[key] = st
	return st, evicted
}

// ForgetStatement drops st from the cache (its Parse failed or never ran, or it was closed).
func (c *Conn) ForgetStatement(st *Statement) {
	if c.Statements[st.Key] == st {
		delete(c.Statements, st.Key)
	}
}

// ForgetAllStatements empties the cache and the orphans: the server dropped every named
// statement (DEALLOCATE ALL, DISCARD ALL). The unnamed statement is not named: it survives.
func (c *Conn) ForgetAllStatements() {
	clear(c.Statements)
	c.Orphans = c.Orphans[:0]
}

// OrphanAllStatements empties the cache, keeping the names as orphans to close: the server said
// one of them no longer means what a fresh Parse of its text would (a schema change), or does not
// exist, so none is trusted.
func (c *Conn) OrphanAllStatements() {
	for _, st := range c.Statements {
		c.Orphans = append(c.Orphans, st.Name)
	}
	clear(c.Statements)
}

// ForgetSession records that the server's session was reset to its defaults by a query whose
// effect pgtide cannot follow (server_reset_query): no statements, no settings of pgtide's.
func (c *Conn) ForgetSession() {
	c.ForgetAllStatements()
	c.UnnamedKey = ""
	c.ClearExtra()
}
