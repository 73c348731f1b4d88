package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
	"pgtide/internal/pgtls"
	"pgtide/internal/pgtls/pgtlstest"
	"pgtide/internal/proxy"
	"pgtide/internal/wire"
)

// testTLS is a test's TLS material: one CA that signs the servers' certificate and pgtide's,
// another that signs client certificates (pgtide's ca_file). Methods on a nil *testTLS do
// nothing, so a test can run with TLS or without.
type testTLS struct {
	ca      *pgtlstest.CA
	server  pgtlstest.Pair // PostgreSQL's: 127.0.0.1 and localhost
	proxy   pgtlstest.Pair // pgtide's: 127.0.0.1 and localhost
	clients *pgtlstest.CA
}

func newTestTLS(t testing.TB) *testTLS { return newTestTLSIn(t, t.TempDir()) }

func newTestTLSIn(t testing.TB, dir string) *testTLS {
	ca := pgtlstest.NewCA(t, dir, "ca")
	return &testTLS{
		ca:      ca,
		server:  ca.Server(t, "postgres", "127.0.0.1", "localhost"),
		proxy:   ca.Server(t, "pgtide", "127.0.0.1", "localhost"),
		clients: pgtlstest.NewCA(t, dir, "clients"),
	}
}

// serve makes a cluster serve TLS with tt's server certificate; role app may connect only over
// TLS, so a plain-text pgtide would be refused.
func (tt *testTLS) serve(o *pgcluster.Options) {
	if tt == nil {
		return
	}
	crt, err1 := os.ReadFile(tt.server.CertFile)
	key, err2 := os.ReadFile(tt.server.KeyFile)
	if err := errors.Join(err1, err2); err != nil {
		panic(err)
	}
	o.ExtraConf = append(o.ExtraConf, "ssl = on")
	o.DataFiles = map[string][]byte{"server.crt": crt, "server.key": key}
	o.HBA = append([]string{"hostnossl all app 127.0.0.1/32 reject"}, o.HBA...)
}

// configure sets client_tls (with pgtide's certificate and the clients' CA) and server_tls
// (with the servers' CA).
func (tt *testTLS) configure(c *config.Config, client, server pgtls.Mode) {
	if tt == nil {
		return
	}
	c.TLS = config.TLS{CertFile: tt.proxy.CertFile, KeyFile: tt.proxy.KeyFile, CAFile: tt.clients.CertFile, ClientTLS: string(client)}
	c.Cluster.ServerTLS, c.Cluster.ServerCAFile = string(server), tt.ca.CertFile
}

// connString turns a connection string's sslmode=disable into verify-full against tt's CA.
func (tt *testTLS) connString(s string) string {
	if tt == nil {
		return s
	}
	return strings.Replace(s, "sslmode=disable", "sslmode=verify-full sslrootcert="+tt.ca.CertFile, 1)
}

