package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/pgtls"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Intent is what a transaction (or, in session mode, a session) asks of the node that serves it.
type Intent struct {
	// Route says whether a replica may serve it. Only auto endpoints follow it: a writer
	// endpoint always takes the writer, a reader endpoint always a reader.
	Route classify.Route
	// Reason is why it takes Route, for counting and logging.
	Reason classify.RouteReason
	// After, when not zero, is when the client's last transaction that may have written ended
	// (read_your_writes): a replica serves this work only once it has replayed the writer's
	// WAL position sampled by a health check that started after that moment, which is at or past
	// that transaction's commit. Until then the work goes to the writer.
	After time.Time
}

// Lease lends a server connection for work arriving on endpoint ep, whose client logged in with
// route, with intent in, from the pool of key's database and user on the node the router picks
// (key.Node is ignored; the connection's Key says which node it is on). The node stays counted,
// and the lease counted against ep's pool_size, until Release.
//
// Lease owns the waiting a transaction may need before it can start: for a lease within ep's
// pool_size and then a free connection in the pool (together bounded by query_wait_timeout),
// for a writer during a failover (bounded by failover_timeout and failover_max_waiting), and,
// when the picked node cannot be reached or refuses as it shuts down or starts up, for the
// topology to change, asking again within failover_timeout, so a client between transactions
// sees no error for a failover. ctx ends every wait (the client cancelled, or its login timed
// out). An error is a *LeaseError.
func (r *Router) Lease(ctx context.Context, ep *Endpoint, route Route, key pool.Key, in Intent) (*pool.Conn, *cluster.Node, error) {
	waited, err := ep.limit.acquire(ctx, r.config().Cluster.QueryWaitTimeout.Duration, ep.name)
	if err != nil {
		return nil, nil, &LeaseError{User: key.User, Err: err}
	}
	return r.leaseHeld(ctx, ep, route, key, in, waited)
}

// LeaseWait is the state of a lease that waits without a goroutine (see StartLease). A client
// keeps one, for one lease at a time; the zero value is ready for use. Its mutex orders
// StartLease and ResumeLease, which queue, with AbandonLease, which may come from any goroutine.
type LeaseWait struct {
	mu    sync.Mutex
	phase leasePhase // what is queued; guarded by mu
	lim   *limitWaiter
	pw    pool.PoolWait
	ep    *Endpoint
	node  *cluster.Node // picked, counted, while the pool is waited for
	// How long the wait for ep's pool_size took, once it is over (0: none; while it lasts,
	// lim knows when it began).
	limWait time.Duration
}

// clearLocked readies lw for another wait. Requires lw.mu.
func (lw *LeaseWait) clearLocked() {
	lw.phase, lw.lim, lw.pw, lw.ep, lw.node, lw.limWait = phaseNone, nil, pool.PoolWait{}, nil, nil, 0
}

type leasePhase uint8

const (
	phaseNone  leasePhase = iota
	phaseLimit            // queued for a slot of the endpoint's pool_size
	phasePool             // queued for a connection of the picked node's pool
)

// StartLease is Lease for a caller that must not block (a session on an event loop). It takes
// what is free now and returns the lease, or an error, as Lease does (what waits for other
// reasons than a queue, a dial or a failover, hands the caller's loop off first: see
// evloop.BeforeBlock). Where Lease would queue, for a slot of ep's pool_size or then for the
// picked node's pool, it queues lw instead and reports queued: done runs once when that wait
// ends, on the goroutine that ended it and under the queue's lock, so it must only hand the work
// on (evloop's Post); that work calls ResumeLease. query_wait_timeout bounds both waits
// together, and AbandonLease ends them.
func (r *Router) StartLease(ctx context.Context, ep *Endpoint, route Route, key pool.Key, in Intent, lw *LeaseWait, done func()) (c *pool.Conn, n *cluster.Node, err error, queued bool) {
	if !ep.limit.tryAcquire() {
		w := asyncWaiters.Get().(*limitWaiter)
		w.done, w.endpoint = done, ep.name
		lw.mu.Lock()
		lw.ep = ep
		// Cancelled (AbandonLease came before): nothing is queued. Checked once, here: after
		// enqueue took a slot, a cancel is queuePool's to see, which gives the slot back.
		cancelled := ctx.Err()
		if cancelled == nil && !ep.limit.enqueue(w, r.config().Cluster.QueryWaitTimeout.Duration) {
			lw.phase, lw.lim = phaseLimit, w
			lw.mu.Unlock()
			return nil, nil, nil, true
		}
		lw.mu.Unlock()
		*w = limitWaiter{}
		asyncWaiters.Put(w)
		if cancelled != nil {
			return nil, nil, &LeaseError{User: key.User, Err: cancelled}, false
		}
	}
	return r.queuePool(ctx, ep, route, key, in, lw, done, 0)
}

