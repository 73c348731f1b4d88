package pgtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"pgtide/internal/wire"
)

// ServerTLS is how pgtide speaks TLS to servers: server_tls and the CAs of server_ca_file. It is
// immutable and safe for concurrent use; a reload makes a new one. A nil *ServerTLS is Disable.
type ServerTLS struct {
	mode  Mode
	roots *x509.CertPool // from server_ca_file; nil when none is set
}

// NewServerTLS returns the ServerTLS for mode (one of ServerModes) and caFile ("" for none),
// reading the CA file now. With VerifyCA and VerifyFull a CA file is required; with Prefer and
// Require one, when set, is checked as libpq checks a root certificate file it finds: the chain
// is verified, the host name is not.
func NewServerTLS(mode Mode, caFile string) (*ServerTLS, error) {
	s := &ServerTLS{mode: mode}
	switch mode {
	case Disable, Prefer, Require, VerifyCA, VerifyFull:
	default:
		return nil, fmt.Errorf("server_tls %q: unknown mode", mode)
	}
	if caFile != "" {
		roots, err := loadCAs(caFile)
		if err != nil {
			return nil, fmt.Errorf("server_ca_file: %w", err)
		}
		s.roots = roots
	} else if mode.Verifies() {
		return nil, fmt.Errorf("server_tls = %q needs server_ca_file", mode)
	}
	return s, nil
}

// Mode returns the server_tls mode; Disable for nil.
func (s *ServerTLS) Mode() Mode {
	if s == nil {
		return Disable
	}
	return s.mode
}

// ErrNoServerTLS is the cause of the Error for a server that answered an SSLRequest with 'N'
// while the mode requires TLS.
var ErrNoServerTLS = errors.New("the server does not support TLS (it answered the SSLRequest with 'N'), but server_tls requires it")

// Negotiate makes conn, freshly connected to the server at addr (host:port), speak TLS as the
// mode says, before anything else is sent on it: an SSLRequest, then the handshake and the
// checks of the server's certificate. It returns the connection to speak the protocol on: a
// *tls.Conn, or conn itself for Disable, and for Prefer when the server answers 'N'. ctx bounds
// the exchange (by a deadline on conn when it ends; conn's own deadlines also apply and are left
// as they are). On error the caller closes conn.
//
// A refusal of TLS the mode requires, a failed handshake or an untrusted certificate is an
// *Error; a failure of the network during the exchange (the server went away, a timeout) is
// returned as it is, since it says the node may be going away, which a TLS failure does not.
func (s *ServerTLS) Negotiate(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	if s.Mode() == Disable {
		return conn, nil
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(wire.AppendSSLRequest(nil)); err != nil {
		return nil, ctxCause(ctx, err)
	}
	// One byte, unbuffered: whatever follows it is the server's TLS, read by the handshake
	// (bytes injected before it would fail the handshake, not reach the protocol: CVE-2021-23222).
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return nil, ctxCause(ctx, err)
	}
	switch answer[0] {
	case 'S':
	case 'N':
		if s.mode == Prefer {
			return conn, nil
		}
		return nil, &Error{Addr: addr, Mode: s.mode, Err: ErrNoServerTLS}
	default:
		// 'E': a server from before protocol 3 refusing the packet; anything else is no server.
		return nil, &Error{Addr: addr, Mode: s.mode, Err: fmt.Errorf("unexpected answer %q to the SSLRequest", answer[0])}
	}
	tc := tls.Client(conn, s.config(addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		if err = ctxCause(ctx, err); isNetwork(err) {
			return nil, err
		}
		return nil, &Error{Addr: addr, Mode: s.mode, Err: err}
	}
	return tc, nil
}

// config returns the handshake's configuration for the server at addr.
func (s *ServerTLS) config(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// For SNI as libpq's sslsni=1 (Go sends none for an IP address), and for VerifyFull the
		// name (or IP address) the certificate must carry.
		ServerName: host,
		// As libpq 17: a server of PostgreSQL 17 or later checks it if sent.
		NextProtos: []string{alpnProtocol},
		RootCAs:    s.roots,
	}
	if s.mode == VerifyFull {
		return c
	}
	// The other modes check no host name; the chain only when there are CAs to check it with.
	c.InsecureSkipVerify = true
	if s.roots != nil {
		roots := s.roots
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth)
		}
	}
	return c
}

// alpnProtocol is PostgreSQL's ALPN protocol name.
const alpnProtocol = "postgresql"

// verifyChain checks that certs (the peer's, leaf first) chain to roots and that the leaf may be
// used for usage.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("the peer sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(opts)
	return err
}

// ctxCause returns ctx's error when ctx ended (the deadline Negotiate set made err), else err.
func ctxCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// isNetwork reports whether err, from a TLS handshake, is the network failing rather than TLS.
func isNetwork(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Error is a failure of TLS with a server: it refused TLS that server_tls requires
// (ErrNoServerTLS), or the handshake or the check of its certificate failed. Its message names
// the server and has the cause's own words (x509's, for a certificate), for pgtide's log; Reason
// is for clients.
type Error struct {
	Addr string // the server, host:port
	Mode Mode
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("TLS with server %s (server_tls = %s) failed: %v", e.Addr, e.Mode, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Reason says in a few words what failed, without the server's address or names from its
// certificate: what pgtide tells clients.
func (e *Error) Reason() string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.Is(e.Err, ErrNoServerTLS):
		return "the server does not support TLS, but server_tls requires it"
	case errors.As(e.Err, &unknown):
		return "the server's certificate is not signed by a CA in server_ca_file"
	case errors.As(e.Err, &host):
		return "the server's certificate does not name the host pgtide connects to (server_tls = verify-full)"
	case errors.As(e.Err, &invalid):
		return "the server's certificate is not valid (expired, or not for a server)"
	}
	return "the TLS handshake with the server failed"
}

// loadCAs reads the PEM certificates of path into a pool.
func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
