package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"pgtide/internal/admin"
	"pgtide/internal/session"
)

// The proxy is the admin side's Source (see package admin); the methods not here are in proxy.go.
var _ admin.Source = (*Server)(nil)

// Clients returns a snapshot of every client connection, logging in included, each with the ID
// of its BackendKeyData.
func (s *Server) Clients() []session.ClientInfo {
	s.mu.Lock()
	sessions := make([]*session.Session, 0, len(s.sessions))
	ids := make([]uint32, 0, len(s.sessions))
	for k, sess := range s.sessions {
		sessions = append(sessions, sess)
		ids = append(ids, k.pid)
	}
	s.mu.Unlock()
	out := make([]session.ClientInfo, len(sessions))
	for i, sess := range sessions {
		out[i] = sess.Info()
		out[i].ID = ids[i]
	}
	return out
}

// Listening reports whether Serve is accepting clients on every endpoint.
func (s *Server) Listening() bool { return s.listening.Load() }

// Errors returns the counts of ErrorResponses sent to clients by SQLSTATE class.
func (s *Server) Errors() *session.ErrorCounter { return s.env.Errors }

// History returns the recent node state changes.
func (s *Server) History() *admin.History { return s.history }

// Version returns pgtide's version ("(devel)" unless the command set BuildVersion).
func (s *Server) Version() string {
	if s.BuildVersion == "" {
		return "(devel)"
	}
	return s.BuildVersion
}

// ReloadConfig reloads the configuration file the proxy was started with (the admin console's
// RELOAD), as SIGHUP does.
func (s *Server) ReloadConfig() error {
	path := s.cfg.Load().Path
	if path == "" {
		return errors.New("the configuration was not loaded from a file")
	}
	return s.ReloadFile(path)
}

// KillClient closes at once the connection of the client whose BackendKeyData process ID is id
// (its transaction, if any, is rolled back by the server). A session-mode client carries its
// server's process ID, which a client on another node may share: then none is closed.
func (s *Server) KillClient(id uint32) error {
	s.mu.Lock()
	var found []*session.Session
	for k, sess := range s.sessions {
		if k.pid == id {
			found = append(found, sess)
		}
	}
	s.mu.Unlock()
	switch len(found) {
	case 0:
		return admin.ErrNoSuchClient
	case 1:
		s.logger.Info("client killed from the admin console", "id", id)
		found[0].Kill(s.dialServer)
		return nil
	}
	return fmt.Errorf("%d clients have id %d (session-mode clients on different nodes); none was closed", len(found), id)
}

// ClientCertificate returns the certificate given to the clients that connect now, nil without
// client TLS.
func (s *Server) ClientCertificate() *x509.Certificate { return s.clientTLS.Load().Certificate() }

// AdminAddr returns the address of admin.listen, or nil when it is off.
func (s *Server) AdminAddr() net.Addr {
	if s.adminHTTP == nil {
		return nil
	}
	return s.adminHTTP.Addr()
}
