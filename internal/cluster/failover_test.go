package cluster

import (
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// Roles at start, a failover (primary stopped, replica promoted) and the old
// primary rejoining as a replica, with the intervals the proxy ships with.
func TestFailover(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	pc := startPG(t, 2)
	pg := pc.Nodes()
	node0, node1, node2 := pg[0].Addr(), pg[1].Addr(), pg[2].Addr()
	const interval = 250 * time.Millisecond
	var queries queryCounter
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: node0}, {Addr: node1, Weight: 2}, {Addr: node2}},
		HealthCheckInterval: interval,
		Dial:                queries.dial,
	})
	// Health queries sent to node1 when it was first seen as the writer: counted in the checker
	// that saw it, before it sends another.
	var sentWhenNoticed atomic.Int64
	sentWhenNoticed.Store(-1)
	tc.Subscribe(func(ev Event) {
		if ev.Node.Addr() == node1 && ev.Role == RoleWriter && ev.PrevRole != RoleWriter {
			sentWhenNoticed.CompareAndSwap(-1, queries.count(node1).Load())
		}
	})

	// 1. Right after WaitChecked the roles are known.
	start := time.Now()
	tc.waitChecked(t)
	t.Logf("first checks done in %v", time.Since(start).Round(time.Millisecond))
	if err := tc.writerIs(node0); err != nil {
		t.Fatal(err)
	}
	var readers []string
	for _, n := range tc.Readers() {
		readers = append(readers, n.Addr())
	}
	if !slices.Equal(readers, []string{node1, node2}) {
		t.Fatalf("Readers() = %v, want [%s %s]", readers, node1, node2)
	}
	if !slices.Equal(tc.addrs(), []string{node0, node1, node2}) {
		t.Fatalf("Nodes() = %v, want config order", tc.addrs())
	}
	for _, n := range tc.Nodes() {
		if n.LastCheck().IsZero() || n.Removed() || n.Lag() < 0 || n.Lag() > 5*time.Second {
			t.Errorf("%s: last check %v, removed %v, lag %v", n, n.LastCheck(), n.Removed(), n.Lag())
		}
	}
	if w := tc.node(node1).Weight(); w != 2 {
		t.Errorf("node1 weight %d, want 2", w)
	}
	if w := tc.node(node0).Weight(); w != 1 {
		t.Errorf("node0 weight %d, want 1 (0 means 1)", w)
	}
	if d, u, r, s := tc.Counters(); d != 0 || u != 3 || r != 0 || s != 0 {
		t.Errorf("Counters() = %d downs, %d ups, %d role changes, %d split brains; want 0, 3, 0, 0", d, u, r, s)
	}

	// 2. Failover. The primary goes first; its being marked down takes
	// HealthCheckFailures intervals and is not what is measured here.
	stopped := time.Now()
	if err := pg[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "node0 down", func() error { return tc.nodeIs(node0, false, RoleWriter) })
	t.Logf("node0 marked down %v after Stop was called", time.Since(stopped).Round(time.Millisecond))
	if w, ok := tc.Writer(); ok {
		t.Fatalf("Writer() = %v with the primary down", w)
	}
	promoting := time.Now()
	if err := pg[1].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	sentBefore := queries.count(node1).Load()
	for {
		changed := tc.Changed()
		if tc.writerIs(node1) == nil {
			break
		}
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			t.Fatalf("node1 not writer 30s after promotion: %v", tc.writerIs(node1))
		}
	}
	took := time.Since(promoted)
	t.Logf("Promote returned to Writer() = node1: %v; from calling Promote: %v, of which Promote took %v (interval %v)",
		took.Round(time.Millisecond), time.Since(promoting).Round(time.Millisecond),
		promoted.Sub(promoting).Round(time.Millisecond), interval)
	// The first health check of node1 that asked after Promote returned, and got an answer, saw
	// the promotion: counted in checks, not in time, which the machine's load decides.
	failed := tc.logs.failedChecks(node1, promoted)
	after := sentWhenNoticed.Load() - sentBefore
	t.Logf("promotion noticed by health query %d of node1 after Promote returned (%d failed)", after, failed)
	if sentWhenNoticed.Load() < 0 || after > int64(1+failed) {
		t.Errorf("promotion noticed by the %dth health query sent after it (%d failed), want the first that was answered", after, failed)
	}
	if evs := tc.eventsOf(node0, func(ev Event) bool { return ev.PrevUp && !ev.Up }); len(evs) != 1 {
		t.Errorf("node0 down events: %+v, want 1", evs)
	}
	evs := tc.eventsOf(node1, func(ev Event) bool { return ev.Role == RoleWriter && ev.PrevRole != RoleWriter })
	if len(evs) != 1 || !evs[0].Up || !evs[0].PrevUp || evs[0].PrevRole != RoleReader {
		t.Errorf("node1 promotion events: %+v, want 1 reader -> writer", evs)
	}
	if n := tc.logs.count(slog.LevelWarn, "node down"); n != 1 {
		t.Errorf("%d 'node down' log lines, want 1", n)
	}

	// 3. The old primary comes back as a replica of the new one.
	if err := pg[0].Follow(ctx, pg[1]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "node0 up as reader", func() error { return tc.nodeIs(node0, true, RoleReader) })
	evs = tc.eventsOf(node0, func(ev Event) bool { return ev.Up && !ev.PrevUp && ev.PrevRole == RoleWriter })
	if len(evs) != 1 || evs[0].Role != RoleReader {
		t.Errorf("node0 rejoin events: %+v, want 1 down writer -> up reader", evs)
	}
	if err := tc.writerIs(node1); err != nil {
		t.Error(err)
	}
	if d, u, r, s := tc.Counters(); d != 1 || u != 4 || r != 2 || s != 0 {
		t.Errorf("Counters() = %d downs, %d ups, %d role changes, %d split brains; want 1, 4, 2, 0", d, u, r, s)
	}
}

