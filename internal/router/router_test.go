package router

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
)

func TestAdmit(t *testing.T) {
	bounds := freshness{maxLag: 100 * time.Millisecond, maxBytes: 1 << 20}
	timeOnly := freshness{maxLag: 100 * time.Millisecond}
	ryw := freshness{maxLag: 100 * time.Millisecond, minLSN: 5000}
	for _, tc := range []struct {
		name         string
		f            freshness
		lagging      bool
		lag          time.Duration
		bytes        int64
		replay       uint64
		ok, lagging2 bool
	}{
		{"caught up", bounds, false, 0, 0, 10, true, false},
		{"under both", bounds, false, 90 * time.Millisecond, 1 << 19, 10, true, false},
		{"at the time bound", bounds, false, 100 * time.Millisecond, 0, 10, true, false},
		{"over in time", bounds, false, 101 * time.Millisecond, 0, 10, false, true},
		{"over in bytes", bounds, false, 0, 1<<20 + 1, 10, false, true},
		{"bytes unknown, no byte bound", timeOnly, false, 0, -1, 10, true, false},
		{"bytes unknown, under in time", bounds, false, 0, -1, 10, true, false},
		{"lagging, back under the bound but not half", bounds, true, 60 * time.Millisecond, 0, 10, false, true},
		{"lagging, back under half", bounds, true, 50 * time.Millisecond, 1 << 19, 10, true, false},
		{"lagging, under half in time, bytes over half", bounds, true, 0, 1<<19 + 1, 10, false, true},
		{"lagging, bytes unknown with a byte bound", bounds, true, 0, -1, 10, false, true},
		{"lagging, no byte bound", timeOnly, true, 10 * time.Millisecond, -1, 10, true, false},
		{"read-your-writes, replayed enough", ryw, false, 0, 0, 5000, true, false},
		{"read-your-writes, behind", ryw, false, 0, 0, 4999, false, false},
		{"read-your-writes, replay unknown", ryw, false, 0, 0, 0, false, false},
		{"read-your-writes, no sample yet", freshness{maxLag: time.Second, none: true}, false, 0, 0, 1 << 40, false, false},
	} {
		ok, lagging := admit(tc.f, tc.lagging, tc.lag, tc.bytes, tc.replay)
		if ok != tc.ok || lagging != tc.lagging2 {
			t.Errorf("%s: admit = %v, lagging %v; want %v, %v", tc.name, ok, lagging, tc.ok, tc.lagging2)
		}
	}
}

