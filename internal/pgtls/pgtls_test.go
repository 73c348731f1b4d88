package pgtls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgtide/internal/pgtls"
	"pgtide/internal/pgtls/pgtlstest"
	"pgtide/internal/wire"
)

// fakeServer accepts one connection on a loopback port, reads its SSLRequest, answers answer and,
// for 'S', performs a TLS handshake with cert. It reports the handshake's error (nil without one).
func fakeServer(t *testing.T, answer byte, cert tls.Certificate) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		var req [8]byte
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			ch <- err
			return
		}
		if !bytes.Equal(req[:], wire.AppendSSLRequest(nil)) {
			ch <- errors.New("not an SSLRequest")
			return
		}
		conn.Write([]byte{answer})
		if answer != 'S' {
			ch <- nil
			return
		}
		tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}})
		err = tc.Handshake()
		if err == nil {
			tc.Write([]byte("hello"))
		}
		ch <- err
		if err == nil {
			io.Copy(io.Discard, tc) // until the client closes
		}
	}()
	return ln.Addr().String(), ch
}

func negotiate(t *testing.T, s *pgtls.ServerTLS, addr, as string) (net.Conn, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Negotiate(ctx, conn, as)
}

// TestNegotiate: libpq's sslmode semantics against a server that answers 'S' or 'N', with a
// certificate for 127.0.0.1 from ca.
func TestNegotiate(t *testing.T) {
	dir := t.TempDir()
	ca := pgtlstest.NewCA(t, dir, "ca")
	other := pgtlstest.NewCA(t, dir, "other")
	good := ca.Server(t, "server", "127.0.0.1", "localhost").TLSCertificate(t)
	untrusted := other.Server(t, "untrusted", "127.0.0.1").TLSCertificate(t)
	elsewhere := ca.Server(t, "elsewhere", "db.example").TLSCertificate(t)

	for _, tc := range []struct {
		name   string
		mode   pgtls.Mode
		caFile string
		answer byte
		cert   tls.Certificate
		as     string // the address pgtide believes it dials ("" for the real one)
		tls    bool   // the connection is encrypted
		reason string // the *Error's Reason, "" for success
	}{
		{name: "disable", mode: pgtls.Disable, answer: 'N'}, // no SSLRequest: the fake server sees none and fails, unseen
		{name: "prefer, server says N", mode: pgtls.Prefer, answer: 'N'},
		{name: "prefer, server says S", mode: pgtls.Prefer, answer: 'S', cert: untrusted, tls: true},
		{name: "prefer with a CA checks the chain", mode: pgtls.Prefer, caFile: ca.CertFile, answer: 'S', cert: untrusted, reason: "not signed by a CA"},
		{name: "require, server says N", mode: pgtls.Require, answer: 'N', reason: "does not support TLS"},
		{name: "require checks nothing without a CA", mode: pgtls.Require, answer: 'S', cert: untrusted, tls: true},
		{name: "require with a CA checks the chain", mode: pgtls.Require, caFile: ca.CertFile, answer: 'S', cert: untrusted, reason: "not signed by a CA"},
		{name: "require with a CA, not the host", mode: pgtls.Require, caFile: ca.CertFile, answer: 'S', cert: elsewhere, tls: true},
		{name: "verify-ca", mode: pgtls.VerifyCA, caFile: ca.CertFile, answer: 'S', cert: elsewhere, tls: true},
		{name: "verify-ca, wrong CA", mode: pgtls.VerifyCA, caFile: other.CertFile, answer: 'S', cert: good, reason: "not signed by a CA"},
		{name: "verify-full", mode: pgtls.VerifyFull, caFile: ca.CertFile, answer: 'S', cert: good, tls: true},
		{name: "verify-full by name", mode: pgtls.VerifyFull, caFile: ca.CertFile, answer: 'S', cert: good, as: "localhost", tls: true},
		{name: "verify-full, wrong host", mode: pgtls.VerifyFull, caFile: ca.CertFile, answer: 'S', cert: elsewhere, reason: "does not name the host"},
		{name: "verify-full, wrong CA", mode: pgtls.VerifyFull, caFile: other.CertFile, answer: 'S', cert: good, reason: "not signed by a CA"},
		{name: "verify-full, server says N", mode: pgtls.VerifyFull, caFile: ca.CertFile, answer: 'N', reason: "does not support TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := pgtls.NewServerTLS(tc.mode, tc.caFile)
			if err != nil {
				t.Fatal(err)
			}
			addr, done := fakeServer(t, tc.answer, tc.cert)
			as := addr
			if tc.as != "" {
				_, port, _ := net.SplitHostPort(addr)
				as = net.JoinHostPort(tc.as, port)
				// Dial as if by name: the address stays the real one.
			}
			conn, err := negotiate(t, s, addr, as)
			if tc.reason != "" {
				var te *pgtls.Error
				if !errors.As(err, &te) {
					t.Fatalf("want a *pgtls.Error, got %v", err)
				}
				if !strings.Contains(te.Reason(), tc.reason) {
					t.Errorf("reason %q, want it to say %q (error: %v)", te.Reason(), tc.reason, err)
				}
				if !strings.Contains(err.Error(), as) || !strings.Contains(err.Error(), string(tc.mode)) {
					t.Errorf("the error names neither the server nor the mode: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, encrypted := conn.(*tls.Conn); encrypted != tc.tls {
				t.Fatalf("encrypted: %v, want %v", encrypted, tc.tls)
			}
			if tc.tls {
				buf := make([]byte, 5)
				if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
					t.Fatalf("read %q, %v", buf, err)
				}
				if err := <-done; err != nil {
					t.Fatalf("server: %v", err)
				}
			}
		})
	}
}