// A replica promoted while the primary still runs: two writers, writes go
// to neither until the old one is marked down.
func TestSplitBrain(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	pc := startPG(t, 1)
	pg := pc.Nodes()
	node0, node1 := pg[0].Addr(), pg[1].Addr()
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: node0}, {Addr: node1}},
		HealthCheckInterval: 100 * time.Millisecond,
		HealthCheckTimeout:  5 * time.Second, // a healthy node on a busy machine is not marked down
	})
	tc.waitChecked(t)
	if err := tc.writerIs(node0); err != nil {
		t.Fatal(err)
	}

	if err := pg[1].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "split brain detected", func() error {
		if _, _, _, s := tc.Counters(); s != 1 {
			return fmt.Errorf("%d split brains counted", s)
		}
		return nil
	})
	if w, ok := tc.Writer(); ok || w != nil {
		t.Fatalf("Writer() = %v, %v during split brain; want nil, false", w, ok)
	}
	for _, a := range []string{node0, node1} {
		if err := tc.nodeIs(a, true, RoleWriter); err != nil {
			t.Error(err)
		}
	}
	if n := tc.logs.count(slog.LevelError, "split brain: 2 nodes claim to be writer; sending writes to none"); n != 1 {
		t.Errorf("split brain logged %d times, want 1", n)
	}

	if err := pg[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "promoted node the only writer", func() error { return tc.writerIs(node1) })
	if err := tc.nodeIs(node0, false, RoleWriter); err != nil {
		t.Error(err)
	}
	if n := tc.logs.count(slog.LevelError, "split brain over"); n != 1 {
		t.Errorf("end of split brain logged %d times, want 1", n)
	}
	if n := tc.logs.count(slog.LevelError, "split brain:"); n != 1 {
		t.Errorf("split brain logged %d times, want 1", n)
	}
	if _, _, _, s := tc.Counters(); s != 1 {
		t.Errorf("%d split brains counted, want 1", s)
	}
}

// TestDownAtOnce: a node whose check proves it is not serving (stopped: its port refuses
// connections; shutting down: 57P01/57P03) is down at the first such check, not after
// health_check_failures misses: with 5 misses of 400 ms the old rule took at least 1.6 s.
func TestDownAtOnce(t *testing.T) {
	checkNoLeaks(t)
	pc := startPG(t, 0)
	addr := pc.Primary().Addr()
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: addr}},
		HealthCheckInterval: 400 * time.Millisecond,
		HealthCheckFailures: 5,
		HealthCheckTimeout:  5 * time.Second,
	})
	tc.waitChecked(t)
	if err := tc.writerIs(addr); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := pc.Primary().Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the node down", func() error { return tc.nodeIs(addr, false, RoleWriter) })
	took := time.Since(stopped)
	t.Logf("down %v after the stop began", took.Round(time.Millisecond))
	// One interval (plus jitter) after the stop, and the stop's own time: well under 5 misses.
	if took >= 1600*time.Millisecond {
		t.Fatalf("down after %v: counted misses instead of believing the refusal", took)
	}
}
