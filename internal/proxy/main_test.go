package proxy_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
	"pgtide/internal/proxy"
)

// cluster is the real PostgreSQL cluster every test in this package runs against.
var cluster *pgcluster.Cluster

// Roles on the cluster, one per server authentication method pgtide must handle.
var testUsers = []config.User{
	{Name: "app", Password: "app secret"},           // scram-sha-256 on the server
	{Name: "app_md5", Password: "md5 secret"},       // md5 on the server
	{Name: "app_pw", Password: "pw secret"},         // password (cleartext) on the server
	{Name: "postgres", Password: "postgres secret"}, // trust on the server
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	md5pw := md5.Sum([]byte("md5 secret" + "app_md5"))
	var err error
	cluster, err = pgcluster.Start(ctx, pgcluster.Options{
		ExtraConf: []string{"max_connections = 300"},
		HBA: []string{
			"host all app 127.0.0.1/32 scram-sha-256",
			"host all app_md5 127.0.0.1/32 md5",
			"host all app_pw 127.0.0.1/32 password",
		},
		InitSQL: []string{
			"CREATE ROLE app LOGIN PASSWORD 'app secret'",
			"CREATE ROLE app_md5 LOGIN PASSWORD 'md5" + hex.EncodeToString(md5pw[:]) + "'",
			"CREATE ROLE app_pw LOGIN PASSWORD 'pw secret'",
			"CREATE DATABASE appdb OWNER app",
			"GRANT ALL ON SCHEMA public TO public",
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the test cluster:", err)
		return 1
	}
	defer cluster.Close()
	defer closeRoutingCluster()
	defer closeTLSCluster()
	return m.Run()
}

// testProxy is a running pgtide in front of the test cluster.
type testProxy struct {
	*proxy.Server
	t       testing.TB
	cfgPath string
	done    chan error
	log     *logRecorder
}

// logRecorder keeps every line the proxy logged. Safe for concurrent use.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

// logged returns the lines logged so far that contain every one of parts.
func (p *testProxy) logged(parts ...string) []string {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	var out []string
next:
	for _, l := range p.log.lines {
		for _, part := range parts {
			if !strings.Contains(l, part) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// startProxy writes a config file (and users file) for the test cluster, lets mutate adjust it,
// loads it the way `pgtide run` does and serves it until the test ends.
func startProxy(t *testing.T, mutate func(*config.Config)) *testProxy {
	t.Helper()
	return startProxyPrepared(t, mutate, nil)
}

// trustProxy starts a proxy in pool mode mode, with poolSize server connections and trust logins.
func trustProxy(t *testing.T, mode string, poolSize int) *testProxy {
	t.Helper()
	return startProxy(t, func(c *config.Config) {
		c.Proxy.PoolMode = mode
		c.Cluster.PoolSize = poolSize
		c.Auth.Method = config.AuthTrust
	})
}

// startProxyPrepared is startProxy with prepare run on the server before it serves clients, to
// replace what tests inject (the pool's dialer).
func startProxyPrepared(t *testing.T, mutate func(*config.Config), prepare func(*proxy.Server)) *testProxy {
	t.Helper()
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	checkGoroutines(t)
	return startProxyTB(t, mutate, prepare)
}

// startProxyB is startProxy for benchmarks (no goroutine check, quiet logs).
func startProxyB(b *testing.B, mutate func(*config.Config)) *testProxy {
	return startProxyTB(b, func(c *config.Config) {
		c.Proxy.LogLevel = "warn"
		if mutate != nil {
			mutate(c)
		}
	}, nil)
}

func startProxyTB(t testing.TB, mutate func(*config.Config), prepare func(*proxy.Server)) *testProxy {
	t.Helper()
	cfg := config.Defaults()
	cfg.Proxy.Listen = "127.0.0.1:0"
	cfg.Cluster.Hosts = []string{cluster.Primary().Addr()}
	cfg.Cluster.PoolSize = 10
	cfg.Cluster.QueryWaitTimeout.Duration = 10 * time.Second
	cfg.Proxy.ShutdownTimeout.Duration = 5 * time.Second
	cfg.Auth.UsersFile = "users.toml"
	if mutate != nil {
		mutate(cfg)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	writeFile(t, path, cfg)
	writeUsers(t, filepath.Join(dir, "users.toml"), testUsers)
	loaded, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	level := slog.LevelDebug
	if loaded.Proxy.LogLevel == "warn" {
		level = slog.LevelWarn
	}
	rec := new(logRecorder)
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, rec), &slog.HandlerOptions{Level: level}))
	srv, err := proxy.New(loaded, logger)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(srv)
	}
	p := &testProxy{Server: srv, t: t, cfgPath: path, done: make(chan error, 1), log: rec}
	go func() { p.done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Shutdown()
		if err := <-p.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if slices.Equal(loaded.Cluster.Hosts, []string{cluster.Primary().Addr()}) {
		// The shared cluster's primary: a test starts once pgtide knows its writer. On a loaded
		// machine the first health check can outlast health_check_timeout, and until a check
		// passes pgtide tells clients at once that it cannot reach the cluster (as it should).
		// Best effort: a test that wants no writer finds none after the wait.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, ok := srv.Cluster().Writer(); ok {
				break
			}
		}
	}
	return p
}

// connString returns a libpq-style connection string for the proxy.
func (p *testProxy) connString(user, db string) string {
	pw := ""
	for _, u := range testUsers {
		if u.Name == user {
			pw = u.Password
		}
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s password='%s' sslmode=disable",
		p.Addr().(*net.TCPAddr).Port, user, db, pw)
}

func writeFile(t testing.TB, path string, cfg *config.Config) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := toml.NewEncoder(f).Encode(cfg); err != nil {
		t.Fatal(err)
	}
}

func writeUsers(t testing.TB, path string, users []config.User) {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		fmt.Fprintf(&b, "[[user]]\nname = %q\npassword = %q\n\n", u.Name, u.Password)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// checkGoroutines fails the test if goroutines started during it are still running at its end
// (after the proxy's own cleanup), polling for a while since closing connections takes a moment.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// connect opens a pgx connection through the proxy.
func (p *testProxy) connect(t *testing.T, user, db string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.connString(user, db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect as %s to %s: %v", user, db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// direct opens a connection straight to the primary as postgres, for checks behind pgtide's back.
func direct(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), cluster.Primary().ConnString("postgres", db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
