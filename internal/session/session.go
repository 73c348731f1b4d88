package session

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"pgtide/internal/auth"
	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/evloop"
	"pgtide/internal/park"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/wire"
)

// Env is what sessions share: the pools, the authenticator and the live configuration.
type Env struct {
	Pools  *pool.Manager
	Auth   *auth.Authenticator
	Config func() *config.Config
	Logger *slog.Logger
	// Pins counts pinned clients and refused statements by reason.
	Pins *PinCounter
	// Router picks the node for each transaction (or session, in session mode).
	Router *router.Router
	// Routes counts routing decisions on the auto endpoint; nil counts nothing.
	Routes *RouteCounter
	// Errors counts the ErrorResponses sent to clients by SQLSTATE class; nil counts nothing.
	Errors *ErrorCounter
	// Functions, if set, returns what is known of a database's functions for the route
	// classifier (nil when nothing is known yet: calls of unknown functions go to the writer).
	Functions func(database string) classify.Functions
	// Clock is the coarse clock the client timeouts read (see timeouts.go); nil: none.
	Clock *Clock
	// Memory bounds the memory of large client messages held whole (see memory.go); nil: no
	// bound beyond max_message_size per client.
	Memory *MessageMemory
	// Parker, if set, holds transaction-mode clients idle for ParkAfter (0: a second) without a
	// goroutine (see park.go); the janitor parks them with ParkIfIdle.
	Parker    *park.Parker
	ParkAfter time.Duration
	// Loops, if set, adopted the client's socket (the proxy does it at accept) and its server
	// connections' (the pool, at dial): a transaction-mode client is then served on the event
	// loops between its waits, with no goroutine of its own (see loop.go).
	Loops *evloop.Group
	// KeyChanged, if set, is called when a session's PID changes during Login (session mode: the
	// server's), before the client is sent its BackendKeyData; it may change the session's
	// Secret to keep (PID, Secret) unique.
	KeyChanged func(s *Session, oldPID uint32)
}

