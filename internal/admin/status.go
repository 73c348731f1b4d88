package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/session"
)

// Status is the snapshot GET /status.json answers and the status page draws: everything an
// operator looks at first, read from the Source in one pass. Counters (picked, transactions,
// queries, routed) are totals since start; the page turns them into rates from two snapshots.
// Times are RFC 3339 in the proxy's clock; compare them with Time, not with the reader's clock.
type Status struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"`
	// Writer is the address of the current writer, "" while none is known (a failover, or split
	// brain).
	Writer      string `json:"writer"`
	WriterKnown bool   `json:"writer_known"`
	// WaitingForWriter is how many clients wait for a writer to appear (failover_timeout).
	WaitingForWriter int64        `json:"waiting_for_writer"`
	Nodes            []NodeStatus `json:"nodes"`
	Pools            []PoolStatus `json:"pools"`
	// Clients counts client connections by endpoint name (every configured endpoint present, and
	// a removed one while its clients drain) and state.
	Clients map[string]ClientStates `json:"clients"`
	// Endpoints are the configured endpoints, in the configuration's order.
	Endpoints []EndpointStatus `json:"endpoints"`
	Routing   RoutingStatus    `json:"routing"`
	// Failovers counts the times a reader became the writer since start.
	Failovers int64 `json:"failovers"`
	// Changes are the recent node state changes (at most 64), newest first.
	Changes []ChangeStatus `json:"changes"`
}

// NodeStatus is one node in Status, in the order of the configured hosts.
type NodeStatus struct {
	Addr string `json:"addr"`
	// Role is "writer", "reader" or "unknown" (never checked, or down, as the metrics have it);
	// LastRole is the role a node that is down last had ("" otherwise).
	Role     string `json:"role"`
	LastRole string `json:"last_role"`
	Up       bool   `json:"up"`
	// Endpoints are the endpoints that may read from the node now, each by its own filter and
	// lag bound.
	Endpoints []string `json:"endpoints"`
	// LagSeconds and LagBytes are the replica's replay lag at its last check (0 on the writer);
	// LagBytes is null while unknown.
	LagSeconds float64 `json:"lag_seconds"`
	LagBytes   *int64  `json:"lag_bytes"`
	// Lagging: the node gets no new reads because of its lag (max_replica_lag, max_replica_lag_bytes).
	Lagging bool `json:"lagging"`
	// Active and Idle are pgtide's server connections to the node (active: lent or being opened).
	Active int `json:"active"`
	Idle   int `json:"idle"`
	// Waiting is the number of clients waiting for a server connection to the node, over its pools.
	Waiting int `json:"waiting"`
	// Budget is the most server connections pgtide may hold to the node.
	Budget int `json:"budget"`
	// MaxConnections (the node's ceiling), Reserved (superuser_reserved_connections +
	// reserved_connections) and Backends (every client's backends, not only pgtide's) are from the
	// node's last ceiling read; 0 before the first.
	MaxConnections int `json:"max_connections"`
	Reserved       int `json:"reserved"`
	Backends       int `json:"backends"`
	// Outstanding is the work the router has on the node now (what reader balancing compares);
	// Picked counts the router's picks of it since start.
	Outstanding int64 `json:"outstanding"`
	Picked      int64 `json:"picked"`
	Weight      int   `json:"weight"`
	// LastCheck is when the node's last health check ended, null before the first.
	LastCheck *time.Time `json:"last_check"`
}

// PoolStatus is one pool: the server connections of one (node, database, user).
type PoolStatus struct {
	Node     string `json:"node"`
	Database string `json:"database"`
	User     string `json:"user"`
	Active   int    `json:"active"`
	Idle     int    `json:"idle"`
	Waiting  int    `json:"waiting"`
	// MaxWaitSeconds is how long the longest-waiting client has waited, 0 with none waiting.
	MaxWaitSeconds float64 `json:"max_wait_seconds"`
	Transactions   int64   `json:"transactions"`
	Queries        int64   `json:"queries"`
}

// ClientStates counts the client connections of one endpoint by state.
type ClientStates struct {
	Login   int `json:"login"`
	Active  int `json:"active"`
	Waiting int `json:"waiting"`
	Idle    int `json:"idle"`
}

// RoutingStatus is the auto endpoint's routing decisions since start.
type RoutingStatus struct {
	Writer int64 `json:"writer"`
	Reader int64 `json:"reader"`
	// Retries counts requests a replica refused that the writer ran instead (the safety net).
	Retries int64 `json:"retries"`
	// ByReason has the decisions by reason, for the reasons that occurred.
	ByReason map[string]RouteCounts `json:"by_reason"`
}

// RouteCounts is the decisions of one routing reason.
type RouteCounts struct {
	Writer int64 `json:"writer"`
	Reader int64 `json:"reader"`
}

// ChangeStatus is one node state change: a health change (up differs from prev_up), a role
// change, a node added to or removed from the topology.
type ChangeStatus struct {
	Time     time.Time `json:"time"`
	Node     string    `json:"node"`
	Up       bool      `json:"up"`
	PrevUp   bool      `json:"prev_up"`
	Role     string    `json:"role"`
	PrevRole string    `json:"prev_role"`
	Added    bool      `json:"added"`
	Removed  bool      `json:"removed"`
	// Failover: a reader became the writer.
	Failover bool `json:"failover"`
}