// ResumeLease goes on with the lease lw waits for, once StartLease's done ran: it returns the
// lease, an error, or (queued) that lw waits again, for the pool, with done (StartLease's) to run
// as StartLease says.
func (r *Router) ResumeLease(ctx context.Context, lw *LeaseWait, route Route, key pool.Key, in Intent, done func()) (c *pool.Conn, n *cluster.Node, err error, queued bool) {
	lw.mu.Lock()
	phase, ep, node, waited := lw.phase, lw.ep, lw.node, lw.limWait
	lim, pw := lw.lim, lw.pw
	lw.clearLocked()
	lw.mu.Unlock()
	switch phase {
	case phaseLimit:
		waited = time.Since(lim.start)
		granted, err := lim.granted, lim.err
		*lim = limitWaiter{}
		asyncWaiters.Put(lim)
		if !granted {
			return nil, nil, &LeaseError{User: key.User, Err: err}, false
		}
		return r.queuePool(ctx, ep, route, key, in, lw, done, waited)
	case phasePool:
		c, err := r.pools.FinishAcquire(ctx, &pw)
		key.Node = node.Addr()
		return r.leased(ctx, ep, route, key, in, node, c, err, waited)
	}
	panic("router: ResumeLease without a wait")
}

// AbandonLease ends the wait lw is queued in, if any, with err: done runs before it returns, and
// ResumeLease then returns err (as a *LeaseError).
func (r *Router) AbandonLease(lw *LeaseWait, err error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	switch lw.phase {
	case phaseLimit:
		lw.ep.limit.abandon(lw.lim, err)
	case phasePool:
		r.pools.Abandon(&lw.pw, err)
	}
}

// queuePool is StartLease once the caller holds a slot of ep's pool_size, which it waited for:
// it picks the node and takes a connection of its pool, or queues lw for one.
func (r *Router) queuePool(ctx context.Context, ep *Endpoint, route Route, key pool.Key, in Intent, lw *LeaseWait, done func(), waited time.Duration) (*pool.Conn, *cluster.Node, error, bool) {
	node, err := r.Pick(ctx, ep, route, in)
	if err != nil {
		ep.limit.release()
		return nil, nil, &LeaseError{Err: err}, false
	}
	key.Node = node.Addr()
	wait := max(r.config().Cluster.QueryWaitTimeout.Duration-waited, time.Millisecond)
	lw.mu.Lock()
	lw.ep, lw.node, lw.limWait = ep, node, waited
	var tk pool.Taken
	queued := false
	if err = ctx.Err(); err == nil { // AbandonLease came before: ctx is done (see its callers)
		tk, queued, err = r.pools.QueueAcquire(key, wait, &lw.pw, done)
	}
	if queued {
		lw.phase = phasePool
		lw.mu.Unlock()
		return nil, nil, nil, true
	}
	lw.clearLocked()
	lw.mu.Unlock()
	var c *pool.Conn
	if err == nil {
		c, err = r.pools.Take(ctx, tk) // a check or a dial: not under lw.mu, which Cancel takes
	}
	return r.leased(ctx, ep, route, key, in, node, c, err, waited)
}

