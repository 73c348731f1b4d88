package admin

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/session"
)

// fakeSource is a Source over a cluster that is never checked: its nodes are down and of
// unknown role, and it has no pools or clients. What the status does not read is left to the
// embedded nil Source (a call panics), so that the interface may grow.
type fakeSource struct {
	Source
	cluster *cluster.Cluster
	router  *router.Router
	pools   *pool.Manager
	history *History
}

func newFakeSource(hosts ...string) *fakeSource {
	cfg := config.Defaults()
	var hs []cluster.Host
	for _, h := range hosts {
		hs = append(hs, cluster.Host{Addr: h})
	}
	c := cluster.New(cluster.Config{Hosts: hs}, nil)
	pools := pool.NewManager(pool.Settings{})
	rt := router.New(c, pools, func() *config.Config { return cfg }, nil)
	cfg.Proxy.WriterListen, cfg.Proxy.ReaderListen = "127.0.0.1:6433", "127.0.0.1:6434"
	rt.SetEndpoints(cfg)
	return &fakeSource{cluster: c, pools: pools, router: rt, history: NewHistory(c)}
}

func (f *fakeSource) Cluster() *cluster.Cluster     { return f.cluster }
func (f *fakeSource) Router() *router.Router        { return f.router }
func (f *fakeSource) Pools() *pool.Manager          { return f.pools }
func (f *fakeSource) Clients() []session.ClientInfo { return nil }
func (f *fakeSource) Routes() *session.RouteCounter { return new(session.RouteCounter) }
func (f *fakeSource) History() *History             { return f.history }
func (f *fakeSource) Version() string               { return "v-test" }

// TestStatusJSONUnchecked: before any health check, /status.json has every node (down, role
// unknown, nulls for what is not known yet), empty lists rather than nulls, and every endpoint's
// client counts.
func TestStatusJSONUnchecked(t *testing.T) {
	src := newFakeSource("10.0.0.1:5432", "10.0.0.2:5432")
	rec := httptest.NewRecorder()
	(&statusHandler{src: src, now: time.Now}).ServeHTTP(rec, httptest.NewRequest("GET", "/status.json", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"pools", "changes"} {
		if l, ok := raw[k].([]any); !ok || len(l) != 0 {
			t.Errorf("%s = %#v, want []", k, raw[k])
		}
	}
	node := raw["nodes"].([]any)[0].(map[string]any)
	for _, k := range []string{"lag_bytes", "last_check"} {
		if v, ok := node[k]; !ok || v != nil {
			t.Errorf("node %s = %#v (present %v), want null", k, v, ok)
		}
	}
	var st Status
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Version != "v-test" || st.WriterKnown || st.Writer != "" || len(st.Nodes) != 2 {
		t.Errorf("status %+v", st)
	}
	if n := st.Nodes[1]; n.Addr != "10.0.0.2:5432" || n.Role != "unknown" || n.Up || n.Weight != 1 {
		t.Errorf("node %+v", n)
	}
	for _, ep := range []string{"auto", "writer", "reader"} {
		if _, ok := st.Clients[ep]; !ok {
			t.Errorf("no client counts for endpoint %s", ep)
		}
	}
}

// TestStatusJSONShared: answers within statusMaxAge are the same snapshot; a later one is new.
func TestStatusJSONShared(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := &statusHandler{src: newFakeSource("10.0.0.1:5432"), now: func() time.Time { return now }}
	a, _ := h.snapshot()
	now = now.Add(statusMaxAge - time.Millisecond)
	if b, _ := h.snapshot(); &a[0] != &b[0] {
		t.Error("a second request within statusMaxAge read a new snapshot")
	}
	now = now.Add(time.Millisecond)
	if b, _ := h.snapshot(); &a[0] == &b[0] {
		t.Error("a request after statusMaxAge got the old snapshot")
	}
}

// TestNodeRole: a node that is down plays no role, as the metrics have it; its last role is kept
// apart (SHOW NODES last_role, /status.json last_role).
func TestNodeRole(t *testing.T) {
	for _, tc := range []struct {
		s          cluster.NodeStateForTest
		role, last string
	}{
		{cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter}, "writer", ""},
		{cluster.NodeStateForTest{Up: false, Role: cluster.RoleWriter}, "unknown", "writer"}, // the stopped old primary
		{cluster.NodeStateForTest{Up: false, Role: cluster.RoleReader}, "unknown", "reader"},
		{cluster.NodeStateForTest{Up: false, Role: cluster.RoleUnknown}, "unknown", ""},
	} {
		if role, last := nodeRole(cluster.NewNodeForTest("n:1", tc.s)); role != tc.role || last != tc.last {
			t.Errorf("%+v: %q, %q; want %q, %q", tc.s, role, last, tc.role, tc.last)
		}
	}
}
