// Package router decides which node serves a client's next transaction (transaction mode) or
// its session (session mode): the writer for the writer endpoint, the healthy reader with the
// least outstanding work for the reader endpoint. While there is no writer (a failover), writer
// work waits for one, bounded by failover_timeout and failover_max_waiting, instead of failing.
//
// The router keeps its own snapshot of the writer and the readers, refreshed on every cluster
// event, so a pick allocates nothing; outstanding work per node is counted here, from Pick to
// Done.
package router

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// Endpoint is what a listener promises its clients.
type Endpoint uint8

// The endpoints.
const (
	Auto   Endpoint = iota // each transaction where its Intent says
	Writer                 // everything to the writer
	Reader                 // everything to a reader
)

func (e Endpoint) String() string {
	switch e {
	case Writer:
		return "writer"
	case Reader:
		return "reader"
	}
	return "auto"
}

// Router picks nodes. It is safe for concurrent use.
type Router struct {
	cluster *cluster.Cluster
	pools   *pool.Manager
	config  func() *config.Config
	logger  *slog.Logger

	writer  atomic.Pointer[cluster.Node]
	readers atomic.Pointer[[]*cluster.Node]
	nodes   sync.Map // *cluster.Node → *nodeState

	waiting atomic.Int64 // clients waiting for a writer
}

// nodeState is the router's own view of a node.
type nodeState struct {
	load    atomic.Int64 // transactions (or sessions) picked and not done
	suspect atomic.Int64 // unix nanos until which a failed connect keeps readers away from it
}

// New returns a router over c's nodes and their pools in pools, following c's events.
func New(c *cluster.Cluster, pools *pool.Manager, cfg func() *config.Config, logger *slog.Logger) *Router {
	r := &Router{cluster: c, pools: pools, config: cfg, logger: logger}
	r.refresh()
	c.Subscribe(func(cluster.Event) { r.refresh() })
	return r
}

// refresh takes a new snapshot of the writer and the readers.
func (r *Router) refresh() {
	w, _ := r.cluster.Writer()
	r.writer.Store(w)
	readers := r.cluster.Readers()
	r.readers.Store(&readers)
}

// Pick returns the node for work arriving on endpoint ep with intent in, and counts the work on
// it until Done. It waits for a writer during a failover (see waitWriter); a failure is a
// *wire.Error for the client (severity ERROR).
func (r *Router) Pick(ctx context.Context, ep Endpoint, in Intent) (*cluster.Node, error) {
	if ep == Reader || ep == Auto && in.Route == classify.RouteReader {
		if n := r.leastLoadedReader(); n != nil {
			r.load(n).Add(1)
			return n, nil
		}
		if ep == Reader && !r.config().Proxy.ReaderFallbackToWriter {
			return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeUnableToConnect,
				Message: "pgtide: no healthy reader (and reader_fallback_to_writer is off)"}
		}
	}
	n, err := r.waitWriter(ctx)
	if err != nil {
		return nil, err
	}
	r.load(n).Add(1)
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
	if v, ok := r.nodes.Load(n); ok {
		return v.(*nodeState)
	}
	v, _ := r.nodes.LoadOrStore(n, new(nodeState))
	return v.(*nodeState)
}

func (r *Router) load(n *cluster.Node) *atomic.Int64 { return &r.state(n).load }

// leastLoadedReader returns the healthy reader with the least outstanding work per unit of
// weight, ties broken at random, or nil.
func (r *Router) leastLoadedReader() *cluster.Node {
	if n := r.pickReader(time.Now().UnixNano()); n != nil {
		return n
	}
	return r.pickReader(0) // every reader is suspect: try one anyway
}

func (r *Router) pickReader(now int64) *cluster.Node {
	var best *cluster.Node
	var bestLoad, bestWeight int64
	ties := 0
	for _, n := range *r.readers.Load() {
		if !n.Up() || n.Removed() || n.Role() != cluster.RoleReader {
			continue // the snapshot lags the checker by at most one event
		}
		st := r.state(n)
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
	timer := time.NewTimer(cfg.Cluster.FailoverTimeout.Duration)
	defer timer.Stop()
	for {
		changed := r.cluster.Changed()
		if n := r.currentWriter(); n != nil {
			return n, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil, &wire.Error{Severity: wire.SeverityError, Code: wire.CodeCannotConnectNow,
				Message: fmt.Sprintf("pgtide: no writer available after waiting failover_timeout (%s)", cfg.Cluster.FailoverTimeout.Duration)}
		case <-ctx.Done():
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
	select {
	case <-r.cluster.Changed():
	case <-t.C:
	case <-ctx.Done():
	}
}