// leased takes the outcome of the wait for node's pool (c, or err) as Lease does: a connection
// lent, or, when it failed on a node that may recover, Lease's own retries, on the caller's
// goroutine. waited is how long the wait for ep's pool_size took before.
func (r *Router) leased(ctx context.Context, ep *Endpoint, route Route, key pool.Key, in Intent, node *cluster.Node, c *pool.Conn, err error, waited time.Duration) (*pool.Conn, *cluster.Node, error, bool) {
	if err == nil {
		if err = r.checkWriter(c, route, in); err == nil {
			ep.leased.Add(1)
			return c, node, nil, false
		}
		r.pools.Release(c, false)
	}
	r.Done(node)
	if !nodeMayRecover(err) || ctx.Err() != nil {
		ep.limit.release()
		addWaited(err, waited) // the wait for ep's pool_size came first
		return nil, nil, r.leaseError(key, err), false
	}
	r.Suspect(node)
	c, node, err = r.leaseHeld(ctx, ep, route, key, in, waited)
	return c, node, err, false
}

// leaseHeld is Lease once the caller holds a slot of ep's pool_size, which it waited for.
func (r *Router) leaseHeld(ctx context.Context, ep *Endpoint, route Route, key pool.Key, in Intent, waited time.Duration) (*pool.Conn, *cluster.Node, error) {
	cfg := r.config()
	wait := max(cfg.Cluster.QueryWaitTimeout.Duration-waited, time.Millisecond)
	var deadline time.Time // set at the first failure: the common case reads no clock here
	retried := false
	for {
		node, err := r.Pick(ctx, ep, route, in)
		if err != nil {
			ep.limit.release()
			return nil, nil, &LeaseError{Err: err}
		}
		key.Node = node.Addr()
		c, err := r.pools.Acquire(ctx, key, wait)
		if err == nil {
			if err = r.checkWriter(c, route, in); err == nil {
				ep.leased.Add(1)
				return c, node, nil
			}
			r.pools.Release(c, false)
		}
		r.Done(node)
		if deadline.IsZero() {
			deadline = time.Now().Add(cfg.Cluster.FailoverTimeout.Duration)
		}
		// ctx done: the client cancelled, or the caller's own deadline (client_login_timeout)
		// passed, which says nothing about the node, and every further try would fail at once.
		if !nodeMayRecover(err) || ctx.Err() != nil || time.Now().After(deadline) {
			ep.limit.release()
			addWaited(err, waited) // the wait for ep's pool_size came first
			return nil, nil, r.leaseError(key, err)
		}
		r.Suspect(node)
		if node.Role() == cluster.RoleReader && !retried {
			// Another reader may serve it now: the suspect one is skipped while one is left.
			retried = true
			continue
		}
		r.logger.Debug("server unreachable; waiting for the topology to change", "server", key.Node, "err", err)
		r.Backoff(ctx, 50*time.Millisecond)
	}
}

// TryLease is Lease without any waiting: it lends a connection only if ep's pool_size and the
// picked node's pool have one free or may open one now, and fails at once otherwise (a failover
// under way, a full pool, a node that cannot be reached).
func (r *Router) TryLease(ctx context.Context, ep *Endpoint, route Route, key pool.Key, in Intent) (*pool.Conn, *cluster.Node, error) {
	if route == Writer || route == Auto && in.Route == classify.RouteWriter {
		if r.currentWriter() == nil {
			return nil, nil, &LeaseError{Err: errNoWriterNow}
		}
	}
	if !ep.limit.tryAcquire() {
		return nil, nil, &LeaseError{User: key.User, Err: &EndpointWaitError{Endpoint: ep.name, PoolSize: int(ep.limit.max.Load())}}
	}
	node, err := r.Pick(ctx, ep, route, in)
	if err != nil {
		ep.limit.release()
		return nil, nil, &LeaseError{Err: err}
	}
	key.Node = node.Addr()
	c, err := r.pools.TryAcquire(ctx, key)
	if err == nil {
		if err = r.checkWriter(c, route, in); err != nil {
			r.pools.Release(c, false)
		}
	}
	if err != nil {
		r.Done(node)
		ep.limit.release()
		return nil, nil, r.leaseError(key, err)
	}
	ep.leased.Add(1)
	return c, node, nil
}

