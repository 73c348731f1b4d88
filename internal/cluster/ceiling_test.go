package cluster

import (
	"errors"
	"testing"
	"time"
)

func TestParseCeiling(t *testing.T) {
	for _, tc := range []struct {
		row           [][]byte
		max, reserved int
		ok            bool
	}{
		{[][]byte{[]byte("100"), []byte("3"), nil}, 100, 3, true},          // PostgreSQL 15: no reserved_connections
		{[][]byte{[]byte("40"), []byte("3"), []byte("2")}, 40, 5, true},    // PostgreSQL 16
		{[][]byte{[]byte("5000"), []byte("3"), []byte("")}, 5000, 3, true}, // missing, as an empty string
		{[][]byte{[]byte("x"), []byte("3"), nil}, 0, 0, false},
		{[][]byte{[]byte("0"), []byte("3"), nil}, 0, 0, false},
		{[][]byte{[]byte("10"), []byte("-1"), nil}, 0, 0, false},
	} {
		m, r, err := parseCeiling([][][]byte{tc.row})
		if (err == nil) != tc.ok || m != tc.max || r != tc.reserved {
			t.Errorf("%q: %d, %d, %v; want %d, %d, ok %v", tc.row, m, r, err, tc.max, tc.reserved, tc.ok)
		}
	}
	if _, _, err := parseCeiling(nil); err == nil {
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
