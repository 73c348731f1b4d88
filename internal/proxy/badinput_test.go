package proxy_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
	"pgtide/internal/proxy"
)

// rawConn is a client that speaks bytes, for input no driver would send.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	fe *pgproto3.Frontend
}

func (p *testProxy) raw(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	return &rawConn{t: t, c: c, br: br, fe: pgproto3.NewFrontend(br, c)}
}

// send writes msgs in one write.
func (r *rawConn) send(msgs ...pgproto3.FrontendMessage) {
	r.t.Helper()
	for _, m := range msgs {
		r.fe.Send(m)
	}
	if err := r.fe.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

// expect reads messages up to ReadyForQuery and compares their types (and error codes) with
// want, such as "DataRow" or "Error:42P05".
func (r *rawConn) expect(want ...string) []pgproto3.BackendMessage {
	r.t.Helper()
	var got []string
	var msgs []pgproto3.BackendMessage
	for {
		m, err := r.fe.Receive()
		if err != nil {
			r.t.Fatal(err)
		}
		name := fmt.Sprintf("%T", m)[len("*pgproto3."):]
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			name = "Error:" + e.Code
		}
		got = append(got, name)
		msgs = append(msgs, m)
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		r.t.Fatalf("got  %v\nwant %v", got, want)
	}
	return msgs
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// startup builds a startup packet with the given protocol code and parameters.
func startupPacket(code uint32, params ...string) []byte {
	b := []byte{0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, code)
	for _, p := range params {
		b = append(b, p...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// expectError reads messages until an ErrorResponse and checks its SQLSTATE; then the server
// must close the connection if fatal.
func (r *rawConn) expectError(code string, fatal bool) *pgproto3.ErrorResponse {
	r.t.Helper()
	for {
		msg, err := r.fe.Receive()
		if err != nil {
			r.t.Fatalf("waiting for error %s: %v", code, err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			if e.Code != code {
				r.t.Fatalf("got error %s %q, want %s", e.Code, e.Message, code)
			}
			if fatal && e.Severity != "FATAL" {
				r.t.Fatalf("severity %s, want FATAL", e.Severity)
			}
			if fatal {
				if _, err := r.br.ReadByte(); err != io.EOF {
					r.t.Fatalf("connection not closed after FATAL: %v", err)
				}
			}
			return e
		}
	}
}

// login completes a trust login and reads up to ReadyForQuery.
func (r *rawConn) login(user, db string) {
	r.t.Helper()
	r.write(startupPacket(3<<16, "user", user, "database", db))
	r.untilReady()
}

func (r *rawConn) untilReady() {
	r.t.Helper()
	for {
		msg, err := r.fe.Receive()
		if err != nil {
			r.t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			return
		case *pgproto3.ErrorResponse:
			r.t.Fatalf("unexpected error %s %s", m.Code, m.Message)
		}
	}
}

// TestBadInput: each malformed or refused connection gets the right SQLSTATE, and pgtide keeps
// serving everyone else (checked with a client that stays connected throughout, and by the
// goroutine-leak check in startProxy's cleanup).
func TestBadInput(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Auth.Method = config.AuthTrust
		c.Proxy.MaxMessageSize = 64 << 10
	})
	ctx := context.Background()
	bystander := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	check := func() {
		t.Helper()
		if _, err := bystander.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("bystander broken: %v", err)
		}
	}

	cases := []struct {
		name  string
		input func(r *rawConn)
		code  string
		msg   string
	}{
		{"startup length too small", func(r *rawConn) { r.write([]byte{0, 0, 0, 3}) }, "08P01", "invalid length"},
		{"startup length too large", func(r *rawConn) { r.write([]byte{0, 1, 0, 0, 0, 3, 0, 0}) }, "08P01", "invalid length"},
		{"protocol 2.0", func(r *rawConn) { r.write(startupPacket(2<<16, "user", "app")) }, "0A000", "unsupported frontend protocol 2.0"},
		{"protocol 4.0", func(r *rawConn) { r.write(startupPacket(4<<16, "user", "app")) }, "0A000", "unsupported frontend protocol"},
		{"no user", func(r *rawConn) { r.write(startupPacket(3<<16, "database", "appdb")) }, "08P01", "no PostgreSQL user name"},
		{"no terminator", func(r *rawConn) {
			b := startupPacket(3<<16, "user", "app")
			r.write(b[:len(b)-1])
			r.c.(*net.TCPConn).CloseWrite()
		}, "", ""},
		{"data after SSLRequest", func(r *rawConn) {
			b := []byte{0, 0, 0, 8, 4, 210, 22, 47}
			r.write(append(b, startupPacket(3<<16, "user", "app")...))
		}, "08P01", "unexpected data after encryption request"},
		{"replication connection", func(r *rawConn) {
			r.write(startupPacket(3<<16, "user", "app", "replication", "database"))
		}, "0A000", "replication"},
		{"unknown database", func(r *rawConn) {
			r.write(startupPacket(3<<16, "user", "app", "database", "no_such_db"))
		}, "3D000", "no_such_db"},
		{"message too large", func(r *rawConn) {
			r.login("app", "appdb")
			q := []byte{'Q', 0, 2, 0, 0}
			r.write(q)
		}, "08P01", "more than the limit"},
		{"message length below 4", func(r *rawConn) {
			r.login("app", "appdb")
			r.write([]byte{'Q', 0, 0, 0, 2})
		}, "08P01", "invalid message length"},
		{"unknown message type", func(r *rawConn) {
			r.login("app", "appdb")
			r.write([]byte{'!', 0, 0, 0, 8, 1, 2, 3, 4}) // no Sync: the answer comes at once
		}, "08P01", "invalid frontend message type 33"},
		{"unknown message type in a batch", func(r *rawConn) {
			r.login("app", "appdb")
			r.send(&pgproto3.Parse{Query: "SELECT 1"})
			r.write([]byte{'!', 0, 0, 0, 4})
			r.send(&pgproto3.Sync{})
		}, "08P01", "invalid frontend message type 33"},
		{"startup then garbage then EOF", func(r *rawConn) {
			r.login("app", "appdb")
			r.write([]byte{'Q', 0, 0, 0, 100, 'S', 'E'})
			r.c.(*net.TCPConn).CloseWrite()
		}, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := p.raw(t)
			tc.input(r)
			if tc.code == "" {
				// Nothing to say to the client: the connection is just closed.
				if _, err := io.ReadAll(r.br); err != nil {
					t.Fatalf("expected a clean close, got %v", err)
				}
			} else {
				e := r.expectError(tc.code, true)
				if !strings.Contains(e.Message, tc.msg) {
					t.Fatalf("message %q does not mention %q", e.Message, tc.msg)
				}
			}
			check()
		})
	}
}

// TestEncryptionRequests: SSLRequest and GSSENCRequest are answered 'N' and the client goes on in
// plain text, as with a server without TLS; a protocol 3.2 client with options is negotiated down.
func TestEncryptionRequests(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Auth.Method = config.AuthTrust })
	for _, code := range []uint32{80877103, 80877104} {
		r := p.raw(t)
		req := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 8}, code)
		r.write(req)
		if b, err := r.br.ReadByte(); err != nil || b != 'N' {
			t.Fatalf("encryption request %d: got %q %v", code, b, err)
		}
		r.login("app", "appdb")
	}
	// sslmode=prefer in a real driver: falls back to plain text.
	c, err := pgx.Connect(context.Background(), strings.Replace(p.connString("app", "appdb"), "sslmode=disable", "sslmode=prefer", 1))
	if err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())

	r := p.raw(t)
	r.write(startupPacket(3<<16|2, "user", "app", "database", "appdb", "_pq_.test_option", "1"))
	msg, err := r.fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	npv, ok := msg.(*pgproto3.NegotiateProtocolVersion)
	if !ok || npv.NewestMinorProtocol != 196608 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.test_option" {
		t.Fatalf("want NegotiateProtocolVersion 3.0 listing the option, got %#v", msg)
	}
	r.untilReady()
}

