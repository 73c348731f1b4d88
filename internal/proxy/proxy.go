// Package proxy owns the client-facing listener: it admits connections (startup packet, TLS as
// client_tls says — SSLRequest or direct — and GSS encryption refusal, CancelRequest, protocol
// negotiation, max_client_connections), hands each admitted client to a session, keeps the
// registry of live sessions for cancels and shutdown, and applies configuration reloads (the TLS
// files' too, watched; see tls.go).
package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/admin"
	"pgtide/internal/auth"
	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/evloop"
	"pgtide/internal/park"
	"pgtide/internal/pgtls"
	"pgtide/internal/plan"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/session"
	"pgtide/internal/wire"
)

// Server is a running proxy.
type Server struct {
	cfg     atomic.Pointer[config.Config]
	pools   *pool.Manager
	env     *session.Env
	logger  *slog.Logger
	cluster *cluster.Cluster
	router  *router.Router
	// OnReload, if set before Serve, is called with each configuration a reload applies.
	OnReload func(*config.Config)
	// dialServer opens connections to servers for CancelRequests. Tests may replace it.
	dialServer func(network, addr string) (net.Conn, error)
	// secrets gives the pools' and health checks' logins their password or RDS IAM token.
	secrets *serverSecrets

	clients atomic.Int64 // client connections being served, logging in included
	// sessionEnded is s.endSession as a func value, made once: what a session calls at its end.
	sessionEnded func(*session.Session)
	acceptErrors atomic.Int64 // see accept

	// BuildVersion is what the admin side reports (SHOW VERSION, pgtide_build_info); set before
	// Serve.
	BuildVersion string
	// The operators' view (package admin): the HTTP server when admin.listen is set, the node
	// history, and whether Serve is accepting. Set by New, except listening.
	adminHTTP *admin.HTTPServer
	history   *admin.History
	listening atomic.Bool

	// reloadMu serializes reloads. cfgStamps are the sizes and times of the config and users
	// files as last read (at start, or by a reload), so WatchConfig sees changes made before it
	// started and skips those a SIGHUP already applied; guarded by reloadMu.
	reloadMu    sync.Mutex
	cfgStamps   [2]fileStamp
	watchChecks atomic.Int64 // checks WatchConfig made, for tests
	janitorRuns atomic.Int64 // rounds the janitor finished over the sessions, for tests

	// TLS in force (see tls.go): set by New, then by reloads and watchTLS. tlsStamps are the TLS
	// files' stamps as last read, tlsServerCA the server_ca_file serverTLS was read from; both
	// guarded by reloadMu.
	clientTLS   atomic.Pointer[pgtls.ClientTLS]
	serverTLS   atomic.Pointer[pgtls.ServerTLS]
	tlsStamps   [4]fileStamp
	tlsServerCA string

	mu sync.Mutex
	// listeners are the endpoints' listeners, in the configuration's endpoint order (see
	// listen.go); replaced by reloads, under reloadMu too. Guarded by mu.
	listeners []*listener
	serving   bool                           // Serve started the accept loops; guarded by mu
	accepts   sync.WaitGroup                 // one per accept loop
	sessions  map[cancelKey]*session.Session // sessions by the BackendKeyData pgtide gave them; guarded by mu
	consoles  map[cancelKey]*admin.Console   // admin console connections, likewise (see console.go); guarded by mu
	// loggingIn are the client connections accepted whose login has not ended yet (see
	// trackLogin): Shutdown ends them rather than wait for client_login_timeout. Guarded by mu.
	loggingIn map[net.Conn]struct{}
	closing   bool          // guarded by mu
	closed    chan struct{} // closed when closing is set

	conns sync.WaitGroup // one per client connection being handled (see handle)
	// logins hands an accepted connection to a login worker waiting for one (see startHandle).
	logins chan login
	bg     sync.WaitGroup // pool maintenance and cluster health checks
	stop   context.CancelFunc
}

