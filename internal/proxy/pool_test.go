package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/classify"
	"pgtide/internal/config"
	"pgtide/internal/proxy"
)

// serverConns counts the server connections of user on the primary, as PostgreSQL sees them.
func serverConns(t *testing.T, c *pgx.Conn, user string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConnectionStorm: 1000 concurrent clients, each running transactions, share pool_size 10;
// pg_stat_activity never shows more than max_server_connections for the user.
func TestConnectionStorm(t *testing.T) {
	const clients, cap = 1000, 10
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 10
		c.Cluster.MaxServerConnections = cap
		c.Cluster.QueryWaitTimeout.Duration = 60 * time.Second
	})
	peak := watchPeak(direct(t, "postgres"), "app", nil)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	start := make(chan struct{})
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			cfg, _ := pgx.ParseConfig(p.connString("app", "appdb"))
			cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer c.Close(context.Background())
			for j := 0; j < 5; j++ {
				var got int
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, "SELECT $1::int", i*10+j).Scan(&got)
				})
				if err != nil || got != i*10+j {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("client %d: got %d, err %v", i, got, err))
					return
				}
			}
		}(i)
	}
	close(start)
	wg.Wait()
	most := peak()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d clients failed; first: %v", n, clients, firstErr.Load())
	}
	t.Logf("peak server connections for app in pg_stat_activity: %d (cap %d)", most, cap)
	if most > cap {
		t.Fatalf("pg_stat_activity showed %d server connections, cap is %d", most, cap)
	}
	if most == 0 {
		t.Fatal("monitor never saw a server connection")
	}
}

// watchPeak samples, as often as it can until the returned function is called, the client
// backends of user (every user's with "") in mon's server's pg_stat_activity, and also what also
// reports (pgtide's own count, if not nil); the function stops the sampling and returns the
// largest figure seen.
func watchPeak(mon *pgx.Conn, user string, also func() int64) (stop func() int64) {
	var peak atomic.Int64
	raise := func(n int64) {
		for old := peak.Load(); n > old && !peak.CompareAndSwap(old, n); old = peak.Load() {
		}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			var n int64
			if err := mon.QueryRow(context.Background(),
				"SELECT count(*) FROM pg_stat_activity WHERE ($1 = '' OR usename = $1) AND backend_type = 'client backend'", user).Scan(&n); err == nil {
				raise(n)
			}
			if also != nil {
				raise(also())
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return peak.Load()
	}
}

// TestCancel cancels a pg_sleep through the proxy, and a late cancel for an idle client does
// nothing to other clients.
func TestCancel(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = mode; c.Cluster.PoolSize = 2 })
			c := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
			ctx := context.Background()
			mon := direct(t, "postgres")
			cancelSleep(t, c, mon)
			// The connection is still good.
			if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			// A cancel while the client is idle must not hit another client's query on the server
			// connection it used before.
			other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
			errc := make(chan error, 1)
			go func() {
				_, err := other.Exec(ctx, "SELECT pg_sleep(1)")
				errc <- err
			}()
			waitFor(t, 10*time.Second, "other's pg_sleep to start", func() bool {
				var n int
				mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(1)' AND state = 'active'").Scan(&n)
				return n == 1
			})
			if err := c.PgConn().CancelRequest(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("idle client's cancel hit another client: %v", err)
			}
		})
	}
}

// TestSessionModeReset: a server connection goes back to the pool with DISCARD ALL, so the next
// client does not inherit the previous one's session state.
func TestSessionModeReset(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = config.PoolModeSession; c.Cluster.PoolSize = 1 })
	ctx := context.Background()
	c1 := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	var pid1 int
	if err := c1.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	mustExec(t, c1, "SET statement_timeout = '123s'")
	mustExec(t, c1, "CREATE TEMP TABLE leftover (x int)")
	mustExec(t, c1, "PREPARE leftover_stmt AS SELECT 1")
	c1.Close(ctx)

	c2 := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	var pid2 int
	var timeout string
	if err := c2.QueryRow(ctx, "SELECT pg_backend_pid(), current_setting('statement_timeout')").Scan(&pid2, &timeout); err != nil {
		t.Fatal(err)
	}
	if pid2 != pid1 {
		t.Fatalf("expected the same server connection to be reused (pool_size 1): %d then %d", pid1, pid2)
	}
	if timeout != "0" {
		t.Fatalf("statement_timeout leaked to the next client: %q", timeout)
	}
	var n int
	if err := c2.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements").Scan(&n); err != nil || n != 0 {
		t.Fatalf("prepared statements leaked: %d %v", n, err)
	}
	if _, err := c2.Exec(ctx, "SELECT * FROM leftover"); pgCode(err) != "42P01" {
		t.Fatalf("temp table leaked: %v", err)
	}
}