// Session is one client connection.
type Session struct {
	env      *Env
	conn     net.Conn
	key      pool.Key         // Node is set per attachment
	endpoint *router.Endpoint // the endpoint the client came through
	route    router.Route     // the endpoint's route, fixed at login
	txMode   bool             // the endpoint's pool_mode = transaction, fixed at login

	// PID and Secret are the BackendKeyData pgtide gave this client. Set before the session is
	// registered for cancels; read-only after.
	PID    uint32
	Secret uint32

	// The client loop's state for the request in hand; nil once an idle client was trimmed or
	// parked (see active.go).
	*activeState
	src resumeReader // what the client's read buffer reads from; owned by the client loop

	wmu sync.Mutex    // guards w
	w   *bufio.Writer // to the client; nil while idle (see buffers.go)
	out clientOut     // what w writes to: conn, with writes timed (see timeouts.go)

	// For the client timeouts (see timeouts.go): when the client last sent a message or had a
	// request answered, and since when a write to it has been blocked (0: none), on Env.Clock.
	progressAt atomic.Int64
	writeSince atomic.Int64
	// clientClosed: pgtide closed the client's connection itself (client_write_timeout), or a
	// write to it failed (the client went away, or a write deadline passed).
	clientClosed atomic.Bool

	routeState // routing on the auto endpoint (see route.go)

	// Transaction-mode state owned by the client loop.
	maxPrepared int // max_prepared_statements at login; 0: no statement translation
	// maxPreparedBytes is max_prepared_statements_bytes at login.
	maxPreparedBytes int
	maxMessage       int // max_message_size at login

	mu      sync.Mutex
	server  *pool.Conn    // the attached server connection; guarded by mu
	node    *cluster.Node // the node server is on, counted by the router until released; guarded by mu
	pending int           // Query, Sync and FunctionCall sent and not yet answered; guarded by mu
	// busySince is when the server began on the client's requests now outstanding (unix ns; 0:
	// none), for pool.Counters.QueryNanos. Guarded by mu.
	busySince int64
	open      bool // extended-protocol messages sent since the last Sync; guarded by mu
	txStatus  byte // last ReadyForQuery status from the server; guarded by mu
	closing   bool // shutting down: end the session at the next transaction boundary; guarded by mu
	pinned    bool // keeps its server connection until it disconnects; guarded by mu
	// watching: the client loop, waiting for the client on a loop, watches server too (see
	// loop.go's watchServer). Owned by the client loop.
	watching bool
	// closeReason is why, when not pgtide's shutdown (see Drain); guarded by mu.
	closeReason string
	// For SHOW CLIENTS and the status page (see info.go): when the client connected (read-only
	// after New), logged in, and last got a server connection (unix ns; attachedAt 0: never).
	// Guarded by mu.
	connected  int64
	user       string // the client's user and database, read-only after New
	database   string
	loggedIn   bool
	attachedAt int64
	// The server connection is read by the client loop itself (inline) or by a relay goroutine;
	// see readInline.
	relays       sync.WaitGroup
	relayFn      func() // s.relay as a func value, made once
	relayRunning bool   // a relay goroutine reads server; guarded by mu
	relayStarted bool   // one ever did (relays may have one to wait for); guarded by mu
	// relaysLive counts relay goroutines started and not yet returned (see dropActive).
	relaysLive  atomic.Int32
	interrupted bool // server has a read deadline set by interruptLocked; guarded by mu
	// hiddenN mirrors the length of activeState.hidden for the reader (see hidden.go).
	hiddenN atomic.Int32
	// The client loop waits for a server connection under waitCtx; Cancel ends the wait with
	// errClientCancel. Made at the first wait, again only after a cancel used it up, and let go
	// of when the client is trimmed or parked (dropWaitLocked), so that the common acquire
	// allocates nothing and an idle client keeps none. Guarded by mu.
	waitCtx    context.Context
	waitCancel context.CancelCauseFunc
	waiting    bool // the client loop is getting a server connection under waitCtx

	// Session settings the client expects, re-established on each server connection it gets.
	// Guarded by mu (the relay follows ParameterStatus messages).
	params map[string]string // reported parameters, by canonical name; read-only while paramsShared
	// paramsShared is set while params is a map shared with other sessions (see
	// shareParamsLocked). Guarded by mu.
	paramsShared *paramSet
	extra        map[string]string     // other settings, by lower-case name, as SQL text
	settings     unique.Handle[string] // identifies params and extra; zero after a change (see settingsLocked)
	stmtContext  unique.Handle[string] // identifies the settings that affect parsing; likewise
	// What the client gave at startup, its session's defaults (see reset.go); read-only after
	// New. watchResets: it gave something, so its resets are followed in both pool modes.
	startupParams map[string]string
	startupExtra  map[string]string
	watchResets   bool
	// offReplicas: params and extra keep the session's work off replicas (see replicasUnsafe);
	// computed with settings. Guarded by mu.
	offReplicas bool
	// Statement tracking (see prepared.go). Guarded by mu.
	stmts     map[string]*clientStmt
	unnamed   clientStmt                // the unnamed statement; key "" when the client has none
	twUndone  []*throwaway              // throwaways whose messages were skipped (see onReadyLocked); guarded by mu
	expectSeq uint64                    // numbers expectations in sending order
	duplicate map[string]duplicateParse // by stand-in statement name (see forwardParse)
	// Per attachment (in activeState): expect, deallocs, reqSent and reqDone.
	// Effects of the Query in flight, applied at its ReadyForQuery unless it failed. Guarded by mu.
	pendingExtra *extraChange
	pendingReset *resetChange
	failed       bool // an ErrorResponse arrived since the last ReadyForQuery
	// COPY accounting (see copy.go; reqs, copySyncs and answered are in activeState). Guarded by
	// mu.
	copySeg    bool // the server is in copy-in and the client has not ended the COPY yet
	copyUnsure bool // a ReadyForQuery may be due that pending does not count: never reuse server
	// skipping: an extended-protocol message failed and the client has not sent the Sync that
	// ends the server's skipping yet (see reqlog.go). Written under mu; read by the client loop
	// without it.
	skipping atomic.Bool

	// Parking (see park.go). canPark is fixed at New; ended and runFn at Serve. noPark is
	// owned by the client loop; ticket is the Parker's.
	canPark   bool
	noPark    bool
	idleState atomic.Int32
	// lean: the session, idle on the event loops, has let go of its request state (trimIdle);
	// cleared when it takes up a request again (acquireActive).
	lean   atomic.Bool
	ticket park.Ticket
	ended  func(*Session)
	runFn  func() // s.run as a func value, made once

	// The event loops (see loop.go): lc is the client's socket when the loops serve it (set by
	// AdoptSocket before Serve, read-only after). srvFn (s.resumeServer), leaseFn (posting
	// s.resumeLease) and wakeFn are func values made once, with lc. Owned by the client loop.
	lc      *evloop.Conn
	srvFn   func()
	leaseFn func()
	wakeFn  func() // lc.Wake, made once: what watchServer registers with the server's socket
	// ext is conn as goroutines other than the client loop's see it (closing it, logging its
	// address): AdoptSocket replaces conn, under mu and wmu, and ext with it.
	ext atomic.Pointer[connRef]

	// copyIn is how the server's current copy-in was started (logQuery or logExecute), 0 outside
	// one. Owned by the server's one reader (see serverStep), so the hot path reads it without mu.
	copyIn byte
}