// ClusterConfig derives the health checker's and discovery's settings from a configuration (TLS
// aside: the files it names are read by New and reloads).
func ClusterConfig(c *config.Config) cluster.Config {
	cl := &c.Cluster
	hosts := make([]cluster.Host, len(cl.Hosts))
	for i, h := range cl.Hosts {
		hosts[i] = cluster.Host{Addr: h, Weight: cl.Weights[h]}
	}
	return cluster.Config{
		Hosts:               hosts,
		HealthCheckInterval: cl.HealthCheckInterval.Duration,
		HealthCheckTimeout:  cl.HealthCheckTimeout.Duration,
		HealthCheckFailures: cl.HealthCheckFailures,
		User:                cl.HealthCheckUser,
		Password:            c.Users[cl.HealthCheckUser].ServerPassword(),
		IAM:                 c.Users[cl.HealthCheckUser].IAM, // then Token, set by New, replaces Password
		Database:            cl.HealthCheckDatabase,
		Discovery:           cl.Discovery,
		AuroraTemplate:      cl.AuroraTemplate,
		DNSName:             cl.DNSName,
		DiscoveryInterval:   cl.DiscoveryInterval.Duration,

		FunctionRefreshInterval: cl.FunctionRefreshInterval.Duration,
	}
}

// clusterConfig is ClusterConfig with the server_tls in force.
func (s *Server) clusterConfig(c *config.Config) cluster.Config {
	cc := ClusterConfig(c)
	cc.TLS = s.serverTLS.Load()
	return cc
}

// PoolSettings derives the pool manager's settings from a configuration.
func PoolSettings(c *config.Config) pool.Settings {
	cl := &c.Cluster
	return pool.Settings{
		PoolSize:             cl.PoolSize,
		MaxServerConnections: cl.MaxServerConnections,
		MinIdle:              cl.MinIdle,
		ServerLifetime:       cl.ServerLifetime.Duration,
		ServerIdleTimeout:    cl.ServerIdleTimeout.Duration,
		ServerCheckQuery:     cl.ServerCheckQuery,
		ServerCheckDelay:     cl.ServerCheckDelay.Duration,
		ServerResetQuery:     cl.ServerResetQuery,
		ServerConnectTimeout: cl.ServerConnectTimeout.Duration,
		MaxMessageSize:       1 << 30, // server messages are streamed, never held whole
		ServerConnectRate:    cl.ServerConnectRate,
		SharedBudget:         cl.BudgetMode == config.BudgetModeShared,
		ProxyInstances:       cl.ProxyInstances,
		HeadroomLifetime:     2 * cl.HealthCheckInterval.Duration, // past the next reading
	}
}

