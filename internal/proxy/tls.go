package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/pgtls"
	"pgtide/internal/session"
	"pgtide/internal/wire"
)

// TLS in the proxy: the ClientTLS and ServerTLS in force live in atomic pointers (Server.clientTLS,
// Server.serverTLS), swapped by reloads and by the watcher of the TLS files; each client
// connection takes the ClientTLS in force when it is accepted, each new server connection the
// ServerTLS in force when it is dialed. Connections already encrypted keep what they started
// with, so a reload drops none.

// tlsWatchInterval is how often the TLS files are checked for changes.
const tlsWatchInterval = time.Second

// tlsState is what the TLS settings of a configuration loaded: the ClientTLS and ServerTLS, and
// the stamps of the files as they were read (cert_file, key_file, ca_file, server_ca_file).
type tlsState struct {
	client *pgtls.ClientTLS
	server *pgtls.ServerTLS
	stamps [4]fileStamp
}

// tlsFiles are the files c's TLS settings name, as the process opens them, in tlsState.stamps'
// order.
func tlsFiles(c *config.Config) [4]string {
	return [4]string{c.FilePath(c.TLS.CertFile), c.FilePath(c.TLS.KeyFile), c.FilePath(c.TLS.CAFile), c.FilePath(c.Cluster.ServerCAFile)}
}

// loadTLS reads the TLS files c names. The files are stamped before they are read: a change
// made while reading is seen by the next check.
func loadTLS(c *config.Config) (tlsState, error) {
	var t tlsState
	files := tlsFiles(c)
	for i, f := range files {
		t.stamps[i] = stampOf(f)
	}
	var err error
	t.client, err = pgtls.NewClientTLS(pgtls.Mode(c.TLS.ClientTLS), pgtls.ClientFiles{Cert: files[0], Key: files[1], CA: files[2]})
	if err != nil {
		return t, fmt.Errorf("tls: %w", err)
	}
	if t.server, err = pgtls.NewServerTLS(pgtls.Mode(c.Cluster.ServerTLS), files[3]); err != nil {
		return t, fmt.Errorf("cluster: %w", err)
	}
	return t, nil
}

// applyTLSLocked puts t in force for the connections that come after; cfg is the configuration t
// was loaded from. The ServerTLS in force is kept when nothing about it changed, so that the
// health checks, which reconnect when it changes, do not at every reload. Requires reloadMu
// (or New, before anything runs).
func (s *Server) applyTLSLocked(t tlsState, cfg *config.Config) {
	cur := s.serverTLS.Load()
	if cur != nil && cur.Mode() == t.server.Mode() && s.tlsServerCA == tlsFiles(cfg)[3] && s.tlsStamps[3] == t.stamps[3] {
		t.server = cur
	}
	if [3]fileStamp(s.tlsStamps[:3]) != [3]fileStamp(t.stamps[:3]) || s.clientTLS.Load().Mode() != t.client.Mode() {
		s.logClientTLS(t.client) // the client side changed
	}
	s.clientTLS.Store(t.client)
	s.serverTLS.Store(t.server)
	s.tlsStamps, s.tlsServerCA = t.stamps, tlsFiles(cfg)[3]
}

// logClientTLS says which certificate clients are now given.
func (s *Server) logClientTLS(ct *pgtls.ClientTLS) {
	cert := ct.Certificate()
	if cert == nil {
		s.logger.Info("TLS towards clients", "client_tls", ct.Mode())
		return
	}
	// The serial number and fingerprint tell a renewal apart from the certificate it replaces,
	// which often has the same subject and issuer.
	s.logger.Info("TLS towards clients", "client_tls", ct.Mode(), "certificate", cert.Subject.String(),
		"issuer", cert.Issuer.String(), "not_after", cert.NotAfter.UTC().Format(time.RFC3339),
		"serial", cert.SerialNumber.Text(16), "sha256", fmt.Sprintf("%x", sha256.Sum256(cert.Raw)))
}

// watchTLS reloads the TLS files whenever one of them changes (size or modification time),
// checking every tlsWatchInterval until ctx ends: a renewed certificate is given to the clients
// that connect afterwards without a reload of the configuration. Files that do not load (a
// certificate written before its key) are logged, and tried again when they change again.
func (s *Server) watchTLS(ctx context.Context) {
	t := time.NewTicker(tlsWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.reloadTLSIfChanged()
	}
}