// New returns a session for a client that sent startup to endpoint ep, whose route and pool mode
// it keeps whatever reloads come. br holds anything the client sent after the startup packet.
func New(env *Env, conn net.Conn, br *wire.BufReader, startup *wire.Startup, ep *router.Endpoint) *Session {
	cfg := env.Config()
	user, _ := startup.Get("user")
	db, ok := startup.Get("database")
	if !ok || db == "" {
		db = user
	}
	// The strings are slices of the startup packet, which would stay with the session: a
	// handful of users and databases are shared by all the clients instead.
	user, db = unique.Make(user).Value(), unique.Make(db).Value()
	s := &Session{
		env:         env,
		conn:        conn,
		key:         pool.Key{Database: db, User: user},
		endpoint:    ep,
		route:       ep.Route(),
		txMode:      ep.TxMode(),
		activeState: newActive(br, cfg.Proxy.MaxMessageSize),
		txStatus:    'I',
		connected:   time.Now().UnixNano(),
		user:        user,
		database:    db,

		maxPrepared:      cfg.Proxy.MaxPreparedStatements,
		maxPreparedBytes: cfg.Proxy.MaxPreparedStatementsBytes,
		maxMessage:       cfg.Proxy.MaxMessageSize,
	}
	s.src.conn, s.src.first = conn, &s.activeState.first
	s.ext.Store(&connRef{conn})
	s.out.s = s
	s.relayFn = s.relay

	s.canPark = s.parkable()
	s.params, s.extra = startupParams(startup)
	s.startupParams = maps.Clone(s.params)
	s.startupExtra = maps.Clone(s.extra)
	s.watchResets = len(s.startupParams)+len(s.startupExtra) > 0
	var b [8]byte
	rand.Read(b[:])
	s.PID = binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
	s.Secret = binary.BigEndian.Uint32(b[4:])
	return s
}

// connRef holds a client connection for Session.ext.
type connRef struct{ net.Conn }

// log returns the session's logger: Env.Logger with the client's address, user and database.
// It is made at each call (logging is rare) so that an idle client does not keep one.
func (s *Session) log() *slog.Logger {
	client := "-"
	if c := s.ext.Load(); c != nil {
		client = ClientAddr(c.Conn)
	}
	return s.env.Logger.With("client", client, "user", s.user, "database", s.database)
}

// Endpoint returns the endpoint the client came through.
func (s *Session) Endpoint() *router.Endpoint { return s.endpoint }

// Key returns the pool this session draws from.
func (s *Session) Key() pool.Key { return s.key }

// Login authenticates the client and greets it. On failure the client has been sent a FATAL
// ErrorResponse and the caller should close the connection.
func (s *Session) Login(ctx context.Context) error {
	cfg := s.env.Config()
	if err := s.env.Auth.Authenticate(exchange{s}, cfg.Auth.Method, s.key.User, cfg.Users); err != nil {
		s.fail(err)
		return err
	}
	var params map[string]string
	var shared bool
	var err error
	if s.txMode {
		params, shared, err = s.loginShared(ctx, cfg)
	} else {
		params, shared, err = s.loginOwn(ctx, cfg)
	}
	if err != nil {
		s.fail(err)
		return err
	}
	// The client sees the server's values, except those it asked for at startup, as PostgreSQL
	// would report them; those are SET on each server connection the client gets. Clients of a
	// pool with the same startup parameters share one params map from here (see greetingFor),
	// others once idle (see trimIdle and park).
	s.mu.Lock()
	g := greetingFor(params, s.params, shared, s.route != router.Reader)
	s.params, s.paramsShared = g.params.m, g.params
	s.mu.Unlock()
	msg := make([]byte, 0, 9+len(g.msg)+13+6)
	msg = wire.AppendHeader(msg, 'R', 4)
	msg = binary.BigEndian.AppendUint32(msg, 0) // AuthenticationOk
	msg = append(msg, g.msg...)
	msg = wire.AppendBackendKeyData(msg, s.PID, s.Secret)
	msg = wire.AppendReadyForQuery(msg, 'I')
	if err := s.send(msg); err != nil {
		s.dropServer()
		return err
	}
	s.noteProgress()
	s.mu.Lock()
	s.loggedIn = true
	s.mu.Unlock()
	return nil
}