// TestTransactionModeSharing: in transaction mode two clients take turns on one server
// connection, and a transaction keeps its server connection until it ends.
func TestTransactionModeSharing(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 1
		c.Cluster.QueryWaitTimeout.Duration = 2 * time.Second
		c.Cluster.ServerConnectTimeout.Duration = 2 * time.Second
	})
	ctx := context.Background()
	a := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	b := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	var pa, pb int
	a.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pa)
	b.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pb)
	if pa == 0 || pa != pb {
		t.Fatalf("pool_size 1: both clients should share one server connection, got %d and %d", pa, pb)
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// b must wait for a's transaction: with a 2s query_wait_timeout it gets a clear error...
	_, err = b.Exec(ctx, "SELECT 1")
	if pgCode(err) != "53300" || !strings.Contains(err.Error(), "query_wait_timeout") {
		t.Fatalf("waiting client: got %v", err)
	}
	// ...and its connection stays usable once a commits.
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after the wait timeout: %v", err)
	}
	// An extended-protocol request refused the same way is answered at its Sync.
	tx, _ = a.Begin(ctx)
	var x int
	err = b.QueryRow(ctx, "SELECT $1::int", 7).Scan(&x)
	if pgCode(err) != "53300" {
		t.Fatalf("extended request while waiting: %v", err)
	}
	tx.Rollback(ctx)
	if err := b.QueryRow(ctx, "SELECT $1::int", 7).Scan(&x); err != nil || x != 7 {
		t.Fatalf("extended after refusal: %d %v", x, err)
	}
}

// TestReload changes pool_size and the users file under a running proxy without dropping
// connections, through the file watcher path used by SIGHUP.
func TestReload(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 1; c.Auth.Method = config.AuthSCRAM })
	ctx := context.Background()
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	mustExec(t, c, "SELECT 1")

	// A user not in the users file cannot log in...
	if _, err := pgx.Connect(ctx, strings.Replace(p.connString("app", "appdb"), "user=app ", "user=newbie ", 1)); pgCode(err) != "28P01" {
		t.Fatalf("unknown user: %v", err)
	}
	// ...until the users file lists them; pool_size grows at the same time.
	cfg := p.Config()
	next := *cfg
	next.Cluster.PoolSize = 3
	writeFile(t, p.cfgPath, &next)
	writeUsers(t, filepath.Join(filepath.Dir(p.cfgPath), "users.toml"), append(testUsers[:len(testUsers):len(testUsers)], config.User{Name: "newbie", Password: "app secret"}))
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	if got := p.Config().Cluster.PoolSize; got != 3 {
		t.Fatalf("pool_size after reload: %d", got)
	}
	// The newbie user exists in pgtide's users file but not on the server: the server refuses
	// pgtide's login, and the client is told so (naming the server and the user), with the
	// server's 28000 (no such role), as a direct connection would get.
	_, err := pgx.Connect(ctx, strings.Replace(p.connString("app", "appdb"), "user=app ", "user=newbie ", 1)+" password='app secret'")
	if code := pgCode(err); code != "28000" || !strings.Contains(err.Error(), `refused pgtide's login as user "newbie"`) {
		t.Fatalf("newbie login: want the server's refusal of pgtide, got %v", err)
	}
	// Existing connection still works, and three transactions can now run at once.
	mustExec(t, c, "SELECT 1")
	var conns [3]*pgx.Conn
	var txs [3]pgx.Tx
	for i := range conns {
		conns[i] = p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
		tx, err := conns[i].Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("transaction %d with pool_size 3: %v", i, err)
		}
		txs[i] = tx
	}
	for _, tx := range txs {
		tx.Rollback(ctx)
	}

	// An invalid file is rejected and the running configuration kept.
	os.WriteFile(p.cfgPath, []byte("[cluster]\npool_size = 0\n"), 0o600)
	if err := p.ReloadFile(p.cfgPath); err == nil {
		t.Fatal("invalid config accepted")
	}
	if got := p.Config().Cluster.PoolSize; got != 3 {
		t.Fatalf("pool_size after a failed reload: %d", got)
	}
}

