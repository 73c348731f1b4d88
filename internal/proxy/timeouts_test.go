package proxy_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
)

// TestClientTimeouts: client_idle_timeout, idle_transaction_timeout and query_timeout end the
// client that passed them with PostgreSQL's FATAL (57P05, 25P03, 57014), roll back what it had
// open and free its server connection; a client that keeps working is left alone.
func TestClientTimeouts(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) {
				c.Proxy.PoolMode = mode
				c.Proxy.ClientIdleTimeout.Duration = 2 * time.Second
				c.Proxy.IdleTransactionTimeout.Duration = time.Second
				c.Proxy.QueryTimeout.Duration = time.Second
			})
			ctx := context.Background()
			setup := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			mustExec(t, setup, "DROP TABLE IF EXISTS t_timeouts_"+mode)
			mustExec(t, setup, "CREATE TABLE t_timeouts_"+mode+" (x int)")
			setup.Close(ctx)

			// Kept busy: a query every 300 ms for 3 s, past every timeout, is never ended.
			busy := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			// Idle between transactions.
			idle := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			mustExec(t, idle, "SELECT 1")
			// Idle inside a transaction that wrote.
			inTx := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			tx, err := inTx.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO t_timeouts_"+mode+" VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			// A query that runs too long.
			slow := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			slowErr := make(chan error, 1)
			go func() {
				_, err := slow.Exec(ctx, "SELECT pg_sleep(60)")
				slowErr <- err
			}()

			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
				if _, err := busy.Exec(ctx, "SELECT 1"); err != nil {
					t.Fatalf("a busy client was ended: %v", err)
				}
			}
			select {
			case err := <-slowErr:
				if pgCode(err) != "57014" || !strings.Contains(err.Error(), "query_timeout") {
					t.Fatalf("the slow query: %v, want FATAL 57014 query_timeout", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("query_timeout did not end a 60 s query")
			}
			for _, w := range []struct {
				name, log, code string
				exec            func() error
			}{
				{"idle in transaction", "timeout=idle_transaction_timeout", "25P03", func() error { _, err := tx.Exec(ctx, "SELECT 1"); return err }},
				{"idle client", "timeout=client_idle_timeout", "57P05", func() error { _, err := idle.Exec(ctx, "SELECT 1"); return err }},
			} {
				waitFor(t, 30*time.Second, w.log, func() bool { return len(p.logged(`msg="client timed out"`, w.log)) == 1 })
				if err := w.exec(); pgCode(err) != w.code {
					t.Fatalf("%s: %v, want %s", w.log, err, w.code)
				}
			}
			// The timed-out transaction was rolled back; the long query no longer runs.
			check := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			var n int
			if err := check.QueryRow(ctx, "SELECT count(*) FROM t_timeouts_"+mode).Scan(&n); err != nil || n != 0 {
				t.Fatalf("rows left by the timed-out transaction: %d %v", n, err)
			}
			waitFor(t, 30*time.Second, "the 60 s query to be gone from the server", func() bool {
				var running int
				err := check.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'").Scan(&running)
				return err == nil && running == 0
			})
		})
	}
}

// TestClientWriteTimeout: a client that sends a query with a large result and stops reading is
// closed after client_write_timeout, and its server connection with it; others go on.
func TestClientWriteTimeout(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Proxy.ClientWriteTimeout.Duration = time.Second
		c.Cluster.PoolSize = 1
	})
	stuck := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	q := "SELECT repeat('x', 10000) FROM generate_series(1, 100000)\x00" // about 1 GB of rows
	msg := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(q)))
	if _, err := stuck.PgConn().Conn().Write(append(msg, q...)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the stuck client to be closed", func() bool {
		return len(p.logged("client stopped reading its results")) == 1
	})
	// The pool's only server connection is free again: another client runs.
	other := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	mustExec(t, other, "SELECT 1")
}

// TestClientGoneMidResult: a client that goes away (a reset) while a large result is being written
// to it ends its session, and its server connection, cut in the middle of the answer, is closed:
// logged as the client's doing, not as a lost server connection. Others go on.
func TestClientGoneMidResult(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 1 })
	r := p.raw(t)
	r.login("app", "appdb")
	r.send(&pgproto3.Query{String: "SELECT repeat('x', 10000) FROM generate_series(1, 100000)"}) // about 1 GB
	// The result is flowing: read a MiB of it, then stop.
	if _, err := io.ReadFull(r.br, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	r.c.(*net.TCPConn).SetLinger(0) // close with a reset
	r.c.Close()
	waitFor(t, 60*time.Second, "the client's server connection to be closed", func() bool {
		return len(p.logged("client connection failed while its results were relayed")) == 1
	})
	if l := p.logged("server connection lost"); len(l) > 0 {
		t.Fatalf("logged as a lost server connection: %s", l[0])
	}
	// The pool's only server connection is free again (a new one): another client runs.
	other := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	mustExec(t, other, "SELECT 1")
}

// TestMessageMemory: large messages share proxy.message_memory. A client that sends the header
// of a 1 MiB query and then trickles holds that memory; another client's large query waits for
// it, holding no server connection, and gets ERROR 53200 after query_wait_timeout, while small
// queries go on; once the trickling client leaves, large queries run again.
func TestMessageMemory(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Proxy.MaxMessageSize = 1 << 20
		c.Proxy.MessageMemory = 1 << 20
		c.Cluster.QueryWaitTimeout.Duration = 2 * time.Second
		c.Cluster.ServerConnectTimeout.Duration = time.Second
	})
	ctx := context.Background()
	slow := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	header := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+900<<10))
	if _, err := slow.PgConn().Conn().Write(append(header, "SELECT '"...)); err != nil {
		t.Fatal(err)
	}
	big := "SELECT length('" + strings.Repeat("y", 600<<10) + "')"
	other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	waitFor(t, 30*time.Second, "a large query refused for memory", func() bool {
		_, err := other.Exec(ctx, big)
		if err == nil {
			return false // the slow client's header was not read yet
		}
		if pgCode(err) != "53200" || !strings.Contains(err.Error(), "message_memory") {
			t.Fatalf("large query: %v, want 53200 naming message_memory", err)
		}
		return true
	})
	mustExec(t, other, "SELECT 1")
	slow.PgConn().Conn().Close()
	waitFor(t, 30*time.Second, "large queries to run again", func() bool {
		var n int
		return other.QueryRow(ctx, big).Scan(&n) == nil && n == 600<<10
	})
}