// New returns a proxy for cfg, listening on its endpoints, with the cluster's health checks
// running; it returns once every node has been checked (or health_check_timeout has passed
// twice), so the first clients find the roles known. Call Serve to accept clients.
func New(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	tlsLoaded, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	listeners, _, err := openListeners(cfg, cfg.Endpoints(), nil)
	if err != nil {
		return nil, err
	}
	s := &Server{
		pools:     pool.NewManager(PoolSettings(cfg)),
		logger:    logger,
		listeners: listeners,
		sessions:  make(map[cancelKey]*session.Session),
		loggingIn: make(map[net.Conn]struct{}),
		closed:    make(chan struct{}),
		logins:    make(chan login),
		consoles:  make(map[cancelKey]*admin.Console),
	}
	s.dialServer = s.dialCancel
	s.sessionEnded = s.endSession
	s.cfg.Store(cfg)
	s.cfgStamps = configStamps(cfg)
	s.applyTLSLocked(tlsLoaded, cfg)
	warnConfig(logger, cfg)
	s.pools.Logger = logger
	authenticator := auth.NewAuthenticator()
	authenticator.Logger = logger
	s.secrets = newServerSecrets(s.cfg.Load, authenticator, logger)
	s.pools.Secret = s.secrets.secret
	s.pools.ServerTLS = s.serverTLS.Load
	ccfg := s.clusterConfig(cfg)
	ccfg.Token = s.secrets.token
	s.cluster = cluster.New(ccfg, logger)
	s.shareBudgets(cfg)
	// A node that went down or changed role keeps none of its idle server connections, and the
	// ones in use are closed when they come back: writes must not reach an old writer.
	s.cluster.Subscribe(func(e cluster.Event) {
		if (e.PrevUp && !e.Up) || (e.PrevRole != e.Role && e.PrevRole != cluster.RoleUnknown) || e.Removed {
			s.pools.CloseNode(e.Node.Addr())
		}
		if e.Removed {
			s.secrets.tokens.Forget(e.Node.Addr())
		}
		if e.Ceiling {
			s.applyBudget(e.Node, s.cfg.Load())
		}
	})
	s.history = admin.NewHistory(s.cluster)
	s.router = router.New(s.cluster, s.pools, s.cfg.Load, s.logger)
	eps, _ := s.router.SetEndpoints(cfg)
	for i, ep := range eps {
		listeners[i].ep.Store(ep)
	}
	s.env = &session.Env{Pools: s.pools, Auth: authenticator, Config: s.cfg.Load, Logger: logger,
		Pins: new(session.PinCounter), Routes: new(session.RouteCounter), Errors: new(session.ErrorCounter),
		Router: s.router, KeyChanged: s.rekey, Functions: s.functions, Clock: new(session.Clock),
		Memory: session.NewMessageMemory(cfg.Proxy.MessageMemory)}
	s.env.Clock.Set(time.Now())
	if parker, err := park.New(); err != nil {
		logger.Warn("idle clients will each keep a goroutine", "err", err)
	} else {
		s.env.Parker = parker
	}
	if loops, err := evloop.NewGroup(eventLoops()); err != nil {
		logger.Warn("no event loops: every client keeps a goroutine", "err", err)
	} else {
		s.env.Loops = loops
		s.pools.Loops = loops
	}
	if cfg.Admin.Listen != "" {
		h, err := admin.ListenHTTP(cfg.Admin.Listen, s, logger)
		if err != nil {
			for _, l := range listeners {
				l.close()
			}
			if s.env.Parker != nil {
				s.env.Parker.Close()
			}
			if s.env.Loops != nil {
				s.env.Loops.Close()
			}
			return nil, err
		}
		s.adminHTTP = h
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.bg.Add(5)
	go func() {
		defer s.bg.Done()
		s.pools.Run(ctx, time.Second)
	}()
	go func() {
		defer s.bg.Done()
		s.watchTLS(ctx)
	}()
	go func() {
		defer s.bg.Done()
		s.janitor(ctx)
	}()
	go func() {
		defer s.bg.Done()
		s.logStats(ctx)
	}()
	go func() {
		defer s.bg.Done()
		s.cluster.Run(ctx)
	}()
	s.bg.Go(func() { s.secrets.tokens.Run(ctx, time.Minute) })
	wctx, wcancel := context.WithTimeout(ctx, 2*cfg.Cluster.HealthCheckTimeout.Duration)
	s.cluster.WaitChecked(wctx)
	wcancel()
	s.router.CheckEntries()
	return s, nil
}

// Addr returns the address of the first endpoint (auto, else writer, else reader, else the first
// [[endpoint]] table).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listeners[0].socks[0].Addr()
}

// EndpointAddr returns the address of the [proxy] shorthand endpoint of route r ("auto",
// "writer", "reader"), or nil if it is not configured.
func (s *Server) EndpointAddr(r router.Route) net.Addr { return s.NamedEndpointAddr(r.String()) }

// NamedEndpointAddr returns the address of the endpoint named name, or nil if there is none.
func (s *Server) NamedEndpointAddr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if l.name == name {
			return l.socks[0].Addr()
		}
	}
	return nil
}

// EndpointAddrs returns every endpoint's name and address, in the configuration's order.
func (s *Server) EndpointAddrs() (names []string, addrs []net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		names, addrs = append(names, l.name), append(addrs, l.socks[0].Addr())
	}
	return names, addrs
}

// Cluster returns the live view of the nodes.
func (s *Server) Cluster() *cluster.Cluster { return s.cluster }

// Router returns the router (for tests and, later, the admin console).
func (s *Server) Router() *router.Router { return s.router }

// Pools returns the pool manager (for tests and, later, the admin console).
func (s *Server) Pools() *pool.Manager { return s.pools }

// Pins returns the counts of pinned clients and refused statements by reason.
func (s *Server) Pins() *session.PinCounter { return s.env.Pins }

// applyBudget gives n's pools the budget its ceiling allows (see config.Cluster.SafetyFactor and
// BudgetMode), when its health check has read the ceiling.
func (s *Server) applyBudget(n *cluster.Node, cfg *config.Config) {
	maxConns, reserved, ok := n.Ceiling()
	if !ok {
		return
	}
	budget := plan.Budget(maxConns, reserved, cfg.Cluster.SafetyFactor)
	if cfg.Cluster.BudgetMode == config.BudgetModeStatic {
		budget /= cfg.Cluster.ProxyInstances
	}
	if budget < 1 {
		budget = 1 // a node that allows any connection at all gets one
	}
	if prev := s.pools.SetNodeBudget(n.Addr(), budget); prev != budget && budget < cfg.Cluster.MaxServerConnections {
		s.logger.Info("node budget", "node", n.Addr(), "budget", budget, "max_connections", maxConns, "reserved", reserved,
			"safety_factor", cfg.Cluster.SafetyFactor, "proxy_instances", cfg.Cluster.ProxyInstances, "budget_mode", cfg.Cluster.BudgetMode)
	}
}