// TestClientLimits: max_client_connections refuses the next client with 53300, and a server that
// is down gives a clear 08001 rather than a hang.
func TestClientLimits(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Proxy.MaxClientConnections = 2; c.Auth.Method = config.AuthTrust })
	a := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	r := p.raw(t)
	r.write(startupPacket(3<<16, "user", "app", "database", "appdb"))
	e := r.expectError("53300", true)
	if !strings.Contains(e.Message, "too many clients") {
		t.Fatalf("message %q", e.Message)
	}
	a.Close(context.Background())
	waitFor(t, 10*time.Second, "a client slot to free up", func() bool { return p.ClientCount() < 2 })
	p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
}

func TestServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.Hosts = []string{addr}
		c.Auth.Method = config.AuthTrust
		c.Cluster.ServerConnectTimeout.Duration = 2 * time.Second
		c.Cluster.FailoverTimeout.Duration = time.Second
	})
	// With its only node down since the start there is no writer, nor a failover to wait for:
	// the client gets at once an error that says why, rather than hanging.
	r := p.raw(t)
	r.write(startupPacket(3<<16, "user", "app", "database", "appdb"))
	e := r.expectError("57P03", true)
	if !strings.Contains(e.Message, "cannot reach the cluster") || !strings.Contains(e.Message, "connection refused") {
		t.Fatalf("message %q", e.Message)
	}
	if n := p.Pools().NodeTotal(addr); n != 0 {
		t.Fatalf("%d server connection slots still counted after failed dials", n)
	}
}

