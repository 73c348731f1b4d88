package pgtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ClientFiles are the files of the [tls] section: the certificate (chain) and key pgtide presents
// to clients, and the CAs that sign client certificates ("" for none). Paths as the process opens
// them.
type ClientFiles struct {
	Cert, Key, CA string
}

// ClientTLS is TLS towards clients as client_tls and the [tls] files say. It is immutable and safe
// for concurrent use; a reload, or a change of the files, makes a new one for the connections
// that come after. A nil *ClientTLS is Disable.
type ClientTLS struct {
	mode   Mode
	config *tls.Config       // nil for Disable
	leaf   *x509.Certificate // the certificate presented, for Conn.ServerCertificate
}

// NewClientTLS returns the ClientTLS for mode (one of ClientModes), reading the files now. A mode
// other than Disable needs the certificate and key; VerifyCA and VerifyFull need the CA file.
// With Disable the files are not read.
//
// Client certificates are asked for only when there is a CA file. Then, as PostgreSQL with
// ssl_ca_file, a certificate a client presents must chain to it (whatever the mode); whether one
// is required, and what it must name, is the proxy's admission check (see Conn.PeerCertificate),
// so that a client without one is told why in an ErrorResponse rather than by a TLS alert.
func NewClientTLS(mode Mode, files ClientFiles) (*ClientTLS, error) {
	switch mode {
	case Disable:
		return &ClientTLS{mode: mode}, nil
	case Allow, Require, VerifyCA, VerifyFull:
	default:
		return nil, fmt.Errorf("client_tls %q: unknown mode", mode)
	}
	if files.Cert == "" || files.Key == "" {
		return nil, fmt.Errorf("client_tls = %q needs cert_file and key_file", mode)
	}
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s, key_file %s: %w", files.Cert, files.Key, err)
	}
	if cert.Leaf == nil { // LoadX509KeyPair fills it in, unless GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert_file %s: %w", files.Cert, err)
		}
	}
	c := &ClientTLS{mode: mode, leaf: cert.Leaf}
	c.config = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// As PostgreSQL 17: a client that offers ALPN must offer "postgresql" (Go refuses the
		// handshake otherwise); direct TLS must negotiate it (see Handshake).
		NextProtos: []string{alpnProtocol},
		// As PostgreSQL, which turns them off: no resumption, so every connection's client
		// certificate is checked against the CAs in force when it connects.
		SessionTicketsDisabled: true,
	}
	if files.CA != "" {
		cas, err := loadCAs(files.CA)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		c.config.ClientCAs = cas
		c.config.ClientAuth = tls.VerifyClientCertIfGiven
	} else if mode.Verifies() {
		return nil, fmt.Errorf("client_tls = %q needs ca_file", mode)
	}
	return c, nil
}

// Mode returns client_tls; Disable for nil.
func (c *ClientTLS) Mode() Mode {
	if c == nil {
		return Disable
	}
	return c.mode
}

// Certificate returns the certificate presented to clients, nil for Disable.
func (c *ClientTLS) Certificate() *x509.Certificate {
	if c == nil {
		return nil
	}
	return c.leaf
}

// Offered reports whether clients may use TLS: an SSLRequest is answered 'S', a direct TLS
// handshake is taken.
func (c *ClientTLS) Offered() bool { return c != nil && c.config != nil }

// ErrUnencryptedData is Handshake's error when bytes read before the handshake (first) were left
// over after it, as PostgreSQL checks for direct TLS ("received unencrypted data after SSL
// request"). Go's handshake takes whatever was sent behind the ClientHello for TLS records, so
// plain text there fails the handshake itself; this guards that none could reach the protocol.
var ErrUnencryptedData = errors.New("received unencrypted data after SSL request")

// ErrNoALPN is Handshake's error for a direct TLS connection that did not negotiate ALPN
// "postgresql", which PostgreSQL 17 requires of direct TLS.
var ErrNoALPN = errors.New("received direct SSL connection request without ALPN protocol negotiation extension")

// Handshake performs the server side of the TLS handshake on conn, a client's connection.
// first holds bytes of the handshake already read from conn: for direct TLS, the start of the
// ClientHello that told it apart (a non-nil first also means direct, and ALPN "postgresql" is
// then required); nil after an SSLRequest answered 'S'. conn's deadlines bound the handshake
// (client_login_timeout), and ctx ends it early. Only Offered ClientTLS may be used.
//
// On error the caller closes conn; nothing can be said to the client in plain text any more.
func (c *ClientTLS) Handshake(ctx context.Context, conn net.Conn, first []byte) (*Conn, error) {
	under := conn
	var replay *replayConn
	if first != nil {
		replay = &replayConn{Conn: conn, pending: *bytes.NewReader(first)}
		under = replay
	}
	tc := tls.Server(under, c.config)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	out := &Conn{Conn: tc, leaf: c.leaf}
	if replay != nil {
		if replay.pending.Len() > 0 {
			return out, ErrUnencryptedData
		}
		if tc.ConnectionState().NegotiatedProtocol != alpnProtocol {
			return out, ErrNoALPN
		}
	}
	return out, nil
}

// replayConn is a connection whose first bytes were already read (into pending): reads give
// those first.
type replayConn struct {
	net.Conn
	pending bytes.Reader
}

func (r *replayConn) Read(p []byte) (int, error) {
	if r.pending.Len() > 0 {
		return r.pending.Read(p)
	}
	return r.Conn.Read(p)
}

var _ io.Reader = (*replayConn)(nil)

// Conn is a client's connection after the TLS handshake: everything said on it is encrypted. It
// is what the session and the admin console read and write.
type Conn struct {
	*tls.Conn
	leaf *x509.Certificate
}

// ServerCertificate returns the certificate pgtide presented on this connection (the one in
// force when the client connected; a reload since does not change it), for tls-server-end-point
// channel binding (RFC 5929). It is never nil.
func (c *Conn) ServerCertificate() *x509.Certificate { return c.leaf }

// PeerCertificate returns the client's certificate, verified against ca_file, or nil if the
// client presented none.
func (c *Conn) PeerCertificate() *x509.Certificate {
	if certs := c.ConnectionState().PeerCertificates; len(certs) > 0 {
		return certs[0]
	}
	return nil
}

// Socket returns the TCP connection under TLS, for waiting on its readiness (see the session's
// parking); never read or write it. What the handshake replayed is behind it by then.
func (c *Conn) Socket() net.Conn {
	if r, ok := c.NetConn().(*replayConn); ok {
		return r.Conn
	}
	return c.NetConn()
}

// closeNotifyTimeout bounds the close_notify alert Close sends.
const closeNotifyTimeout = 250 * time.Millisecond

// Close sends close_notify, as PostgreSQL does when it ends a connection, and closes the socket.
// A client that stops reading cannot hold it up: the alert gets closeNotifyTimeout, not the 5 s
// of tls.Conn's Close.
func (c *Conn) Close() error {
	t := time.AfterFunc(closeNotifyTimeout, func() { c.NetConn().Close() })
	defer t.Stop()
	return c.Conn.Close()
}