// functions returns what the writer's catalog says of database's functions, nil before it was
// read. Sessions ask only for databases their client logged in to.
func (s *Server) functions(database string) classify.Functions {
	if fs := s.cluster.Functions(database); fs != nil {
		return fs
	}
	return nil // not a nil *FunctionSet in an interface
}

// Routes returns the counts of routing decisions on the auto endpoint.
func (s *Server) Routes() *session.RouteCounter { return s.env.Routes }

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// ClientCount returns the number of client connections being served.
func (s *Server) ClientCount() int { return int(s.clients.Load()) }

// Serve accepts clients on every endpoint (and serves admin.listen) until Shutdown. It returns
// nil after a shutdown.
func (s *Server) Serve() error {
	if s.adminHTTP != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			if err := s.adminHTTP.Serve(); err != nil {
				s.logger.Error("admin.listen stopped", "err", err)
			}
		}()
	}
	s.mu.Lock()
	if !s.closing {
		s.serving = true
		for _, l := range s.listeners {
			s.startAcceptLocked(l)
		}
	}
	s.mu.Unlock()
	s.listening.Store(true)
	<-s.closed
	s.accepts.Wait()
	return nil
}

// startAcceptLocked starts l's accept loops. Requires mu.
func (s *Server) startAcceptLocked(l *listener) {
	for _, sock := range l.socks {
		if !s.listenOnLoopsLocked(l, sock) {
			s.accepts.Go(func() { s.accept(l, sock) })
		}
	}
}

// Bounds of the pause after a failed accept: it doubles from acceptBackoffMin while accepting
// keeps failing, up to acceptBackoffMax (as net/http's Server does).
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// accept serves one socket of l until Shutdown, or a reload that no longer uses l, closes it.
// Any other failure to accept (out of file descriptors, a connection aborted before it was
// accepted, ...) is an episode to wait out, never a reason to stop serving: it is logged when it
// starts and when it ends, and counted.
func (s *Server) accept(l *listener, sock net.Listener) {
	var backoff time.Duration
	failing := false // in an episode of failures
	for {
		conn, err := sock.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || l.closed.Load() {
				return
			}
			s.acceptErrors.Add(1)
			if !failing {
				failing = true
				s.logger.Warn("cannot accept client connections; retrying", "endpoint", l.ep.Load().Name(),
					"listen", sock.Addr().String(), "err", err)
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			select {
			case <-time.After(backoff):
			case <-s.closed:
			}
			continue
		}
		if failing {
			s.logger.Info("accepting client connections again", "endpoint", l.ep.Load().Name(), "listen", sock.Addr().String())
			failing, backoff = false, 0
		}
		s.conns.Add(1)
		n := s.clients.Add(1)
		if !s.trackLogin(conn) {
			conn.Close()
			s.clients.Add(-1)
			s.conns.Done()
			continue
		}
		s.startHandle(login{conn: conn, ep: l.ep.Load(), n: n})
	}
}

// A login runs on a goroutine, and a goroutine's stack starts small (2 KiB) and is grown, by
// copying it, as the login goes deeper. At a connection per transaction (pgbench -C) that copy
// and the goroutine's start were about 7 % of pgtide's instructions per connection. So the
// goroutine that handled a connection stays, for loginWorkerIdle, to handle the next one, with
// its stack as it grew: startHandle gives a new connection to such a worker if one is waiting,
// and starts one otherwise. A connection whose session keeps its goroutine (session mode, TLS)
// keeps the worker for as long; the workers waiting are at most those that were busy at once.

// login is an accepted connection for handle.
type login struct {
	conn net.Conn
	ep   *router.Endpoint
	// What a loop read of the startup packets already (see preLogin): a reader of conn holding
	// the rest, and the encryption requests answered; nil, 0: nothing.
	br           *wire.BufReader
	negotiations int
	n            int64 // the client connections, this one included, when it was accepted
}

// loginWorkerIdle is how long a login worker waits for another connection before it ends.
const loginWorkerIdle = 2 * time.Second

