// Package router decides which node serves a client's next transaction (transaction mode) or
// its session (session mode), and lends it a server connection there (Lease): the writer for
// a writer endpoint; for a reader endpoint, and for work on an auto endpoint whose Intent allows
// it, the healthy reader within the endpoint's max_replica_lag (and, for read-your-writes, far
// enough along) with the least outstanding work, among the readers the endpoint's nodes filter
// leaves it (see Endpoint). Outstanding work is counted per node, over every endpoint. While there is no writer (a failover), writer work waits for
// one, bounded by failover_timeout and failover_max_waiting, instead of failing; a node that
// cannot be reached is suspected and the lease asked again.
//
// The router keeps its own snapshot of the writer and the readers, refreshed on every cluster
// event, so a pick allocates nothing; outstanding work per node is counted here, from Pick to
// Done (Release).
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/evloop"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Router picks nodes. It is safe for concurrent use.
type Router struct {
	cluster *cluster.Cluster
	pools   *pool.Manager
	config  func() *config.Config
	logger  *slog.Logger

	writer  atomic.Pointer[cluster.Node]
	readers atomic.Pointer[[]*cluster.Node]
	// nodes holds the router's state of every node it has seen. Copied on write under nodesMu:
	// a node is added once, at its first use, and every pick and Done reads it, so a read is a
	// plain map lookup.
	nodes   atomic.Pointer[map[*cluster.Node]*nodeState]
	nodesMu sync.Mutex

	waiting atomic.Int64 // clients waiting for a writer

	endpoints atomic.Pointer[[]*Endpoint] // the configured endpoints (SetEndpoints)
	epMu      sync.Mutex                  // serializes SetEndpoints

	refusals sync.Map // refusalKey → time.Time of the last log of a server refusing pgtide's login

	entryMu sync.Mutex // guards every Endpoint's unmatched (see checkEntries)
}

// nodeState is the router's own view of a node.
type nodeState struct {
	load    atomic.Int64 // transactions (or sessions) picked and not done
	suspect atomic.Int64 // unix nanos until which a failed connect keeps readers away from it
	lagging atomic.Bool  // over max_replica_lag(_bytes) and not yet back under half of it (see admit)
	picked  atomic.Int64 // work picked for it, ever
}

// New returns a router over c's nodes and their pools in pools, following c's events.
func New(c *cluster.Cluster, pools *pool.Manager, cfg func() *config.Config, logger *slog.Logger) *Router {
	r := &Router{cluster: c, pools: pools, config: cfg, logger: logger}
	r.refresh()
	c.Subscribe(func(cluster.Event) {
		r.refresh()
		r.CheckEntries()
	})
	return r
}

// refresh takes a new snapshot of the writer and the readers.
func (r *Router) refresh() {
	w, _ := r.cluster.Writer()
	r.writer.Store(w)
	readers := r.cluster.Readers()
	r.readers.Store(&readers)
}

// Pick returns the node for work arriving on endpoint ep, whose client logged in with route,
// with intent in, and counts the work on it until Done. It waits for a writer during a failover
// (see waitWriter); a failure is a *wire.Error for the client (severity ERROR).
func (r *Router) Pick(ctx context.Context, ep *Endpoint, route Route, in Intent) (*cluster.Node, error) {
	if route == Reader || route == Auto && in.Route == classify.RouteReader {
		st := ep.settings.Load()
		if n := r.leastLoadedReader(ep, st, r.freshness(st, in)); n != nil {
			r.count(n)
			ep.picked.Add(1)
			return n, nil
		}
		if route == Reader && !st.cfg.FallbackToWriter() {
			return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeUnableToConnect,
				Message: "pgtide: no reader for endpoint \"" + ep.name + "\": " + r.noReaderReason(ep, st, r.freshness(st, in)) +
					" (and its reader_fallback_to_writer is off)"}
		}
	}
	n, err := r.waitWriter(ctx)
	if err != nil {
		return nil, err
	}
	r.count(n)
	ep.picked.Add(1)
	return n, nil
}

// Done ends the work Pick counted on n.
func (r *Router) Done(n *cluster.Node) { r.load(n).Add(-1) }

// Outstanding returns the work counted on n.
func (r *Router) Outstanding(n *cluster.Node) int64 { return r.load(n).Load() }

