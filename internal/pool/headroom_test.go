package pool

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestHeadroomRead: what one reading allows, from the budget, the backends it saw, this
// process's dials it may have missed and those it made shortly before.
func TestHeadroomRead(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const lifetime = 500 * time.Millisecond
	ago := func(d time.Duration) time.Time { return at.Add(-d) }
	tests := []struct {
		name      string
		instances int
		budget    int
		backends  int
		opening   int         // dials in flight when the reading arrives
		opened    []time.Time // when this process's dials ended
		want      int
	}{
		{"alone: all the free places", 1, 25, 13, 0, nil, 12},
		{"at the budget", 1, 25, 25, 0, nil, 0},
		{"over the budget", 1, 25, 30, 0, nil, 0},
		{"no budget yet", 1, 0, 3, 0, nil, 0},
		{"two: half, rounded up", 2, 25, 12, 0, nil, 7},
		{"three: a third, rounded up", 3, 25, 15, 0, nil, 4},
		{"a dial in flight may be missing from the reading", 1, 25, 13, 2, nil, 10},
		{"a dial that ended after the reading began too", 1, 25, 13, 0, []time.Time{at.Add(time.Millisecond)}, 11},
		{"one that ended before is in the reading", 1, 25, 13, 0, []time.Time{ago(time.Millisecond)}, 12},
		{"alone, recent dials hold nothing back", 1, 25, 13, 0, []time.Time{ago(100 * time.Millisecond), ago(50 * time.Millisecond)}, 12},
		// Two processes: the other may still open its share of an older reading that did not see
		// these 6; hold back half of them.
		{"two, recent dials hold back half", 2, 25, 13, 0, []time.Time{
			ago(400 * time.Millisecond), ago(300 * time.Millisecond), ago(200 * time.Millisecond),
			ago(100 * time.Millisecond), ago(50 * time.Millisecond), ago(10 * time.Millisecond)}, 3},
		{"two, dials older than the lifetime hold nothing back", 2, 25, 13, 0, []time.Time{ago(600 * time.Millisecond), ago(lifetime)}, 6},
		// The other's reading did not see these 4 either: half held back too.
		{"two, dials in flight hold back half", 2, 25, 13, 4, nil, 2},
		{"two, a dial ended after the reading began", 2, 25, 13, 1, []time.Time{ago(time.Millisecond), at.Add(time.Millisecond)}, 3},
		{"two, holding back more than the share", 2, 25, 20, 0, []time.Time{
			ago(30 * time.Millisecond), ago(20 * time.Millisecond), ago(10 * time.Millisecond), ago(5 * time.Millisecond)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Settings{SharedBudget: true, ProxyInstances: tt.instances, HeadroomLifetime: lifetime}
			h := &headroom{opening: tt.opening, opened: tt.opened}
			h.read(tt.backends, at, tt.budget, s)
			if h.left != tt.want {
				t.Fatalf("left = %d, want %d", h.left, tt.want)
			}
			if !h.open(at, s) != (tt.want == 0) {
				t.Fatalf("open = %v with %d left", h.open(at, s), h.left)
			}
			if h.open(at.Add(lifetime), s) {
				t.Fatal("open after the reading's lifetime")
			}
			if h.read(tt.backends, ago(time.Second), tt.budget, s); h.readAt != at {
				t.Fatal("an older reading replaced a newer one")
			}
		})
	}
}

// newSharedManager is newTestManager with the headroom gate on, a node budget of 25 and pool_size 10.
func newSharedManager(t *testing.T, instances int) (*Manager, Key) {
	m, k := newTestManager(t)
	s := m.Settings()
	s.PoolSize = 10
	s.MaxServerConnections = 100
	s.SharedBudget = true
	s.ProxyInstances = instances
	s.HeadroomLifetime = time.Minute // the tests below decide when readings lapse
	m.SetSettings(s)
	m.SetNodeBudget(k.Node, 25)
	return m, k
}

// acquireN takes n connections of k, failing the test if one has to wait. They go back when
// the test ends, if the test has not given them back, so that the fake server can stop.
func acquireN(t *testing.T, m *Manager, k Key, n int) []*Conn {
	t.Helper()
	var cs []*Conn
	t.Cleanup(func() {
		for _, c := range cs {
			c.netConn.Close() // released or not: the counts no longer matter
		}
	})
	for range n {
		c, err := m.TryAcquire(context.Background(), k)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", len(cs)+1, n, err)
		}
		cs = append(cs, c)
	}
	return cs
}

