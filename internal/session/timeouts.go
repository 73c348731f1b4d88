package session

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Client-side timeouts (client_idle_timeout, idle_transaction_timeout, query_timeout,
// client_write_timeout) are enforced by the proxy's janitor, which calls CheckTimeouts on every
// session about once a second, as PgBouncer's does: the data path only stamps, with one atomic
// store, when the client last made progress, reading a coarse clock the janitor keeps.

// Clock is a coarse clock: the time the janitor last set, in unix nanoseconds, read with one
// atomic load. The zero Clock reads 0.
type Clock struct{ now atomic.Int64 }

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) { c.now.Store(t.UnixNano()) }

// Now returns the time last set, 0 if never (or for a nil Clock).
func (c *Clock) Now() int64 {
	if c == nil {
		return 0
	}
	return c.now.Load()
}

// noteProgress stamps the client's last request message or answered request.
func (s *Session) noteProgress() { s.progressAt.Store(s.env.Clock.Now()) }

// clientOut is the client connection as the session's writes see it: it stamps how long a write
// has been blocked (a client that stopped reading), for client_write_timeout, and records that
// one failed (clientClosed).
type clientOut struct{ s *Session }

func (o *clientOut) Write(p []byte) (int, error) {
	o.s.writeSince.Store(max(o.s.env.Clock.Now(), 1))
	n, err := o.s.conn.Write(p)
	o.s.writeSince.Store(0)
	if err != nil {
		o.s.clientClosed.Store(true) // what fails next is the client's side, not the server
	}
	return n, err
}

// Timeout reasons CheckTimeouts returns.
const (
	TimeoutIdle        = "client_idle_timeout"
	TimeoutIdleInTx    = "idle_transaction_timeout"
	TimeoutQuery       = "query_timeout"
	TimeoutClientWrite = "client_write_timeout"
)

// CheckTimeouts ends the session if, at now, it has passed one of p's client timeouts, and says
// which ("" if none):
//   - client_write_timeout: a write to the client has been blocked that long (it stopped
//     reading its results): the connection is closed, the server connection closed with it;
//   - client_idle_timeout: no request for that long outside a transaction: FATAL 57P05;
//   - idle_transaction_timeout: no request for that long inside a transaction, holding a server
//     connection: FATAL 25P03, the transaction rolled back (its server connection is closed);
//   - query_timeout: a request unanswered for that long: FATAL 57014, its server connection
//     closed (the server ends the query when it notices).
//
// The decision and the FATAL are made under the session's locks, so a request arriving at the
// same moment is either served or never started. Safe from any goroutine.
//
// A query_timeout also sends the server a CancelRequest through dial, so the query does not run
// on after its client is gone; it is sent from a goroutine counted in cancels, which the caller
// waits for, so that many timeouts at once (a network partition) cost the caller one cancel's
// time, not one each.
func (s *Session) CheckTimeouts(now time.Time, p *config.Proxy, dial func(network, addr string) (net.Conn, error), cancels *sync.WaitGroup) string {
	nowNs := now.UnixNano()
	if w := p.ClientWriteTimeout.Duration; w > 0 {
		if since := s.writeSince.Load(); since != 0 && nowNs-since > int64(w) {
			// Closing the connection is what unblocks the write; no lock is taken, since the
			// blocked writer may hold them.
			s.log().Warn("client stopped reading its results: closing it", "client_write_timeout", w)
			s.clientClosed.Store(true) // what fails next is the client's socket, not the server
			s.closeClient()
			return TimeoutClientWrite
		}
	}
	if p.ClientIdleTimeout.Duration <= 0 && p.IdleTransactionTimeout.Duration <= 0 && p.QueryTimeout.Duration <= 0 {
		return ""
	}
	// Lock order as the relay's: wmu, then mu. A session writing to its client is not idle.
	if !s.wmu.TryLock() {
		return ""
	}
	reason, cancel := s.checkIdleLocked(now, p)
	s.wmu.Unlock()
	if cancel != nil && dial != nil {
		cancels.Go(func() { sendCancel(dial, cancel) })
	}
	return reason
}

// checkIdleLocked is CheckTimeouts' part under wmu (held by the caller) and mu; it returns the
// server connection to cancel a query on, if any.
func (s *Session) checkIdleLocked(now time.Time, p *config.Proxy) (reason string, cancel *pool.Conn) {
	nowNs := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loggedIn || s.closing || s.waiting {
		return "", nil // login has its own timeout; a wait for a server, query_wait_timeout
	}
	last := s.progressAt.Load()
	if last == 0 {
		return "", nil // stamped before the clock was first set
	}
	idleFor := time.Duration(nowNs - last)
	var code, msg string
	switch {
	case s.pending > 0 || s.open:
		if t := p.QueryTimeout.Duration; t > 0 && idleFor > t {
			reason, code, msg = TimeoutQuery, wire.CodeQueryCanceled, "terminating connection due to query_timeout"
		}
	case s.server != nil && s.txStatus != 'I':
		if t := p.IdleTransactionTimeout.Duration; t > 0 && idleFor > t {
			reason, code, msg = TimeoutIdleInTx, "25P03", "terminating connection due to idle-in-transaction timeout"
		}
	default:
		if t := p.ClientIdleTimeout.Duration; t > 0 && idleFor > t {
			reason, code, msg = TimeoutIdle, "57P05", "terminating connection due to idle-session timeout"
		}
	}
	if reason == "" {
		return "", nil
	}
	if reason == TimeoutQuery && s.server != nil {
		cancel = s.server
	}
	s.closing = true
	s.interruptLocked() // a server connection inside a transaction or a request is closed, not reused
	countError(s.env.Errors, code)
	e := &wire.Error{Severity: wire.SeverityFatal, Code: code, Message: msg + " (pgtide " + reason + ")"}
	s.conn.SetWriteDeadline(now.Add(time.Second))
	if s.w != nil {
		s.w.Write(e.Append(s.w.AvailableBuffer()))
		s.w.Flush()
	} else {
		s.conn.Write(e.Append(nil))
	}
	s.closeClient()
	s.log().Info("client timed out", "timeout", reason, "idle", idleFor.Round(time.Millisecond))
	return reason, cancel
}

// sendCancel asks c's server to cancel what c's backend runs, and returns once the server has
// read the request (it closes the connection then) or cancelTimeout passed. c's PID, Secret and
// node never change, so they are read without a lock; the caller sees to it that c is not lent
// to anyone else meanwhile.
func sendCancel(dial func(network, addr string) (net.Conn, error), c *pool.Conn) error {
	nc, err := dial("tcp", c.Key().Node)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(cancelTimeout))
	nc.Write(wire.AppendCancelRequest(nil, c.PID, c.Secret))
	// Only once the server closes the connection has the request been delivered.
	var b [1]byte
	nc.Read(b[:])
	return nil
}
