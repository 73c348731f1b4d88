package pool

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"pgtide/internal/pgtls"
	"pgtide/internal/pgtls/pgtlstest"
	"pgtide/internal/wire"
)

// tlsServer is a fake PostgreSQL server over TLS: it answers the SSLRequest with 'S' (or 'N'
// when plain), performs the handshake with cert, logs the client in (trust) and answers each
// Query with a ReadyForQuery. Its connections are kept for the test to act on.
type tlsServer struct {
	addr  string
	cert  tls.Certificate
	plain bool
	conns chan net.Conn // each connection after login: the *tls.Conn (or the socket, plain)
}

func newTLSServer(t *testing.T, cert tls.Certificate, plain bool) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), cert: cert, plain: plain, conns: make(chan net.Conn, 10)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				s.serve(c)
			})
		}
	})
	return s
}

func (s *tlsServer) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	var stream net.Conn = c
	if s.plain {
		c.Write([]byte{'N'})
	} else {
		c.Write([]byte{'S'})
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{s.cert}})
		if tc.Handshake() != nil {
			return
		}
		stream = tc
	}
	var n [4]byte
	if _, err := io.ReadFull(stream, n[:]); err != nil {
		return
	}
	if _, err := io.ReadFull(stream, make([]byte, binary.BigEndian.Uint32(n[:])-4)); err != nil {
		return
	}
	msg := wire.AppendMessage(nil, 'R', []byte{0, 0, 0, 0})
	msg = wire.AppendBackendKeyData(msg, 7, 42)
	msg = wire.AppendReadyForQuery(msg, 'I')
	if _, err := stream.Write(msg); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	s.conns <- stream
	// Queries get a ReadyForQuery, until the test closes the connection.
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(stream, hdr[:]); err != nil {
			return
		}
		if _, err := io.ReadFull(stream, make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)); err != nil {
			return
		}
		if hdr[0] == 'Q' {
			stream.Write(wire.AppendReadyForQuery(nil, 'I'))
		}
	}
}

func testCA(t *testing.T) (*pgtlstest.CA, tls.Certificate) {
	t.Helper()
	ca := pgtlstest.NewCA(t, t.TempDir(), "ca")
	return ca, ca.Server(t, "server", "127.0.0.1").TLSCertificate(t)
}

func dialTLS(t *testing.T, addr string, s *pgtls.ServerTLS) (*Conn, error) {
	t.Helper()
	c, err := Dial(context.Background(), Key{Node: addr, Database: "db", User: "u"},
		DialOptions{ConnectTimeout: 10 * time.Second, MaxMessageSize: 1 << 20, TLS: s})
	if err == nil {
		t.Cleanup(c.close)
	}
	return c, err
}

// roundTrip sends the fake server a Query and reads its answer, waiting with FlushAndWait.
func roundTrip(t *testing.T, c *Conn) {
	t.Helper()
	c.Writer.Write(wire.AppendMessage(nil, 'Q', []byte("select 1\x00")))
	c.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.FlushAndWait(); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := c.Reader.Next(); err != nil || typ != 'Z' {
		t.Fatalf("answer %q, %v", typ, err)
	}
	c.Reader.Skip()
	c.MarkAnswered()
	c.NetConn().SetReadDeadline(time.Time{})
}

