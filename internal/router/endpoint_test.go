package router

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// endpointCluster is a writer and four Aurora readers: two for reporting, two for the
// application.
func endpointCluster() (w *cluster.Node, readers []*cluster.Node) {
	w = cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter, InstanceID: "app-writer"})
	for _, id := range []string{"analytics-1", "analytics-2", "app-reader-1", "app-reader-2"} {
		readers = append(readers, cluster.NewNodeForTest(id+".abc.rds.amazonaws.com:5432",
			cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, InstanceID: id}))
	}
	return w, readers
}

// tableEP returns the endpoint a [[endpoint]] table e makes under cfg.
func tableEP(cfg *config.Config, e config.Endpoint) *Endpoint {
	c := *cfg
	c.Endpoint = []config.Endpoint{e}
	eps := c.Endpoints()
	return NewEndpoint(eps[len(eps)-1], cfg.Proxy.MaxReplicaLag.Duration)
}

// TestEndpointNodes: an endpoint's reader work goes only to the readers its nodes and
// exclude_nodes leave it, by instance id or address, globs included; writes go to the writer
// whatever the filter; a filter that leaves no healthy reader falls back to the writer only if
// the endpoint allows it.
func TestEndpointNodes(t *testing.T) {
	cfg := config.Defaults()
	w, readers := endpointCluster()
	r := testRouter(cfg, w, readers...)
	no := false
	for _, tc := range []struct {
		name  string
		e     config.Endpoint
		route Route
		in    Intent
		want  []string // the instance ids it may pick; "app-writer" for the writer; nil: an error
	}{
		{"all readers", config.Endpoint{Route: "reader"}, Reader, Intent{},
			[]string{"analytics-1", "analytics-2", "app-reader-1", "app-reader-2"}},
		{"analytics by glob", config.Endpoint{Route: "reader", Nodes: []string{"analytics-*"}}, Reader, Intent{},
			[]string{"analytics-1", "analytics-2"}},
		{"the others exclude them", config.Endpoint{Route: "reader", ExcludeNodes: []string{"analytics-*"}}, Reader, Intent{},
			[]string{"app-reader-1", "app-reader-2"}},
		{"by address", config.Endpoint{Route: "reader", Nodes: []string{"analytics-2.abc.rds.amazonaws.com:5432"}}, Reader, Intent{},
			[]string{"analytics-2"}},
		{"nodes less exclude_nodes", config.Endpoint{Route: "reader", Nodes: []string{"analytics-*"}, ExcludeNodes: []string{"*-1"}}, Reader, Intent{},
			[]string{"analytics-2"}},
		{"auto reads on its readers", config.Endpoint{Route: "auto", Nodes: []string{"app-reader-?"}}, Auto, Intent{Route: classify.RouteReader},
			[]string{"app-reader-1", "app-reader-2"}},
		{"auto writes on the writer", config.Endpoint{Route: "auto", Nodes: []string{"app-reader-?"}}, Auto, Intent{Route: classify.RouteWriter},
			[]string{"app-writer"}},
		{"the writer is not a reader of the filter", config.Endpoint{Route: "reader", Nodes: []string{"app-writer"}}, Reader, Intent{},
			[]string{"app-writer"}}, // by fallback
		{"none left, no fallback", config.Endpoint{Route: "reader", Nodes: []string{"nothing-*"}, ReaderFallbackToWriter: &no}, Reader, Intent{}, nil},
		{"none left, auto reads fall back", config.Endpoint{Route: "auto", Nodes: []string{"nothing-*"}, ReaderFallbackToWriter: &no}, Auto,
			Intent{Route: classify.RouteReader}, []string{"app-writer"}},
	} {
		tc.e.Name, tc.e.Listen = "ep", "127.0.0.1:0"
		ep := tableEP(cfg, tc.e)
		seen := map[string]bool{}
		for range 40 {
			n, err := r.Pick(context.Background(), ep, tc.route, tc.in)
			if tc.want == nil {
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != wire.CodeUnableToConnect {
					t.Fatalf("%s: Pick = %v, %v; want 08001", tc.name, n, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			seen[n.InstanceID()] = true
			r.Done(n)
		}
		if tc.want == nil {
			continue
		}
		var got []string
		for id := range seen {
			got = append(got, id)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: picked %v, want %v", tc.name, got, tc.want)
		}
		if ep.Picked() != 40 {
			t.Errorf("%s: Picked = %d, want 40", tc.name, ep.Picked())
		}
	}
}

// TestEndpointOwnLag: an endpoint with its own max_replica_lag keeps replicas by its bound,
// with its own hysteresis, while the others keep [proxy]'s.
func TestEndpointOwnLag(t *testing.T) {
	cfg := config.Defaults() // max_replica_lag 100ms
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	state := cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, Lag: 2 * time.Second}
	n := cluster.NewNodeForTest("r:1", state)
	r := testRouter(cfg, w, n)
	reporting := tableEP(cfg, config.Endpoint{Name: "reporting", Listen: "127.0.0.1:0", Route: "reader",
		MaxReplicaLag: config.Duration{Duration: 30 * time.Second}})
	app := epFor(cfg, Reader)
	pick := func(ep *Endpoint) *cluster.Node {
		p, err := r.Pick(context.Background(), ep, Reader, Intent{})
		if err != nil {
			t.Fatal(err)
		}
		r.Done(p)
		return p
	}
	for _, step := range []struct {
		lag            time.Duration
		report, appGot *cluster.Node
	}{
		{2 * time.Second, n, w},
		{40 * time.Second, w, w},
		{20 * time.Second, w, w}, // under reporting's bound, not yet under half of it
		{10 * time.Second, n, w},
		{10 * time.Millisecond, n, n},
	} {
		state.Lag = step.lag
		cluster.SetNodeStateForTest(n, state)
		if got := pick(reporting); got != step.report {
			t.Errorf("lag %s: reporting picked %s, want %s", step.lag, got, step.report)
		}
		if got := pick(app); got != step.appGot {
			t.Errorf("lag %s: the reader endpoint picked %s, want %s", step.lag, got, step.appGot)
		}
	}
}

// TestEndpointPickAllocs: a filtered endpoint's pick allocates nothing once its reader set is
// built; a new snapshot of the readers (a cluster event) or a reload builds it again.
func TestEndpointPickAllocs(t *testing.T) {
	cfg := config.Defaults()
	w, readers := endpointCluster()
	r := testRouter(cfg, w, readers...)
	ep := tableEP(cfg, config.Endpoint{Name: "a", Listen: "127.0.0.1:0", Route: "reader", Nodes: []string{"analytics-*"},
		MaxReplicaLag: config.Duration{Duration: time.Second}})
	ctx := context.Background()
	pick := func() {
		p, err := r.Pick(ctx, ep, Reader, Intent{})
		if err != nil {
			t.Fatal(err)
		}
		r.Done(p)
	}
	pick()
	if n := testing.AllocsPerRun(100, pick); n != 0 {
		t.Errorf("Pick allocates %.1f times", n)
	}
	fewer := readers[1:]
	r.readers.Store(&fewer)
	if got := r.EndpointReaders(ep); len(got) != 1 || got[0].InstanceID() != "analytics-2" {
		t.Errorf("after a topology change: readers %v", got)
	}
}

// TestSetEndpoints: a reload keeps the Endpoint of a name that stays, with its new settings,
// makes new ones and marks the ones gone removed.
func TestSetEndpoints(t *testing.T) {
	cfg := config.Defaults()
	cfg.Proxy.ReaderListen = "127.0.0.1:0"
	cfg.Endpoint = []config.Endpoint{{Name: "analytics", Listen: "127.0.0.1:0", Route: "reader", Nodes: []string{"a:1"}}}
	r := testRouter(cfg, nil)
	eps, removed := r.SetEndpoints(cfg)
	if len(eps) != 3 || len(removed) != 0 || eps[0].Name() != "auto" || eps[1].Name() != "reader" || eps[2].Name() != "analytics" {
		t.Fatalf("SetEndpoints: %v, removed %v", eps, removed)
	}
	analytics := eps[2]
	next := *cfg
	next.Proxy.ReaderListen = ""
	next.Endpoint = []config.Endpoint{{Name: "analytics", Listen: "127.0.0.1:0", Route: "auto", PoolMode: "session", PoolSize: 3}}
	eps2, removed := r.SetEndpoints(&next)
	if len(eps2) != 2 || eps2[1] != analytics || len(removed) != 1 || removed[0] != eps[1] || !eps[1].Removed() || analytics.Removed() {
		t.Fatalf("after the reload: %v, removed %v", eps2, removed)
	}
	if analytics.Route() != Auto || analytics.TxMode() || analytics.limit.max.Load() != 3 || len(analytics.Config().Nodes) != 0 {
		t.Errorf("analytics after the reload: %+v", analytics.Config())
	}
	if !slices.Equal(r.Endpoints(), eps2) {
		t.Errorf("Endpoints = %v", r.Endpoints())
	}
}

// TestEndpointPoolSize: an endpoint's clients hold at most pool_size server connections at
// once; the next waits for one to be given back, up to query_wait_timeout, then gets a full
// pool's error (53300). TryLease does not wait.
func TestEndpointPoolSize(t *testing.T) {
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, _ := leaseRouter(t, w)
	cfg := r.config()
	cfg.Cluster.QueryWaitTimeout.Duration = 300 * time.Millisecond
	ep := tableEP(cfg, config.Endpoint{Name: "small", Listen: "127.0.0.1:0", Route: "writer", PoolSize: 2})
	key := pool.Key{Database: "db", User: "u"}
	ctx := context.Background()
	type lease struct {
		c *pool.Conn
		n *cluster.Node
	}
	var held []lease
	for range 2 {
		c, n, err := r.Lease(ctx, ep, Writer, key, Intent{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, lease{c, n})
	}
	if h, _ := ep.Leases(); h != 2 {
		t.Fatalf("held %d, want 2", h)
	}
	if _, _, err := r.TryLease(ctx, ep, Writer, key, Intent{}); !errors.As(err, new(*EndpointWaitError)) {
		t.Fatalf("TryLease over pool_size: %v", err)
	}
	start := time.Now()
	_, _, err := r.Lease(ctx, ep, Writer, key, Intent{})
	var le *LeaseError
	if !errors.As(err, &le) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("Lease over pool_size: %v after %s", err, time.Since(start))
	}
	if we := le.ClientError(wire.SeverityError); we.Code != wire.CodeTooManyConnections {
		t.Fatalf("ClientError = %+v, want 53300", we)
	}
	// A waiter gets the lease given back.
	var wg sync.WaitGroup
	got := make(chan error, 1)
	wg.Go(func() {
		c, n, err := r.Lease(ctx, ep, Writer, key, Intent{})
		if err == nil {
			r.Release(ep, c, n, false)
		}
		got <- err
	})
	waitWaiting(t, ep)
	r.Release(ep, held[0].c, held[0].n, false)
	if err := <-got; err != nil {
		t.Fatalf("the waiter: %v", err)
	}
	wg.Wait()
	r.Release(ep, held[1].c, held[1].n, false)
	if h, waiting := ep.Leases(); h != 0 || waiting != 0 {
		t.Fatalf("after every release: held %d, waiting %d", h, waiting)
	}
	// Raising pool_size wakes the waiters at once.
	ep.limit.setMax(1)
	c, n, _ := r.Lease(ctx, ep, Writer, key, Intent{})
	wg.Go(func() {
		c, n, err := r.Lease(ctx, ep, Writer, key, Intent{})
		if err == nil {
			r.Release(ep, c, n, false)
		}
		got <- err
	})
	waitWaiting(t, ep)
	ep.limit.setMax(0)
	if err := <-got; err != nil {
		t.Fatalf("the waiter after the cap was lifted: %v", err)
	}
	wg.Wait()
	r.Release(ep, c, n, false)
}

// waitWaiting polls until a client waits for ep's pool_size.
func waitWaiting(t *testing.T, ep *Endpoint) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, waiting := ep.Leases(); waiting == 0; _, waiting = ep.Leases() {
		if time.Now().After(deadline) {
			t.Fatal("no client waits for the endpoint")
		}
		time.Sleep(time.Millisecond)
	}
}

// A lease within the cap allocates nothing for the endpoint.
func TestLeaseLimitAllocs(t *testing.T) {
	var l leaseLimit
	l.setMax(4)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := l.acquire(ctx, time.Second, "x"); err != nil {
			t.Fatal(err)
		}
		l.release()
	}); n != 0 {
		t.Errorf("acquire and release allocate %.1f times", n)
	}
}