// startHandle runs handle for lg on a waiting login worker, or on a new one.
func (s *Server) startHandle(lg login) {
	select {
	case s.logins <- lg:
	default:
		go s.loginWorker(lg)
	}
}

// loginWorker handles lg, then the connections startHandle gives it, until none came for
// loginWorkerIdle or the server closes.
func (s *Server) loginWorker(lg login) {
	var idle *time.Timer
	for {
		s.handle(lg)
		lg = login{}
		if idle == nil {
			idle = time.NewTimer(loginWorkerIdle)
		} else {
			idle.Reset(loginWorkerIdle)
		}
		select {
		case lg = <-s.logins:
		case <-idle.C:
			return
		case <-s.closed:
			idle.Stop()
			return
		}
	}
}

// AcceptErrors returns how many times accepting a client connection failed (see accept).
func (s *Server) AcceptErrors() int64 { return s.acceptErrors.Load() }

// eventLoops is how many event loops serve the clients: one per CPU Go may use (GOMAXPROCS) but
// one, which is left to everything else (logins, hand-offs, health checks, the collector). A loop
// that waits in epoll_wait holds its thread in a system call; with every P behind one, the
// scheduler's monitor would take them back and give them out again at every wait.
func eventLoops() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// ParkedClients returns how many clients waiting for their next request are held without a
// goroutine (see session's park.go and loop.go).
func (s *Server) ParkedClients() int {
	n := 0
	if s.env.Parker != nil {
		n += s.env.Parker.Len()
	}
	if s.env.Loops != nil {
		n += s.env.Loops.Waiting()
	}
	return n
}

// handle logs lg's connection in, through its endpoint, and serves it. The caller took the
// connection's count in s.clients and its place in s.conns; handle gives them back if the
// connection does not become a session, else the session's end does, whichever goroutine runs it
// (the session may outlive this one: see session.Session.Serve).
func (s *Server) handle(lg login) {
	conn, ep, br := lg.conn, lg.ep, lg.br
	accepted := conn // conn may become its TLS connection
	loggingIn := true
	defer func() {
		if loggingIn {
			s.untrackLogin(accepted)
		}
	}()
	end := func() {
		conn.Close() // the TLS connection, once encrypted
		s.clients.Add(-1)
		s.conns.Done()
	}
	defer func() {
		if end != nil {
			end()
		}
	}()
	cfg := s.cfg.Load()
	ct := s.clientTLS.Load() // this connection's, whatever reloads come
	if br == nil {
		// client_login_timeout bounds the TLS handshake too. (A loop that read the startup
		// packets set it at accept.)
		conn.SetDeadline(time.Now().Add(cfg.Proxy.ClientLoginTimeout.Duration))
		br = session.NewClientReader(conn)
	}
	conn, br, st, err := s.readStartup(conn, br, ct, lg.negotiations)
	if err != nil || st == nil {
		return
	}
	if lg.n > int64(cfg.Proxy.MaxClientConnections) {
		s.refuse(conn, st, wire.CodeTooManyConnections, "sorry, too many clients already")
		return
	}
	if v, ok := st.Get("replication"); ok && v != "false" && v != "off" && v != "no" && v != "0" {
		s.refuse(conn, st, wire.CodeFeatureNotSupported, "pgtide does not support replication connections")
		return
	}
	if e := tlsRefusal(conn, st, ct); e != nil {
		s.refuseWith(conn, st, e)
		return
	}
	if wantsConsole(st) {
		s.untrackLogin(accepted) // Shutdown ends consoles its own way (shutdownConsoles)
		loggingIn = false
		evloop.BeforeBlock() // its commands may wait (PAUSE, WAIT_CLOSE): not on a loop
		s.serveConsole(conn, br, st, cfg)
		return
	}

	sess := session.New(s.env, conn, br, st, ep)
	if !s.register(sess) {
		s.refuse(conn, st, wire.CodeAdminShutdown, "pgtide is shutting down")
		return
	}
	closeConn := end
	end = func() {
		s.unregister(sess)
		closeConn()
	}
	if ep.Removed() {
		// A reload removed the endpoint after this client was accepted (its session list was
		// taken before this one registered): the client ends before its first transaction.
		sess.Drain(endpointRemoved(ep))
	}
	if err := s.negotiate(conn, st); err != nil {
		return
	}
	loginCtx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.ClientLoginTimeout.Duration)
	err = sess.Login(loginCtx)
	cancel()
	if err != nil {
		user, _ := st.Get("user")
		db, _ := st.Get("database")
		s.logger.Info("client login failed", "client", session.ClientAddr(conn), "user", user, "database", db, "err", err)
		return
	}
	s.untrackLogin(accepted) // a session now: Shutdown ends it as one
	loggingIn = false
	conn.SetDeadline(time.Time{})
	sess.AdoptSocket(s.env.Loops) // served on the event loops from now on (see session's loop.go)
	s.logger.Debug("client connected", "client", session.ClientAddr(conn), "endpoint", ep.Name(),
		"user", sess.Key().User, "database", sess.Key().Database)
	// From here the session's end is endSession's, which closes nothing: the session closes its
	// connection itself. Nothing here may stay with the session, conn included: an idle
	// client's memory is its session's.
	end = nil
	sess.Serve(s.sessionEnded)
}

