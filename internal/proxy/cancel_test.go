package proxy_test

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// appStats returns the pool stats of user app, summed over its pools.
func appStats(p *testProxy) pool.Stats {
	var sum pool.Stats
	for _, s := range p.Pools().Stats() {
		if s.Key.User == "app" {
			sum.Total += s.Total
			sum.Idle += s.Idle
			sum.Waiting += s.Waiting
			sum.Parked += s.Parked
		}
	}
	return sum
}

// TestCancelWhileWaiting: a cancel for a request that waits for a server connection (the pool is
// full) ends the wait at once with 57014, in both pool modes and for the simple and the extended
// protocol, and the client can go on; a cancel with the wrong secret ends nothing.
func TestCancelWhileWaiting(t *testing.T) {
	for _, mode := range bothModes {
		for _, proto := range []struct {
			name string
			mode pgx.QueryExecMode
		}{{"simple", pgx.QueryExecModeSimpleProtocol}, {"extended", pgx.QueryExecModeExec}} {
			t.Run(mode+"/"+proto.name, func(t *testing.T) {
				p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = mode; c.Cluster.PoolSize = 1 })
				ctx := context.Background()
				holder := p.connect(t, "app", "appdb", proto.mode)
				waiter := p.connect(t, "app", "appdb", proto.mode)
				tx, err := holder.Begin(ctx) // holds the only server connection
				if err != nil {
					t.Fatal(err)
				}
				mustExec(t, tx.Conn(), "SELECT 1")
				errc := make(chan error, 1)
				go func() {
					var x int
					errc <- waiter.QueryRow(ctx, "SELECT $1::int", 7).Scan(&x)
				}()
				waitFor(t, 10*time.Second, "the request to wait for a server connection", func() bool { return appStats(p).Waiting == 1 })
				// The proxy has handled a cancel with the wrong secret when sendCancel returns.
				secret := slices.Clone(waiter.PgConn().SecretKey())
				secret[0] ^= 0xff
				sendCancel(t, p, waiter.PgConn().PID(), secret)
				if s := appStats(p); s.Waiting != 1 {
					t.Fatalf("a cancel with the wrong secret ended the wait: %+v", s)
				}
				if err := waiter.PgConn().CancelRequest(ctx); err != nil {
					t.Fatal(err)
				}
				// Without the cancel the request would end at query_wait_timeout (10 s) with 53300.
				if err := <-errc; pgCode(err) != "57014" {
					t.Fatalf("cancelled while waiting: got %v, want SQLSTATE 57014", err)
				}
				if s := appStats(p); s.Waiting != 0 {
					t.Fatalf("the cancelled request still waits: %+v", s)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if mode == config.PoolModeSession {
					holder.Close(ctx) // gives its server connection back
				}
				var x int
				if err := waiter.QueryRow(ctx, "SELECT $1::int", 8).Scan(&x); err != nil || x != 8 {
					t.Fatalf("after the cancel: %d %v", x, err)
				}
			})
		}
	}
}

// TestCancelDoesNotDelayAnswer: while a cancel is on its way to the server (its dial blocked
// here), the client's answer still arrives; and the server connection, given back meanwhile, is
// lent to no other client until the cancel has been delivered.
func TestCancelDoesNotDelayAnswer(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = mode; c.Cluster.PoolSize = 1 })
			dialing := make(chan struct{}, 1)
			release := make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unblock) // before the proxy shuts down: it waits for the cancel
			p.SetCancelDialer(func(network, addr string) (net.Conn, error) {
				dialing <- struct{}{}
				<-release
				return net.DialTimeout(network, addr, 2*time.Second)
			})
			ctx := context.Background()
			mon := direct(t, "appdb")
			// The client's query waits for a lock the test holds, so the test decides when it
			// ends (a table lock: an advisory lock would pin the client).
			mustExec(t, mon, "DROP TABLE IF EXISTS cancel_gate")
			mustExec(t, mon, "CREATE TABLE cancel_gate (x int)")
			mustExec(t, mon, "GRANT SELECT ON cancel_gate TO app")
			gate, err := mon.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer gate.Rollback(ctx)
			mustExec(t, gate.Conn(), "LOCK TABLE cancel_gate IN ACCESS EXCLUSIVE MODE")
			watch := direct(t, "appdb")
			c := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
			errc := execAsync(c, "SELECT count(*) FROM cancel_gate")
			waitFor(t, 10*time.Second, "the query to wait for the lock", func() bool {
				var n int
				watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query = 'SELECT count(*) FROM cancel_gate'").Scan(&n)
				return n == 1
			})
			cancelled := make(chan error, 1)
			go func() { cancelled <- c.PgConn().CancelRequest(ctx) }()
			<-dialing // the cancel is under way, and stays so until release
			if err := gate.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("the query, which the cancel has not reached: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no answer within 10 s: the cancel's delivery holds it up")
			}
			if mode == config.PoolModeTransaction {
				// The server connection went back to the pool, but the cancel for its backend
				// has not been delivered: nobody may get it yet.
				waitFor(t, 10*time.Second, "the server connection to be parked", func() bool { return appStats(p).Parked == 1 })
				other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
				otherDone := execAsync(other, "SELECT 1")
				waitFor(t, 10*time.Second, "the other client to wait", func() bool { return appStats(p).Waiting == 1 })
				if s := appStats(p); s.Total != 1 || s.Idle != 0 || s.Parked != 1 {
					t.Fatalf("while the cancel is in flight: %+v", s)
				}
				unblock()
				if err := <-otherDone; err != nil {
					t.Fatalf("the other client, served after the cancel was delivered: %v", err)
				}
			}
			unblock()
			if err := <-cancelled; err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// sendCancel sends a CancelRequest to the proxy as a client would, and waits for it to be handled.
func sendCancel(t *testing.T, p *testProxy, pid uint32, secret []byte) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(wire.AppendCancelRequest(nil, pid, secret)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil { // the proxy closes it once handled
		t.Fatal(err)
	}
}

// execAsync runs sql on c in a goroutine; the channel gets its error.
func execAsync(c *pgx.Conn, sql string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), sql)
		errc <- err
	}()
	return errc
}