// Suspect keeps reader work away from n for a moment after a connection to it failed, until its
// health check catches up (a reader is picked anyway if every reader is suspect).
func (r *Router) Suspect(n *cluster.Node) {
	r.state(n).suspect.Store(time.Now().Add(suspectFor).UnixNano())
}

// suspectFor is how long Suspect lasts: a few health-check intervals.
const suspectFor = time.Second

func (r *Router) state(n *cluster.Node) *nodeState {
	if m := r.nodes.Load(); m != nil {
		if st := (*m)[n]; st != nil {
			return st
		}
	}
	return r.addState(n)
}

// addState adds n to nodes, unless another caller just did, and returns its state.
func (r *Router) addState(n *cluster.Node) *nodeState {
	r.nodesMu.Lock()
	defer r.nodesMu.Unlock()
	var old map[*cluster.Node]*nodeState
	if m := r.nodes.Load(); m != nil {
		old = *m
	}
	if st := old[n]; st != nil {
		return st
	}
	m := make(map[*cluster.Node]*nodeState, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	st := new(nodeState)
	m[n] = st
	r.nodes.Store(&m)
	return st
}

func (r *Router) load(n *cluster.Node) *atomic.Int64 { return &r.state(n).load }

// count counts work picked for n until Done.
func (r *Router) count(n *cluster.Node) {
	st := r.state(n)
	st.load.Add(1)
	st.picked.Add(1)
}

// Picked returns how much work (transactions, or sessions in session mode, and logins) was ever
// picked for n.
func (r *Router) Picked(n *cluster.Node) int64 { return r.state(n).picked.Load() }

// freshness is what a pick asks of a replica's replay.
type freshness struct {
	maxLag   time.Duration // max_replica_lag
	maxBytes int64         // max_replica_lag_bytes; 0: no bound
	// minLSN is the WAL position a replica must have replayed (read-your-writes); 0: any.
	minLSN uint64
	// none: no replica can serve (read-your-writes with no writer position sampled since).
	none bool
}

// freshness returns what replicas must satisfy to serve work with intent in on an endpoint
// with settings st (nil: [proxy]'s bounds).
func (r *Router) freshness(st *endpointSettings, in Intent) freshness {
	cfg := r.config()
	f := freshness{maxLag: cfg.Proxy.MaxReplicaLag.Duration, maxBytes: cfg.Proxy.MaxReplicaLagBytes}
	if st != nil {
		f.maxLag = st.cfg.MaxReplicaLag.Duration
	}
	if !in.After.IsZero() {
		lsn, ok := r.cluster.WriterLSNAfter(in.After)
		f.minLSN, f.none = lsn, !ok
	}
	return f
}

// admit decides whether a replica may serve work asking for f, given its lag in time and bytes
// (-1: unknown), its replayed position and whether it was lagging: a replica over either bound
// starts lagging and serves nothing until it is back under half of both, so a replica hovering at
// the bound does not flap. It returns whether the replica is lagging now.
func admit(f freshness, lagging bool, lag time.Duration, lagBytes int64, replay uint64) (ok, nowLagging bool) {
	over := lag > f.maxLag || f.maxBytes > 0 && lagBytes > f.maxBytes
	under := 2*lag <= f.maxLag && (f.maxBytes == 0 || lagBytes >= 0 && 2*lagBytes <= f.maxBytes)
	switch {
	case over:
		lagging = true
	case under:
		lagging = false
	}
	if lagging || f.none || f.minLSN != 0 && replay < f.minLSN {
		return false, lagging
	}
	return true, lagging
}

// leastLoadedReader returns, among ep's readers, the healthy one within the lag bounds with the
// least outstanding work per unit of weight, ties broken at random, or nil.
func (r *Router) leastLoadedReader(ep *Endpoint, st *endpointSettings, f freshness) *cluster.Node {
	if f.none {
		return nil
	}
	rs := r.readerSet(ep, st)
	if len(rs.nodes) == 0 {
		return nil
	}
	if n := r.pickReader(ep, rs, f, time.Now().UnixNano()); n != nil {
		return n
	}
	return r.pickReader(ep, rs, f, 0) // every such reader is suspect: try one anyway
}

func (r *Router) pickReader(ep *Endpoint, rs *readerSet, f freshness, now int64) *cluster.Node {
	var best *cluster.Node
	var bestLoad, bestWeight int64
	ties := 0
	for i, n := range rs.nodes {
		if !n.Up() || n.Removed() || n.Role() != cluster.RoleReader {
			continue // the snapshot lags the checker by at most one event
		}
		st := r.state(n)
		if rs.lagging != nil {
			if !r.admitFor(ep, n, &rs.lagging[i], f) {
				continue
			}
		} else if !r.admit(n, st, f) {
			continue
		}
		if now != 0 && st.suspect.Load() > now {
			continue
		}
		load, weight := st.load.Load(), int64(max(1, n.Weight()))
		switch {
		case best == nil || load*bestWeight < bestLoad*weight:
			best, bestLoad, bestWeight, ties = n, load, weight, 1
		case load*bestWeight == bestLoad*weight:
			ties++
			if rand.IntN(ties) == 0 { // reservoir sampling: each tied node equally likely
				best, bestLoad, bestWeight = n, load, weight
			}
		}
	}
	return best
}

// admitFor is admit for an endpoint with its own max_replica_lag: whether n lags is kept in
// lagging, the endpoint's own, and logged with the endpoint's name.
func (r *Router) admitFor(ep *Endpoint, n *cluster.Node, lagging *atomic.Bool, f freshness) bool {
	was := lagging.Load()
	ok, now := admit(f, was, n.Lag(), n.LagBytes(), n.ReplayLSN())
	if now != was && lagging.CompareAndSwap(was, now) {
		if now {
			r.logger.Warn("replica lags behind the writer past the endpoint's max_replica_lag: no reads from this endpoint until it catches up",
				"endpoint", ep.name, "node", n.Addr(), "lag", n.Lag(), "lag_bytes", n.LagBytes(), "max_replica_lag", f.maxLag)
		} else {
			r.logger.Info("replica caught up: reads from the endpoint again", "endpoint", ep.name, "node", n.Addr(), "lag", n.Lag())
		}
	}
	return ok
}

// admit applies admit to n, recording and logging (once per change) whether it is lagging.
func (r *Router) admit(n *cluster.Node, st *nodeState, f freshness) bool {
	was := st.lagging.Load()
	ok, lagging := admit(f, was, n.Lag(), n.LagBytes(), n.ReplayLSN())
	if lagging != was && st.lagging.CompareAndSwap(was, lagging) {
		if lagging {
			r.logger.Warn("replica lags behind the writer: no reads until it catches up",
				"node", n.Addr(), "lag", n.Lag(), "lag_bytes", n.LagBytes(),
				"max_replica_lag", f.maxLag, "max_replica_lag_bytes", f.maxBytes)
		} else {
			r.logger.Info("replica caught up: reads again", "node", n.Addr(), "lag", n.Lag(), "lag_bytes", n.LagBytes())
		}
	}
	return ok
}

// Lagging reports whether reads are kept off n because it lags past [proxy] max_replica_lag
// (see admit; an endpoint with a bound of its own decides for itself). It applies the
// health checks' latest figures first, as a pick would, so the state (and its log line) follows
// the replica even when no reads are picked: the metrics and the status page call it on every
// refresh. A node that is not a reader never lags.
func (r *Router) Lagging(n *cluster.Node) bool {
	if n.Role() != cluster.RoleReader {
		return false
	}
	st := r.state(n)
	r.admit(n, st, r.freshness(nil, Intent{}))
	return st.lagging.Load()
}

// waitWriter returns the writer, waiting for one during a failover.
func (r *Router) waitWriter(ctx context.Context) (*cluster.Node, error) {
	if n := r.currentWriter(); n != nil {
		return n, nil
	}
	cfg := r.config()
	if r.waiting.Add(1) > int64(cfg.Cluster.FailoverMaxWaiting) {
		r.waiting.Add(-1)
		return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeTooManyConnections,
			Message: fmt.Sprintf("pgtide: no writer, and failover_max_waiting (%d) clients are already waiting for one", cfg.Cluster.FailoverMaxWaiting)}
	}
	defer r.waiting.Add(-1)
	if r.cluster.NeverReachable() {
		// Not about the writer only: no node answers (the reader endpoint falls back here too).
		return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeCannotConnectNow,
			Message: "pgtide cannot reach the cluster: " + r.cluster.NoWriterReason()}
	}
	timer := time.NewTimer(cfg.Cluster.FailoverTimeout.Duration)
	defer timer.Stop()
	for {
		changed := r.cluster.Changed()
		if n := r.currentWriter(); n != nil {
			return n, nil
		}
		evloop.BeforeBlock() // a loop must not wait (see package evloop)
		select {
		case <-changed:
		case <-timer.C:
			return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeCannotConnectNow,
				Message: fmt.Sprintf("pgtide: no writer available after waiting failover_timeout (%s): %s",
					cfg.Cluster.FailoverTimeout.Duration, r.cluster.NoWriterReason())}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The caller's own deadline (client_login_timeout) came first: say why, not
				// "context deadline exceeded".
				return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeCannotConnectNow,
					Message: "pgtide: no writer available: " + r.cluster.NoWriterReason()}
			}
			return nil, ctx.Err()
		}
	}
}

