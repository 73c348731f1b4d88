package router

import (
	"slices"
	"sync/atomic"
	"time"

	"pgtide/internal/cluster"
	"pgtide/internal/config"
)

// Route is what an endpoint promises its clients.
type Route uint8

// The routes.
const (
	Auto   Route = iota // each transaction where its Intent says
	Writer              // everything to the writer
	Reader              // everything to one of the endpoint's readers
)

func (r Route) String() string {
	switch r {
	case Writer:
		return config.RouteWriter
	case Reader:
		return config.RouteReader
	}
	return config.RouteAuto
}

// routeOf parses a config route (validated).
func routeOf(s string) Route {
	switch s {
	case config.RouteWriter:
		return Writer
	case config.RouteReader:
		return Reader
	}
	return Auto
}

// Endpoint is one client-facing endpoint's share of routing, as a [[endpoint]] table (or a
// [proxy] listen shorthand) configures it: its route, the readers its nodes filter leaves it,
// its lag bound and fallback, and the cap on the server connections its clients hold
// (pool_size). The router makes one per name (SetEndpoints) and keeps it across reloads, which
// replace its settings; a session holds it from login. Safe for concurrent use.
//
// Its live state — the counters, the lease cap, the cached reader set — is reached through the
// session's pointer, so a transaction takes no lock and allocates nothing for it.
type Endpoint struct {
	name     string // immutable
	settings atomic.Pointer[endpointSettings]
	readers  atomic.Pointer[readerSet] // the readers its filter leaves, rebuilt lazily (readerSet)
	limit    leaseLimit
	// leased counts the server connections its clients hold: from a lease's success to its
	// Release (limit.held also counts the clients that passed the cap and wait for a pool).
	leased  atomic.Int64
	removed atomic.Bool
	picked  atomic.Int64 // work the router picked a node for, ever
	// unmatched holds the nodes and exclude_nodes entries that matched no node at the last
	// CheckEntries; guarded by Router.entryMu.
	unmatched map[string]bool
}

// endpointSettings is an Endpoint's configuration in force, replaced whole by a reload.
type endpointSettings struct {
	cfg      config.Endpoint // resolved: every setting filled in (config.Config.Endpoints)
	route    Route
	txMode   bool
	filtered bool // nodes or exclude_nodes set
	// ownLag: its max_replica_lag differs from [proxy]'s, so whether a replica lags is decided
	// per endpoint (readerSet.lagging), not per node.
	ownLag bool
}

// readerSet is the readers an endpoint may use, out of the router's snapshot src, for settings;
// never modified once stored.
type readerSet struct {
	src      *[]*cluster.Node
	settings *endpointSettings
	nodes    []*cluster.Node
	// lagging[i] is whether nodes[i] lags past the endpoint's own bound (see admit), when
	// settings.ownLag; carried over from the previous set for the nodes still in it.
	lagging []atomic.Bool
}

// NewEndpoint returns an endpoint with settings e (resolved, as config.Config.Endpoints gives
// them) and proxyLag, [proxy] max_replica_lag, outside any router: for tests, and for
// SetEndpoints.
func NewEndpoint(e config.Endpoint, proxyLag time.Duration) *Endpoint {
	ep := &Endpoint{name: e.Name}
	ep.set(e, proxyLag)
	return ep
}

func (ep *Endpoint) set(e config.Endpoint, proxyLag time.Duration) {
	ep.settings.Store(&endpointSettings{
		cfg:      e,
		route:    routeOf(e.Route),
		txMode:   e.PoolMode == config.PoolModeTransaction,
		filtered: len(e.Nodes)+len(e.ExcludeNodes) > 0,
		ownLag:   e.MaxReplicaLag.Duration != proxyLag,
	})
	ep.limit.setMax(int64(e.PoolSize))
}

// Name returns the endpoint's name.
func (ep *Endpoint) Name() string { return ep.name }

// Route returns the route a client logging in now takes (a client keeps the one it logged in
// with).
func (ep *Endpoint) Route() Route { return ep.settings.Load().route }

// TxMode reports whether a client logging in now gets transaction pooling.
func (ep *Endpoint) TxMode() bool { return ep.settings.Load().txMode }

// Config returns the endpoint's settings in force, every one filled in.
func (ep *Endpoint) Config() config.Endpoint { return ep.settings.Load().cfg }

// Removed reports that a reload removed the endpoint: it accepts no clients, and the ones it
// has finish their transactions.
func (ep *Endpoint) Removed() bool { return ep.removed.Load() }

// Leases returns the server connections the endpoint's clients hold now, and how many of its
// clients wait for its pool_size (not for a pool's). Clients that passed the pool_size and wait
// for a pool's connection are in neither (they count against pool_size all the same).
func (ep *Endpoint) Leases() (held, waiting int64) {
	return ep.leased.Load(), ep.limit.waiters.Load()
}

// Picked returns how much work the router picked a node for on this endpoint, ever.
func (ep *Endpoint) Picked() int64 { return ep.picked.Load() }

// Admits reports whether ep's nodes and exclude_nodes let it use the node n as a reader.
func (s *endpointSettings) admits(n *cluster.Node) bool {
	if !s.filtered {
		return true
	}
	addr, id := n.Addr(), n.InstanceID()
	match := func(p string) bool { return config.MatchNode(p, addr, id) }
	if len(s.cfg.Nodes) > 0 && !slices.ContainsFunc(s.cfg.Nodes, match) {
		return false
	}
	return !slices.ContainsFunc(s.cfg.ExcludeNodes, match)
}