// loginShared prepares a transaction-mode login: the client gets a server connection per
// transaction later. It returns the server's parameters to report: the pool's (shared), or,
// for the pool's first client, those of the connection it made.
func (s *Session) loginShared(ctx context.Context, cfg *config.Config) (params map[string]string, shared bool, err error) {
	if s.routes() {
		// Any healthy node can check a login whose transactions are routed one by one: new
		// clients of the auto endpoint log in, and read, while a failover is under way.
		s.intent = router.Intent{Route: classify.RouteReader, Reason: classify.ReasonReadOnly}
		defer func() { s.intent = router.Intent{} }()
	}
	node, err := s.env.Router.Pick(ctx, s.endpoint, s.route, s.intent)
	if err != nil {
		return nil, false, fatal(err)
	}
	s.key.Node = node.Addr()
	params, shared = s.env.Pools.Params(s.key)
	s.env.Router.Done(node)
	if !shared {
		// First client of this pool: log in to the server now, so an unknown database or a
		// refused login is reported at connect time, as PostgreSQL would.
		c, n, err := s.acquire(ctx, wire.SeverityFatal)
		if err != nil {
			return nil, false, err
		}
		params = maps.Clone(c.Params)
		s.env.Router.Release(s.endpoint, c, n, false)
	}
	// Settings that are not reported, and reported ones no server was seen to take, are tried
	// here so that a bad one fails the login, as it would on a server (22023). Otherwise it
	// would fail the SETs before the client's first transaction, on a server connection with
	// another client's settings, and the transaction would run with those.
	try := s.startupToTry(params)
	if len(s.extra) > 0 || len(try) > 0 {
		c, n, err := s.acquire(ctx, wire.SeverityFatal)
		if err != nil {
			return nil, false, err
		}
		err = s.tryStartup(c, cfg, try)
		if err == nil {
			s.tookStartup(c, try, params)
		}
		s.env.Router.Release(s.endpoint, c, n, false)
		if err != nil {
			return nil, false, err
		}
	}
	return params, shared, nil
}

// loginOwn prepares a session-mode login: the client's server connection is its own for its
// whole life, so if one is free it is taken now, and the client is given that server process's
// ID in its BackendKeyData, as a direct connection would be (pg_backend_pid() agrees, and a client
// may pg_terminate_backend its own connection). Logins never wait for another client's server
// connection: with none free the client is admitted as before and waits at its first request. The secret stays pgtide's: a CancelRequest still
// goes through pgtide, which forwards it with the server's own key only while the client has a
// request running.
func (s *Session) loginOwn(ctx context.Context, cfg *config.Config) (params map[string]string, shared bool, err error) {
	c, n, err := s.env.Router.TryLease(ctx, s.endpoint, s.route, s.key, s.intent)
	if err != nil {
		// None free now (or a failure loginShared reports as it should): the client logs in
		// without one, with pgtide's own process ID, and waits for one at its first request.
		return s.loginShared(ctx, cfg)
	}
	s.key = c.Key()
	params, shared = s.env.Pools.Params(s.key)
	if !shared {
		params = maps.Clone(c.Params)
	}
	// Settled now rather than in a preamble before the first request: until then the client
	// has nothing outstanding (a shutdown ends it at once).
	if err := s.tryStartup(c, cfg, s.params); err != nil {
		s.env.Router.Release(s.endpoint, c, n, false)
		return nil, false, err
	}
	s.tookStartup(c, s.params, params)
	s.mu.Lock()
	s.attachLocked(c, n)
	s.mu.Unlock()
	old := s.PID
	s.PID = c.PID
	if s.env.KeyChanged != nil {
		s.env.KeyChanged(s, old)
	}
	return params, shared, nil
}