func (r *Router) currentWriter() *cluster.Node {
	n := r.writer.Load()
	if n == nil || !n.Up() || n.Removed() || n.Role() != cluster.RoleWriter {
		return nil
	}
	return n
}

// Waiting returns the number of clients waiting for a writer.
func (r *Router) Waiting() int64 { return r.waiting.Load() }

// Backoff waits until the topology changes or d passes (with jitter), after work failed to
// connect to the node it was given: a failover may be under way.
func (r *Router) Backoff(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d + time.Duration(rand.Int64N(int64(d)/2+1)))
	defer t.Stop()
	evloop.BeforeBlock() // a loop must not wait (see package evloop)
	select {
	case <-r.cluster.Changed():
	case <-t.C:
	case <-ctx.Done():
	}
}

// noReaderReason says, for the client, why none of ep's readers can take work asking for f:
// the nodes its filter admits are down or are the writer, none matches the filter, or its
// readers lag beyond its bounds or have not replayed the client's last write, with counts, as
// Cluster.NoWriterReason says why there is no writer. Off the hot path (an error).
func (r *Router) noReaderReason(ep *Endpoint, st *endpointSettings, f freshness) string {
	if f.none {
		return "no replica is known to have replayed the client's last write yet (read_your_writes)"
	}
	var all []*cluster.Node
	if r.cluster != nil {
		all = r.cluster.Nodes()
	} else {
		all = *r.readers.Load()
	}
	admitted, down, writers := 0, 0, 0
	for _, n := range all {
		if n.Removed() || !st.admits(n) {
			continue
		}
		admitted++
		switch {
		case !n.Up():
			down++
		case n.Role() != cluster.RoleReader:
			writers++
		}
	}
	which := "nodes"
	if st.filtered {
		which = "nodes its nodes filter admits"
	}
	switch {
	case admitted == 0 && st.filtered:
		return fmt.Sprintf("none of the %d nodes matches its nodes filter", len(all))
	case admitted == 0:
		return "no nodes are configured or discovered"
	case down == admitted:
		return fmt.Sprintf("its readers are down (%d of %d %s)", down, admitted, which)
	case down+writers == admitted:
		return fmt.Sprintf("no reader is up: of the %d %s, %d down and %d the writer", admitted, which, down, writers)
	}
	rs := r.readerSet(ep, st)
	lagging, behind, up := 0, 0, 0
	for i, n := range rs.nodes {
		if !n.Up() || n.Removed() || n.Role() != cluster.RoleReader {
			continue
		}
		up++
		var lags bool
		if rs.lagging != nil {
			lags = rs.lagging[i].Load()
		} else {
			lags = r.state(n).lagging.Load()
		}
		switch {
		case lags || n.Lag() > f.maxLag || f.maxBytes > 0 && n.LagBytes() > f.maxBytes:
			lagging++
		case f.minLSN != 0 && n.ReplayLSN() < f.minLSN:
			behind++
		}
	}
	var parts []string
	if lagging > 0 {
		parts = append(parts, fmt.Sprintf("%d of its %d up readers lag beyond max_replica_lag (%s)", lagging, up, f.maxLag))
	}
	if behind > 0 {
		parts = append(parts, fmt.Sprintf("%d have not replayed the client's last write yet (read_your_writes)", behind))
	}
	if down > 0 {
		parts = append(parts, fmt.Sprintf("%d of the %d %s are down", down, admitted, which))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("none of its %d up readers can be reached", up)
	}
	return strings.Join(parts, "; ")
}
