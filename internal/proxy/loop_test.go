package proxy_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
	"pgtide/internal/evloop"
)

// A client that stops reading a large result must not hold up the others: the event loop that
// relays it hands itself to a new goroutine when the client's socket is full, and the others go
// on being served. Once it reads again, it gets every row.
func TestLoopSlowReader(t *testing.T) {
	p := startProxy(t, nil)
	slow := p.raw(t)
	slow.login("app", "appdb")
	const rows = 20000 // about 20 MB: far more than the sockets buffer
	slow.send(&pgproto3.Query{String: "SELECT repeat('x', 1000) FROM generate_series(1, 20000)"})
	slow.next("RowDescription") // the relay has started; from here on nothing is read

	other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 100 {
		var n int
		if err := other.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d of another client while one does not read: %d, %v", i, n, err)
		}
	}

	slow.c.SetDeadline(time.Now().Add(60 * time.Second))
	got := 0
	for {
		m, err := slow.fe.Receive()
		if err != nil {
			t.Fatalf("the slow reader, after %d rows: %v", got, err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			if len(m.Values[0]) != 1000 {
				t.Fatalf("row %d: %d bytes", got, len(m.Values[0]))
			}
			got++
		case *pgproto3.CommandComplete:
			if string(m.CommandTag) != fmt.Sprint("SELECT ", rows) || got != rows {
				t.Fatalf("the slow reader got %d rows and %q, want %d", got, m.CommandTag, rows)
			}
		case *pgproto3.ReadyForQuery:
			return
		}
	}
}

// A client that sends its last request and hangs up at once (the request and the FIN arrive
// together) is answered, as far as it reads, and its session ends: the hang-up is not lost
// behind the request that came with it.
func TestLoopRequestThenHangUp(t *testing.T) {
	p := startProxy(t, nil)
	base := p.ClientCount()
	r := p.raw(t)
	r.login("app", "appdb")
	r.send(&pgproto3.Query{String: "SELECT 42"})
	r.c.(*net.TCPConn).CloseWrite()
	r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	waitFor(t, 20*time.Second, "the session to end", func() bool { return p.ClientCount() == base })

	// Closed outright while its request runs: the session ends once the answer comes.
	r2 := p.raw(t)
	r2.login("app", "appdb")
	r2.send(&pgproto3.Query{String: "SELECT pg_sleep(0.2)"})
	r2.c.Close()
	waitFor(t, 20*time.Second, "the second session to end", func() bool { return p.ClientCount() == base })
}

// Clients on the event loops that wait for a server connection (the pool is full) wait in its
// queue without a goroutine each, and without handing a loop off; when the connection comes
// back each gets it in turn and its answer.
func TestLoopQueuedWithoutGoroutines(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 1 })
	ctx := context.Background()
	holder := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	tx, err := holder.Begin(ctx) // holds the only server connection
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx.Conn(), "SELECT 1")
	const n = 40
	clients := make([]*rawConn, n)
	for i := range clients {
		clients[i] = p.raw(t)
		clients[i].login("app", "appdb")
	}
	goroutines, handoffs := runtime.NumGoroutine(), evloop.Handoffs()
	for i, r := range clients {
		r.send(&pgproto3.Query{String: fmt.Sprintf("SELECT %d", i)})
	}
	waitFor(t, 20*time.Second, "every client to wait for the server connection", func() bool { return appStats(p).Waiting == n })
	if g := runtime.NumGoroutine() - goroutines; g >= n/4 {
		t.Errorf("%d more goroutines with %d clients waiting", g, n)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i, r := range clients {
		msgs := r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
		if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != fmt.Sprint(i) {
			t.Fatalf("client %d got %s", i, got)
		}
	}
	if h := evloop.Handoffs() - handoffs; h > 5 {
		t.Errorf("%d loop hand-offs for %d waits", h, n)
	}
	if s := appStats(p); s.Waiting != 0 || s.Total != 1 {
		t.Errorf("after: %+v", s)
	}
}