// dropServer gives back a server connection taken at login when the login fails after all.
func (s *Session) dropServer() {
	s.mu.Lock()
	c, n := s.server, s.node
	s.server, s.node = nil, nil
	s.mu.Unlock()
	if c != nil {
		c.MarkBroken() // a preamble may be buffered, unsent
		s.env.Router.Release(s.endpoint, c, n, false)
	}
}

// tryStartup SETs the client's startup settings on c, as a server would apply them at login, so
// that a bad one fails the login: the unreported ones (extra), and the reported ones given when
// c is to be the client's own. c's settings then match the client's.
func (s *Session) tryStartup(c *pool.Conn, cfg *config.Config, reported map[string]string) error {
	var sql []byte
	if v, ok := reported["DateStyle"]; ok && c.Params["DateStyle"] != v {
		// From the server's default, not from c's current value (another client's), as a
		// partial value ('ISO') keeps the rest of the one it replaces.
		sql = append(sql, `RESET "DateStyle";`...)
	}
	sql = appendParamSync(sql, c, reported, s.extra)
	if len(sql) == 0 {
		return nil
	}
	if err := c.Exec(string(sql), cfg.Cluster.ServerConnectTimeout.Duration); err != nil {
		c.MarkBroken() // its settings are now unknown
		// The server's own error, as a FATAL: what it says of the same setting at login
		// (22023 for a bad value, 42704 for an unknown name, 55P02 for one fixed at start).
		var se *pool.ServerError
		if errors.As(err, &se) {
			return &wire.Error{Severity: wire.SeverityFatal, Code: se.Code, Message: se.Message, Detail: se.Detail, Hint: se.Hint}
		}
		return fatal(err)
	}
	stateOf(c).replaceExtra(s.extra)
	return nil
}

// exchange adapts the client connection for package auth.
type exchange struct{ s *Session }

func (e exchange) Send(msg []byte) error { return e.s.send(msg) }

func (e exchange) Receive() (byte, []byte, error) {
	typ, _, err := e.s.r.Next()
	if err != nil {
		return 0, nil, err
	}
	body, err := e.s.r.Body()
	return typ, body, err
}

// send writes and flushes msg to the client.
func (s *Session) send(msg []byte) error {
	s.lockWriter()
	defer s.wmu.Unlock()
	if s.w == nil {
		// Nothing else is buffered: one write, no buffer needed.
		_, err := s.out.Write(msg)
		return err
	}
	if _, err := s.w.Write(msg); err != nil {
		return err
	}
	return s.w.Flush()
}

// fail sends err to the client as a FATAL ErrorResponse (errors that are not a *wire.Error are
// reported as internal errors without their text).
func (s *Session) fail(err error) {
	var we *wire.Error
	if !errors.As(err, &we) {
		if isNetErr(err) {
			return // nobody to tell
		}
		if wire.IsProtocolError(err) {
			we = &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation, Message: err.Error()}
		} else {
			// pgtide's own failure: its details are for the log, not the client.
			s.log().Error("ending a client on an internal error", "err", err)
			we = &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInternalError, Message: "pgtide: internal error (see pgtide's log)"}
		}
	}
	countError(s.env.Errors, we.Code)
	s.ext.Load().SetWriteDeadline(time.Now().Add(time.Second))
	s.send(we.Append(nil))
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne)
}

// fatal makes err (a *wire.Error from the router, or anything else) a FATAL for the client.
func fatal(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		f := *we
		f.Severity = wire.SeverityFatal
		return &f
	}
	if errors.Is(err, context.Canceled) {
		return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeQueryCanceled, Message: "canceling authentication due to user request"}
	}
	return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeUnableToConnect, Message: "pgtide could not connect to the server: " + wire.NetFailure(err)}
}

// lockWriter takes wmu for the client loop, which may run on an event loop: a relay goroutine
// may hold wmu while it waits for the client to read, for as long as client_write_timeout, so
// a wait for it hands the loop on first (evloop.BeforeBlock), as any other wait does.
func (s *Session) lockWriter() {
	if !s.wmu.TryLock() {
		evloop.BeforeBlock()
		s.wmu.Lock()
	}
}