// TestNegotiateNetworkFailure: a server that goes away during the exchange is a network error,
// not a TLS one (the node may be failing over).
func TestNegotiateNetworkFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			io.ReadFull(conn, make([]byte, 8))
			conn.Write([]byte{'S'})
			conn.Close()
		}
	}()
	s, _ := pgtls.NewServerTLS(pgtls.Require, "")
	_, err = negotiate(t, s, ln.Addr().String(), ln.Addr().String())
	var te *pgtls.Error
	if err == nil || errors.As(err, &te) {
		t.Fatalf("want a network error, got %v", err)
	}
}

// TestNewServerTLS: a verifying mode needs a CA file, which must hold certificates.
func TestNewServerTLS(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o644)
	for _, tc := range []struct {
		mode   pgtls.Mode
		caFile string
		want   string
	}{
		{pgtls.VerifyFull, "", "needs server_ca_file"},
		{pgtls.VerifyCA, "", "needs server_ca_file"},
		{pgtls.Require, junk, "no PEM certificate"},
		{pgtls.Require, filepath.Join(dir, "missing.pem"), "no such file"},
		{"sometimes", "", "unknown mode"},
		{pgtls.Allow, "", "unknown mode"},
	} {
		if _, err := pgtls.NewServerTLS(tc.mode, tc.caFile); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: got %v, want %q", tc.mode, tc.caFile, err, tc.want)
		}
	}
}

// TestNewClientTLS: what each client_tls mode needs.
func TestNewClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca := pgtlstest.NewCA(t, dir, "ca")
	p := ca.Server(t, "server", "127.0.0.1")
	q := ca.Server(t, "other", "127.0.0.1")
	for _, tc := range []struct {
		mode  pgtls.Mode
		files pgtls.ClientFiles
		want  string
	}{
		{pgtls.Require, pgtls.ClientFiles{}, "needs cert_file and key_file"},
		{pgtls.VerifyCA, pgtls.ClientFiles{Cert: p.CertFile, Key: p.KeyFile}, "needs ca_file"},
		{pgtls.Allow, pgtls.ClientFiles{Cert: p.CertFile, Key: q.KeyFile}, "private key does not match"},
		{pgtls.Prefer, pgtls.ClientFiles{Cert: p.CertFile, Key: p.KeyFile}, "unknown mode"},
	} {
		if _, err := pgtls.NewClientTLS(tc.mode, tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: got %v, want %q", tc.mode, tc.files, err, tc.want)
		}
	}
	c, err := pgtls.NewClientTLS(pgtls.Disable, pgtls.ClientFiles{Cert: "/nonexistent"})
	if err != nil || c.Offered() || c.Mode() != pgtls.Disable {
		t.Fatalf("disable: %v %v", c, err)
	}
	var none *pgtls.ClientTLS
	if none.Offered() || none.Mode() != pgtls.Disable {
		t.Fatal("a nil ClientTLS offers TLS")
	}
}

// clientPair returns both ends of a loopback TCP connection.
func clientPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	client.SetDeadline(time.Now().Add(10 * time.Second))
	server.SetDeadline(time.Now().Add(10 * time.Second))
	return client, server
}