// LoggingIn returns how many client connections are logging in: accepted, not yet a session.
func (s *Server) LoggingIn() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.loggingIn)
}

// trackLogin records conn, just accepted, as logging in, and reports whether it may (not once
// Shutdown began).
func (s *Server) trackLogin(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.loggingIn[conn] = struct{}{}
	return true
}

// untrackLogin records that conn's login ended, one way or another.
func (s *Server) untrackLogin(conn net.Conn) {
	s.mu.Lock()
	delete(s.loggingIn, conn)
	s.mu.Unlock()
}

// endSession is what a served session's end gives back (see handle): its registration, the
// client's count and its place in s.conns.
func (s *Server) endSession(sess *session.Session) {
	if s.logger.Enabled(context.Background(), slog.LevelDebug) {
		ci := sess.Info()
		s.logger.Debug("client disconnected", "client", ci.Addr, "user", ci.User, "database", ci.Database,
			"duration", time.Since(ci.Connected).Round(time.Millisecond))
	}
	s.unregister(sess)
	s.clients.Add(-1)
	s.conns.Done()
}

// refuse ends a client that sent its startup packet with a FATAL ErrorResponse, logging why at
// info and counting it.
func (s *Server) refuse(conn net.Conn, st *wire.Startup, code, msg string) {
	s.refuseWith(conn, st, &wire.Error{Severity: wire.SeverityFatal, Code: code, Message: msg})
}

// refuseWith is refuse with e, a FATAL, as it is.
func (s *Server) refuseWith(conn net.Conn, st *wire.Startup, e *wire.Error) {
	user, _ := st.Get("user")
	db, _ := st.Get("database")
	s.logger.Info("client refused", "client", session.ClientAddr(conn), "user", user, "database", db, "sqlstate", e.Code, "reason", e.Message)
	s.send(conn, e)
}

// readStartup reads startup packets, answering encryption requests, until a StartupMessage. It
// encrypts the connection when the client asks (SSLRequest) or starts TLS at once (direct TLS)
// and ct offers TLS, over TCP; GSS encryption is always refused. It returns the connection and the
// reader to go on with (encrypted, after a handshake), and a nil Startup (no error) when the
// connection was a CancelRequest, now handled.
func (s *Server) readStartup(conn net.Conn, br *wire.BufReader, ct *pgtls.ClientTLS, negotiations int) (net.Conn, *wire.BufReader, *wire.Startup, error) {
	var buf [256]byte
	offered := ct.Offered() && !isUnix(conn)
	encrypted := false
	for ; ; negotiations++ {
		if negotiations == 0 {
			// A ClientHello first: direct TLS (PostgreSQL 17), without an SSLRequest.
			if first, err := br.Peek(1); err == nil && first[0] == wire.TLSHandshakeByte {
				if !offered {
					// PostgreSQL 17 closes the connection: the client would not read a
					// plain-text error in the middle of its handshake.
					s.logger.Info("direct TLS from a client, but TLS is off", "client", session.ClientAddr(conn),
						"client_tls", ct.Mode(), "unix_socket", isUnix(conn))
					return conn, nil, nil, errors.New("direct TLS, but TLS is off")
				}
				evloop.BeforeBlock() // a handshake: not on a loop
				tc, tbr, err := s.encrypt(conn, br, ct, true)
				if err != nil {
					return conn, nil, nil, err
				}
				conn, br, encrypted = tc, tbr, true
				continue
			}
		}
		st, err := wire.ReadStartup(br, buf[:0])
		if err != nil {
			var ue *wire.UnsupportedProtocolError
			switch {
			case errors.As(err, &ue):
				s.reject(conn, wire.CodeFeatureNotSupported, err.Error())
			case wire.IsProtocolError(err):
				s.reject(conn, wire.CodeProtocolViolation, err.Error())
			}
			return conn, nil, nil, err
		}
		switch st.Kind {
		case wire.KindSSLRequest, wire.KindGSSENCRequest:
			if negotiations >= 2 || br.Buffered() > 0 {
				// Data after an encryption request, before our answer, is a buffer-stuffing
				// attempt (CVE-2021-23222 in clients); PostgreSQL refuses it too. Checked
				// before a handshake, this also keeps any byte read in plain text from being
				// taken for one sent over TLS.
				s.reject(conn, wire.CodeProtocolViolation, "unexpected data after encryption request")
				return conn, nil, nil, errors.New("unexpected data after encryption request")
			}
			if st.Kind == wire.KindSSLRequest && encrypted {
				s.reject(conn, wire.CodeProtocolViolation, "SSLRequest over a connection already encrypted")
				return conn, nil, nil, errors.New("SSLRequest over TLS")
			}
			if st.Kind == wire.KindSSLRequest && offered {
				evloop.BeforeBlock() // a handshake: not on a loop
				tc, tbr, err := s.encrypt(conn, br, ct, false)
				if err != nil {
					return conn, nil, nil, err
				}
				conn, br, encrypted = tc, tbr, true
				continue
			}
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return conn, nil, nil, err
			}
		case wire.KindCancel:
			evloop.BeforeBlock() // it dials the server: not on a loop
			s.cancel(st)
			return conn, nil, nil, nil
		default:
			return conn, br, st, nil
		}
	}
}

