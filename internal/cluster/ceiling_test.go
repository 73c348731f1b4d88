package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.ceilings) != len(tc.Nodes()) {
		t.Errorf("%d ceiling events for %d nodes, want one each", len(tc.ceilings), len(tc.Nodes()))
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
	var held []*pgx.Conn
	defer func() {
		for _, c := range held {
			c.Close(context.Background())
		}
	}()
	for range 16 {
		c, err := pgx.Connect(t.Context(), pc.Primary().ConnString("postgres", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	warned := func() int {
		return tc.logs.count(slog.LevelWarn, "node's client backends passed 80%")
	}
	waitFor(t, 30*time.Second, "the 80% warning", func() error {
		if warned() == 0 {
			return fmt.Errorf("backends %d", n.Backends())
		}
		return nil
	})
	for _, c := range held {
		c.Close(context.Background())
	}
	held = nil
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
