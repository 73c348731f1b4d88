package cluster

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"
)

// A server that stops answering (a freeze, a black-holed network) is marked
// down after HealthCheckFailures timeouts; meanwhile the other nodes are
// checked on time, and the hung connections leave no goroutine behind.
func TestHungNode(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	proxy := newFreezingProxy(t, pg[0].Addr())
	hung := newHangingListener(t)
	const (
		interval = 100 * time.Millisecond
		timeout  = time.Second // long enough for a healthy node on a busy machine
		failures = 3
	)
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: proxy.addr()}, {Addr: pg[1].Addr()}, {Addr: hung.addr()}},
		HealthCheckInterval: interval,
		HealthCheckTimeout:  timeout,
		HealthCheckFailures: failures,
	})
	start := time.Now()
	tc.waitChecked(t)
	t.Logf("first checks done in %v (one node never answers; timeout %v)", time.Since(start).Round(time.Millisecond), timeout)
	if n := tc.node(hung.addr()); n.Up() || n.Role() != RoleUnknown {
		t.Errorf("never-answering node: up %v role %v", n.Up(), n.Role())
	}
	if err := tc.writerIs(proxy.addr()); err != nil {
		t.Fatal(err)
	}

	proxy.frozen.Store(true)
	frozen := time.Now()
	replica := tc.node(pg[1].Addr())
	waitFor(t, 30*time.Second, "frozen node down", func() error {
		return tc.nodeIs(proxy.addr(), false, RoleWriter)
	})
	took := time.Since(frozen)
	t.Logf("frozen node marked down %v after the freeze (%d × timeout %v)", took.Round(time.Millisecond), failures, timeout)
	// Not before its misses could have happened (an upper bound would only measure the machine's load).
	if lo := (failures - 1) * timeout; took < lo {
		t.Errorf("marked down after %v, before %d timeouts of %v could pass", took, failures, timeout)
	}
	// The replica kept being checked while the frozen node's checks hung.
	if last := replica.LastCheck(); !last.After(frozen.Add(timeout)) {
		t.Errorf("the replica was not checked while the frozen node hung (last check %v after the freeze)", last.Sub(frozen))
	}
	if err := tc.nodeIs(pg[1].Addr(), true, RoleReader); err != nil {
		t.Error(err)
	}

	proxy.frozen.Store(false)
	waitFor(t, 30*time.Second, "thawed node up", func() error { return tc.nodeIs(proxy.addr(), true, RoleWriter) })
}

// Run returns without waiting for a check that hangs, and leaves nothing running.
func TestRunStops(t *testing.T) {
	pc := sharedCluster(t)
	hung := newHangingListener(t)
	before := runtime.NumGoroutine() // the listener's own goroutine included
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close() // a port where nothing listens
	var hosts []Host
	for _, n := range pc.Nodes() {
		hosts = append(hosts, Host{Addr: n.Addr()})
	}
	hosts = append(hosts, Host{Addr: hung.addr()}, Host{Addr: closed.Addr().String()})
	c := New(Config{
		Hosts: hosts, User: "postgres",
		HealthCheckInterval: 20 * time.Millisecond,
		// The hung check is in flight when Run is stopped; Run must not wait for it to time out.
		HealthCheckTimeout: 10 * time.Minute,
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	waitFor(t, 30*time.Second, "checks under way", func() error {
		if _, ok := c.Writer(); !ok || len(c.Readers()) != 2 {
			return fmt.Errorf("no writer or not two readers among %v", c.Nodes())
		}
		return nil
	})
	stop := time.Now()
	cancel()
	select {
	case <-done:
		t.Logf("Run returned %v after cancel", time.Since(stop).Round(time.Millisecond))
	case <-time.After(time.Minute):
		t.Fatal("Run still running a minute after cancel: it waits for the hung check")
	}
	if err := noMoreGoroutines(before, 30*time.Second); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("after Run returned: %v\n%s", err, buf[:runtime.Stack(buf, true)])
	}
}