// TestHandshake: the server side, after an SSLRequest and direct (ALPN required), with client
// certificates checked against ca_file when presented.
func TestHandshake(t *testing.T) {
	dir := t.TempDir()
	ca := pgtlstest.NewCA(t, dir, "ca")
	other := pgtlstest.NewCA(t, dir, "other")
	srv := ca.Server(t, "server", "127.0.0.1")
	alice := ca.Client(t, "alice", "alice").TLSCertificate(t)
	mallory := other.Client(t, "mallory", "alice").TLSCertificate(t)
	ct, err := pgtls.NewClientTLS(pgtls.VerifyFull, pgtls.ClientFiles{Cert: srv.CertFile, Key: srv.KeyFile, CA: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		direct bool
		alpn   []string
		cert   *tls.Certificate
		force  bool // send cert even if the server's CAs did not sign it
		// maxVersion caps the client's TLS version (0: Go's default).
		maxVersion uint16
		// extra is plain text sent right behind the ClientHello (direct): the handshake takes it
		// for TLS records, which it is not, and fails.
		extra   []byte
		wantErr error  // nil: success; errAny: some handshake error
		peer    string // the verified client certificate's common name
	}{
		{name: "after SSLRequest, no certificate"},
		{name: "after SSLRequest, with a certificate", cert: &alice, peer: "alice"},
		{name: "after SSLRequest, ALPN", alpn: []string{"postgresql"}},
		{name: "after SSLRequest, other ALPN", alpn: []string{"http/1.1"}, wantErr: errAny},
		{name: "TLS 1.1", maxVersion: tls.VersionTLS11, wantErr: errAny},
		{name: "untrusted client certificate", cert: &mallory, force: true, wantErr: errAny},
		{name: "client certificate from another CA is not sent", cert: &mallory},
		{name: "direct", direct: true, alpn: []string{"postgresql"}, cert: &alice, peer: "alice"},
		{name: "direct without ALPN", direct: true, wantErr: pgtls.ErrNoALPN},
		{name: "direct with plain text behind", direct: true, alpn: []string{"postgresql"}, extra: []byte("\x00\x00\x00\x08\x04\xd2\x16\x2f"), wantErr: errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := clientPair(t)
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", NextProtos: tc.alpn, MaxVersion: tc.maxVersion}
			if tc.maxVersion != 0 {
				cfg.MinVersion = tls.VersionTLS10
			}
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			if tc.force {
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tc.cert, nil }
			}
			under := cc
			if tc.extra != nil {
				under = &appendAfterFirstWrite{Conn: cc, extra: tc.extra}
			}
			client := tls.Client(under, cfg)
			clientDone := make(chan error, 1)
			go func() {
				err := client.Handshake()
				if err == nil {
					_, err = client.Write([]byte("ping"))
				}
				clientDone <- err
			}()
			var first []byte
			if tc.direct {
				// As the proxy does: the first bytes tell direct TLS apart.
				// Here the whole ClientHello record, and what came right behind it.
				hdr := make([]byte, 5)
				if _, err := io.ReadFull(sc, hdr); err != nil || hdr[0] != wire.TLSHandshakeByte {
					t.Fatalf("first bytes %x, %v", hdr, err)
				}
				first = make([]byte, 5+int(hdr[3])<<8|int(hdr[4])+len(tc.extra))
				copy(first, hdr)
				if _, err := io.ReadFull(sc, first[5:]); err != nil {
					t.Fatal(err)
				}
			}
			conn, err := ct.Handshake(context.Background(), sc, first)
			switch {
			case tc.wantErr == errAny:
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				return
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if err := <-clientDone; err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("read %q %v", buf, err)
			}
			if conn.ServerCertificate().Subject.CommonName != "server" {
				t.Errorf("ServerCertificate: %v", conn.ServerCertificate().Subject)
			}
			got := ""
			if p := conn.PeerCertificate(); p != nil {
				got = p.Subject.CommonName
			}
			if got != tc.peer {
				t.Errorf("peer %q, want %q", got, tc.peer)
			}
			conn.Close()
		})
	}
}

var errAny = errors.New("any error")

// appendAfterFirstWrite sends extra right behind the first write (the ClientHello).
type appendAfterFirstWrite struct {
	net.Conn
	extra []byte
	done  bool
}

func (a *appendAfterFirstWrite) Write(p []byte) (int, error) {
	if a.done {
		return a.Conn.Write(p)
	}
	a.done = true
	n, err := a.Conn.Write(append(append([]byte(nil), p...), a.extra...))
	return min(n, len(p)), err
}

// TestCloseDoesNotWait: Close returns soon even when the close_notify cannot go out (a client
// that reads nothing, its buffers full), instead of tls.Conn's 5 s.
func TestCloseDoesNotWait(t *testing.T) {
	dir := t.TempDir()
	ca := pgtlstest.NewCA(t, dir, "ca")
	srv := ca.Server(t, "server", "127.0.0.1")
	ct, err := pgtls.NewClientTLS(pgtls.Require, pgtls.ClientFiles{Cert: srv.CertFile, Key: srv.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	cc, sc := clientPair(t)
	client := tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	go client.Handshake()
	stuck := &stuckWriter{Conn: sc, closed: make(chan struct{})}
	conn, err := ct.Handshake(context.Background(), stuck, nil)
	if err != nil {
		t.Fatal(err)
	}
	stuck.stuck.Store(true)
	start := time.Now()
	conn.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if !stuck.tried.Load() {
		t.Fatal("Close sent no close_notify")
	}
}

// stuckWriter's writes block, once stuck, until it is closed.
type stuckWriter struct {
	net.Conn
	stuck, tried atomic.Bool
	once         sync.Once
	closed       chan struct{}
}

func (s *stuckWriter) Write(p []byte) (int, error) {
	if s.stuck.Load() {
		s.tried.Store(true)
		<-s.closed
		return 0, net.ErrClosed
	}
	return s.Conn.Write(p)
}

func (s *stuckWriter) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.Conn.Close()
}