// wantServerSSL checks on the node conn is connected to that pgtide's connections there (role
// app, and the health checks') are all encrypted, and that there are some.
func (tt *testTLS) wantServerSSL(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if tt == nil {
		return
	}
	var encrypted, plain int
	err := conn.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.usename = 'app' OR a.application_name = 'pgtide health check'`).Scan(&encrypted, &plain)
	if err != nil || encrypted == 0 || plain != 0 {
		t.Fatalf("pgtide's connections to the server: %d encrypted, %d not (%v)", encrypted, plain, err)
	}
}

// tlsCluster is a lone primary serving TLS with sharedTLS's certificate, shared by the tests
// that do not change it; started by the first that needs it, stopped by TestMain.
var tlsCluster struct {
	once sync.Once
	c    *pgcluster.Cluster
	tt   *testTLS
	dir  string
	err  error
}

func sharedTLSCluster(t *testing.T) (*pgcluster.Cluster, *testTLS) {
	t.Helper()
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	tlsCluster.once.Do(func() {
		if tlsCluster.dir, tlsCluster.err = os.MkdirTemp("", "pgtide-tls-"); tlsCluster.err != nil {
			return
		}
		tlsCluster.tt = newTestTLSIn(t, tlsCluster.dir)
		opts := pgcluster.Options{
			// app_pw: a cleartext password, as RDS asks of IAM users (TestIAMUser).
			HBA: []string{"host all app 127.0.0.1/32 scram-sha-256", "host all app_pw 127.0.0.1/32 password"},
			InitSQL: []string{"CREATE ROLE app LOGIN PASSWORD 'app secret'", "CREATE DATABASE appdb OWNER app",
				"CREATE ROLE app_pw LOGIN PASSWORD 'pw secret'"},
		}
		tlsCluster.tt.serve(&opts)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tlsCluster.c, tlsCluster.err = pgcluster.Start(ctx, opts)
	})
	if tlsCluster.err != nil {
		t.Fatal(tlsCluster.err)
	}
	return tlsCluster.c, tlsCluster.tt
}

// closeTLSCluster stops the shared TLS cluster, if a test started it (from TestMain).
func closeTLSCluster() {
	if tlsCluster.c != nil {
		tlsCluster.c.Close()
	}
	if tlsCluster.dir != "" {
		os.RemoveAll(tlsCluster.dir)
	}
}

// tlsConnect connects with pgx through connString, returning the error rather than failing.
func tlsConnect(t *testing.T, connString string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connString)
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

// peerName is the common name of the certificate pgtide presented to c, "" in plain text.
func peerName(c *pgx.Conn) string {
	tc, ok := c.PgConn().Conn().(*tls.Conn)
	if !ok {
		return ""
	}
	return tc.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// psqlRun runs psql with args, returning what it printed and its error.
func psqlRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	psql, err := lookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, append([]string{"-X", "-A", "-t"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "PGCONNECT_TIMEOUT=10"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// TestClientTLS: psql and pgx reach pgtide over TLS (require, verify-full by address and by name,
// direct TLS), see pgtide's certificate, and a plain-text client is refused as PostgreSQL's
// pg_hba refuses it; cancel requests come over TLS; the admin console is behind the same TLS;
// Unix-domain sockets are not refused.
func TestClientTLS(t *testing.T) {
	tt := newTestTLS(t)
	sockets := t.TempDir()
	os.Chmod(sockets, 0o755)
	p := startProxy(t, func(c *config.Config) {
		tt.configure(c, pgtls.Require, pgtls.Prefer)
		c.TLS.CAFile = ""
		c.Proxy.UnixSocketDir = sockets
		c.Auth.AdminUsers = []string{"postgres"}
	})
	plain := p.connString("app", "appdb")
	port := p.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct{ name, conn string }{
		{"require", strings.Replace(plain, "sslmode=disable", "sslmode=require", 1)},
		{"verify-full", tt.connString(plain)},
		{"verify-full by name", strings.Replace(tt.connString(plain), "host=127.0.0.1", "host=localhost", 1)},
		{"direct TLS", tt.connString(plain) + " sslnegotiation=direct"},
	} {
		t.Run("pgx "+tc.name, func(t *testing.T) {
			c, err := tlsConnect(t, tc.conn)
			if err != nil {
				t.Fatal(err)
			}
			if name := peerName(c); name != "pgtide" {
				t.Fatalf("pgtide's certificate: %q", name)
			}
			var user string
			if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&user); err != nil || user != "app" {
				t.Fatalf("query over TLS: %q %v", user, err)
			}
		})
		if tc.name == "direct TLS" {
			continue // psql 15 does not speak it
		}
		t.Run("psql "+tc.name, func(t *testing.T) {
			out, stderr, err := psqlRun(t, tc.conn, "-c", "SELECT 'hello over TLS'")
			if err != nil || out != "hello over TLS\n" {
				t.Fatalf("psql: %q %v\n%s", out, err, stderr)
			}
		})
	}

	// Plain text over TCP: refused, in PostgreSQL's words, with its SQLSTATE.
	want := `no pg_hba.conf entry for host "127.0.0.1", user "app", database "appdb", no encryption`
	_, err := tlsConnect(t, plain)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" || pgErr.Message != want || pgErr.Severity != "FATAL" {
		t.Fatalf("a plain-text client: %v", err)
	}
	if _, stderr, err := psqlRun(t, plain, "-c", "SELECT 1"); err == nil || !strings.Contains(stderr, want) {
		t.Fatalf("psql in plain text: %v\n%s", err, stderr)
	}
	if len(p.logged("client refused", "sqlstate=28000", "no encryption")) == 0 {
		t.Error("the refusal is not logged")
	}
	// sslmode=prefer, libpq's default, takes TLS.
	if out, stderr, err := psqlRun(t, strings.Replace(plain, "sslmode=disable", "sslmode=prefer", 1), "-c", "SHOW ssl"); err != nil {
		t.Fatalf("psql sslmode=prefer: %v\n%s%s", err, out, stderr)
	}

	// A Unix-domain socket is neither encrypted (its SSLRequest is answered 'N') nor refused.
	unix := fmt.Sprintf("host=%s port=%d user=app dbname=appdb password='app secret'", sockets, port)
	if c, err := tlsConnect(t, unix); err != nil {
		t.Fatalf("over the Unix-domain socket: %v", err)
	} else if peerName(c) != "" {
		t.Fatal("TLS over a Unix-domain socket")
	}
	u, err := net.Dial("unix", filepath.Join(sockets, fmt.Sprintf(".s.PGSQL.%d", port)))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(10 * time.Second))
	u.Write(wire.AppendSSLRequest(nil))
	if answer, err := io.ReadAll(io.LimitReader(u, 1)); err != nil || string(answer) != "N" {
		t.Fatalf("SSLRequest over the Unix-domain socket: %q %v", answer, err)
	}

	// Plain text pipelined behind an SSLRequest is refused before any 'S' (CVE-2021-23222).
	r := p.raw(t)
	r.write(append(wire.AppendSSLRequest(nil), startupPacket(3<<16, "user", "app", "database", "appdb")...))
	if e := r.expectError(wire.CodeProtocolViolation, true); !strings.Contains(e.Message, "unexpected data after encryption request") {
		t.Fatalf("pipelined after SSLRequest: %s", e.Message)
	}

	// A cancel request comes over TLS too (pgx encrypts it as its connection).
	c, err := tlsConnect(t, tt.connString(plain))
	if err != nil {
		t.Fatal(err)
	}
	cancelSleep(t, c, direct(t, "postgres"))

	// The admin console is behind the same TLS, and SHOW CONFIG names the files, never a key.
	admin, err := tlsConnect(t, tt.connString(p.connString("postgres", "pgtide")))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := admin.Query(context.Background(), "SHOW CONFIG", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(tt.proxy.KeyFile)
	keyLine := strings.Split(string(key), "\n")[1] // the first line of the key itself
	shown := map[string]string{}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		if line := fmt.Sprint(vals...); strings.Contains(line, "PRIVATE KEY") || strings.Contains(line, keyLine) {
			t.Errorf("SHOW CONFIG shows key material: %s", line)
		}
		shown[fmt.Sprint(vals[0])] = fmt.Sprint(vals[1])
	}
	if shown["tls.key_file"] != tt.proxy.KeyFile || shown["tls.client_tls"] != "require" || shown["cluster.server_tls"] != "prefer" {
		t.Errorf("SHOW CONFIG: tls.key_file %q, tls.client_tls %q, cluster.server_tls %q",
			shown["tls.key_file"], shown["tls.client_tls"], shown["cluster.server_tls"])
	}
}

// cancelSleep runs a pg_sleep on c, waits until mon (on its server) sees it running, and cancels
// it with a CancelRequest.
func cancelSleep(t *testing.T, c, mon *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
		errc <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep to start", func() bool {
		var n int
		mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").Scan(&n)
		return n == 1
	})
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if pgCode(err) != "57014" {
			t.Fatalf("cancelled query: got %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the cancel request did not cancel pg_sleep")
	}
}

// TestDirectTLS: a client that starts TLS at once must negotiate ALPN "postgresql" (as
// PostgreSQL 17 requires), and then speaks the protocol inside; without ALPN it is told why,
// encrypted.
func TestDirectTLS(t *testing.T) {
	tt := newTestTLS(t)
	p := startProxy(t, func(c *config.Config) { tt.configure(c, pgtls.Allow, pgtls.Prefer) })
	for _, alpn := range [][]string{{"postgresql"}, nil} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", p.Addr().String(),
			&tls.Config{RootCAs: tt.ca.Pool(), ServerName: "127.0.0.1", NextProtos: alpn})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fe := pgproto3.NewFrontend(conn, conn)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": "postgres", "database": "postgres"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("ALPN %v: %v", alpn, err)
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				if alpn != nil || e.Code != wire.CodeProtocolViolation || !strings.Contains(e.Message, "without ALPN") {
					t.Fatalf("ALPN %v: %s %s", alpn, e.Code, e.Message)
				}
				break
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				if alpn == nil {
					t.Fatal("direct TLS without ALPN was let in")
				}
				break
			}
		}
	}
	// With client_tls = disable a direct TLS client finds no TLS: the connection is closed
	// without a word, as PostgreSQL 17 does (a plain-text error would read as a garbled
	// handshake), and the log says why.
	q := startProxy(t, nil)
	if _, err := tlsConnect(t, tt.connString(q.connString("app", "appdb"))+" sslnegotiation=direct"); err == nil {
		t.Fatal("direct TLS to a pgtide without TLS succeeded")
	}
	r := q.raw(t)
	r.write([]byte{wire.TLSHandshakeByte, 0x03, 0x01, 0x01, 0x71, 0x01, 0x00, 0x01, 0x6d, 0x03, 0x03})
	if got, err := io.ReadAll(r.br); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(got) != 0 {
		t.Fatalf("direct TLS without TLS: answered %q (%v), want the connection closed", got, err)
	}
	if len(q.logged("direct TLS from a client, but TLS is off")) == 0 {
		t.Error("not logged")
	}
}

// TestTLSHandshakeTimeout: client_login_timeout bounds a TLS handshake that a client starts and
// does not finish, after an SSLRequest and direct.
func TestTLSHandshakeTimeout(t *testing.T) {
	tt := newTestTLS(t)
	p := startProxy(t, func(c *config.Config) {
		tt.configure(c, pgtls.Require, pgtls.Prefer)
		c.Proxy.ClientLoginTimeout.Duration = 500 * time.Millisecond
	})
	for _, start := range [][]byte{
		wire.AppendSSLRequest(nil),                // then nothing after the 'S'
		{wire.TLSHandshakeByte, 0x03, 0x01, 0x02}, // half a ClientHello's header
	} {
		r := p.raw(t)
		r.write(start)
		began := time.Now()
		n, err := io.Copy(io.Discard, r.br) // until pgtide closes
		if took := time.Since(began); err != nil || took < 400*time.Millisecond || took > 10*time.Second {
			t.Fatalf("%x: read %d bytes, %v, closed after %s (client_login_timeout 500ms)", start, n, err, took)
		}
	}
}

// TestClientCertificates: verify-ca needs a client certificate from ca_file's CA; verify-full also
// that its common name is the user name; an untrusted certificate fails the handshake (libpq
// sends it; pgx sends none).
func TestClientCertificates(t *testing.T) {
	tt := newTestTLS(t)
	appCert := tt.clients.Client(t, "app-cert", "app")
	aliceCert := tt.clients.Client(t, "alice-cert", "alice")
	stranger := pgtlstest.NewCA(t, t.TempDir(), "stranger").Client(t, "stranger", "app")
	withCert := func(s string, p pgtlstest.Pair) string {
		return s + " sslcert=" + p.CertFile + " sslkey=" + p.KeyFile
	}
	for _, mode := range []pgtls.Mode{pgtls.VerifyCA, pgtls.VerifyFull} {
		t.Run(string(mode), func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { tt.configure(c, mode, pgtls.Prefer) })
			base := tt.connString(p.connString("app", "appdb"))
			for _, tc := range []struct {
				name, conn string
				code, msg  string // "" for success
			}{
				{"the user's certificate", withCert(base, appCert), "", ""},
				{"another user's certificate", withCert(base, aliceCert), map[pgtls.Mode]string{pgtls.VerifyFull: "28000"}[mode],
					map[pgtls.Mode]string{pgtls.VerifyFull: `certificate authentication failed for user "app"`}[mode]},
				{"no certificate", base, "28000", "connection requires a valid client certificate"},
				// pgx sends no certificate that the CAs pgtide names did not sign.
				{"an untrusted certificate", withCert(base, stranger), "28000", "connection requires a valid client certificate"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, err := tlsConnect(t, tc.conn)
					var pgErr *pgconn.PgError
					switch {
					case tc.code == "":
						if err != nil {
							t.Fatal(err)
						}
					case !errors.As(err, &pgErr) || pgErr.Code != tc.code || pgErr.Message != tc.msg:
						t.Fatalf("want %s %q, got %v", tc.code, tc.msg, err)
					}
				})
			}
			// psql with a client certificate; libpq sends an untrusted one, which fails the
			// handshake.
			if out, stderr, err := psqlRun(t, withCert(base, appCert), "-c", "SELECT current_user"); err != nil || out != "app\n" {
				t.Fatalf("psql with a client certificate: %q %v\n%s", out, err, stderr)
			}
			if _, stderr, err := psqlRun(t, withCert(base, stranger), "-c", "SELECT 1"); err == nil || !strings.Contains(stderr, "SSL error") {
				t.Fatalf("psql with an untrusted certificate: %v\n%s", err, stderr)
			}
		})
	}
}

// writeAtomically replaces path with data through a rename, as a certificate renewal does.
func writeAtomically(t *testing.T, path, from string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestTLSReload: a certificate renewed in place (the files watched) and one the configuration
// points to anew (a reload, as SIGHUP does) go to the clients that connect afterwards, while the
// clients connected over TLS before keep working; files that do not load keep the running ones.
func TestTLSReload(t *testing.T) {
	tt := newTestTLS(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "pgtide.crt"), filepath.Join(dir, "pgtide.key")
	writeAtomically(t, certFile, tt.proxy.CertFile)
	writeAtomically(t, keyFile, tt.proxy.KeyFile)
	p := startProxy(t, func(c *config.Config) {
		tt.configure(c, pgtls.Require, pgtls.Prefer)
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
	})
	conn := tt.connString(p.connString("app", "appdb"))
	first, err := tlsConnect(t, conn)
	if err != nil || peerName(first) != "pgtide" {
		t.Fatalf("first client: %v %v", err, first)
	}
	ctx := context.Background()
	mustWork := func(c *pgx.Conn, when string) {
		t.Helper()
		var one int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("%s: a client connected before does not work: %v", when, err)
		}
	}
	nextName := func() string {
		c, err := tlsConnect(t, conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		return peerName(c)
	}

	// Renewed in place: the watcher sees it.
	renewed := tt.ca.Server(t, "pgtide-renewed", "127.0.0.1", "localhost")
	writeAtomically(t, keyFile, renewed.KeyFile)
	writeAtomically(t, certFile, renewed.CertFile)
	waitFor(t, 20*time.Second, "new clients to get the renewed certificate", func() bool { return nextName() == "pgtide-renewed" })
	mustWork(first, "after the renewal")
	if len(p.logged("TLS files changed; reloaded")) == 0 {
		t.Error("the change is not logged")
	}
	// The line that says which certificate is in force tells it from the one it replaced.
	fingerprint := fmt.Sprintf("sha256=%x", sha256.Sum256(renewed.TLSCertificate(t).Leaf.Raw))
	if len(p.logged("TLS towards clients", "CN=pgtide-renewed", fingerprint, "serial=")) == 0 {
		t.Errorf("no TLS towards clients line with the renewed certificate's %s", fingerprint)
	}

	// A broken file: logged, and the running certificate stays.
	os.WriteFile(certFile, []byte("garbage"), 0o600)
	waitFor(t, 20*time.Second, "the broken file to be noticed", func() bool { return len(p.logged("TLS files changed but do not load")) > 0 })
	if name := nextName(); name != "pgtide-renewed" {
		t.Fatalf("after a broken file, clients get %q", name)
	}
	writeAtomically(t, certFile, renewed.CertFile)

	// Renewed in place, then SIGHUP (ReloadFile): in force when the reload returns.
	again := tt.ca.Server(t, "pgtide-again", "127.0.0.1", "localhost")
	writeAtomically(t, keyFile, again.KeyFile)
	writeAtomically(t, certFile, again.CertFile)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	if name := nextName(); name != "pgtide-again" {
		t.Fatalf("after the reload, clients get %q", name)
	}

	// A new pair named by the configuration, reloaded.
	other := tt.ca.Server(t, "pgtide-other", "127.0.0.1", "localhost")
	cfg := *p.Config()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = other.CertFile, other.KeyFile
	writeFile(t, p.cfgPath, &cfg)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	if name := nextName(); name != "pgtide-other" {
		t.Fatalf("after the reload, clients get %q", name)
	}
	mustWork(first, "after the reload")

	// A reload naming a file that does not load is refused whole.
	cfg.TLS.CertFile = filepath.Join(dir, "missing.crt")
	cfg.Cluster.PoolSize = 3
	writeFile(t, p.cfgPath, &cfg)
	if err := p.ReloadFile(p.cfgPath); err == nil {
		t.Fatal("a reload with a missing certificate was applied")
	}
	if p.Config().Cluster.PoolSize == 3 || nextName() != "pgtide-other" {
		t.Fatal("a refused reload changed something")
	}
	mustWork(first, "after a refused reload")
}

// TestShowTLS: SHOW CLIENTS and SHOW SERVERS say how each connection is encrypted, in
// PgBouncer's form, for a client over TLS and its server connection, active and idle.
func TestShowTLS(t *testing.T) {
	c, tt := sharedTLSCluster(t)
	p := startProxy(t, func(cfg *config.Config) {
		tt.configure(cfg, pgtls.Allow, pgtls.VerifyFull)
		cfg.Cluster.Hosts = []string{c.Primary().Addr()}
		cfg.Auth.AdminUsers = []string{"postgres"}
	})
	ctx := context.Background()
	app, err := tlsConnect(t, tt.connString(p.connString("app", "appdb"))+" application_name=tls_holder")
	if err != nil {
		t.Fatal(err)
	}
	tx, pid := beginHolding(t, app)
	admin := p.console(t, "postgres", nil)
	tlsOf := func(rows []map[string]any) string {
		t.Helper()
		if len(rows) != 1 {
			t.Fatalf("%d rows, want 1: %v", len(rows), rows)
		}
		return rows[0]["tls"].(string)
	}
	want := regexp.MustCompile(`^TLSv1\.3/TLS_[A-Z0-9_]+/ECDH=[A-Za-z0-9]+$`)
	if s := tlsOf(find(show(t, admin, "SHOW CLIENTS", clientsCols), "application_name", "tls_holder")); !want.MatchString(s) {
		t.Errorf("SHOW CLIENTS tls of a TLS client: %q", s)
	}
	if _, err := tlsConnect(t, p.connString("app", "appdb")+" application_name=plain"); err != nil {
		t.Fatal(err)
	}
	if s := tlsOf(find(show(t, admin, "SHOW CLIENTS", clientsCols), "application_name", "plain")); s != "" {
		t.Errorf("SHOW CLIENTS tls of a plain-text client: %q", s)
	}
	if s := tlsOf(find(show(t, admin, "SHOW SERVERS", serversCols), "remote_pid", pid)); !want.MatchString(s) {
		t.Errorf("SHOW SERVERS tls of an active server connection: %q", s)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The connection is back in the pool moments after the client reads the ReadyForQuery.
	var idle []map[string]any
	waitFor(t, 10*time.Second, "the idle server connection in SHOW SERVERS", func() bool {
		idle = find(show(t, admin, "SHOW SERVERS", serversCols), "remote_pid", pid)
		return len(idle) == 1
	})
	if s := tlsOf(idle); !want.MatchString(s) {
		t.Errorf("SHOW SERVERS tls of an idle server connection: %q", s)
	}
}

// TestCertificateExpiryMetric: /metrics says when the certificate given to clients expires.
func TestCertificateExpiryMetric(t *testing.T) {
	tt := newTestTLS(t)
	p := startProxy(t, func(cfg *config.Config) {
		tt.configure(cfg, pgtls.Allow, pgtls.Prefer)
		cfg.Admin.Listen = "127.0.0.1:0"
	})
	leaf := tt.proxy.TLSCertificate(t).Leaf
	if v, ok := p.scrape(t).value("pgtide_tls_certificate_expiry_timestamp_seconds"); !ok || v != float64(leaf.NotAfter.Unix()) {
		t.Fatalf("pgtide_tls_certificate_expiry_timestamp_seconds = %v (present %v), want %d", v, ok, leaf.NotAfter.Unix())
	}
}

// TestServerCAReload: a server_ca_file replaced in place reaches the health checks without a
// reload, as it reaches new pool connections: a wrong bundle replaced by the right one lets the
// checks pass, and the right one replaced by a wrong one makes the check connection, made with
// the old CA, reconnect and fail.
func TestServerCAReload(t *testing.T) {
	c, tt := sharedTLSCluster(t)
	wrongCA := pgtlstest.NewCA(t, t.TempDir(), "wrong")
	caFile := filepath.Join(t.TempDir(), "server-ca.pem")
	writeAtomically(t, caFile, wrongCA.CertFile)
	p := startProxy(t, func(cfg *config.Config) {
		tt.configure(cfg, pgtls.Disable, pgtls.VerifyFull)
		cfg.Cluster.Hosts = []string{c.Primary().Addr()}
		cfg.Cluster.ServerCAFile = caFile
		cfg.Cluster.HealthCheckInterval.Duration = 50 * time.Millisecond
		cfg.Cluster.HealthCheckFailures = 1
	})
	node := p.Cluster().Nodes()[0]
	waitFor(t, 20*time.Second, "health checks to fail with the wrong CA", func() bool { return !node.Up() && node.CheckFailure() != "" })

	writeAtomically(t, caFile, tt.ca.CertFile)
	waitFor(t, 20*time.Second, "health checks to pass with the right CA, without a reload", node.Up)
	if _, err := tlsConnect(t, p.connString("app", "appdb")); err != nil {
		t.Fatalf("a client after the right CA: %v", err)
	}

	writeAtomically(t, caFile, wrongCA.CertFile)
	waitFor(t, 20*time.Second, "the health checks to reconnect with the wrong CA and fail", func() bool { return !node.Up() })
	if f := node.CheckFailure(); !strings.Contains(f, "TLS") {
		t.Errorf("the check's failure: %q", f)
	}
}

// TestServerTLS: with server_tls = verify-full and the servers' CA, pgtide's connections to a
// TLS server are encrypted (pg_stat_ssl, in session and transaction mode, by address and by
// name); with a CA that did not sign the server's certificate, or require against a server
// without TLS, nothing connects, the log says why with the server and x509's words, and the
// client is told TLS failed; prefer falls back to plain text with a server without TLS.
func TestServerTLS(t *testing.T) {
	c, tt := sharedTLSCluster(t)
	addr := c.Primary().Addr()
	_, port, _ := net.SplitHostPort(addr)
	serverSSL := func(t *testing.T, p *testProxy) bool {
		t.Helper()
		conn := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
		var ssl bool
		if err := conn.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
			t.Fatal(err)
		}
		return ssl
	}
	for _, tc := range []struct{ name, host, mode string }{
		{"session mode", addr, config.PoolModeSession},
		{"transaction mode", addr, config.PoolModeTransaction},
		{"by name", net.JoinHostPort("localhost", port), config.PoolModeSession},
	} {
		t.Run("verify-full "+tc.name, func(t *testing.T) {
			p := startProxy(t, func(cfg *config.Config) {
				tt.configure(cfg, pgtls.Disable, pgtls.VerifyFull)
				cfg.Cluster.Hosts = []string{tc.host}
				cfg.Proxy.PoolMode = tc.mode
			})
			if !serverSSL(t, p) {
				t.Fatal("the server connection is not encrypted")
			}
		})
	}
	t.Run("prefer", func(t *testing.T) {
		p := startProxy(t, func(cfg *config.Config) {
			cfg.Cluster.Hosts = []string{addr}
			cfg.Cluster.ServerTLS = string(pgtls.Prefer)
			cfg.Proxy.PoolMode = config.PoolModeSession
		})
		if !serverSSL(t, p) {
			t.Fatal("prefer did not take the server's TLS")
		}
		q := startProxy(t, func(cfg *config.Config) { cfg.Proxy.PoolMode = config.PoolModeSession }) // the main cluster: no TLS
		if serverSSL(t, q) {
			t.Fatal("TLS to a server without it")
		}
	})

	wrongCA := pgtlstest.NewCA(t, t.TempDir(), "wrong")
	for _, tc := range []struct {
		name   string
		mutate func(*config.Config)
		log    string // in the log line, with the server's address
		reason string // in the client's error
	}{
		{"a wrong CA", func(cfg *config.Config) {
			tt.configure(cfg, pgtls.Disable, pgtls.VerifyFull)
			cfg.Cluster.Hosts = []string{addr}
			cfg.Cluster.ServerCAFile = wrongCA.CertFile
		}, "x509: certificate signed by unknown authority", "the server's certificate is not signed by a CA in server_ca_file"},
		{"require without TLS", func(cfg *config.Config) {
			cfg.Cluster.ServerTLS = string(pgtls.Require) // the main cluster: ssl off
		}, "the server does not support TLS", "the server does not support TLS, but server_tls requires it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, func(cfg *config.Config) {
				tc.mutate(cfg)
				cfg.Cluster.HealthCheckInterval.Duration = 50 * time.Millisecond
			})
			node := p.Config().Cluster.Hosts[0]
			_, err := tlsConnect(t, p.connString("app", "appdb"))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "TLS") || !strings.Contains(pgErr.Message, tc.reason) {
				t.Fatalf("the client's error: %v", err)
			}
			if strings.Contains(pgErr.Message, node) {
				t.Errorf("the client's error names the server: %s", pgErr.Message)
			}
			if len(p.logged("health checks failing", node, tc.log)) == 0 {
				t.Errorf("no log line with %q for %s", tc.log, node)
			}
		})
	}
}

// TestTLSLiveness: a pooled TLS server connection that the server terminates while it is idle is
// seen as dead before it is lent: the next client gets a fresh connection, and no error.
func TestTLSLiveness(t *testing.T) {
	c, tt := sharedTLSCluster(t)
	p := startProxy(t, func(cfg *config.Config) {
		tt.configure(cfg, pgtls.Disable, pgtls.VerifyFull)
		cfg.Cluster.Hosts = []string{c.Primary().Addr()}
		cfg.Cluster.PoolSize = 1
	})
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	ctx := context.Background()
	pid := func() int {
		t.Helper()
		var pid int
		var ssl bool
		if err := conn.QueryRow(ctx, "SELECT pid, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&pid, &ssl); err != nil {
			t.Fatal(err)
		}
		if !ssl {
			t.Fatal("not over TLS")
		}
		return pid
	}
	before := pid()
	d, err := pgx.Connect(ctx, c.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if _, err := d.Exec(ctx, "SELECT pg_terminate_backend($1)", before); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the backend to end", func() bool {
		var n int
		d.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", before).Scan(&n)
		return n == 0
	})
	if after := pid(); after == before {
		t.Fatal("the terminated backend was lent again")
	}
	if len(p.logged("idle server connection was closed by the server")) == 0 {
		t.Error("the liveness check did not catch it (the query check or a retry did)")
	}
}

// sslRelay is a TCP relay in front of a server that notes, for each connection, whether it began
// with an SSLRequest.
type sslRelay struct {
	addr string
	mu   sync.Mutex
	// first holds each connection's first 8 bytes, in the order they came.
	first [][]byte
}

func newSSLRelay(t *testing.T, to string) *sslRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &sslRelay{addr: ln.Addr().String()}
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
				head := make([]byte, 8)
				if _, err := io.ReadFull(c, head); err != nil {
					return
				}
				r.mu.Lock()
				r.first = append(r.first, head)
				r.mu.Unlock()
				up, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer up.Close()
				up.Write(head)
				go func() {
					io.Copy(up, c)
					up.Close()
				}()
				io.Copy(c, up)
			})
		}
	})
	return r
}

// plainCancels counts the connections that began with a CancelRequest, not an SSLRequest.
func (r *sslRelay) plainCancels() (cancels, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.first {
		if bytes.Equal(h[4:8], []byte{0x04, 0xd2, 0x16, 0x2e}) { // 80877102
			cancels++
		} else if !bytes.Equal(h, wire.AppendSSLRequest(nil)) {
			cancels += 1000 // neither: a plain startup, which server_tls = require never sends
		}
	}
	return cancels, len(r.first)
}

// TestTLSCancel: with server_tls = require, a cancel request reaches the server over TLS (an
// SSLRequest first, as every other connection pgtide opens) and cancels the query.
func TestTLSCancel(t *testing.T) {
	c, _ := sharedTLSCluster(t)
	relay := newSSLRelay(t, c.Primary().Addr())
	p := startProxy(t, func(cfg *config.Config) {
		cfg.Cluster.Hosts = []string{relay.addr}
		cfg.Cluster.ServerTLS = string(pgtls.Require)
	})
	mon, err := pgx.Connect(context.Background(), c.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close(context.Background())
	cancelSleep(t, p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol), mon)
	plain, total := relay.plainCancels()
	if plain != 0 || total < 3 { // a health check, a pooled connection, the cancel
		t.Fatalf("%d of %d connections to the server were not encrypted", plain, total)
	}
}

// TestChannelBinding: over TLS pgtide offers SCRAM-SHA-256-PLUS, so pgx and psql with
// channel_binding=require log in, with a plaintext password in the users file and with the
// role's SCRAM verifier (then pgtide logs in to the server by pass-through, from keys a bound
// exchange proved); in plain text (client_tls = "allow") the same clients refuse to log in,
// since pgtide cannot bind the exchange to a channel there.
func TestChannelBinding(t *testing.T) {
	tt := newTestTLS(t)
	p := startProxy(t, func(c *config.Config) {
		tt.configure(c, pgtls.Allow, pgtls.Prefer)
		c.Auth.Method = config.AuthSCRAM
	})
	plain := p.connString("app", "appdb")
	bound := tt.connString(plain) + " channel_binding=require"
	c, err := tlsConnect(t, bound)
	if err != nil {
		t.Fatalf("pgx over TLS with channel_binding=require: %v", err)
	}
	mustExec(t, c, "SELECT 1")
	if out, stderr, err := psqlRun(t, bound, "-c", "SELECT 'bound'"); err != nil || out != "bound\n" {
		t.Fatalf("psql over TLS with channel_binding=require: %q %v\n%s", out, err, stderr)
	}
	unbound := plain + " channel_binding=require"
	if _, err := tlsConnect(t, unbound); err == nil || !strings.Contains(err.Error(), "channel binding") {
		t.Fatalf("pgx in plain text with channel_binding=require: %v", err)
	}
	if _, stderr, err := psqlRun(t, unbound, "-c", "SELECT 1"); err == nil || !strings.Contains(stderr, "channel binding") {
		t.Fatalf("psql in plain text with channel_binding=require: %v\n%s", err, stderr)
	}

	// The users file holds app's verifier as the server has it: no plaintext for app anywhere.
	var verifier string
	if err := direct(t, "postgres").QueryRow(context.Background(),
		"SELECT rolpassword FROM pg_authid WHERE rolname = 'app'").Scan(&verifier); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("app's password on the server is not a SCRAM verifier")
	}
	users := slices.Clone(testUsers)
	for i := range users {
		if users[i].Name == "app" {
			users[i].Password = verifier
		}
	}
	writeUsers(t, filepath.Join(filepath.Dir(p.cfgPath), "users.toml"), users)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	p.Pools().Reconnect("") // the next server connections log in by pass-through
	c, err = tlsConnect(t, bound)
	if err != nil {
		t.Fatalf("pgx over TLS with channel_binding=require, verifier in the users file: %v", err)
	}
	mustExec(t, c, "SELECT 1")
}

// TestTLSClientOnLoops: a client over TLS (after an SSLRequest, or direct TLS) is served on the
// event loops: idle, it waits without a goroutine at once (counted as parked, where the Parker
// would take a second); requests that crypto/tls hands over in pieces (a large query, many
// records) or several at a time (a batch in one record) are answered whole and in order. (After
// those, which a relay goroutine reads the answers to, the client waits on a goroutine until its
// next request: a plain query brings it back to the loops.)
func TestTLSClientOnLoops(t *testing.T) {
	tt := newTestTLS(t)
	p := startProxyPrepared(t, func(c *config.Config) {
		tt.configure(c, pgtls.Require, pgtls.Prefer)
		c.TLS.CAFile = ""
	}, func(s *proxy.Server) { s.SetParkAfter(time.Hour) })
	plain := p.connString("app", "appdb")
	ctx := context.Background()
	for _, conn := range []string{tt.connString(plain), tt.connString(plain) + " sslnegotiation=direct"} {
		c, err := tlsConnect(t, conn)
		if err != nil {
			t.Fatal(err)
		}
		waitParked(t, p, 1)
		big := strings.Repeat("x", 100_000) // several TLS records
		var n int
		if err := c.QueryRow(ctx, "SELECT length($1::text)", big).Scan(&n); err != nil || n != len(big) {
			t.Fatalf("large request over TLS: %d, %v", n, err)
		}
		mustExec(t, c, "SELECT 1")
		waitParked(t, p, 1)
		b := &pgx.Batch{}
		for i := range 50 {
			b.Queue("SELECT $1::int", i)
		}
		res := c.SendBatch(ctx, b)
		for i := range 50 {
			var got int
			if err := res.QueryRow().Scan(&got); err != nil || got != i {
				t.Fatalf("batch over TLS, query %d: %d, %v", i, got, err)
			}
		}
		if err := res.Close(); err != nil {
			t.Fatal(err)
		}
		mustExec(t, c, "SELECT 1")
		waitParked(t, p, 1)
		c.Close(ctx)
		waitParked(t, p, 0)
	}
}