// TestReloadRefreshesFunctions: a reload reads the function catalogs again, so a function created
// since is known at once, not a function_refresh_interval later.
func TestReloadRefreshesFunctions(t *testing.T) {
	p := startProxy(t, nil)
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	name := fmt.Sprintf("reload_probe_%d", time.Now().UnixNano())
	lookup := func() classify.FuncKind {
		return p.Cluster().Functions("appdb").Lookup(nil, []byte(name)) // nil before the first load: 0
	}
	waitFor(t, 15*time.Second, "appdb's function catalog", func() bool { return p.Cluster().Functions("appdb") != nil })
	mustExec(t, c, "CREATE FUNCTION "+name+"() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'")
	t.Cleanup(func() { mustExec(t, c, "DROP FUNCTION "+name) })
	if k := lookup(); k != 0 {
		t.Fatalf("Lookup(%s) = %d before the reload, want 0", name, k)
	}
	next := *p.Config()
	p.Reload(&next)
	waitFor(t, 15*time.Second, "the new function in the catalog", func() bool { return lookup() == 2 })
}

// TestReloadWatch: editing the file is enough; the watcher reloads it.
func TestReloadWatch(t *testing.T) {
	var reloads atomic.Int64
	p := startProxyPrepared(t, func(c *config.Config) { c.Cluster.PoolSize = 1 }, func(s *proxy.Server) {
		s.OnReload = func(*config.Config) { reloads.Add(1) }
	})
	// An edit applied by a SIGHUP's reload is not applied again by the watcher.
	next := *p.Config()
	next.Cluster.PoolSize = 8
	writeFile(t, p.cfgPath, &next)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	p.WatchConfig(p.cfgPath, 20*time.Millisecond)
	waitFor(t, 10*time.Second, "two checks by the watcher", func() bool { return proxy.WatchChecks(p.Server) >= 2 })
	if n := reloads.Load(); n != 1 || p.Config().Cluster.PoolSize != 8 {
		t.Fatalf("%d reloads for one edit (pool_size %d)", n, p.Config().Cluster.PoolSize)
	}

	// An edit alone is enough: the watcher reloads it, once.
	next.Cluster.PoolSize = 17 // another size: an edit within the file system's timestamp tick is still seen
	writeFile(t, p.cfgPath, &next)
	waitFor(t, 10*time.Second, "the watcher to reload", func() bool { return p.Config().Cluster.PoolSize == 17 })
	checks := proxy.WatchChecks(p.Server)
	waitFor(t, 10*time.Second, "two more checks by the watcher", func() bool { return proxy.WatchChecks(p.Server) >= checks+2 })
	if n := reloads.Load(); n != 2 {
		t.Fatalf("%d reloads for two edits", n)
	}

	// Reloads racing each other leave the last file's configuration in force.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.ReloadFile(p.cfgPath)
		}()
	}
	next.Cluster.PoolSize = 9
	writeFile(t, p.cfgPath, &next)
	wg.Wait()
	waitFor(t, 10*time.Second, "the last edit in force", func() bool { return p.Config().Cluster.PoolSize == 9 })
}

// TestGracefulShutdown: idle clients are told at once, a client in a transaction may finish it,
// new clients are refused, then Shutdown returns.
func TestGracefulShutdown(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = mode; c.Proxy.ShutdownTimeout.Duration = 30 * time.Second })
			ctx := context.Background()
			idle := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			busy := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			mustExec(t, idle, "SELECT 1")
			mustExec(t, busy, "DROP TABLE IF EXISTS t_shutdown_"+mode)
			mustExec(t, busy, "CREATE TABLE t_shutdown_"+mode+" (x int)")
			tx, err := busy.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO t_shutdown_"+mode+" VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			shut := make(chan struct{})
			go func() { p.Shutdown(); close(shut) }()

			// The idle client's next query fails: its connection was ended with 57P01.
			waitFor(t, 10*time.Second, "the idle client to be closed", func() bool {
				_, err := idle.Exec(ctx, "SELECT 1")
				return err != nil
			})
			// New clients are refused.
			if _, err := pgx.Connect(ctx, p.connString("app", "appdb")); err == nil {
				t.Fatal("new client accepted during shutdown")
			}
			select {
			case <-shut:
				t.Fatal("Shutdown returned while a transaction was running")
			default:
			}
			// The running transaction can finish; its commit is acknowledged and durable.
			if _, err := tx.Exec(ctx, "INSERT INTO t_shutdown_"+mode+" VALUES (2)"); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit during shutdown: %v", err)
			}
			select {
			case <-shut:
			case <-time.After(20 * time.Second):
				t.Fatal("Shutdown did not return after the last transaction ended")
			}
			var n int
			if err := direct(t, "appdb").QueryRow(ctx, "SELECT count(*) FROM t_shutdown_"+mode).Scan(&n); err != nil || n != 2 {
				t.Fatalf("rows committed during shutdown: %d %v", n, err)
			}
		})
	}
}