// TestCheckEntries: an entry that matches no node (an instance id no node has) is logged once,
// and again, as matching, once a node has it.
func TestCheckEntries(t *testing.T) {
	cfg := config.Defaults()
	cfg.Cluster.Discovery, cfg.Cluster.AuroraTemplate = config.DiscoveryAurora, "{id}.abc.rds.amazonaws.com:5432"
	cfg.Endpoint = []config.Endpoint{{Name: "analytics", Listen: "127.0.0.1:0", Route: "reader",
		Nodes: []string{"analytics-*", "analytcs-3"}, ExcludeNodes: []string{"app-reader-1"}}}
	w, readers := endpointCluster()
	var log strings.Builder
	r := testRouter(cfg, w, readers...)
	r.logger = slog.New(slog.NewTextHandler(&log, nil))
	r.SetEndpoints(cfg)
	nodes := append([]*cluster.Node{w}, readers...)
	for range 3 {
		r.checkEntries(nodes)
	}
	if got := strings.Count(log.String(), "matches no node"); got != 1 || !strings.Contains(log.String(), "nodes=analytcs-3") {
		t.Fatalf("after three checks, want one warning for analytcs-3:\n%s", log.String())
	}
	typo := cluster.NewNodeForTest("x:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, InstanceID: "analytcs-3"})
	r.checkEntries(append(nodes, typo))
	r.checkEntries(append(nodes, typo))
	if got := strings.Count(log.String(), "matches a node again"); got != 1 {
		t.Fatalf("want one line saying it matches again:\n%s", log.String())
	}
	r.checkEntries(readers[2:]) // app-reader-1 only among them, no analytics-*
	if got := strings.Count(log.String(), "matches no node"); got != 3 || !strings.Contains(log.String(), "nodes=analytics-*") {
		t.Fatalf("want warnings for analytics-* and analytcs-3 again:\n%s", log.String())
	}
}

// TestEndpointReadable: what SHOW NODES and the status page say an endpoint may read from now
// applies the endpoint's own filter and lag bound; a writer endpoint reads from none.
func TestEndpointReadable(t *testing.T) {
	cfg := config.Defaults() // max_replica_lag 100ms
	w, readers := endpointCluster()
	cluster.SetNodeStateForTest(readers[0], cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, InstanceID: "analytics-1", Lag: 10 * time.Second})
	r := testRouter(cfg, w, readers...)
	reporting := tableEP(cfg, config.Endpoint{Name: "reporting", Listen: "127.0.0.1:0", Route: "reader", Nodes: []string{"analytics-*"},
		MaxReplicaLag: config.Duration{Duration: 30 * time.Second}})
	app := tableEP(cfg, config.Endpoint{Name: "app", Listen: "127.0.0.1:0", Route: "reader"})
	writer := tableEP(cfg, config.Endpoint{Name: "w", Listen: "127.0.0.1:0", Route: "writer"})
	ids := func(ns []*cluster.Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.InstanceID())
		}
		return out
	}
	if got := ids(r.EndpointReadable(reporting)); !slices.Equal(got, []string{"analytics-1", "analytics-2"}) {
		t.Errorf("reporting (30s bound) reads from %v", got)
	}
	if got := ids(r.EndpointReadable(app)); !slices.Equal(got, []string{"analytics-2", "app-reader-1", "app-reader-2"}) {
		t.Errorf("app (100ms bound) reads from %v", got)
	}
	if got := r.EndpointReadable(writer); got != nil {
		t.Errorf("a writer endpoint reads from %v", ids(got))
	}
	if got := r.EndpointReaders(writer); got != nil {
		t.Errorf("a writer endpoint's readers: %v", ids(got))
	}
}

