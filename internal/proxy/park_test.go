package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/config"
	"pgtide/internal/pgtls"
	"pgtide/internal/proxy"
	"pgtide/internal/wire"
)

// waitParked polls until want clients are parked.
func waitParked(t *testing.T, p *testProxy, want int) {
	t.Helper()
	waitCount(t, "parked clients", p.ParkedClients, want)
}

// waitCount waits until count returns want, for up to 30 seconds; what names the count.
func waitCount(t *testing.T, what string, count func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for count() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, count(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleClientsParked: idle transaction-mode clients are parked (no goroutine), and a parked
// client's next request, its session's state (prepared statements, settings) and its end (by
// the client, by a timeout, by KILL_CLIENT, by shutdown) work as before.
func TestIdleClientsParked(t *testing.T) {
	p := startProxyPrepared(t, nil, func(s *proxy.Server) { s.SetParkAfter(50 * time.Millisecond) })
	ctx := context.Background()
	const n = 20
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		conns[i] = p.connect(t, "app", "appdb", pgx.QueryExecModeCacheStatement)
		if _, err := conns[i].Exec(ctx, "SET application_name = '"+fmt.Sprint("parked", i)+"'"); err != nil {
			t.Fatal(err)
		}
		if _, err := conns[i].Prepare(ctx, "mine", "SELECT $1::int + 1"); err != nil {
			t.Fatal(err)
		}
	}
	// One client idles inside a transaction: it holds a server connection, and waits on the
	// event loops like the others (the Parker, for clients over TLS, would not take it).
	tx, err := conns[0].Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitParked(t, p, n)

	// Two rounds: each wakes every parked client, which is parked again once idle.
	for round := range 2 {
		for i, c := range conns[1:] {
			var app string
			var got int
			if err := c.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil {
				t.Fatalf("round %d, client %d: %v", round, i+1, err)
			}
			if err := c.QueryRow(ctx, "mine", 41).Scan(&got); err != nil {
				t.Fatalf("round %d, client %d, prepared: %v", round, i+1, err)
			}
			if app != fmt.Sprint("parked", i+1) || got != 42 {
				t.Fatalf("round %d, client %d: application_name %q, mine(41) = %d", round, i+1, app, got)
			}
		}
		waitParked(t, p, n)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitParked(t, p, n)

	// A parked client that leaves ends its session.
	before := p.ClientCount()
	conns[1].Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for p.ClientCount() != before-1 || p.ParkedClients() != n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("after a parked client left: %d clients (want %d), %d parked (want %d)",
				p.ClientCount(), before-1, p.ParkedClients(), n-1)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// KILL_CLIENT of a parked client.
	var id uint32
	for _, ci := range p.Clients() {
		if ci.ApplicationName == "parked2" {
			id = ci.ID
		}
	}
	if id == 0 {
		t.Fatal("parked2 not in the client list")
	}
	if err := p.KillClient(id); err != nil {
		t.Fatal(err)
	}
	if _, err := conns[2].Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a killed parked client still ran a query")
	}
	waitParked(t, p, n-2)

	// Shutdown: a parked client reads 57P01.
	raw := conns[3].PgConn().Conn()
	go p.Shutdown()
	raw.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := wire.NewReader(wire.NewBufReader(raw, 4096), 1<<20)
	typ, _, err := r.Next()
	if err != nil || typ != 'E' {
		t.Fatalf("parked client at shutdown: %c, %v", typ, err)
	}
	body, err := r.Body()
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := wire.ParseErrorFields(body); code != wire.CodeAdminShutdown {
		t.Fatalf("parked client at shutdown: %s %s", code, msg)
	}
}

// TestParkedIdleTimeout: client_idle_timeout ends a parked client as any idle one.
func TestParkedIdleTimeout(t *testing.T) {
	p := startProxyPrepared(t, func(c *config.Config) {
		c.Proxy.ClientIdleTimeout.Duration = 2 * time.Second
	}, func(s *proxy.Server) { s.SetParkAfter(10 * time.Millisecond) })
	ctx := context.Background()
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	waitParked(t, p, 1)
	deadline := time.Now().Add(30 * time.Second)
	for p.ClientCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("parked client not timed out: %d clients, %d parked", p.ClientCount(), p.ParkedClients())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := c.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) && !isClosed(err) {
		t.Fatalf("query after the idle timeout: %v", err)
	}
	if pgErr != nil && pgErr.Code != "57P05" {
		t.Fatalf("query after the idle timeout: %v", err)
	}
}

