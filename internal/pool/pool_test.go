package pool

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"pgtide/internal/wire"
)

// fakeServer accepts connections on a local port and logs each one in (trust), then reads and
// drops whatever it is sent until the connection closes: enough of a server for the pool.
func fakeServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for pid := uint32(1); ; pid++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var n [4]byte
				if _, err := io.ReadFull(c, n[:]); err != nil {
					return
				}
				startup := make([]byte, binary.BigEndian.Uint32(n[:])-4)
				if _, err := io.ReadFull(c, startup); err != nil {
					return
				}
				if bytes.Contains(startup, []byte("\x00missing\x00")) { // database "missing"
					c.Write((&wire.Error{Severity: wire.SeverityFatal, Code: "3D000", Message: `database "missing" does not exist`}).Append(nil))
					return
				}
				msg := wire.AppendMessage(nil, 'R', []byte{0, 0, 0, 0})
				msg = wire.AppendBackendKeyData(msg, pid, 42)
				msg = wire.AppendReadyForQuery(msg, 'I')
				if _, err := c.Write(msg); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// newTestManager returns a Manager with pool_size 1 over a fake server, closed when the test ends.
func newTestManager(t *testing.T) (*Manager, Key) {
	addr := fakeServer(t) // its cleanup waits for the connections m.Close ends: register it first
	m := NewManager(Settings{
		PoolSize:             1,
		MaxServerConnections: 10,
		ServerLifetime:       time.Hour,
		ServerIdleTimeout:    time.Hour,
		ServerConnectTimeout: 5 * time.Second,
		MaxMessageSize:       1 << 20,
	})
	t.Cleanup(m.Close)
	return m, Key{Node: addr, Database: "db", User: "u"}
}

func stats(m *Manager, k Key) Stats {
	for _, s := range m.Stats() {
		if s.Key == k {
			return s
		}
	}
	return Stats{Key: k}
}

func wantStats(t *testing.T, m *Manager, k Key, when string, total, idle, parked int) {
	t.Helper()
	if s := stats(m, k); s.Total != total || s.Idle != idle || s.Parked != parked {
		t.Fatalf("%s: total %d, idle %d, parked %d; want %d, %d, %d", when, s.Total, s.Idle, s.Parked, total, idle, parked)
	}
}