// TestNoReaderReason: a reader endpoint without fallback that has no reader says why, with counts.
func TestNoReaderReason(t *testing.T) {
	cfg := config.Defaults()
	no := false
	w, readers := endpointCluster()
	cluster.SetNodeStateForTest(readers[0], cluster.NodeStateForTest{Up: false, Role: cluster.RoleReader, InstanceID: "analytics-1"})
	cluster.SetNodeStateForTest(readers[1], cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, InstanceID: "analytics-2", Lag: time.Minute})
	r := testRouter(cfg, w, readers...)
	for _, tc := range []struct {
		name  string
		nodes []string
		want  string
	}{
		{"its only node stopped", []string{"analytics-1"}, `no reader for endpoint "e": its readers are down (1 of 1 nodes its nodes filter admits) (and its reader_fallback_to_writer is off)`},
		{"lagging", []string{"analytics-2"}, `no reader for endpoint "e": 1 of its 1 up readers lag beyond max_replica_lag (100ms)`},
		{"one down, one lagging", []string{"analytics-*"}, `1 of its 1 up readers lag beyond max_replica_lag (100ms); 1 of the 2 nodes its nodes filter admits are down`},
		{"a filter matching none", []string{"nothing-*"}, `no reader for endpoint "e": none of the 4 nodes matches its nodes filter`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := tableEP(cfg, config.Endpoint{Name: "e", Listen: "127.0.0.1:0", Route: "reader", Nodes: tc.nodes, ReaderFallbackToWriter: &no})
			_, err := r.Pick(context.Background(), ep, Reader, Intent{})
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeUnableToConnect || !strings.Contains(we.Message, tc.want) {
				t.Fatalf("Pick: %v; want 08001 with %q", err, tc.want)
			}
		})
	}
}
