package proxy

import (
	"net"

	"pgtide/internal/admin"
	"pgtide/internal/config"
	"pgtide/internal/session"
	"pgtide/internal/wire"
)

// serveConsole serves a client that asked for the admin console's database (see admin.Console)
// instead of a server, from admission to its end: it counts against max_client_connections and
// may cancel a running PAUSE with a CancelRequest, like any client.
func (s *Server) serveConsole(conn net.Conn, br *wire.BufReader, st *wire.Startup, cfg *config.Config) {
	c := admin.NewConsole(s, conn, br, st, cfg.Proxy.MaxMessageSize, s.logger)
	if !s.registerConsole(c) {
		s.refuse(conn, st, wire.CodeAdminShutdown, "pgtide is shutting down")
		return
	}
	defer s.unregisterConsole(c)
	if err := s.negotiate(conn, st); err != nil {
		return
	}
	if err := c.Login(s.env.Auth); err != nil {
		user, _ := st.Get("user")
		s.logger.Info("admin console login failed", "client", session.ClientAddr(conn), "user", user, "err", err)
		return
	}
	c.Serve()
}

// wantsConsole reports whether the client asked for the admin console's database (which, as for
// any client, is its user name when it names none).
func wantsConsole(st *wire.Startup) bool {
	db, _ := st.Get("database")
	if db == "" {
		db, _ = st.Get("user")
	}
	return admin.IsConsoleDatabase(db)
}

// keyTakenLocked reports whether a session or a console has BackendKeyData k. Requires mu.
func (s *Server) keyTakenLocked(k cancelKey) bool {
	return s.sessions[k] != nil || s.consoles[k] != nil
}

func (s *Server) registerConsole(c *admin.Console) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	for s.keyTakenLocked(cancelKey{c.PID, c.Secret}) || c.PID == 0 {
		c.PID = (c.PID + 1) & 0x7fffffff
	}
	s.consoles[cancelKey{c.PID, c.Secret}] = c
	return true
}

func (s *Server) unregisterConsole(c *admin.Console) {
	s.mu.Lock()
	delete(s.consoles, cancelKey{c.PID, c.Secret})
	s.mu.Unlock()
}

// shutdownConsoles ends every console connection at once: none holds a transaction.
func (s *Server) shutdownConsoles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.consoles {
		c.Shutdown()
	}
}