// addWaited adds d, the wait for an endpoint's pool_size, to the wait a pool's timeout reports:
// the client reads how long it waited in all, which query_wait_timeout bounds.
func addWaited(err error, d time.Duration) {
	var te *pool.WaitTimeoutError
	if d > 0 && errors.As(err, &te) {
		te.Waited = (te.Waited + d).Round(time.Millisecond)
	}
}

// errStandby: a connection leased for writer work is on a server in hot standby. It counts as a
// node that may recover (see nodeMayRecover): the work waits for the topology to change.
var errStandby = errors.New("the server is a standby (in_hot_standby = on)")

// checkWriter makes sure a connection leased for writer work is not on a standby. The router
// picks by the health checks' last word, which is up to an interval old: right after a failover
// an old primary that was stopped may be back, restarted as a standby, while it still counts as
// the writer, and writes sent there would fail with 25006. PostgreSQL 14 and later report
// in_hot_standby at login and whenever it changes, so the connection itself says; a standby's
// connection is closed and errStandby returned. Servers that do not report it pass.
func (r *Router) checkWriter(c *pool.Conn, route Route, in Intent) error {
	if route == Reader || route == Auto && in.Route == classify.RouteReader {
		return nil
	}
	if c.Params["in_hot_standby"] == "on" {
		c.MarkBroken()
		return errStandby
	}
	return nil
}

var errNoWriterNow = &wire.Error{Severity: wire.SeverityError, Code: wire.CodeCannotConnectNow,
	Message: "pgtide: no writer at the moment"}

// Release gives back a connection Lease lent to a client of ep on node n; reset runs
// server_reset_query first (see pool.Manager.Release).
func (r *Router) Release(ep *Endpoint, c *pool.Conn, n *cluster.Node, reset bool) {
	r.pools.Release(c, reset)
	r.Done(n)
	ep.leased.Add(-1)
	ep.limit.release()
}

// leaseError makes the LeaseError for a failure to get a connection of key, logging what the
// client's message leaves out: a server refusing pgtide's own login, or pgtide unable to present
// its credential (at most once per refusalLogEvery per node and user: a storm of clients must
// not flood the log), and network failures, whose addresses stay out of clients' messages.
func (r *Router) leaseError(key pool.Key, err error) *LeaseError {
	le := &LeaseError{Node: key.Node, User: key.User, IAM: r.config().Users[key.User].IAM, Err: err}
	var se *pool.ServerError
	var te *pgtls.Error
	var sec *pool.SecretError
	switch {
	case errors.As(err, &te):
		// Its own words (x509's) and the server's address, for the operator; the client gets
		// the reason only (ClientError).
		if r.shouldLogRefusal(refusalKey{key.Node, ""}) {
			r.logger.Warn("TLS with a server failed: check server_tls and server_ca_file against the server's certificate",
				"server", key.Node, "server_tls", te.Mode, "err", te.Err)
		}
	case errors.As(err, &sec):
		if r.shouldLogRefusal(refusalKey{key.Node, key.User}) {
			r.logger.Warn("pgtide cannot log in to a server with the users file's md5 hash or SCRAM verifier (pass-through): "+sec.Reason,
				"server", key.Node, "user", key.User, "database", key.Database)
		}
	case errors.As(err, &se) && strings.HasPrefix(se.Code, "28"):
		if r.shouldLogRefusal(refusalKey{key.Node, key.User}) {
			msg := "a server refused pgtide's login: check the password pgtide has for this user (users file) against the server's"
			if le.IAM {
				msg = iamRefusalCheck("a server refused pgtide's login with an RDS IAM auth token (iam = true): check ")
			}
			r.logger.Warn(msg, "server", key.Node, "user", key.User, "database", key.Database, "sqlstate", se.Code, "err", se.Message)
		}
	case errors.As(err, new(*pool.CredentialError)):
		// pgtide could not present its secret (no RDS IAM token, or no TLS for one): a
		// configuration or environment problem, as a refusal is, logged as seldom.
		if r.shouldLogRefusal(refusalKey{key.Node, key.User}) {
			r.logger.Warn("pgtide cannot log in to a server", "server", key.Node, "user", key.User, "err", err)
		}
	case errors.As(err, &se), errors.Is(err, pool.ErrClosed), errors.Is(err, context.Canceled):
	default:
		var wt *pool.WaitTimeoutError
		if !errors.As(err, &wt) {
			r.logger.Info("could not get a server connection", "server", key.Node, "user", key.User,
				"database", key.Database, "err", err)
		}
	}
	return le
}

