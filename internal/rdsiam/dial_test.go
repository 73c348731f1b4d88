package rdsiam_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/pgtls"
	"pgtide/internal/pool"
	"pgtide/internal/rdsiam"
)

// fakeRDS is a scripted PostgreSQL server that asks every client for a cleartext password, as
// RDS does for a user granted rds_iam, and records what it receives. No local server can check
// an IAM token: this one only keeps it for the test to check. With a TLS config it speaks TLS
// from the first byte (the test's dialer does the handshake, standing in for server_tls);
// without one it answers an SSLRequest with 'N', as a server without TLS does.
type fakeRDS struct {
	ln  net.Listener
	tls *tls.Config
	// sslRequest: the connection starts in plain text with an SSLRequest, answered 'S' (as
	// PostgreSQL does); otherwise TLS starts at once (the test's dialer does the handshake).
	sslRequest bool

	mu        sync.Mutex
	users     []string // from the startup messages, in order
	passwords []string // from the password messages, in order
	ended     int      // connections handled to their end
	wg        sync.WaitGroup
	conns     []net.Conn
}

func newFakeRDS(t *testing.T, cfg *tls.Config) *fakeRDS { return newFakeRDSWith(t, cfg, false) }

// newFakeRDSWith is newFakeRDS, with connections that start with an SSLRequest (see
// fakeRDS.sslRequest).
func newFakeRDSWith(t *testing.T, cfg *tls.Config, sslRequest bool) *fakeRDS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRDS{ln: ln, tls: cfg, sslRequest: sslRequest}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeRDS) addr() string { return f.ln.Addr().String() }

func (f *fakeRDS) serve(nc net.Conn) {
	defer func() {
		nc.Close()
		f.mu.Lock()
		f.ended++
		f.mu.Unlock()
	}()
	nc.SetDeadline(time.Now().Add(time.Minute))
	var c net.Conn = nc
	if f.sslRequest {
		// As PostgreSQL: an SSLRequest answered 'S', then the handshake.
		msg, err := pgproto3.NewBackend(nc, nc).ReceiveStartupMessage()
		if _, ok := msg.(*pgproto3.SSLRequest); !ok || err != nil {
			return
		}
		if _, err := nc.Write([]byte{'S'}); err != nil {
			return
		}
	}
	if f.tls != nil {
		c = tls.Server(nc, f.tls)
	}
	be := pgproto3.NewBackend(c, c)
	msg, err := be.ReceiveStartupMessage()
	if _, ok := msg.(*pgproto3.SSLRequest); ok && err == nil {
		if _, err := c.Write([]byte{'N'}); err != nil {
			return
		}
		msg, err = be.ReceiveStartupMessage()
	}
	startup, ok := msg.(*pgproto3.StartupMessage)
	if err != nil || !ok {
		return
	}
	f.mu.Lock()
	f.users = append(f.users, startup.Parameters["user"])
	f.mu.Unlock()
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeCleartextPassword) != nil {
		return
	}
	msg, err = be.Receive()
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if err != nil || !ok {
		return
	}
	f.mu.Lock()
	f.passwords = append(f.passwords, pw.Password)
	f.mu.Unlock()
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 2}})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "17.0"})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	io.Copy(io.Discard, c) // until the pool closes the connection
}

// got returns the users and passwords received so far, and how many connections have ended.
func (f *fakeRDS) got() (users, passwords []string, ended int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.users...), append([]string(nil), f.passwords...), f.ended
}

// testTLS returns a server config with a certificate for 127.0.0.1 and a client config that
// trusts it and checks the name (verify-full).
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake rds"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// iamManager returns a pool Manager whose dials log in as iam users with tokens from the
// standard credential chain (static test credentials), signed for region, over dial.
func iamManager(t *testing.T, region string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*pool.Manager, *rdsiam.Tokens) {
	t.Helper()
	tokens := rdsiam.New(rdsiam.CredentialChain(), rdsiam.Options{})
	m := pool.NewManager(pool.Settings{PoolSize: 2, MaxServerConnections: 10, ServerLifetime: time.Hour,
		ServerIdleTimeout: time.Hour, ServerConnectTimeout: 5 * time.Second, MaxMessageSize: 1 << 20})
	m.DialFunc = dial
	// What package proxy does for a user with iam = true.
	m.Secret = func(ctx context.Context, node, user string) (pool.ServerSecret, error) {
		tok, err := tokens.Token(ctx, region, node, user)
		return pool.ServerSecret{Password: tok, RequireTLS: true}, err
	}
	t.Cleanup(func() {
		m.Close()
		tokens.Close()
	})
	return m, tokens
}