// negotiate sends NegotiateProtocolVersion when the client asked for a newer minor version or for
// protocol options, as PostgreSQL does; pgtide speaks 3.0 and no options.
func (s *Server) negotiate(conn net.Conn, st *wire.Startup) error {
	var unknown []string
	kept := st.Params[:0]
	for _, p := range st.Params {
		if strings.HasPrefix(p.Name, "_pq_.") {
			unknown = append(unknown, p.Name)
			continue
		}
		kept = append(kept, p)
	}
	st.Params = kept
	if st.Protocol == wire.ProtocolVersion30 && len(unknown) == 0 {
		return nil
	}
	_, err := conn.Write(wire.AppendNegotiateProtocolVersion(nil, wire.ProtocolVersion30, unknown))
	return err
}

// reject sends a FATAL ErrorResponse to a client that is not (yet) a session, and counts it.
func (s *Server) reject(conn net.Conn, code, msg string) {
	s.send(conn, &wire.Error{Severity: wire.SeverityFatal, Code: code, Message: msg})
}

// send is reject with e as it is.
func (s *Server) send(conn net.Conn, e *wire.Error) {
	s.env.Errors.Count(e.Code)
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.Write(e.Append(nil))
}

// cancelKey is a session's BackendKeyData. A session-mode client is given its server process's
// ID, so PIDs alone may repeat (two nodes, or a pgtide PID equal to a server's): the pair does
// not.
type cancelKey struct{ pid, secret uint32 }

func keyOf(sess *session.Session) cancelKey { return cancelKey{sess.PID, sess.Secret} }

func (s *Server) register(sess *session.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	for s.keyTakenLocked(keyOf(sess)) || sess.PID == 0 {
		sess.PID++
		sess.PID &= 0x7fffffff
	}
	s.sessions[keyOf(sess)] = sess
	return true
}

// rekey moves sess to its new PID (see session.Env.KeyChanged), changing its secret if another
// session has that pair.
func (s *Server) rekey(sess *session.Session, oldPID uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := (cancelKey{oldPID, sess.Secret}); s.sessions[old] == sess {
		delete(s.sessions, old)
	}
	for s.keyTakenLocked(keyOf(sess)) {
		sess.Secret = rand.Uint32()
	}
	s.sessions[keyOf(sess)] = sess
}

func (s *Server) unregister(sess *session.Session) {
	s.mu.Lock()
	if s.sessions[keyOf(sess)] == sess {
		delete(s.sessions, keyOf(sess))
	}
	s.mu.Unlock()
}