// waitAlive polls c.alive until it says want.
func waitAlive(t *testing.T, c *Conn, want bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.alive() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: alive stayed %v", what, !want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDialTLS: a pooled connection over TLS logs in, waits for answers with FlushAndWait, and its
// liveness check sees the server go away (an ErrorResponse and close_notify, or the socket
// closed).
func TestDialTLS(t *testing.T) {
	ca, cert := testCA(t)
	srv := newTLSServer(t, cert, false)
	s, err := pgtls.NewServerTLS(pgtls.VerifyFull, ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"FATAL and close_notify", "socket closed"} {
		t.Run(how, func(t *testing.T) {
			c, err := dialTLS(t, srv.addr, s)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Encrypted() || c.raw == nil {
				t.Fatal("the connection is not encrypted, or its socket cannot be peeked")
			}
			server := <-srv.conns
			if !c.alive() {
				t.Fatal("a fresh connection looks dead")
			}
			// A request and its answer, waited for on the socket under TLS.
			for range 3 {
				roundTrip(t, c)
			}
			if !c.alive() {
				t.Fatal("an idle connection looks dead")
			}
			switch how {
			case "FATAL and close_notify":
				server.Write((&wire.Error{Severity: wire.SeverityFatal, Code: "57P01", Message: "terminating connection due to administrator command"}).Append(nil))
				server.Close()
			case "socket closed":
				server.(*tls.Conn).NetConn().Close()
			}
			waitAlive(t, c, false, "after the server went away")
		})
	}
}

// TestDialTLSModes: prefer goes on in plain text with a server that says 'N'; require refuses it
// with a *pgtls.Error; a wrong CA fails the handshake.
func TestDialTLSModes(t *testing.T) {
	ca, cert := testCA(t)
	plain := newTLSServer(t, cert, true)
	prefer, _ := pgtls.NewServerTLS(pgtls.Prefer, "")
	c, err := dialTLS(t, plain.addr, prefer)
	if err != nil || c.Encrypted() {
		t.Fatalf("prefer against a plain server: %v, encrypted %v", err, c != nil && c.Encrypted())
	}
	<-plain.conns
	require, _ := pgtls.NewServerTLS(pgtls.Require, "")
	var te *pgtls.Error
	if _, err := dialTLS(t, plain.addr, require); !errors.As(err, &te) || !errors.Is(err, pgtls.ErrNoServerTLS) {
		t.Fatalf("require against a plain server: %v", err)
	}
	other := pgtlstest.NewCA(t, ca.Dir, "other")
	wrong, _ := pgtls.NewServerTLS(pgtls.VerifyCA, other.CertFile)
	srv := newTLSServer(t, cert, false)
	if _, err := dialTLS(t, srv.addr, wrong); !errors.As(err, &te) {
		t.Fatalf("a wrong CA: %v", err)
	}
}

// TestAliveTLSPostHandshake: records that carry no application data (a TLS 1.3 session ticket,
// arriving after the handshake) make the idle socket readable but do not make a healthy
// connection look dead; the connection works on after the check read them; and application data
// or the server's close then do.
func TestAliveTLSPostHandshake(t *testing.T) {
	ca, cert := testCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		// With a client certificate asked for, Go sends the session ticket once it has the
		// client's second flight: after the client's handshake has returned.
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13})
		if tc.Handshake() != nil {
			c.Close()
			tc = nil
		}
		accepted <- tc
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// A session cache, so the client offers resumption and Go's server sends a ticket (pgtide
	// keeps none, but other servers may send tickets regardless).
	client := tls.Client(raw, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", ClientSessionCache: tls.NewLRUClientSessionCache(1)})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("server handshake failed")
	}
	defer server.Close()
	c := newConn(Key{Node: ln.Addr().String()}, raw, client, 1<<20)
	defer c.close()

	// Wait for the ticket on the socket, then check.
	deadline := time.Now().Add(10 * time.Second)
	for c.peekSocket() != peekData {
		if time.Now().After(deadline) {
			t.Fatal("no session ticket arrived")
		}
		time.Sleep(time.Millisecond)
	}
	if !c.alive() {
		t.Fatal("a session ticket made the connection look dead")
	}
	if got := c.peekSocket(); got != peekEmpty {
		t.Fatalf("the ticket was not read: peek %d", got)
	}
	// The connection works on.
	server.Write(wire.AppendReadyForQuery(nil, 'I'))
	c.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
	if typ, _, err := c.Reader.Next(); err != nil || typ != 'Z' {
		t.Fatalf("after the check: %q %v", typ, err)
	}
	c.Reader.Skip()
	c.NetConn().SetReadDeadline(time.Time{})
	if !c.alive() {
		t.Fatal("an idle connection looks dead")
	}
	// Application data at idle: the server is going away.
	server.Write((&wire.Error{Severity: wire.SeverityFatal, Code: "57P01", Message: "terminating connection"}).Append(nil))
	waitAlive(t, c, false, "after an ErrorResponse")
}

// TestAliveTLSCloseNotify: a close_notify alone (the server closed TLS, the socket still open) is
// the server going away.
func TestAliveTLSCloseNotify(t *testing.T) {
	_, cert := testCA(t)
	srv := newTLSServer(t, cert, false)
	s, _ := pgtls.NewServerTLS(pgtls.Require, "")
	c, err := dialTLS(t, srv.addr, s)
	if err != nil {
		t.Fatal(err)
	}
	server := (<-srv.conns).(*tls.Conn)
	if err := server.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, c, false, "after close_notify")
}