// checkNoLeaks fails the test if goroutines started during it outlive it. Call it first, so its
// cleanup runs after every other.
func checkNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutine leak: %d, %d before\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestScriptedBackendReceivesToken: over TLS, each node receives, as the cleartext password, the
// RDS IAM auth token for its own host:port, the user and the region; a second connection to the
// same node and user gets the cached token.
func TestScriptedBackendReceivesToken(t *testing.T) {
	checkNoLeaks(t)
	rdsiam.StaticCredentials(t)
	serverTLS, clientTLS := testTLS(t)
	nodes := []*fakeRDS{newFakeRDS(t, serverTLS), newFakeRDS(t, serverTLS)}
	dialTLS := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(nc, clientTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	const region = "eu-west-1"
	m, tokens := iamManager(t, region, dialTLS)
	before := time.Now().UTC().Add(-time.Second)
	var conns []*pool.Conn
	for _, n := range nodes {
		for range 2 { // two at once: the second dials too, with the cached token
			c, err := m.Acquire(t.Context(), pool.Key{Node: n.addr(), Database: "db", User: "iam_app"}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	for _, c := range conns {
		m.Release(c, false)
	}
	for _, n := range nodes {
		users, passwords, _ := n.got()
		if len(users) != 2 || users[0] != "iam_app" || users[1] != "iam_app" || len(passwords) != 2 {
			t.Fatalf("node %s: users %q and %d passwords, want iam_app twice", n.addr(), users, len(passwords))
		}
		rdsiam.CheckToken(t, passwords[0], n.addr(), region, "iam_app", before, time.Now().UTC().Add(time.Second))
		cached, err := tokens.Token(t.Context(), region, n.addr(), "iam_app")
		if err != nil {
			t.Fatal(err)
		}
		if passwords[1] != passwords[0] || passwords[0] != cached {
			t.Errorf("node %s: the two logins sent different tokens, or not the cached one", n.addr())
		}
	}
	_, p0, _ := nodes[0].got()
	_, p1, _ := nodes[1].got()
	if p0[0] == p1[0] {
		t.Error("two nodes received the same token")
	}
}

// TestScriptedBackendPlaintextRefused: without TLS the dial refuses before it sends anything:
// the server receives no startup message and no password, and the error says why.
func TestScriptedBackendPlaintextRefused(t *testing.T) {
	checkNoLeaks(t)
	rdsiam.StaticCredentials(t)
	node := newFakeRDS(t, nil)
	var d net.Dialer
	m, _ := iamManager(t, "eu-west-1", d.DialContext)
	_, err := m.Acquire(t.Context(), pool.Key{Node: node.addr(), Database: "db", User: "iam_app"}, 5*time.Second)
	var ce *pool.CredentialError
	if !errors.As(err, &ce) || !errors.Is(err, pool.ErrTLSRequired) {
		t.Fatalf("Acquire: %v, want a *pool.CredentialError wrapping pool.ErrTLSRequired", err)
	}
	want := `pgtide cannot log in as user "iam_app": the server connection is not encrypted (server_tls), and this user's secret, an RDS IAM auth token, is sent only over TLS`
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		users, passwords, ended := node.got()
		if ended == 1 {
			if len(users) != 0 || len(passwords) != 0 {
				t.Fatalf("the server received users %q and %d passwords over plaintext", users, len(passwords))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refused connection did not end: %d ended", ended)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScriptedBackendServerTLS: with server_tls = "verify-full" (pgtide's own negotiation: an
// SSLRequest, then the handshake and the certificate's checks), the node receives the token for
// its host:port as the cleartext password.
func TestScriptedBackendServerTLS(t *testing.T) {
	checkNoLeaks(t)
	rdsiam.StaticCredentials(t)
	serverTLS, _ := testTLS(t)
	node := newFakeRDSWith(t, serverTLS, true)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverTLS.Certificates[0].Certificate[0]})
	if err := os.WriteFile(caFile, pemCA, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := pgtls.NewServerTLS(pgtls.VerifyFull, caFile)
	if err != nil {
		t.Fatal(err)
	}
	const region = "us-east-1"
	m, _ := iamManager(t, region, nil)
	m.ServerTLS = func() *pgtls.ServerTLS { return st }
	before := time.Now().UTC().Add(-time.Second)
	c, err := m.Acquire(t.Context(), pool.Key{Node: node.addr(), Database: "db", User: "iam_app"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Encrypted() {
		t.Error("the server connection is not encrypted")
	}
	m.Release(c, false)
	users, passwords, _ := node.got()
	if len(users) != 1 || users[0] != "iam_app" || len(passwords) != 1 {
		t.Fatalf("users %q and %d passwords, want iam_app once", users, len(passwords))
	}
	rdsiam.CheckToken(t, passwords[0], node.addr(), region, "iam_app", before, time.Now().UTC().Add(time.Second))
}