// cancel forwards a CancelRequest to the session it names, if the secret matches.
func (s *Server) cancel(st *wire.Startup) {
	if len(st.Secret) != 4 {
		return // as PostgreSQL: no answer either way
	}
	s.mu.Lock()
	key := cancelKey{st.PID, binary.BigEndian.Uint32(st.Secret)}
	sess, console := s.sessions[key], s.consoles[key]
	s.mu.Unlock()
	if console != nil {
		console.Cancel()
	}
	if sess == nil {
		return
	}
	sess.Cancel(s.dialServer)
}

// Shutdown stops accepting clients, ends every session at its next transaction boundary and waits
// for them, up to the config's shutdown_timeout; sessions still in a transaction after that are
// closed. Then it closes the pools.
func (s *Server) Shutdown() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	close(s.closed)
	sessions := make([]*session.Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	s.listening.Store(false)
	s.mu.Lock()
	for _, l := range s.listeners {
		l.close()
	}
	for conn := range s.loggingIn {
		// A client still logging in (silent, or half way) is ended now: its next read fails.
		conn.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	s.shutdownConsoles()
	s.logger.Info("shutting down: waiting for running transactions", "clients", len(sessions))
	for _, sess := range sessions {
		sess.Shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	timer := time.NewTimer(s.cfg.Load().Proxy.ShutdownTimeout.Duration)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.mu.Lock()
		left := make([]*session.Session, 0, len(s.sessions))
		for _, sess := range s.sessions {
			left = append(left, sess)
		}
		s.mu.Unlock()
		var killed sync.WaitGroup
		for _, sess := range left {
			killed.Go(func() { sess.Kill(s.dialServer) }) // each may wait for its cancel's delivery
		}
		killed.Wait()
		s.logger.Warn("shutdown_timeout passed: closed clients still in a transaction", "clients", len(left))
		<-done
	}
	if s.adminHTTP != nil {
		s.adminHTTP.Close() // after the clients: /readyz said "not ready" while they drained
	}
	s.stop()
	s.bg.Wait()
	if s.env.Parker != nil {
		s.env.Parker.Close() // after the clients: any still parked is woken and ends
	}
	s.secrets.tokens.Close()
	s.pools.Close()
	if s.env.Loops != nil {
		s.env.Loops.Close() // after the pools: their connections are closed
	}
	s.logger.Info("shut down")
}

// janitorTick is how often the janitor sets the sessions' coarse clock; every janitorChecks
// ticks it checks the client timeouts (see session.Session.CheckTimeouts).
const (
	janitorTick   = 100 * time.Millisecond
	janitorChecks = 10
)

// After a wave of logins, the clients' goroutine stacks and login buffers are garbage once they
// are parked, but Go's collector runs again, and gives the memory back to the OS, only when the
// heap has grown to twice what it was at the last collection: with idle clients that may take
// hours, holding ~10 KiB per parked client. So when at least parkWave clients were parked since
// the last time and the wave is over (a janitor round parked no one), or parkFreeEvery has passed
// anyway, the janitor has the memory collected and returned (debug.FreeOSMemory, tens of
// milliseconds of one CPU at ten thousand clients).
const (
	parkWave      = 500
	parkFreeEvery = time.Minute
)

// janitor keeps the sessions' coarse clock, ends the clients past a client timeout and parks the
// idle ones, until ctx is done.
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(janitorTick)
	defer t.Stop()
	var sessions []*session.Session
	var (
		parkedPrev, parkedAtFree int
		freedAt                  time.Time
	)
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.env.Clock.Set(now)
			if i%janitorChecks != 0 {
				continue
			}
			s.mu.Lock()
			sessions = sessions[:0]
			for _, sess := range s.sessions {
				sessions = append(sessions, sess)
			}
			s.mu.Unlock()
			p := &s.cfg.Load().Proxy
			var cancels sync.WaitGroup
			for _, sess := range sessions {
				sess.CheckTimeouts(now, p, s.dialServer, &cancels)
				sess.ParkIfIdle(now.UnixNano())
			}
			cancels.Wait()
			clear(sessions)
			// The parks of this round take effect as the client loops notice: counted next round.
			parked := s.ParkedClients()
			parkedAtFree = min(parkedAtFree, parked) // clients left: a new wave counts from here
			if parked-parkedAtFree >= parkWave && (parked == parkedPrev || now.Sub(freedAt) >= parkFreeEvery) {
				parkedAtFree, freedAt = parked, now
				s.bg.Go(debug.FreeOSMemory)
			}
			parkedPrev = parked
			s.janitorRuns.Add(1)
		}
	}
}
