package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// sentCounter wraps a dial, counting the bytes written on every connection it opens.
type sentCounter struct{ n atomic.Int64 }

type sentBytesConn struct {
	net.Conn
	n *atomic.Int64
}

func (c sentBytesConn) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.Conn.Write(p)
}

func (s *sentCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return sentBytesConn{c, &s.n}, nil
}

// tokenSource records the token requests of a test and answers them.
type tokenSource struct {
	mu    sync.Mutex
	asked []string // node/user
	err   error
}

func (s *tokenSource) token(_ context.Context, node, user string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, node+"/"+user)
	if s.err != nil {
		return "", s.err
	}
	return "tok-for-" + node, nil
}

func (s *tokenSource) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

// TestIAMHealthCheckNeedsTLS: a health check whose user logs in with an RDS IAM token asks the
// token for its node and user, and on a connection without TLS sends nothing at all; the
// node's failure says why, and so does the log, without the token.
func TestIAMHealthCheckNeedsTLS(t *testing.T) {
	checkNoLeaks(t)
	srv := newHangingListener(t) // would take whatever it is sent
	var sent sentCounter
	tokens := &tokenSource{}
	cfg := Config{
		Hosts: []Host{{Addr: srv.addr()}}, User: "iam_monitor", IAM: true, Token: tokens.token,
		HealthCheckInterval: 20 * time.Millisecond, Dial: sent.dial,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tc := runCluster(t, cfg)
	n := tc.node(srv.addr())
	waitFor(t, 10*time.Second, "check failure noted", func() error {
		if f := n.CheckFailure(); f != errIAMNeedsTLS.Error() {
			return errors.New("failure: " + f)
		}
		return nil
	})
	if got := tokens.requests(); len(got) == 0 || got[0] != srv.addr()+"/iam_monitor" {
		t.Errorf("token requests %v", got)
	}
	if sent.n.Load() != 0 {
		t.Errorf("%d bytes were sent on a connection without TLS", sent.n.Load())
	}
	if n.Up() {
		t.Error("node up though no check could log in")
	}
	tc.logs.mu.Lock()
	defer tc.logs.mu.Unlock()
	for _, r := range tc.logs.recs {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
		if strings.Contains(b.String(), "tok-for-") {
			t.Errorf("the token was logged: %s", b.String())
		}
	}
}

// TestIAMHealthCheckTokenFailure: when no token can be made the check fails with a reason that
// says so, and tries again at the next check.
func TestIAMHealthCheckTokenFailure(t *testing.T) {
	checkNoLeaks(t)
	srv := newHangingListener(t)
	tokens := &tokenSource{err: errors.New("no EC2 IMDS role found")}
	tc := runCluster(t, Config{
		Hosts: []Host{{Addr: srv.addr()}}, User: "iam_monitor", IAM: true, Token: tokens.token,
		HealthCheckInterval: 20 * time.Millisecond,
	})
	n := tc.node(srv.addr())
	waitFor(t, 10*time.Second, "two token requests and the failure noted", func() error {
		if f := n.CheckFailure(); !strings.HasPrefix(f, errIAMToken.Error()) || len(tokens.requests()) < 2 {
			return errors.New("failure: " + f)
		}
		return nil
	})
}

// TestUseIAMToken: the token becomes the password, answered only to a cleartext request, and
// only a TLS connection gets past AfterNetConnect.
func TestUseIAMToken(t *testing.T) {
	tokens := &tokenSource{}
	c := New(Config{Hosts: []Host{{Addr: "db:5432"}}, User: "app", IAM: true, Token: tokens.token}, nil)
	pcfg, err := pgconn.ParseConfig("host=db port=5432 user=app sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.useIAMToken(t.Context(), pcfg, "db:5432"); err != nil {
		t.Fatal(err)
	}
	if pcfg.Password != "tok-for-db:5432" || pcfg.RequireAuth != "password" {
		t.Fatalf("password %q require_auth %q", pcfg.Password, pcfg.RequireAuth)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := pcfg.AfterNetConnect(t.Context(), pcfg, a); !errors.Is(err, errIAMNeedsTLS) {
		t.Fatalf("plain connection: %v", err)
	}
	tc := tls.Client(a, &tls.Config{ServerName: "db"}) // no handshake needed to tell its type
	if got, err := pcfg.AfterNetConnect(t.Context(), pcfg, tc); err != nil || got != tc {
		t.Fatalf("TLS connection: %v, %v", got, err)
	}
	if !c.login("postgres").iam {
		t.Error("the login does not say it is an IAM one: a reload turning iam off would not reconnect")
	}
}
