// Package proxy owns the client-facing listener: it admits connections (startup packet, SSL and
// GSS encryption refusal, CancelRequest, protocol negotiation, max_client_connections), hands each
// admitted client to a session, keeps the registry of live sessions for cancels and shutdown, and
// applies configuration reloads.
package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/auth"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/session"
	"pgtide/internal/wire"
)

// Server is a running proxy.
type Server struct {
	cfg    atomic.Pointer[config.Config]
	pools  *pool.Manager
	env    *session.Env
	logger *slog.Logger
	ln     net.Listener
	// OnReload, if set before Serve, is called with each configuration a reload applies.
	OnReload func(*config.Config)
	// dialServer opens connections to servers for CancelRequests. Tests may replace it.
	dialServer func(network, addr string) (net.Conn, error)

	clients atomic.Int64 // client connections being served, logging in included

	// cfgStamps are the sizes and times of the files the first config came from, stamped just
	// after loading, so WatchConfig also sees changes made before it started. Set by New only.
	cfgStamps [2]fileStamp

	mu       sync.Mutex
	sessions map[uint32]*session.Session // logged-in sessions by the PID pgtide gave them; guarded by mu
	closing  bool                        // guarded by mu

	conns sync.WaitGroup // one per client connection goroutine
	bg    sync.WaitGroup // pool maintenance
	stop  context.CancelFunc
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
	}
}

// New returns a proxy for cfg, listening on cfg.Proxy.Listen. Call Serve to accept clients.
func New(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Proxy.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Proxy.Listen, err)
	}
	s := &Server{
		pools:      pool.NewManager(PoolSettings(cfg)),
		logger:     logger,
		ln:         ln,
		sessions:   make(map[uint32]*session.Session),
		dialServer: func(network, addr string) (net.Conn, error) { return net.DialTimeout(network, addr, 2*time.Second) },
	}
	s.cfg.Store(cfg)
	s.cfgStamps = configStamps(cfg)
	s.pools.Logger = logger
	s.pools.Password = func(user string) string { return s.cfg.Load().Users[user].Password }
	s.env = &session.Env{Pools: s.pools, Auth: auth.NewAuthenticator(), Config: s.cfg.Load, Logger: logger,
		Pins: new(session.PinCounter)}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.pools.Run(ctx, time.Second)
	}()
	return s, nil
}

// Addr returns the address clients connect to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Pools returns the pool manager (for tests and, later, the admin console).
func (s *Server) Pools() *pool.Manager { return s.pools }

// Pins returns the counts of pinned clients and refused statements by reason.
func (s *Server) Pins() *session.PinCounter { return s.env.Pins }

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// Clients returns the number of client connections being served.
func (s *Server) Clients() int { return int(s.clients.Load()) }

// Serve accepts clients until Shutdown. It returns nil after a shutdown.
func (s *Server) Serve() error {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.conns.Add(1)
		go s.handle(conn)
	}
}

// handle admits one client connection and serves it.
func (s *Server) handle(conn net.Conn) {
	defer s.conns.Done()
	defer conn.Close()
	n := s.clients.Add(1)
	defer s.clients.Add(-1)
	cfg := s.cfg.Load()
	conn.SetDeadline(time.Now().Add(cfg.Proxy.ClientLoginTimeout.Duration))

	br := session.NewClientReader(conn)
	st, err := s.readStartup(conn, br)
	if err != nil || st == nil {
		return
	}
	if n > int64(cfg.Proxy.MaxClientConnections) {
		reject(conn, wire.CodeTooManyConnections, "sorry, too many clients already")
		return
	}
	if v, ok := st.Get("replication"); ok && v != "false" && v != "off" && v != "no" && v != "0" {
		reject(conn, wire.CodeFeatureNotSupported, "pgtide does not support replication connections")
		return
	}

	sess := session.New(s.env, conn, br, st)
	if !s.register(sess) {
		reject(conn, wire.CodeAdminShutdown, "pgtide is shutting down")
		return
	}
	defer s.unregister(sess)
	if err := s.negotiate(conn, st); err != nil {
		return
	}
	if err := sess.Login(context.Background()); err != nil {
		s.logger.Info("client login failed", "client", conn.RemoteAddr().String(), "err", err)
		return
	}
	conn.SetDeadline(time.Time{})
	sess.Serve(context.Background())
}

// readStartup reads startup packets, refusing encryption requests, until a StartupMessage.
// It returns nil (and no error) when the connection was a CancelRequest, now handled.
func (s *Server) readStartup(conn net.Conn, br *bufio.Reader) (*wire.Startup, error) {
	var buf [256]byte
	for negotiations := 0; ; negotiations++ {
		st, err := wire.ReadStartup(br, buf[:0])
		if err != nil {
			var ue *wire.UnsupportedProtocolError
			switch {
			case errors.As(err, &ue):
				reject(conn, wire.CodeFeatureNotSupported, err.Error())
			case wire.IsProtocolError(err):
				reject(conn, wire.CodeProtocolViolation, err.Error())
			}
			return nil, err
		}
		switch st.Kind {
		case wire.KindSSLRequest, wire.KindGSSENCRequest:
			if negotiations >= 2 || br.Buffered() > 0 {
				// Data after an encryption request, before our answer, is a buffer-stuffing
				// attempt (CVE-2021-23222 in clients); PostgreSQL refuses it too.
				reject(conn, wire.CodeProtocolViolation, "unexpected data after encryption request")
				return nil, errors.New("unexpected data after encryption request")
			}
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case wire.KindCancel:
			s.cancel(st)
			return nil, nil
		default:
			return st, nil
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
	_, err := conn.Write(wire.AppendNegotiateProtocolVersion(nil, 0, unknown))
	return err
}

// reject sends a FATAL ErrorResponse to a client that is not (yet) a session.
func reject(conn net.Conn, code, msg string) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	e := &wire.Error{Severity: wire.SeverityFatal, Code: code, Message: msg}
	conn.Write(e.Append(nil))
}

func (s *Server) register(sess *session.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	for s.sessions[sess.PID] != nil || sess.PID == 0 {
		sess.PID++
		sess.PID &= 0x7fffffff
	}
	s.sessions[sess.PID] = sess
	return true
}

func (s *Server) unregister(sess *session.Session) {
	s.mu.Lock()
	delete(s.sessions, sess.PID)
	s.mu.Unlock()
}

// cancel forwards a CancelRequest to the session it names, if the secret matches.
func (s *Server) cancel(st *wire.Startup) {
	s.mu.Lock()
	sess := s.sessions[st.PID]
	s.mu.Unlock()
	if sess == nil || len(st.Secret) != 4 || uint32(st.Secret[0])<<24|uint32(st.Secret[1])<<16|uint32(st.Secret[2])<<8|uint32(st.Secret[3]) != sess.Secret {
		return // as PostgreSQL: no answer either way
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
	sessions := make([]*session.Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	s.ln.Close()
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
		n := len(s.sessions)
		for _, sess := range s.sessions {
			sess.Kill()
		}
		s.mu.Unlock()
		s.logger.Warn("shutdown_timeout passed: closed clients still in a transaction", "clients", n)
		<-done
	}
	s.stop()
	s.bg.Wait()
	s.pools.Close()
	s.logger.Info("shut down")
}