// TestCancelParks: a connection released while cancels for its backend are in flight is lent to
// no one, and still counts toward pool_size, until the last of them ends; then it goes where
// Release would have put it.
func TestCancelParks(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// run gets an acquired connection with one cancel begun and takes it from there.
		run func(t *testing.T, m *Manager, k Key, c *Conn)
	}{
		{"released then ended: idle", func(t *testing.T, m *Manager, k Key, c *Conn) {
			m.Release(c, false)
			wantStats(t, m, k, "parked", 1, 0, 1)
			m.EndCancel(c)
			wantStats(t, m, k, "cancel ended", 1, 1, 0)
		}},
		{"ended then released: idle", func(t *testing.T, m *Manager, k Key, c *Conn) {
			m.EndCancel(c)
			m.Release(c, false)
			wantStats(t, m, k, "released", 1, 1, 0)
		}},
		{"two cancels: parked until both end", func(t *testing.T, m *Manager, k Key, c *Conn) {
			m.BeginCancel(c)
			m.Release(c, false)
			m.EndCancel(c)
			wantStats(t, m, k, "one cancel left", 1, 0, 1)
			m.EndCancel(c)
			wantStats(t, m, k, "both ended", 1, 1, 0)
		}},
		{"a waiter gets it when the cancel ends", func(t *testing.T, m *Manager, k Key, c *Conn) {
			m.Release(c, false)
			got := make(chan *Conn, 1)
			go func() {
				c, err := m.Acquire(ctx, k, time.Minute)
				if err != nil {
					t.Error(err)
				}
				got <- c
			}()
			waitStats(t, m, k, "the second Acquire to wait", func(s Stats) bool { return s.Waiting == 1 })
			wantStats(t, m, k, "parked with a waiter", 1, 0, 1) // pool_size 1: no second dial
			m.EndCancel(c)
			if c2 := <-got; c2 != c {
				t.Fatalf("the waiter got %p, want the parked connection %p", c2, c)
			}
			wantStats(t, m, k, "lent to the waiter", 1, 0, 0)
			m.Release(c, false)
		}},
		{"Close while parked: closed when the cancel ends", func(t *testing.T, m *Manager, k Key, c *Conn) {
			m.Release(c, false)
			m.Close()
			wantStats(t, m, k, "closed, still parked", 1, 0, 1)
			m.EndCancel(c)
			wantStats(t, m, k, "cancel ended", 0, 0, 0)
		}},
		{"CloseNode while parked: closed when the cancel ends", func(t *testing.T, m *Manager, k Key, c *Conn) {
			m.Release(c, false)
			m.CloseNode(k.Node)
			wantStats(t, m, k, "node closed, still parked", 1, 0, 1)
			m.EndCancel(c)
			wantStats(t, m, k, "cancel ended", 0, 0, 0)
		}},
		{"broken: closed at once", func(t *testing.T, m *Manager, k Key, c *Conn) {
			c.MarkBroken()
			m.Release(c, false)
			wantStats(t, m, k, "broken released", 0, 0, 0)
			m.EndCancel(c)
			wantStats(t, m, k, "cancel ended", 0, 0, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, k := newTestManager(t)
			c, err := m.Acquire(ctx, k, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			m.BeginCancel(c)
			tt.run(t, m, k, c)
		})
	}
}

// TestCancelParkedCountsOnNode: a parked connection holds its node's max_server_connections slot,
// so another pool on the node waits for it rather than opening one more.
func TestCancelParkedCountsOnNode(t *testing.T) {
	ctx := context.Background()
	m, k := newTestManager(t)
	s := m.Settings()
	s.MaxServerConnections = 1
	m.SetSettings(s)
	c, err := m.Acquire(ctx, k, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	m.BeginCancel(c)
	m.Release(c, false)
	other := k
	other.User = "v"
	got := acquireWaiting(t, m, other)
	if n := m.NodeTotal(k.Node); n != 1 {
		t.Fatalf("node total %d with one parked connection, want 1", n)
	}
	// The cancel ends: the idle connection gives way to the starved pool.
	m.EndCancel(c)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	wantStats(t, m, k, "after giving way", 0, 0, 0)
}

// TestAcquireIdleAllocs: taking an idle connection and giving it back allocates nothing.
func TestAcquireIdleAllocs(t *testing.T) {
	ctx := context.Background()
	m, k := newTestManager(t)
	c, err := m.Acquire(ctx, k, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	m.Release(c, false)
	if n := testing.AllocsPerRun(100, func() {
		c, err := m.Acquire(ctx, k, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		m.Release(c, false)
	}); n != 0 {
		t.Fatalf("Acquire and Release of an idle connection: %v allocations, want 0", n)
	}
}

// acquireWaiting starts a client that acquires a connection of k (waiting up to a minute) and
// gives it back at once; it returns once the client waits, with the channel of its error.
func acquireWaiting(t *testing.T, m *Manager, k Key) <-chan error {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		c, err := m.Acquire(context.Background(), k, time.Minute)
		if err == nil {
			m.Release(c, false)
		}
		got <- err
	}()
	waitStats(t, m, k, "a client of "+k.String()+" to wait", func(s Stats) bool { return s.Waiting == 1 })
	return got
}

// waitStats polls k's stats until ok, failing the test after a generous deadline.
func waitStats(t *testing.T, m *Manager, k Key, what string, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(stats(m, k)) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, stats(m, k))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNodeBudget: a node's budget caps its connections below max_server_connections; when it
// shrinks, idle connections close at once and busy ones as they come back, none interrupted; when
// it grows, waiting clients get the freed slots.
func TestNodeBudget(t *testing.T) {
	m, k := newTestManager(t)
	s := m.Settings()
	s.PoolSize = 5
	m.SetSettings(s)
	m.SetNodeBudget(k.Node, 3)
	if got := m.NodeCap(k.Node); got != 3 {
		t.Fatalf("NodeCap = %d, want the budget 3", got)
	}
	ctx := context.Background()
	var held []*Conn
	for range 3 {
		c, err := m.Acquire(ctx, k, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if _, err := m.Acquire(ctx, k, 50*time.Millisecond); err == nil {
		t.Fatal("a fourth connection past a budget of 3")
	}
	m.Release(held[2], false)
	wantStats(t, m, k, "one released", 3, 1, 0)
	m.SetNodeBudget(k.Node, 1)
	wantStats(t, m, k, "budget 1: the idle one closed", 2, 0, 0)
	m.Release(held[1], false)
	wantStats(t, m, k, "a busy one back, over the budget: closed", 1, 0, 0)
	m.Release(held[0], false)
	wantStats(t, m, k, "the last one back, within the budget: kept", 1, 1, 0)
	m.SetNodeBudget(k.Node, 0)
	if got := m.NodeCap(k.Node); got != s.MaxServerConnections {
		t.Fatalf("NodeCap without a budget = %d, want max_server_connections %d", got, s.MaxServerConnections)
	}
	m.SetNodeBudget(k.Node, 50) // above max_server_connections: the hard cap stays
	if got := m.NodeCap(k.Node); got != s.MaxServerConnections {
		t.Fatalf("NodeCap with a budget over max_server_connections = %d, want %d", got, s.MaxServerConnections)
	}
}

// TestPoolsRemoved: a pool whose first login the server refuses (an unknown database) is not
// kept; a pool with no connections unused for server_idle_timeout is removed; pools in use stay.
func TestPoolsRemoved(t *testing.T) {
	m, k := newTestManager(t)
	missing := k
	missing.Database = "missing"
	for range 3 {
		if _, err := m.Acquire(context.Background(), missing, time.Second); err == nil {
			t.Fatal("a login to a missing database succeeded")
		}
	}
	c, err := m.Acquire(context.Background(), k, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(m.Stats()); got != 1 {
		t.Fatalf("%d pools after failed logins, want only the one in use", got)
	}
	s := m.Settings()
	s.ServerIdleTimeout = time.Millisecond
	m.SetSettings(s)
	time.Sleep(5 * time.Millisecond) // past the tiny server_idle_timeout
	m.maintain(context.Background())
	if got := len(m.Stats()); got != 1 {
		t.Fatalf("a pool with a connection lent was removed (%d pools)", got)
	}
	m.Release(c, false)
	time.Sleep(5 * time.Millisecond)
	m.maintain(context.Background()) // closes the idle connection (server_idle_timeout) ...
	time.Sleep(5 * time.Millisecond)
	m.maintain(context.Background()) // ... and then removes the empty pool
	if got := len(m.Stats()); got != 0 {
		t.Fatalf("%d pools left unused", got)
	}
	// A new client simply makes it again.
	c, err = m.Acquire(context.Background(), k, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m.Release(c, false)
}
