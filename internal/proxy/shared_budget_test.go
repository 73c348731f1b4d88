package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
)

// TestSharedBudget: two pgtide processes in budget_mode = "shared" in front of one node with
// max_connections = 40 (budget floor((40 − 3) × 0.7) = 25), where a client that is not pgtide
// holds 10 connections. Under a storm of 100 clients on each process, the node's client backends
// — everyone's: the outside client's, both processes' server connections and health checks, the
// monitor's — never pass 25 + (proxy_instances − 1) = 26, the worst case the gate allows, and
// every query succeeds. When the outside client lets its connections go, the processes' share
// grows into the freed places (more server connections than the first phase could have had).
func TestSharedBudget(t *testing.T) {
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	const budget, instances, clients = 25, 2, 100
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildPgtide(t, ctx)
	node := startBudgetNode(t, ctx, 40).Primary()
	connect := func(connString string) *pgx.Conn {
		t.Helper()
		conn, err := pgx.Connect(ctx, connString)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	var outside []*pgx.Conn
	for range 10 {
		outside = append(outside, connect(node.ConnString("postgres", "postgres")+" application_name=outside"))
	}
	var procs []*pgtideProcess
	for range instances {
		procs = append(procs, startPgtide(t, ctx, bin, func(cfg *config.Config) {
			cfg.Cluster.Hosts = []string{node.Addr()}
			cfg.Cluster.BudgetMode = config.BudgetModeShared
			cfg.Cluster.ProxyInstances = instances
			cfg.Cluster.PoolSize = 100
			cfg.Cluster.MaxServerConnections = 100
			cfg.Cluster.ServerConnectRate = 1000
			cfg.Cluster.QueryWaitTimeout.Duration = 2 * time.Minute
			cfg.Cluster.HealthCheckInterval.Duration = 100 * time.Millisecond
			cfg.Cluster.HealthCheckTimeout.Duration = 5 * time.Second
		}))
	}
	mon := connect(node.ConnString("postgres", "postgres"))
	var endpoints []string
	for _, p := range procs {
		endpoints = append(endpoints, p.connString)
	}
	peak := watchPeak(mon, "", nil)
	if err := storm(ctx, endpoints, clients, func(done int) bool { return done < 3 }); err != nil {
		t.Fatal(err)
	}
	most := peak()
	t.Logf("with the outside client's 10: most client backends on the node %d (budget %d)", most, budget)
	if most > budget+instances-1 {
		t.Fatalf("%d client backends on a node whose budget is %d, shared by %d pgtide processes", most, budget, instances)
	}
	if most < budget-5 {
		t.Fatalf("only %d client backends under the storms: the budget was not used", most)
	}

	// The outside client goes: the freed places are the processes' to take. Before, they could
	// hold at most 26 − 10 (outside) − 2 (health checks) − 1 (monitor) = 13.
	for _, conn := range outside {
		conn.Close(ctx)
	}
	probe := connect(node.ConnString("postgres", "postgres"))
	peak = watchPeak(mon, "", nil)
	stop := make(chan struct{})
	stormed := make(chan error, 1)
	go func() {
		stormed <- storm(ctx, endpoints, clients, func(done int) bool {
			select {
			case <-stop:
				return done == 0 // each client runs at least one query
			default:
				return true
			}
		})
	}()
	const grown = 16
	var pgtides int
	waitFor(t, time.Minute, fmt.Sprintf("pgtide's server connections to grow past %d", grown), func() bool {
		if err := probe.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'").Scan(&pgtides); err != nil {
			t.Fatal(err)
		}
		return pgtides >= grown
	})
	close(stop)
	if err := <-stormed; err != nil {
		t.Fatal(err)
	}
	most = peak()
	t.Logf("without it: pgtide's server connections reached %d; most client backends on the node %d", pgtides, most)
	if most > budget+instances-1 {
		t.Fatalf("%d client backends on a node whose budget is %d, shared by %d pgtide processes", most, budget, instances)
	}
	for i, p := range procs {
		if n := strings.Count(p.log.String(), "the node's pools cannot all fit its budget"); n != 1 {
			t.Errorf("pgtide %d warned %d times that its pool (pool_size 100) cannot fit the budget of 25, want once", i, n)
		}
	}
}

// buildPgtide builds the pgtide command into a temporary directory and returns its path.
func buildPgtide(t *testing.T, ctx context.Context) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgtide")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "pgtide/cmd/pgtide").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// pgtideProcess is a `pgtide run` process in front of the test's nodes.
type pgtideProcess struct {
	connString string // its writer endpoint, as app on appdb
	log        *lockedBuffer
}

// startPgtide runs bin with a configuration that mutate adjusts (hosts and cluster settings;
// the writer endpoint alone, on a free port), waits until it serves a query, and stops it with
// SIGTERM when the test ends; its log is shown if the test failed.
func startPgtide(t *testing.T, ctx context.Context, bin string, mutate func(*config.Config)) *pgtideProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := config.Defaults()
	cfg.Proxy.Listen = "" // the auto endpoint would read function catalogs: connections of its own
	cfg.Proxy.WriterListen = addr
	cfg.Proxy.ShutdownTimeout.Duration = 5 * time.Second
	cfg.Auth.UsersFile = "users.toml"
	mutate(cfg)
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	writeFile(t, path, cfg)
	writeUsers(t, filepath.Join(dir, "users.toml"), testUsers)
	p := &pgtideProcess{
		connString: fmt.Sprintf("host=127.0.0.1 port=%s user=app dbname=appdb sslmode=disable", addr[strings.LastIndexByte(addr, ':')+1:]),
		log:        new(lockedBuffer),
	}
	cmd := exec.Command(bin, "run", "-c", path)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("pgtide at %s: %v", addr, err)
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Errorf("pgtide at %s did not stop a minute after SIGTERM", addr)
		}
		if t.Failed() {
			t.Logf("pgtide at %s logged:\n%s", addr, p.log)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, p.connString)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(ctx)
		}
		if err == nil {
			return p
		}
		select {
		case err := <-exited:
			t.Fatalf("pgtide at %s exited: %v\n%s", addr, err, p.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtide at %s does not serve a query after a minute: %v\n%s", addr, err, p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