// TestShutdownTimeout: a transaction that outlives shutdown_timeout is cut off (and rolled back by
// the server).
func TestShutdownTimeout(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Proxy.ShutdownTimeout.Duration = 500 * time.Millisecond })
	ctx := context.Background()
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The client never ends its transaction: without shutdown_timeout, Shutdown would not return.
	done := make(chan struct{})
	go func() { p.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("Shutdown still waiting for a transaction 2 minutes past a 500ms shutdown_timeout")
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("transaction survived shutdown_timeout")
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleInTransactionEnds: in transaction mode nobody reads a server connection while its
// client sits idle inside a transaction. Whatever ends that transaction — the client leaving
// with or without a Terminate, or the server ending the session — the client sees what it
// would see directly, and no connection with an open transaction goes back to the pool.
func TestIdleInTransactionEnds(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 1
		c.Proxy.PoolMode = config.PoolModeTransaction
	})
	ctx := context.Background()
	mon := direct(t, "postgres")
	openTx := func(c *pgx.Conn) {
		t.Helper()
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS idle_tx_probe (id int)"); err != nil {
			t.Fatal(err)
		}
	}
	// The next client on the only server connection must not be inside the left transaction.
	checkClean := func(what string) {
		t.Helper()
		c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
		// The left transaction had a transaction ID (it created a table); a new one has none.
		var inTx bool
		if err := c.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned() IS NOT NULL").Scan(&inTx); err != nil {
			t.Fatalf("%s: next client: %v", what, err)
		}
		if inTx {
			t.Fatalf("%s: the next client ran inside the previous client's transaction", what)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname = 'idle_tx_probe'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s: the left transaction was committed (%d, %v)", what, n, err)
		}
		c.Close(ctx)
	}

	// The client says goodbye (Terminate) inside its transaction.
	a := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	openTx(a)
	a.Close(ctx)
	checkClean("Terminate")

	// The client's socket just closes.
	a = p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	openTx(a)
	a.PgConn().Conn().Close()
	checkClean("socket closed")

	// The server ends the session (idle_in_transaction_session_timeout): the client's next
	// statement gets the server's FATAL error, as it would directly, and the pool recovers.
	a = p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	openTx(a)
	if _, err := a.Exec(ctx, "SET LOCAL idle_in_transaction_session_timeout = '100ms'"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the server to end the idle transaction", func() bool {
		var n int
		mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'").Scan(&n)
		return n == 0
	})
	_, err := a.Exec(ctx, "SELECT 1")
	if code := pgCode(err); code != "25P03" && code != "08006" {
		t.Fatalf("statement after the server ended the session: %v", err)
	}
	checkClean("idle_in_transaction_session_timeout")
}

// TestShutdownSilentLogin: clients that connected and sent nothing, or half a startup packet,
// over TCP (accepted on the event loops) and a Unix-domain socket (on goroutines), do not hold
// Shutdown until client_login_timeout: they are closed at once.
func TestShutdownSilentLogin(t *testing.T) {
	dir := t.TempDir()
	p := startProxy(t, func(c *config.Config) {
		c.Proxy.ClientLoginTimeout.Duration = 10 * time.Minute
		c.Proxy.UnixSocketDir = dir
	})
	port := p.Addr().(*net.TCPAddr).Port
	var conns []net.Conn
	for _, half := range []bool{false, true} {
		for _, addr := range [][2]string{{"tcp", p.Addr().String()}, {"unix", filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))}} {
			c, err := net.Dial(addr[0], addr[1])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if half {
				if _, err := c.Write([]byte{0, 0, 0, 40, 0, 3, 0, 0, 'u'}); err != nil {
					t.Fatal(err)
				}
			}
			conns = append(conns, c)
		}
	}
	waitFor(t, 10*time.Second, "the connections to be accepted", func() bool { return p.LoggingIn() == len(conns) })
	done := make(chan struct{})
	go func() { p.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Shutdown waits for clients that never logged in")
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection %d still open after Shutdown (%d, %v)", i, n, err)
		}
	}
}