// TestLoginTimeout: a client that sends nothing is closed after client_login_timeout, with no
// message, as PostgreSQL closes one after authentication_timeout. It has a proxy of its own: a
// timeout this short would also end the logins of TestBadInput's clients on a busy machine.
func TestLoginTimeout(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Proxy.ClientLoginTimeout.Duration = 500 * time.Millisecond })
	r := p.raw(t)
	if _, err := io.ReadAll(r.br); err != nil {
		t.Fatalf("expected a clean close, got %v", err)
	}
}

// TestLoginTimeoutWhileDialing: a client whose client_login_timeout passes while pgtide dials its
// first server connection gets a FATAL 08001, and pgtide stops dialing for it then. The deadline
// is the client's, not the node's: it once counted as a node that did not answer, so the login
// went on trying at once, again and again, until failover_timeout, marking every node suspect on
// the way (under TestReaderBalance's 300 concurrent logins on a loaded machine: 67,000 tries in
// one minute, 121,000 in four runs).
func TestLoginTimeoutWhileDialing(t *testing.T) {
	var dials atomic.Int64
	p := startProxyPrepared(t, func(c *config.Config) {
		c.Auth.Method = config.AuthTrust
		c.Proxy.ClientLoginTimeout.Duration = 500 * time.Millisecond
		c.Cluster.ServerConnectTimeout.Duration = time.Minute
		c.Cluster.QueryWaitTimeout.Duration = time.Minute
		c.Cluster.FailoverTimeout.Duration = time.Minute
	}, func(s *proxy.Server) {
		s.Pools().DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			<-ctx.Done() // a server that does not answer before the login deadline
			return nil, ctx.Err()
		}
	})
	r := p.raw(t)
	r.write(startupPacket(3<<16, "user", "app", "database", "appdb"))
	r.expectError("08001", true)
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials for one login whose deadline passed during the first", n)
	}
}

// TestUnknownMessageInBatch: a message of an unknown type in an extended-protocol batch ends the
// connection after the batch's earlier messages are answered, even when an error made the server
// skip to the Sync, and when no Sync follows: the same answers as PostgreSQL's, error texts
// included, in both pool modes.
func TestUnknownMessageInBatch(t *testing.T) {
	unknown := []byte{'!', 0, 0, 0, 4}
	cases := []struct {
		first []pgproto3.FrontendMessage
		sync  bool
		wait  bool // the answer to first (an error) is read before the unknown message is sent
	}{
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT 1"}}, true, false},
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELEC 1"}}, true, false},
		// A simple Query in flight before it: answered first.
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT 1"}}, true, false},
		// Nothing after it: the server ends the connection without a Sync.
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT 1"}}, false, false},
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}}, false, false},
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}}, false, false},
		// While the server skips to the Sync after an error, known to be skipping.
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELEC 1"}, &pgproto3.Flush{}}, true, true},
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELEC 1"}, &pgproto3.Flush{}}, false, true},
	}
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) {
				c.Auth.Method = config.AuthTrust
				c.Proxy.PoolMode = mode
			})
			for i, tc := range cases {
				answers := func(addr string) []string {
					c, err := dialFuzzClient(addr)
					if err != nil {
						t.Fatal(err)
					}
					defer c.conn.Close()
					for _, m := range tc.first {
						c.fe.Send(m)
					}
					if err := c.fe.Flush(); err != nil {
						t.Fatal(err)
					}
					var got []string
					if tc.wait {
						c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
						m, err := c.fe.Receive()
						if err != nil {
							t.Fatal(err)
						}
						_, detail := describeFuzzMessage(m)
						got = append(got, detail)
					}
					if _, err := c.conn.Write(unknown); err != nil {
						t.Fatal(err)
					}
					if tc.sync {
						c.fe.Send(&pgproto3.Sync{})
						c.fe.Flush() // the server may have closed already
					}
					for {
						c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
						m, err := c.fe.Receive()
						if err != nil {
							if ne, ok := err.(net.Error); ok && ne.Timeout() {
								return append(got, "no answer")
							}
							return append(got, "closed")
						}
						_, detail := describeFuzzMessage(m)
						got = append(got, detail)
					}
				}
				want, got := answers(cluster.Primary().Addr()), answers(p.Addr().String())
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("case %d: pgtide answered\n\t%s\nPostgreSQL\n\t%s", i, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
				}
			}
		})
	}
}