// refusalLogEvery bounds how often a server's refusal of pgtide's login (or pgtide's failure to
// present a credential) is logged per node and user, and a failure of TLS per node.
const refusalLogEvery = 10 * time.Second

// refusalKey is a node and a user ("" for TLS, which fails for every user alike).
type refusalKey struct{ node, user string }

// shouldLogRefusal reports whether the refusal k is to be logged now (see refusalLogEvery),
// recording it if so.
func (r *Router) shouldLogRefusal(k refusalKey) bool {
	now := time.Now()
	if last, ok := r.refusals.Load(k); ok && now.Sub(last.(time.Time)) < refusalLogEvery {
		return false
	}
	r.refusals.Store(k, now)
	return true
}

// LeaseError is why Lease lent no connection.
type LeaseError struct {
	// Node is the node last tried, "" if none was picked; User is the user pgtide logged in as.
	Node string
	User string
	// IAM is set when User logs in to the servers with RDS IAM auth tokens (iam = true), not
	// with a password of the users file.
	IAM bool
	// Err is the cause: a *wire.Error from the pick (no writer, no reader), the endpoint's
	// pool_size (*EndpointWaitError), the pool's (*pool.ServerError, *pool.WaitTimeoutError,
	// pool.ErrClosed), a TLS failure (*pgtls.Error), a network error, or ctx's.
	Err error
}

func (e *LeaseError) Error() string {
	if e.Node == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("server %s: %v", e.Node, e.Err)
}

func (e *LeaseError) Unwrap() error { return e.Err }

