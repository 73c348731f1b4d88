package proxy_test

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/router"
)

// TestListenForms: listen addresses as PgBouncer users write them ("*:port" for every address)
// work, and unix_socket_dir gives each endpoint a Unix-domain socket where libpq looks for it
// (-h dir -p port), replacing a socket file a dead process left behind.
func TestListenForms(t *testing.T) {
	dir := t.TempDir()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	// A socket file with nobody behind it, as a killed pgtide leaves.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port)), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	p := startProxy(t, func(c *config.Config) {
		c.Proxy.Listen = "*:" + strconv.Itoa(port)
		c.Proxy.WriterListen = "127.0.0.1:0"
		c.Proxy.UnixSocketDir = dir
	})
	ctx := context.Background()
	writerPort := p.EndpointAddr(router.Writer).(*net.TCPAddr).Port
	for _, tc := range []struct{ name, conn string }{
		{"TCP on *:port", p.connString("app", "appdb")},
		{"the auto endpoint's socket", "host=" + dir + " port=" + strconv.Itoa(port) + " user=app password='app secret' dbname=appdb"},
		{"the writer endpoint's socket", "host=" + dir + " port=" + strconv.Itoa(writerPort) + " user=app password='app secret' dbname=appdb"},
	} {
		conn, err := pgx.Connect(ctx, tc.conn)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("%s: %d %v", tc.name, one, err)
		}
		conn.Close(ctx)
	}
	if !strings.HasSuffix(p.Addr().String(), ":"+strconv.Itoa(port)) {
		t.Fatalf("Addr() = %s", p.Addr())
	}
}

// TestClientLogs: what an operator needs to see at the default level: refused clients (too many,
// wrong password) with their user, database and address; at debug, connects and disconnects.
func TestClientLogs(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Proxy.MaxClientConnections = 1; c.Auth.Method = config.AuthSCRAM })
	ctx := context.Background()
	first := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	if _, err := pgx.Connect(ctx, p.connString("app", "appdb")); pgCode(err) != "53300" {
		t.Fatalf("second client: %v", err)
	}
	waitFor(t, 10*time.Second, "the refusal in the log", func() bool {
		return len(p.logged("level=INFO", `msg="client refused"`, "user=app", "database=appdb", "sqlstate=53300", "client=127.0.0.1:")) == 1
	})
	first.Close(ctx)
	waitFor(t, 10*time.Second, "the disconnect in the log", func() bool {
		return len(p.logged("level=DEBUG", `msg="client disconnected"`, "user=app", "database=appdb", "duration=")) == 1
	})
	if n := len(p.logged("level=DEBUG", `msg="client connected"`, "endpoint=auto", "user=app")); n != 1 {
		t.Fatalf("%d connect lines", n)
	}
	wrong := strings.Replace(p.connString("app", "appdb"), "password='app secret'", "password=wrong", 1)
	if _, err := pgx.Connect(ctx, wrong); pgCode(err) != "28P01" {
		t.Fatalf("wrong password: %v", err)
	}
	waitFor(t, 10*time.Second, "the failed login in the log", func() bool {
		return len(p.logged("level=INFO", `msg="client login failed"`, "user=app", "database=appdb")) == 1
	})
	for _, l := range p.logged("wrong") {
		t.Errorf("a password in the log: %s", l)
	}
}

// TestStatsLine: every stats_period a line per busy pool logs its rates, as PgBouncer's do.
func TestStatsLine(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Proxy.StatsPeriod.Duration = 300 * time.Millisecond })
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	waitFor(t, 30*time.Second, "a stats line with queries", func() bool {
		mustExec(t, conn, "SELECT 1")
		for _, l := range p.logged("level=INFO", "msg=stats", "pool=app@", "/appdb", "received_bytes_per_s=", "avg_query_us=", "avg_wait_us=") {
			if !strings.Contains(l, "queries_per_s=0 ") {
				return true
			}
		}
		return false
	})
}