// TestSessionModeIdle: a session-mode client idle on the event loops waits without a goroutine
// (counted as parked) and keeps its server connection: after two janitor rounds the same
// backend answers it.
func TestSessionModeIdle(t *testing.T) {
	p := startProxyPrepared(t, func(c *config.Config) { c.Proxy.PoolMode = config.PoolModeSession },
		func(s *proxy.Server) { s.SetParkAfter(10 * time.Millisecond) })
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	pid := backendPID(t, c)
	waitParked(t, p, 1)
	runs := proxy.JanitorRuns(p.Server)
	waitFor(t, 30*time.Second, "two janitor rounds", func() bool { return proxy.JanitorRuns(p.Server) >= runs+2 })
	waitParked(t, p, 1) // (a janitor round takes it for a moment)
	if got := backendPID(t, c); got != pid {
		t.Fatalf("backend %d after the idle wait, want %d: the client lost its server connection", got, pid)
	}
}

func isClosed(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || pgconn.SafeToRetry(err)
}

// TestParkedClientMemory: a client idle on the event loops costs the proxy no goroutine and no
// buffer, and once the janitor has trimmed it, no request state: only its session, its socket's
// Conn and its cancel key. Measured in this process, clients included (their sockets and
// pgconn's leftovers), after a collection: 3.7 KiB in all on 2026-11-30 before idle clients
// were trimmed, 1,969 bytes after (2,095 with -race); the bound leaves room for the heap's noise.
func TestParkedClientMemory(t *testing.T) {
	const trimmedClientHeap = 2600 // bytes
	p := startProxyPrepared(t, func(c *config.Config) { c.Proxy.LogLevel = "warn" },
		func(s *proxy.Server) { s.SetParkAfter(10 * time.Millisecond) })
	ctx := context.Background()
	connect := func() net.Conn {
		pc, err := pgconn.Connect(ctx, p.connString("app", "appdb"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pc.Exec(ctx, "SELECT 1").Close(); err != nil {
			t.Fatal(err)
		}
		hj, err := pc.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		c := hj.Conn // only the socket: the rest of pgconn's state (its buffers) goes
		t.Cleanup(func() { c.Close() })
		return c
	}
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	const n = 400
	conns := []net.Conn{connect()} // the pool's first server connection is not counted
	waitParked(t, p, 1)
	before, goroutines := heap(), runtime.NumGoroutine()
	for range n {
		conns = append(conns, connect())
	}
	waitParked(t, p, n+1)
	// The janitor trims the idle clients' request state within a round or two (a second each).
	per := (heap() - before) / n
	deadline := time.Now().Add(30 * time.Second)
	for per > trimmedClientHeap && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		per = (heap() - before) / n
	}
	// A goroutine ends just after its session is parked.
	for runtime.NumGoroutine() > goroutines+n/10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d parked clients: %d bytes of heap each (client side included); goroutines %d -> %d",
		n, per, goroutines, runtime.NumGoroutine())
	if g := runtime.NumGoroutine(); g > goroutines+n/10 {
		t.Errorf("goroutines: %d with %d parked clients, %d without", g, n, goroutines)
	}
	if per > trimmedClientHeap {
		t.Errorf("a parked client costs %d bytes of heap, want at most %d", per, trimmedClientHeap)
	}
	runtime.KeepAlive(conns)
}

// TestParkedTLS: clients over TLS (after an SSLRequest, and direct) are parked on their socket
// and woken by their next request, also one of several TLS records.
func TestParkedTLS(t *testing.T) {
	tt := newTestTLS(t)
	p := startProxyPrepared(t, func(c *config.Config) {
		tt.configure(c, pgtls.Require, pgtls.Prefer)
		c.TLS.CAFile = ""
	}, func(s *proxy.Server) { s.SetParkAfter(10 * time.Millisecond) })
	plain := p.connString("app", "appdb")
	var conns []*pgx.Conn
	for _, cs := range []string{tt.connString(plain), tt.connString(plain) + " sslnegotiation=direct"} {
		c, err := tlsConnect(t, cs)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	ctx := context.Background()
	long := strings.Repeat("x", 40000) // three TLS records
	for round := range 3 {
		for i, c := range conns {
			var n int
			if err := c.QueryRow(ctx, "SELECT length($1::text)", long).Scan(&n); err != nil || n != len(long) {
				t.Fatalf("round %d, client %d: %d, %v", round, i, n, err)
			}
		}
		waitParked(t, p, len(conns))
	}
}