// readerSet returns ep's readers in the router's current snapshot, building the set again when
// the snapshot (a cluster event) or ep's settings (a reload) changed since: a pick allocates
// only then.
func (r *Router) readerSet(ep *Endpoint, st *endpointSettings) *readerSet {
	src := r.readers.Load()
	old := ep.readers.Load()
	if old != nil && old.src == src && old.settings == st {
		return old
	}
	rs := &readerSet{src: src, settings: st, nodes: *src}
	if st.filtered {
		rs.nodes = make([]*cluster.Node, 0, len(*src))
		for _, n := range *src {
			if st.admits(n) {
				rs.nodes = append(rs.nodes, n)
			}
		}
	}
	if st.ownLag {
		rs.lagging = make([]atomic.Bool, len(rs.nodes))
		if old != nil && old.lagging != nil {
			for i, n := range rs.nodes {
				if j := slices.Index(old.nodes, n); j >= 0 {
					rs.lagging[i].Store(old.lagging[j].Load())
				}
			}
		}
	}
	if !ep.readers.CompareAndSwap(old, rs) {
		if cur := ep.readers.Load(); cur != nil && cur.src == src && cur.settings == st {
			return cur // another pick built the same set first: share its lag states
		}
	}
	return rs
}

// EndpointReaders returns the readers ep may use now: the up readers its nodes filter leaves
// (lag aside), for the admin console and the status page. A writer endpoint has none.
func (r *Router) EndpointReaders(ep *Endpoint) []*cluster.Node {
	st := ep.settings.Load()
	if st.route == Writer {
		return nil
	}
	var out []*cluster.Node
	for _, n := range r.readerSet(ep, st).nodes {
		if n.Up() && !n.Removed() && n.Role() == cluster.RoleReader {
			out = append(out, n)
		}
	}
	return out
}

// EndpointReadable returns the readers ep may read from now: EndpointReaders less those lagging
// past its own lag bounds (as a pick decides it, hysteresis included; read-your-writes aside).
// Like Lagging, it applies the health checks' latest figures first.
func (r *Router) EndpointReadable(ep *Endpoint) []*cluster.Node {
	st := ep.settings.Load()
	if st.route == Writer {
		return nil
	}
	rs := r.readerSet(ep, st)
	f := r.freshness(st, Intent{})
	var out []*cluster.Node
	for i, n := range rs.nodes {
		if !n.Up() || n.Removed() || n.Role() != cluster.RoleReader {
			continue
		}
		if rs.lagging != nil {
			if !r.admitFor(ep, n, &rs.lagging[i], f) {
				continue
			}
		} else if !r.admit(n, r.state(n), f) {
			continue
		}
		out = append(out, n)
	}
	return out
}

// SetEndpoints makes cfg's endpoints the router's (at start, and at every reload): an endpoint
// whose name stays keeps its Endpoint, with the new settings; a new name gets a new one; a
// name gone marks its Endpoint removed. It returns the endpoints in cfg's order and the
// removed ones.
func (r *Router) SetEndpoints(cfg *config.Config) (current, removed []*Endpoint) {
	r.epMu.Lock()
	defer r.epMu.Unlock()
	old := map[string]*Endpoint{}
	if p := r.endpoints.Load(); p != nil {
		for _, ep := range *p {
			old[ep.name] = ep
		}
	}
	proxyLag := cfg.Proxy.MaxReplicaLag.Duration
	for _, e := range cfg.Endpoints() {
		ep := old[e.Name]
		if ep != nil {
			ep.set(e, proxyLag)
			delete(old, e.Name)
		} else {
			ep = NewEndpoint(e, proxyLag)
		}
		current = append(current, ep)
	}
	for _, ep := range old {
		ep.removed.Store(true)
		removed = append(removed, ep)
	}
	r.endpoints.Store(&current)
	return current, removed
}

// Endpoints returns the configured endpoints, in the configuration's order.
func (r *Router) Endpoints() []*Endpoint {
	if p := r.endpoints.Load(); p != nil {
		return *p
	}
	return nil
}

// CheckEntries logs, once per change, each endpoint's nodes or exclude_nodes entry that matches
// none of the cluster's nodes, by address or by Aurora instance id, and each that matches one
// again. It looks only once every node has been checked: before, an instance id may be unknown
// yet. Validate refuses entries that can never match on plain PostgreSQL, but an instance id
// (Aurora) or an address found by discovery is known only at run time. The router calls it on
// every cluster event; the proxy calls it after the first checks and after a reload.
func (r *Router) CheckEntries() {
	if r.cluster.AllChecked() {
		r.checkEntries(r.cluster.Nodes())
	}
}

// checkEntries is CheckEntries over nodes.
func (r *Router) checkEntries(nodes []*cluster.Node) {
	r.entryMu.Lock()
	defer r.entryMu.Unlock()
	for _, ep := range r.Endpoints() {
		if ep.Removed() {
			continue
		}
		cfg := &ep.settings.Load().cfg
		for _, l := range []struct {
			key     string
			entries []string
		}{{"nodes", cfg.Nodes}, {"exclude_nodes", cfg.ExcludeNodes}} {
			for _, p := range l.entries {
				none := !slices.ContainsFunc(nodes, func(n *cluster.Node) bool { return config.MatchNode(p, n.Addr(), n.InstanceID()) })
				if none == ep.unmatched[p] {
					continue
				}
				if ep.unmatched == nil {
					ep.unmatched = map[string]bool{}
				}
				ep.unmatched[p] = none
				if none {
					r.logger.Warn("endpoint: a "+l.key+" entry matches no node, by address or by Aurora instance id (check its spelling and port)",
						"endpoint", ep.name, l.key, p)
				} else {
					r.logger.Info("endpoint: a "+l.key+" entry matches a node again", "endpoint", ep.name, l.key, p)
				}
			}
		}
	}
}
