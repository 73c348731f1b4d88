package proxy_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
)

// TestHealthCheckLogin: the health checks' login follows the users file on reload. A wrong
// password (a rotation gone wrong) is not silent: a warning says the server refuses the health
// check's login, the node goes down, and a new client of the writer gets at once (not after
// client_login_timeout) a 57P03 that says why; once the file is fixed, a reload brings the node
// back without a restart, and a line says so.
func TestHealthCheckLogin(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.HealthCheckUser = "app"
		c.Cluster.HealthCheckDatabase = "appdb"
		c.Proxy.ClientLoginTimeout.Duration = 3 * time.Second
		// A refused SCRAM login can take more than the default second on a loaded machine,
		// and then the reason is a timeout.
		c.Cluster.HealthCheckTimeout.Duration = 5 * time.Second
	})
	ctx := context.Background()
	mustExec(t, p.connect(t, "app", "appdb", pgx.QueryExecModeExec), "SELECT 1")
	usersPath := filepath.Join(filepath.Dir(p.cfgPath), "users.toml")
	wrong := []config.User{{Name: "app", Password: "not the password"}, {Name: "postgres", Password: "postgres secret"}}
	writeUsers(t, usersPath, wrong)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the warning", func() bool {
		return len(p.logged("level=WARN", `msg="health checks failing"`, "refuses the health check's login", "user=app")) == 1
	})
	waitFor(t, 30*time.Second, "the node down", func() bool { _, ok := p.Cluster().Writer(); return !ok })
	for _, l := range p.logged("not the password") {
		t.Errorf("the password in the log: %s", l)
	}

	// A client of the writer (postgres: trust on the server, so its own login is fine) is told
	// why there is no writer; since the process started the writer was known, so this may be a
	// failover: it waits, but only up to its client_login_timeout, and then says why.
	start := time.Now()
	_, err := pgx.Connect(ctx, p.connString("postgres", "postgres"))
	if pgCode(err) != "57P03" || !strings.Contains(err.Error(), "refuses the health check's login") {
		t.Fatalf("client: %v, want 57P03 naming the refused health-check login", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the client waited %s", waited)
	}

	writeUsers(t, usersPath, testUsers)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the node back", func() bool { _, ok := p.Cluster().Writer(); return ok })
	if n := len(p.logged(`msg="health checks pass again"`)); n != 1 {
		t.Fatalf("%d recovery lines", n)
	}
	mustExec(t, p.connect(t, "app", "appdb", pgx.QueryExecModeExec), "SELECT 1")
}

// TestNeverReachable: when no node has ever passed a check (a wrong health_check_user password
// from the start, hosts that do not answer), a client of the writer is told why at once instead
// of waiting failover_timeout.
func TestNeverReachable(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.Hosts = []string{"127.0.0.1:1"}
		c.Cluster.FailoverTimeout.Duration = time.Minute
	})
	start := time.Now()
	_, err := pgx.Connect(context.Background(), p.connString("postgres", "postgres"))
	if pgCode(err) != "57P03" || !strings.Contains(err.Error(), "no node passes its health checks: connection refused (1 of 1 nodes)") {
		t.Fatalf("client: %v", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the client waited %s", waited)
	}
	if n := len(p.logged("level=WARN", `msg="health checks failing"`, "addr=127.0.0.1:1", `reason="connection refused"`)); n != 1 {
		t.Fatalf("%d warnings for the unreachable host", n)
	}
}
