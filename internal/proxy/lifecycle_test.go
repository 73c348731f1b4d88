package proxy_test

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
)

func backendPID(t *testing.T, c *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := c.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestServerLifetime: a server connection past server_lifetime is replaced when released.
func TestServerLifetime(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 1
		c.Cluster.ServerLifetime.Duration = 300 * time.Millisecond
	})
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	first := backendPID(t, c)
	waitFor(t, 10*time.Second, "a new server connection", func() bool { return backendPID(t, c) != first })
}

// TestIdleTimeoutAndMinIdle: idle connections above min_idle are closed after
// server_idle_timeout; min_idle connections stay (and are opened when missing).
func TestIdleTimeoutAndMinIdle(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 5
		c.Cluster.MinIdle = 2
		c.Cluster.ServerIdleTimeout.Duration = 300 * time.Millisecond
	})
	ctx := context.Background()
	mon := direct(t, "postgres")
	// Five transactions at once open five server connections.
	var conns []*pgx.Conn
	var txs []pgx.Tx
	for i := 0; i < 5; i++ {
		c := p.connect(t, "app_pw", "appdb", pgx.QueryExecModeExec)
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		txs = append(txs, tx)
	}
	if n := serverConns(t, mon, "app_pw"); n != 5 {
		t.Fatalf("%d server connections, want 5", n)
	}
	for _, tx := range txs {
		tx.Rollback(ctx)
	}
	waitFor(t, 10*time.Second, "idle connections to shrink to min_idle", func() bool { return serverConns(t, mon, "app_pw") == 2 })
	// Kill them behind pgtide's back: they are not lent again (clients see no error), and
	// min_idle brings the pool back to 2.
	var pids []int
	rows, _ := mon.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE usename = 'app_pw'")
	for rows.Next() {
		var pid int
		rows.Scan(&pid)
		pids = append(pids, pid)
	}
	mustExec(t, mon, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_pw'")
	waitFor(t, 10*time.Second, "the terminated backends to exit", func() bool {
		var n int
		mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", pids).Scan(&n)
		return n == 0
	})
	for i, c := range conns {
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("client %d: query after its idle server connection was terminated: %v", i, err)
		}
	}
	waitFor(t, 10*time.Second, "min_idle connections to be reopened", func() bool { return serverConns(t, mon, "app_pw") == 2 })
}

// TestCheckQuery: with server_check_delay 0 a server connection that died while idle is noticed
// before it is lent, and the client never sees the error.
func TestCheckQuery(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 2; c.Cluster.ServerCheckDelay.Duration = 0 })
	ctx := context.Background()
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	pid := backendPID(t, c)
	mon := direct(t, "postgres")
	mustExec(t, mon, "SELECT pg_terminate_backend("+itoa(pid)+")")
	waitFor(t, 10*time.Second, "the backend to exit", func() bool {
		var n int
		mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n)
		return n == 0
	})
	if got := backendPID(t, c); got == pid {
		t.Fatal("a terminated server connection was lent again")
	}
}

// TestServerConnectionLost: a server connection that dies in the middle of a transaction ends
// that client's session with an error; the pool slot is freed and other clients go on.
func TestServerConnectionLost(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = mode; c.Cluster.PoolSize = 1 })
			ctx := context.Background()
			c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var pid int
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			mustExec(t, direct(t, "postgres"), "SELECT pg_terminate_backend("+itoa(pid)+")")
			_, err = tx.Exec(ctx, "SELECT 1")
			if code := pgCode(err); err == nil || (code != "" && code != "57P01" && code[:2] != "08") {
				t.Fatalf("query after the server connection died: %v", err)
			}
			// The single pool slot is free again for the next client.
			other := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			if got := backendPID(t, other); got == pid {
				t.Fatal("the dead server connection was reused")
			}
		})
	}
}

// TestNodeCapAcrossPools: two pools on one node, each allowed 10, share max_server_connections
// = 6 without crossing it, and neither starves: idle connections of one pool give way to the
// other.
func TestNodeCapAcrossPools(t *testing.T) {
	const cap = 6
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 10
		c.Cluster.MaxServerConnections = cap
		c.Cluster.QueryWaitTimeout.Duration = 60 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mon := direct(t, "postgres")
	var peak int
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, db := range []string{"appdb", "postgres"} {
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := pgx.Connect(ctx, p.connString("app", db))
				if err != nil {
					errs <- err
					return
				}
				defer c.Close(context.Background())
				for j := 0; j < 20; j++ {
					if _, err := c.Exec(ctx, "SELECT pg_sleep(0.001)", pgx.QueryExecModeSimpleProtocol); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			if n := serverConns(t, mon, "app"); n > peak {
				peak = n
			}
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("peak server connections across both pools: %d (cap %d)", peak, cap)
	if peak > cap {
		t.Fatalf("node cap crossed: %d > %d", peak, cap)
	}
	if n := p.Pools().NodeTotal(cluster.Primary().Addr()); n > cap {
		t.Fatalf("pgtide counts %d connections on the node, cap %d", n, cap)
	}
}

// TestLoginWorkersEnd: the goroutines that handled a burst of logins end once no more come,
// while the server goes on serving: over TCP, where the loops accept and hand logins that wait
// to goroutines, and over a Unix-domain socket, whose logins run on goroutines kept for the next
// ones (login workers).
func TestLoginWorkersEnd(t *testing.T) {
	dir := t.TempDir()
	p := startProxy(t, func(c *config.Config) {
		c.Proxy.PoolMode = config.PoolModeTransaction
		c.Cluster.PoolSize = 4
		c.Auth.Method = config.AuthTrust
		c.Proxy.UnixSocketDir = dir
	})
	port := p.Addr().(*net.TCPAddr).Port
	for _, conn := range []string{
		p.connString("app", "appdb"),
		"host=" + dir + " port=" + strconv.Itoa(port) + " user=app dbname=appdb",
	} {
		connect := func() *pgx.Conn {
			c, err := pgx.Connect(context.Background(), conn)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		connect().Close(context.Background()) // the pool's first login
		before := runtime.NumGoroutine()
		var wg sync.WaitGroup
		for range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := pgx.Connect(context.Background(), conn)
				if err != nil {
					t.Error(err)
					return
				}
				var one int
				if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
					t.Error(err)
				}
				c.Close(context.Background())
			}()
		}
		wg.Wait()
		deadline := time.Now().Add(30 * time.Second)
		for runtime.NumGoroutine() > before+2 { // +2: goroutines of the test's own clients ending
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines %v after a burst of 30 logins, %d before", conn, runtime.NumGoroutine(), 30*time.Second, before)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c := connect() // and logins go on
		if err := c.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Close(context.Background())
	}
}
