package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/pgcluster"
)

func TestParseCeiling(t *testing.T) {
	for _, tc := range []struct {
		row                     [][]byte
		max, reserved, backends int
		ok                      bool
	}{
		{[][]byte{[]byte("100"), []byte("3"), nil, []byte("7")}, 100, 3, 7, true},          // PostgreSQL 15: no reserved_connections
		{[][]byte{[]byte("40"), []byte("3"), []byte("2"), []byte("0")}, 40, 5, 0, true},    // PostgreSQL 16
		{[][]byte{[]byte("5000"), []byte("3"), []byte(""), []byte("9")}, 5000, 3, 9, true}, // missing, as an empty string
		{[][]byte{[]byte("x"), []byte("3"), nil, []byte("1")}, 0, 0, 0, false},
		{[][]byte{[]byte("0"), []byte("3"), nil, []byte("1")}, 0, 0, 0, false},
		{[][]byte{[]byte("10"), []byte("-1"), nil, []byte("1")}, 0, 0, 0, false},
		{[][]byte{[]byte("10"), []byte("3"), nil, nil}, 0, 0, 0, false},
	} {
		m, r, b, err := parseCeiling([][][]byte{tc.row})
		if (err == nil) != tc.ok || m != tc.max || r != tc.reserved || b != tc.backends {
			t.Errorf("%q: %d, %d, %d, %v; want %d, %d, %d, ok %v", tc.row, m, r, b, err, tc.max, tc.reserved, tc.backends, tc.ok)
		}
	}
	if _, _, _, err := parseCeiling(nil); err == nil {
		t.Error("no rows: no error")
	}
}

// TestCeilingRead: every node's ceiling is read by its health check and announced once.
func TestCeilingRead(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	tc := runCluster(t, Config{Hosts: hostsOf(pc.Nodes()), HealthCheckInterval: 50 * time.Millisecond, HealthCheckTimeout: 5 * time.Second})
	for _, n := range tc.Nodes() {
		waitFor(t, 30*time.Second, "the ceiling of "+n.Addr(), func() error {
			if _, _, ok := n.Ceiling(); !ok {
				return errors.New("not read yet")
			}
			return nil
		})
		maxConns, reserved, _ := n.Ceiling()
		if maxConns < 10 || reserved != 3 {
			t.Errorf("%s: max_connections %d, reserved %d; want the server's (reserved 3, PostgreSQL's default)", n, maxConns, reserved)
		}
	}
	// A node's ceiling is set a moment before its event reaches the subscribers.
	events := func() int {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		return len(tc.ceilings)
	}
	waitFor(t, 30*time.Second, "a ceiling event per node", func() error {
		if n := events(); n < len(tc.Nodes()) {
			return fmt.Errorf("%d ceiling events for %d nodes", n, len(tc.Nodes()))
		}
		return nil
	})
	// Once: ten more health checks announce nothing more.
	time.Sleep(10 * 50 * time.Millisecond)
	if n := events(); n != len(tc.Nodes()) {
		t.Errorf("%d ceiling events for %d nodes, want one each", n, len(tc.Nodes()))
	}
}

// TestBusyWarning: when a node's client backends (anyone's) pass 80% of its max_connections, a
// warning is logged once, and a line when they are back under.
func TestBusyWarning(t *testing.T) {
	checkNoLeaks(t)
	pc, err := pgcluster.Start(t.Context(), pgcluster.Options{ExtraConf: []string{"max_connections = 20"}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	tc := runCluster(t, Config{Hosts: hostsOf(pc.Nodes()), HealthCheckInterval: 20 * time.Millisecond, HealthCheckTimeout: 5 * time.Second})
	n := tc.node(pc.Primary().Addr())
	waitFor(t, 30*time.Second, "the ceiling", func() error {
		if _, _, ok := n.Ceiling(); !ok {
			return errors.New("not read yet")
		}
		return nil
	})
	// 16 of 20 is 80%, not over it: with the health check's own connection, 16 more pass it.
	held := holdConns(t, pc.Primary(), 16)
	defer closeConns(held)
	warned := func() int {
		return tc.logs.count(slog.LevelWarn, "node's client backends passed 80%")
	}
	waitFor(t, 30*time.Second, "the 80% warning", func() error {
		if warned() == 0 {
			return fmt.Errorf("backends %d", n.Backends())
		}
		return nil
	})
	closeConns(held) // closing again at the deferred call does nothing
	waitFor(t, 30*time.Second, "the line saying it is back under", func() error {
		if tc.logs.count(slog.LevelInfo, "node's client backends back under 80%") == 0 {
			return fmt.Errorf("backends %d", n.Backends())
		}
		return nil
	})
	if w := warned(); w != 1 {
		t.Fatalf("%d warnings, want 1", w)
	}
}

// TestBackendsEveryCheck: with SetBackendsEveryCheck every health check reads the node's client
// backends and hands them to SubscribeBackends' functions, so a change shows at the next check.
func TestBackendsEveryCheck(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	const interval = 50 * time.Millisecond
	tc := New(Config{Hosts: hostsOf(pc.Nodes()[:1]), User: "postgres", HealthCheckInterval: interval, HealthCheckTimeout: 5 * time.Second}, nil)
	tc.SetBackendsEveryCheck(true)
	type reading struct {
		backends int
		at       time.Time
	}
	var mu sync.Mutex
	var readings []reading
	tc.SubscribeBackends(func(n *Node, backends int, at time.Time) {
		mu.Lock()
		readings = append(readings, reading{backends, at})
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tc.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	last := func() (reading, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(readings) == 0 {
			return reading{}, 0
		}
		return readings[len(readings)-1], len(readings)
	}
	waitFor(t, 30*time.Second, "the first reading", func() error {
		if _, n := last(); n == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	first, _ := last()
	defer closeConns(holdConns(t, pc.Primary(), 5))
	waitFor(t, 30*time.Second, "a reading with the 5 new connections", func() error {
		if r, _ := last(); r.backends < first.backends+5 {
			return fmt.Errorf("backends %d, first %d", r.backends, first.backends)
		}
		return nil
	})
	waitFor(t, 30*time.Second, "5 more readings", func() error {
		if _, n := last(); n < 8 {
			return fmt.Errorf("%d readings", n)
		}
		return nil
	})
	// Every ceilingEvery checks, readings would be at least 4 × 45 ms apart; every check, some
	// two are closer even on a busy machine (a late check shortens the wait for the next).
	mu.Lock()
	gap := time.Hour
	for i := 1; i < len(readings); i++ {
		gap = min(gap, readings[i].at.Sub(readings[i-1].at))
	}
	mu.Unlock()
	if gap >= 3*interval {
		t.Fatalf("the closest readings were %v apart with health checks every %v", gap, interval)
	}
	if n := tc.Nodes()[0]; n.Backends() < first.backends+5 {
		t.Fatalf("Node.Backends = %d, want at least %d", n.Backends(), first.backends+5)
	}
}

// holdConns opens n connections to node as postgres, which the caller closes (closeConns).
func holdConns(t *testing.T, node *pgcluster.Node, n int) []*pgx.Conn {
	t.Helper()
	var held []*pgx.Conn
	for range n {
		c, err := pgx.Connect(t.Context(), node.ConnString("postgres", "postgres"))
		if err != nil {
			closeConns(held)
			t.Fatal(err)
		}
		held = append(held, c)
	}
	return held
}

func closeConns(cs []*pgx.Conn) {
	for _, c := range cs {
		c.Close(context.Background())
	}
}