// testRouter returns a router over the given nodes, without a cluster or pools.
func testRouter(cfg *config.Config, writer *cluster.Node, readers ...*cluster.Node) *Router {
	r := &Router{config: func() *config.Config { return cfg }, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r.writer.Store(writer)
	r.readers.Store(&readers)
	return r
}

// epFor returns an endpoint of route with cfg's [proxy] settings, as a shorthand gets them.
func epFor(cfg *config.Config, route Route) *Endpoint {
	c := *cfg
	c.Proxy.Listen, c.Proxy.WriterListen, c.Proxy.ReaderListen = "", "", ""
	c.Endpoint = []config.Endpoint{{Name: route.String(), Listen: "127.0.0.1:0", Route: route.String()}}
	return NewEndpoint(c.Endpoints()[0], cfg.Proxy.MaxReplicaLag.Duration)
}

func TestPick(t *testing.T) {
	cfg := config.Defaults()
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	reader := func(addr string, s cluster.NodeStateForTest) *cluster.Node {
		s.Role = cluster.RoleReader
		return cluster.NewNodeForTest(addr, s)
	}
	fresh := cluster.NodeStateForTest{Up: true}
	lagging := cluster.NodeStateForTest{Up: true, Lag: time.Second}
	down := cluster.NodeStateForTest{}
	removed := cluster.NodeStateForTest{Up: true, Removed: true}
	read := Intent{Route: classify.RouteReader}
	write := Intent{Route: classify.RouteWriter}
	for _, tc := range []struct {
		name     string
		ep       Route
		in       Intent
		readers  []*cluster.Node
		fallback bool
		want     []string // acceptable picks; empty: an error
	}{
		{"auto write", Auto, write, []*cluster.Node{reader("r:1", fresh)}, true, []string{"w:1"}},
		{"auto read", Auto, read, []*cluster.Node{reader("r:1", fresh)}, true, []string{"r:1"}},
		{"auto read, two readers", Auto, read, []*cluster.Node{reader("r:1", fresh), reader("r:2", fresh)}, true, []string{"r:1", "r:2"}},
		{"auto read, one lagging", Auto, read, []*cluster.Node{reader("r:1", lagging), reader("r:2", fresh)}, true, []string{"r:2"}},
		{"auto read, all lagging", Auto, read, []*cluster.Node{reader("r:1", lagging)}, true, []string{"w:1"}},
		{"auto read, down and removed", Auto, read, []*cluster.Node{reader("r:1", down), reader("r:2", removed)}, true, []string{"w:1"}},
		{"auto read, no readers, no fallback", Auto, read, nil, false, []string{"w:1"}},
		{"writer endpoint ignores a read intent", Writer, read, []*cluster.Node{reader("r:1", fresh)}, true, []string{"w:1"}},
		{"reader endpoint ignores a write intent", Reader, write, []*cluster.Node{reader("r:1", fresh)}, true, []string{"r:1"}},
		{"reader endpoint, lagging, fallback", Reader, write, []*cluster.Node{reader("r:1", lagging)}, true, []string{"w:1"}},
		{"reader endpoint, lagging, no fallback", Reader, write, []*cluster.Node{reader("r:1", lagging)}, false, nil},
		{"a writer-role node in the reader list", Auto, read, []*cluster.Node{cluster.NewNodeForTest("x:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})}, true, []string{"w:1"}},
	} {
		c := *cfg
		c.Proxy.ReaderFallbackToWriter = tc.fallback
		r := testRouter(&c, w, tc.readers...)
		n, err := r.Pick(context.Background(), epFor(&c, tc.ep), tc.ep, tc.in)
		if len(tc.want) == 0 {
			if err == nil {
				t.Errorf("%s: picked %s, want an error", tc.name, n)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		ok := false
		for _, a := range tc.want {
			ok = ok || n.Addr() == a
		}
		if !ok {
			t.Errorf("%s: picked %s, want one of %v", tc.name, n, tc.want)
		}
		if r.Outstanding(n) != 1 {
			t.Errorf("%s: outstanding on %s = %d, want 1", tc.name, n, r.Outstanding(n))
		}
		r.Done(n)
	}
}

// TestPickLeastLoaded: reads go to the reader with the least outstanding work per unit of
// weight; a suspect reader is skipped while another qualifies.
func TestPickLeastLoaded(t *testing.T) {
	cfg := config.Defaults()
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	a := cluster.NewNodeForTest("a:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader})
	b := cluster.NewNodeForTest("b:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, Weight: 2})
	r := testRouter(cfg, w, a, b)
	read := Intent{Route: classify.RouteReader}
	ep := epFor(cfg, Auto)
	counts := map[string]int{}
	var held []*cluster.Node
	for range 30 {
		n, err := r.Pick(context.Background(), ep, Auto, read)
		if err != nil {
			t.Fatal(err)
		}
		counts[n.Addr()]++
		held = append(held, n)
	}
	if counts["a:1"] != 10 || counts["b:1"] != 20 {
		t.Fatalf("30 held reads split %v, want a:1 10 and b:1 20 (weight 2)", counts)
	}
	for _, n := range held {
		r.Done(n)
	}
	r.Suspect(b)
	for range 5 {
		n, _ := r.Pick(context.Background(), ep, Auto, read)
		if n != a {
			t.Fatalf("picked %s while b:1 is suspect", n)
		}
		r.Done(n)
	}
}

// TestPickLagHysteresis: a replica over max_replica_lag gets no reads until it is back under half
// of it, and the router says so.
func TestPickLagHysteresis(t *testing.T) {
	cfg := config.Defaults() // max_replica_lag 100ms
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	state := cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader, Lag: 150 * time.Millisecond}
	n := cluster.NewNodeForTest("r:1", state)
	r := testRouter(cfg, w, n)
	read := Intent{Route: classify.RouteReader}
	ep := epFor(cfg, Auto)
	pick := func() *cluster.Node {
		p, err := r.Pick(context.Background(), ep, Auto, read)
		if err != nil {
			t.Fatal(err)
		}
		r.Done(p)
		return p
	}
	for _, step := range []struct {
		lag  time.Duration
		want *cluster.Node
	}{
		{150 * time.Millisecond, w},
		{80 * time.Millisecond, w}, // under the bound, not yet under half
		{50 * time.Millisecond, n},
		{90 * time.Millisecond, n}, // under the bound again: stays
		{120 * time.Millisecond, w},
	} {
		state.Lag = step.lag
		cluster.SetNodeStateForTest(n, state)
		if got := pick(); got != step.want {
			t.Fatalf("lag %s: picked %s, want %s", step.lag, got, step.want)
		}
		if r.Lagging(n) != (step.want == w) {
			t.Fatalf("lag %s: Lagging = %v", step.lag, r.Lagging(n))
		}
	}
}

func TestPickAllocs(t *testing.T) {
	cfg := config.Defaults()
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	a := cluster.NewNodeForTest("a:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader})
	b := cluster.NewNodeForTest("b:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader})
	r := testRouter(cfg, w, a, b)
	ctx := context.Background()
	ep := epFor(cfg, Auto)
	for _, in := range []Intent{{Route: classify.RouteReader}, {Route: classify.RouteWriter}} {
		if n := testing.AllocsPerRun(100, func() {
			p, _ := r.Pick(ctx, ep, Auto, in)
			r.Done(p)
		}); n != 0 {
			t.Errorf("Pick(%v) allocates %.1f times", in.Route, n)
		}
	}
}
