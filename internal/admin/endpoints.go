package admin

import (
	"slices"
	"strings"

	"pgtide/internal/cluster"
	"pgtide/internal/router"
)

// The endpoints' view. Pools are per (node, database, user) and shared by every endpoint that
// uses a node, so a pool has no endpoint: SHOW POOLS stays per pool, and what belongs to an
// endpoint — its clients by state, the server connections they hold against its pool_size, the
// readers its nodes filter leaves it — is in SHOW ENDPOINTS, the endpoint metrics and the status
// page's endpoints; SHOW NODES says which endpoints read from each node.

// EndpointStatus is one endpoint in Status.
type EndpointStatus struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Route    string `json:"route"`
	PoolMode string `json:"pool_mode"`
	// Nodes and ExcludeNodes are its filter as configured (empty: every reader).
	Nodes        []string `json:"nodes"`
	ExcludeNodes []string `json:"exclude_nodes"`
	// Readers are the addresses of the up readers its filter leaves it now (lag aside).
	Readers []string `json:"readers"`
	// Servers is the server connections its clients hold now; PoolSize caps them (0: no cap);
	// Waiting is its clients waiting for one under that cap.
	Servers  int64 `json:"servers"`
	PoolSize int   `json:"pool_size"`
	Waiting  int64 `json:"waiting"`
	// MaxReplicaLag (seconds) and FallbackToWriter are its lag bound and reader fallback in
	// force (an auto endpoint's reads always fall back).
	MaxReplicaLag    float64 `json:"max_replica_lag"`
	FallbackToWriter bool    `json:"reader_fallback_to_writer"`
	// Picked counts the router's picks of a node for its clients' work since start.
	Picked int64 `json:"picked"`
}

func readEndpoints(src Source) []EndpointStatus {
	rt := src.Router()
	out := []EndpointStatus{}
	for _, ep := range rt.Endpoints() {
		e := ep.Config()
		held, waiting := ep.Leases()
		out = append(out, EndpointStatus{Name: ep.Name(), Listen: e.Listen, Route: e.Route, PoolMode: e.PoolMode,
			Nodes: nonNil(e.Nodes), ExcludeNodes: nonNil(e.ExcludeNodes), Readers: addrs(rt.EndpointReaders(ep)),
			Servers: held, PoolSize: e.PoolSize, Waiting: waiting, MaxReplicaLag: e.MaxReplicaLag.Seconds(),
			FallbackToWriter: e.FallbackToWriter(), Picked: ep.Picked()})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func addrs(nodes []*cluster.Node) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.Addr())
	}
	return out
}

// readersOf maps each node's address to the endpoints that may read from it now, each by its
// own filter and lag bound, in the configuration's order, for SHOW NODES and the status page.
func readersOf(rt *router.Router) map[string][]string {
	m := map[string][]string{}
	for _, ep := range rt.Endpoints() {
		for _, n := range rt.EndpointReadable(ep) {
			m[n.Addr()] = append(m[n.Addr()], ep.Name())
		}
	}
	return m
}

// poolModes returns the pool modes of the endpoints whose clients may use the pools of each node
// now, comma-joined ("session,transaction" where both): a pool is shared by every endpoint that
// uses its node, and a client keeps the mode of its endpoint. The writer's pools serve every
// endpoint (writes, fallbacks); a reader's those whose filter admits it. all is every endpoint's
// modes, for a node no endpoint uses now and for SHOW DATABASES.
func poolModes(rt *router.Router, nodes []*cluster.Node) (byNode map[string]string, all string) {
	eps := rt.Endpoints()
	join := func(eps []*router.Endpoint) string {
		var modes []string
		for _, ep := range eps {
			modes = append(modes, ep.Config().PoolMode)
		}
		slices.Sort(modes)
		return strings.Join(slices.Compact(modes), ",")
	}
	all = join(eps)
	byNode = map[string]string{}
	for _, n := range nodes {
		if n.Role() == cluster.RoleWriter {
			byNode[n.Addr()] = all
			continue
		}
		var users []*router.Endpoint
		for _, ep := range eps {
			if slices.Contains(rt.EndpointReaders(ep), n) {
				users = append(users, ep)
			}
		}
		if len(users) > 0 {
			byNode[n.Addr()] = join(users)
		}
	}
	return byNode, all
}

// showEndpoints lists the endpoints (pgtide's own; PgBouncer has one listener): their settings in
// force, the readers they may use now, and their clients and server connections.
func (c *Console) showEndpoints([]string) error {
	rt := c.src.Router()
	eps := rt.Endpoints()
	counts := countClients(eps, c.src.Clients())
	r := newResult(textCol("name"), textCol("listen"), textCol("route"), textCol("pool_mode"), textCol("nodes"),
		textCol("exclude_nodes"), textCol("readers"), intCol("cl_active"), intCol("cl_waiting"), intCol("cl_idle"),
		intCol("sv_active"), intCol("pool_size"), intCol("sv_waiting"), floatCol("max_replica_lag"),
		intCol("reader_fallback_to_writer"), intCol("picked"))
	for _, ep := range eps {
		e := ep.Config()
		n := counts[ep.Name()]
		held, waiting := ep.Leases()
		r.row(ep.Name(), e.Listen, e.Route, e.PoolMode, strings.Join(e.Nodes, ","), strings.Join(e.ExcludeNodes, ","),
			strings.Join(addrs(rt.EndpointReaders(ep)), ","), n[1], n[2], n[3], // clientStates' order
			held, e.PoolSize, waiting, e.MaxReplicaLag.Seconds(), e.FallbackToWriter(), ep.Picked())
	}
	c.send(r, "SHOW")
	return nil
}