// TestHeadroomGate: with a shared budget, new connections open only as far as the last reading
// of the node's client backends allows; reusing open ones needs none; a client that waits for
// headroom gets a connection when a reading gives some, and otherwise the wait ends with an
// error naming the shared budget.
func TestHeadroomGate(t *testing.T) {
	ctx := context.Background()
	m, k := newSharedManager(t, 1)
	if _, err := m.TryAcquire(ctx, k); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("before the first reading: %v, want ErrWouldWait", err)
	}
	_, err := m.Acquire(ctx, k, 20*time.Millisecond)
	var wt *WaitTimeoutError
	if !errors.As(err, &wt) || !strings.Contains(err.Error(), "shared budget of 25") {
		t.Fatalf("waiting with no headroom: %v, want a WaitTimeoutError naming the shared budget", err)
	}
	m.SetNodeBackends(k.Node, 22, time.Now()) // 3 free places
	if hr := m.NodeHeadroom(k.Node); !hr.Shared || hr.Budget != 25 || hr.Backends != 22 || hr.Left != 3 {
		t.Fatalf("NodeHeadroom = %+v, want shared, budget 25, backends 22, 3 left", hr)
	}
	held := acquireN(t, m, k, 3)
	if _, err := m.TryAcquire(ctx, k); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("a fourth connection on 3 places: %v", err)
	}
	// Giving one back and taking it again needs no headroom.
	m.Release(held[2], false)
	held[2] = acquireN(t, m, k, 1)[0]

	// A waiter is woken by the next reading that gives headroom.
	got := acquireWaiting(t, m, k)
	m.SetNodeBackends(k.Node, 25, time.Now()) // still full: the waiter stays
	if s := stats(m, k); s.Waiting != 1 || s.Total != 3 {
		t.Fatalf("a full node's reading: %+v, want 1 waiting and 3 open", s)
	}
	m.SetNodeBackends(k.Node, 24, time.Now())
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	wantStats(t, m, k, "after the waiter's turn", 4, 1, 0)

	for _, c := range held {
		m.Release(c, false)
	}

	// The gate off (budget_mode = "static"): the node's cap alone decides.
	s := m.Settings()
	s.SharedBudget = false
	m.SetSettings(s)
	if hr := m.NodeHeadroom(k.Node); hr.Shared || hr.Left != 0 {
		t.Fatalf("NodeHeadroom without the gate = %+v", hr)
	}
	acquireN(t, m, k, 10)
}

// TestHeadroomLapses: a reading older than HeadroomLifetime allows nothing (the health check
// failed or fell behind), whatever it showed.
func TestHeadroomLapses(t *testing.T) {
	m, k := newSharedManager(t, 1)
	s := m.Settings()
	s.HeadroomLifetime = 50 * time.Millisecond
	m.SetSettings(s)
	m.SetNodeBackends(k.Node, 10, time.Now().Add(-time.Second))
	if hr := m.NodeHeadroom(k.Node); hr.Left != 0 || hr.Backends != 10 {
		t.Fatalf("NodeHeadroom after a lapsed reading = %+v, want 10 backends and nothing left", hr)
	}
	if _, err := m.TryAcquire(context.Background(), k); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("a new connection on a lapsed reading: %v", err)
	}
}

// TestHeadroomShares: with several processes sharing the node, each takes its share of the
// free places a reading shows, holding back for what it opened just before.
func TestHeadroomShares(t *testing.T) {
	m, k := newSharedManager(t, 2)
	m.SetNodeBackends(k.Node, 15, time.Now()) // 10 free: 5 each
	acquireN(t, m, k, 5)
	// The next reading sees them: 5 free, a share of 3, less half of the 5 just opened.
	m.SetNodeBackends(k.Node, 20, time.Now())
	if hr := m.NodeHeadroom(k.Node); hr.Left != 0 {
		t.Fatalf("left %d right after opening a share, want 0", hr.Left)
	}
	// Once they are older than HeadroomLifetime, the share is whole again.
	s := m.Settings()
	s.HeadroomLifetime = 20 * time.Millisecond
	m.SetSettings(s)
	deadline := time.Now().Add(10 * time.Second)
	for m.SetNodeBackends(k.Node, 20, time.Now()); m.NodeHeadroom(k.Node).Left != 3; m.SetNodeBackends(k.Node, 20, time.Now()) {
		if time.Now().After(deadline) {
			t.Fatalf("NodeHeadroom = %+v, want 3 left once the dials are older than the lifetime", m.NodeHeadroom(k.Node))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHeadroomSwap: with the headroom used up, an idle connection of another pool on the node
// gives way to a pool whose clients wait, without new headroom: the count on the node is the same.
func TestHeadroomSwap(t *testing.T) {
	ctx := context.Background()
	m, k := newSharedManager(t, 1)
	m.SetNodeBackends(k.Node, 23, time.Now()) // 2 free
	cs := acquireN(t, m, k, 2)
	m.Release(cs[0], false)
	other := k
	other.User = "v"
	// Taking: the idle connection of k is closed and other opens one in its place.
	c, err := m.TryAcquire(ctx, other)
	if err != nil {
		t.Fatalf("a starved pool with an idle connection on the node: %v", err)
	}
	wantStats(t, m, k, "k gave way", 1, 0, 0)
	// Releasing: k's connection comes back while other waits for headroom; it gives way too.
	got := acquireWaiting(t, m, other)
	m.Release(cs[1], false)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	wantStats(t, m, k, "k gave way again", 0, 0, 0)
	m.Release(c, false)
	if n := m.NodeTotal(k.Node); n != 2 {
		t.Fatalf("%d connections on the node after two swaps, want the 2 the reading allowed", n)
	}
}
