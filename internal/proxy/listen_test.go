package proxy_test

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