// ReadStatus reads a Status from src. It costs a walk over the pools and the clients (each
// client's lock, briefly), like a scrape of /metrics.
func ReadStatus(src Source) *Status {
	st := &Status{Time: time.Now(), Version: src.Version(), WaitingForWriter: src.Router().Waiting(),
		Failovers: src.History().Failovers()}
	if w, ok := src.Cluster().Writer(); ok {
		st.Writer, st.WriterKnown = w.Addr(), true
	}
	stats := src.Pools().Stats()
	st.Nodes = readNodes(src, stats)
	st.Pools = make([]PoolStatus, 0, len(stats))
	for _, p := range stats {
		st.Pools = append(st.Pools, PoolStatus{Node: p.Key.Node, Database: p.Key.Database, User: p.Key.User,
			Active: p.Total - p.Idle, Idle: p.Idle, Waiting: p.Waiting, MaxWaitSeconds: p.MaxWait.Seconds(),
			Transactions: p.Counters.Transactions.Load(), Queries: p.Counters.Queries.Load()})
	}
	counts := countClients(src.Router().Endpoints(), src.Clients())
	st.Clients = make(map[string]ClientStates, len(counts))
	for ep, c := range counts {
		st.Clients[ep] = ClientStates{Login: c[0], Active: c[1], Waiting: c[2], Idle: c[3]}
	}
	st.Endpoints = readEndpoints(src)
	st.Routing = readRouting(src.Routes())
	for _, c := range src.History().Changes() {
		st.Changes = append(st.Changes, ChangeStatus{Time: c.Time, Node: c.Node, Up: c.Up, PrevUp: c.PrevUp,
			Role: c.Role.String(), PrevRole: c.PrevRole.String(), Added: c.Added, Removed: c.Removed, Failover: c.Failover})
	}
	if st.Changes == nil {
		st.Changes = []ChangeStatus{}
	}
	return st
}

func readNodes(src Source, stats []pool.Stats) []NodeStatus {
	servers := nodeServers(stats)
	rt, pools := src.Router(), src.Pools()
	nodes := src.Cluster().Nodes()
	out := make([]NodeStatus, 0, len(nodes))
	readers := readersOf(rt)
	for _, n := range nodes {
		addr := n.Addr()
		maxConns, reserved, _ := n.Ceiling()
		role, last := nodeRole(n)
		ns := NodeStatus{Addr: addr, Role: role, LastRole: last, Up: n.Up(), Endpoints: nonNil(readers[addr]), LagSeconds: n.Lag().Seconds(),
			Lagging: rt.Lagging(n), Active: servers[addr].active, Idle: servers[addr].idle, Waiting: servers[addr].waiting,
			Budget: pools.NodeCap(addr), MaxConnections: maxConns, Reserved: reserved, Backends: n.Backends(),
			Outstanding: rt.Outstanding(n), Picked: rt.Picked(n), Weight: n.Weight()}
		if b := n.LagBytes(); b >= 0 {
			ns.LagBytes = &b
		}
		if t := n.LastCheck(); !t.IsZero() {
			ns.LastCheck = &t
		}
		out = append(out, ns)
	}
	return out
}

// serverCounts is a node's server connections and waiting clients, summed over its pools.
type serverCounts struct{ active, idle, waiting int }

func nodeServers(stats []pool.Stats) map[string]serverCounts {
	m := make(map[string]serverCounts)
	for _, st := range stats {
		c := m[st.Key.Node]
		c.active += st.Total - st.Idle
		c.idle += st.Idle
		c.waiting += st.Waiting
		m[st.Key.Node] = c
	}
	return m
}

// clientStates are the states countClients counts, in its order.
var clientStates = [...]string{session.ClientLogin, session.ClientActive, session.ClientWaiting, session.ClientIdle}

// clientCounts are one endpoint's clients by state (clientStates' order).
type clientCounts [len(clientStates)]int

// countClients counts clients by endpoint name and state; every endpoint of eps is present.
func countClients(eps []*router.Endpoint, clients []session.ClientInfo) map[string]*clientCounts {
	counts := make(map[string]*clientCounts, len(eps))
	for _, ep := range eps {
		counts[ep.Name()] = new(clientCounts)
	}
	for _, ci := range clients {
		c := counts[ci.Endpoint]
		if c == nil {
			c = new(clientCounts) // a removed endpoint's client, draining
			counts[ci.Endpoint] = c
		}
		for i, s := range clientStates {
			if ci.State == s {
				c[i]++
			}
		}
	}
	return counts
}

func readRouting(routes *session.RouteCounter) RoutingStatus {
	rs := RoutingStatus{ByReason: map[string]RouteCounts{}}
	for r := range classify.NumRouteReasons {
		why := classify.RouteReason(r)
		c := RouteCounts{Writer: routes.Routed(classify.RouteWriter, why), Reader: routes.Routed(classify.RouteReader, why)}
		rs.Writer += c.Writer
		rs.Reader += c.Reader
		rs.Retries += routes.Retried(why)
		if c.Writer+c.Reader > 0 {
			rs.ByReason[why.String()] = c
		}
	}
	return rs
}

// statusMaxAge is how long one /status.json answer is served again: every open status page asks
// every 1.5 s, and a snapshot walks every client, so many pages share one walk.
const statusMaxAge = 500 * time.Millisecond

// statusHandler answers GET /status.json with ReadStatus, encoded at most once per statusMaxAge.
type statusHandler struct {
	src Source
	now func() time.Time

	mu   sync.Mutex // held while a snapshot is read, so concurrent requests share it
	at   time.Time  // guarded by mu
	body []byte     // guarded by mu; never modified once stored
}

func (h *statusHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := h.snapshot()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(body)
}

func (h *statusHandler) snapshot() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if h.body != nil && now.Sub(h.at) >= 0 && now.Sub(h.at) < statusMaxAge {
		return h.body, nil
	}
	b, err := json.Marshal(ReadStatus(h.src))
	if err != nil {
		return nil, fmt.Errorf("status.json: %w", err)
	}
	h.at, h.body = now, append(b, '\n')
	return h.body, nil
}