// reloadTLSIfChanged reloads the TLS files of the configuration in force if they differ from
// what was last read.
func (s *Server) reloadTLSIfChanged() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg := s.cfg.Load()
	files := tlsFiles(cfg)
	var changed []string
	for i, f := range files {
		if f != "" && stampOf(f) != s.tlsStamps[i] {
			changed = append(changed, f)
		}
	}
	if len(changed) == 0 {
		return
	}
	t, err := loadTLS(cfg)
	if err != nil {
		s.tlsStamps = t.stamps // tried again once they change again, not at every tick
		s.logger.Error("TLS files changed but do not load; the running ones stay in force", "files", changed, "err", err)
		return
	}
	s.logger.Info("TLS files changed; reloaded for new connections", "files", changed)
	before := s.serverTLS.Load()
	s.applyTLSLocked(t, cfg)
	if s.serverTLS.Load() != before {
		// The pools read serverTLS as they dial; the health checks, discovery and the function
		// catalogs have it from the cluster's configuration, and reconnect when it changes.
		s.cluster.SetConfig(s.clusterConfig(cfg))
	}
}

// isUnix reports whether conn came through a Unix-domain socket, where TLS is neither offered
// nor required (as PostgreSQL, whose hostssl lines never match local connections).
func isUnix(conn net.Conn) bool {
	_, ok := conn.LocalAddr().(*net.UnixAddr)
	return ok
}

// encrypt answers a client's SSLRequest with 'S' and performs the TLS handshake, or, with first
// (the bytes br holds, the start of a ClientHello), takes a client that started TLS at once
// (direct TLS). It returns the encrypted connection and a reader over it. The caller checked that
// br holds nothing after the SSLRequest (CVE-2021-23222): the handshake reads conn itself, and
// br, empty, is dropped. A client refused after the handshake (direct TLS without ALPN) is told
// why, encrypted.
func (s *Server) encrypt(conn net.Conn, br *wire.BufReader, ct *pgtls.ClientTLS, direct bool) (*pgtls.Conn, *wire.BufReader, error) {
	var first []byte
	if direct {
		first, _ = br.Peek(br.Buffered())
		first = bytes.Clone(first)
	} else if _, err := conn.Write([]byte{'S'}); err != nil {
		return nil, nil, err
	}
	// conn's deadline (client_login_timeout) bounds the handshake.
	tc, err := ct.Handshake(context.Background(), conn, first)
	if err != nil {
		s.logger.Info("client TLS handshake failed", "client", session.ClientAddr(conn), "direct", direct, "err", err)
		if tc != nil {
			s.reject(tc, wire.CodeProtocolViolation, err.Error())
		}
		return nil, nil, err
	}
	return tc, session.NewClientReader(tc), nil
}

// tlsRefusal applies client_tls to a client that sent its startup packet: the FATAL that refuses
// it (SQLSTATE 28000, with PostgreSQL's own words for the same refusal), or nil to let it in.
// Unix-domain sockets are never refused.
func tlsRefusal(conn net.Conn, st *wire.Startup, ct *pgtls.ClientTLS) *wire.Error {
	if isUnix(conn) {
		return nil
	}
	refusal := func(msg, detail string) *wire.Error {
		return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidAuthorization, Message: msg, Detail: detail}
	}
	user, _ := st.Get("user")
	mode := ct.Mode()
	tc, encrypted := conn.(*pgtls.Conn)
	if !encrypted {
		if !mode.Required() {
			return nil
		}
		db, _ := st.Get("database")
		if db == "" {
			db = user
		}
		host := session.ClientAddr(conn)
		if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
			host = a.IP.String()
		}
		// pg_hba.conf's words when only hostssl lines match the client.
		return refusal(fmt.Sprintf("no pg_hba.conf entry for host %q, user %q, database %q, no encryption", host, user, db),
			fmt.Sprintf("pgtide's client_tls is %s: connect with TLS (sslmode=require or stricter).", mode))
	}
	if !mode.Verifies() {
		return nil
	}
	cert := tc.PeerCertificate() // checked against ca_file by the handshake
	switch {
	case cert == nil:
		return refusal("connection requires a valid client certificate",
			fmt.Sprintf("pgtide's client_tls is %s: present a certificate signed by a CA of its ca_file.", mode))
	case mode == pgtls.VerifyFull && cert.Subject.CommonName != user:
		return refusal(fmt.Sprintf("certificate authentication failed for user %q", user),
			fmt.Sprintf("The client certificate's common name %q is not the user name (client_tls = verify-full).", cert.Subject.CommonName))
	}
	return nil
}

// dialCancel opens a connection to the server at addr for a CancelRequest, encrypted as
// server_tls says (PostgreSQL takes cancel requests over TLS, and libpq sends them with the
// connection's sslmode), within cancelDialTimeout.
func (s *Server) dialCancel(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cancelDialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn, err := s.serverTLS.Load().Negotiate(ctx, nc, addr)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return conn, nil
}

// cancelDialTimeout bounds connecting (and negotiating TLS) for a CancelRequest.
const cancelDialTimeout = 2 * time.Second