// ClientError says what went wrong in words for the client, as an ErrorResponse of the given
// severity with the SQLSTATE PostgreSQL (or PgBouncer, for pool limits) would give.
func (e *LeaseError) ClientError(severity string) *wire.Error {
	var we *wire.Error
	var se *pool.ServerError
	var wt *pool.WaitTimeoutError
	var te *pgtls.Error
	var sec *pool.SecretError
	var out wire.Error
	switch {
	case errors.As(e.Err, &we):
		out = *we
	case errors.As(e.Err, &te):
		out = wire.Error{Code: wire.CodeUnableToConnect, Message: "pgtide could not connect to the server: TLS failed: " + te.Reason(),
			Hint: "pgtide's log names the server and the TLS error; check [cluster] server_tls and server_ca_file."}
	case errors.As(e.Err, &sec):
		// Not the client's password either: the client authenticated with pgtide.
		out = wire.Error{Code: wire.CodeServerRejected,
			Message: fmt.Sprintf("pgtide cannot log in to server %s as user %q: %s", e.Node, e.User, sec.Reason)}
	case errors.As(e.Err, &se) && strings.HasPrefix(se.Code, "28"):
		// The server refused pgtide's own login, not the client's: the client authenticated
		// with pgtide. A wrong password (28P01) is pgtide's, not the client's: passed on as it
		// is, it would read as the client's, so it becomes 08004. Other refusals (28000: no such
		// role, no pg_hba.conf entry) are about the user the client named, and keep their code,
		// as a direct connection gets it (drivers check it).
		code := se.Code
		if code == "28P01" {
			code = wire.CodeServerRejected
		}
		out = wire.Error{Code: code,
			Message: fmt.Sprintf("server %s refused pgtide's login as user %q: %s", e.Node, e.User, se.Message),
			Hint:    "pgtide logs in to servers with the password its users file gives for the user; it must match the server's."}
		if e.IAM {
			out.Hint = iamRefusalCheck("pgtide logs in to servers as this user with an RDS IAM auth token, not a password: check ")
		}
	case errors.As(e.Err, &se):
		// The server's own answer (unknown database, too many connections, starting up):
		// passed on as it is.
		out = wire.Error{Code: se.Code, Message: se.Message, Detail: se.Detail}
	case errors.As(e.Err, &wt):
		out = wire.Error{Code: wire.CodeTooManyConnections, Message: "pgtide: query_wait_timeout: " + wt.Error()}
	case errors.As(e.Err, new(*EndpointWaitError)):
		out = wire.Error{Code: wire.CodeTooManyConnections, Message: "pgtide: query_wait_timeout: " + e.Err.Error()}
	case errors.As(e.Err, new(*pool.CredentialError)):
		// pgtide's own credential for the server, not the client's: the details (the AWS
		// credential chain's error) are in pgtide's log.
		out = wire.Error{Code: wire.CodeUnableToConnect,
			Message: fmt.Sprintf("pgtide cannot log in to the server as user %q: its credential for the server (an RDS IAM auth token) could not be made; the reason is in pgtide's log", e.User)}
		if errors.Is(e.Err, pool.ErrTLSRequired) {
			out.Message = fmt.Sprintf("pgtide cannot log in to the server as user %q: %v", e.User, pool.ErrTLSRequired)
		}
	case errors.Is(e.Err, pool.ErrClosed):
		return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeAdminShutdown, Message: "pgtide is shutting down"}
	case errors.Is(e.Err, context.Canceled):
		out = wire.Error{Code: wire.CodeQueryCanceled, Message: "canceling statement due to user request"}
	case errors.Is(e.Err, errStandby):
		out = wire.Error{Code: wire.CodeCannotConnectNow,
			Message: "pgtide: no writer available: the node last seen as the writer is now a standby (a failover is under way)"}
	default:
		// A network failure: its details (addresses) are in pgtide's log, not for the client.
		out = wire.Error{Code: wire.CodeUnableToConnect, Message: "pgtide could not connect to the server: " + wire.NetFailure(e.Err)}
	}
	out.Severity = severity
	return &out
}

// iamRefusalCheck is lead followed by what to check when a server refuses an RDS IAM auth token:
// the README's checklist (RDS IAM authentication, "When it does not work").
func iamRefusalCheck(lead string) string {
	return lead + "the IAM policy's rds-db:connect resource (region, account, cluster resource id, user name), " +
		"that the user has the rds_iam role, that IAM database authentication is on for the cluster, and [aws] region " +
		"(README: RDS IAM authentication)."
}

// nodeMayRecover reports whether a failure to get a server connection may be a node going away
// or coming up (a failover), so that the work should wait and ask again rather than fail: the
// node refused or dropped the connection, did not answer, or said it is shutting down or
// starting up.
func nodeMayRecover(err error) bool {
	if errors.As(err, new(*pool.CredentialError)) {
		return false // whatever it wraps (a token build's timeout): the node is not the cause
	}
	if errors.As(err, new(*pgtls.Error)) {
		return false // a certificate or a TLS setting, not a failover (even if a TLS alert is a net.Error)
	}
	var se *pool.ServerError
	if errors.As(err, &se) {
		switch se.Code {
		case "57P01", "57P02", "57P03":
			return true
		}
		return strings.HasPrefix(se.Code, "08")
	}
	if errors.Is(err, errStandby) {
		return true
	}
	var wt *pool.WaitTimeoutError
	if errors.As(err, &wt) || errors.As(err, new(*EndpointWaitError)) || errors.Is(err, pool.ErrClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded)
}
