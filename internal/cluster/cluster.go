package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one state change.
type Event struct {
	Node     *Node
	Up       bool // new up/down state
	Role     Role // new role
	PrevUp   bool
	PrevRole Role
	Removed  bool // the node left the topology
	Added    bool // the node joined
	// Ceiling: the node's connection ceiling (Node.Ceiling) was read for the first time or
	// changed; up and role are as they are.
	Ceiling bool
}

// Cluster is the set of nodes and what their health checks found. Its
// methods are safe for concurrent use; the read side (Nodes, Writer,
// Readers) takes no locks.
type Cluster struct {
	// cfg is the configuration in force, defaults applied: replaced whole by SetConfig, read by
	// everyone through config. Its Hosts are the ones given to New (SetHosts keeps the seeds).
	cfg atomic.Pointer[Config]
	log *slog.Logger

	// nodes is the current topology in config/discovery order. The slice is
	// never modified: a topology change stores a new one, under eventMu.
	nodes atomic.Pointer[[]*Node]

	// writerLSNs is the current writer's recent WAL positions, for
	// WriterLSNAfter and the replicas' LagBytes. Published by the writer's
	// checker; dropped when that node stops being an up writer.
	writerLSNs atomic.Pointer[writerLSNs]

	// eventMu serializes everything that emits events: state changes,
	// topology changes and split-brain tracking, so subscribers see one
	// event at a time, in order.
	eventMu    sync.Mutex
	splitBrain bool // guarded by eventMu: two or more up writers at the last event

	mu          sync.Mutex // guards the fields below
	seeds       []Host     // configured hosts: the static topology, or discovery's seeds and weights
	subs        []func(Event)
	backendSubs []func(*Node, int, time.Time) // SubscribeBackends
	run         *runState                     // non-nil while Run runs

	changed    broadcast     // fires at every event
	checked    broadcast     // fires when a node finishes its first check, or discovery its first round
	discovered atomic.Bool   // the first discovery round since New is over (success or failure)
	discover   chan struct{} // 1-buffered: SetHosts asks discovery for a round now

	downs, ups, roleChanges, splitBrains atomic.Int64
	writerSeen                           atomic.Bool // a node was an up writer at some point since New

	backendsEveryCheck atomic.Bool // SetBackendsEveryCheck

	// Function catalogs (functions.go). funcDBs is copy-on-write: a
	// registration stores a new map under mu; Functions reads it without a lock.
	funcDBs       atomic.Pointer[map[string]*funcDB]
	funcDBLimit   int           // immutable after New; maxFunctionDatabases, lowered by tests
	funcDBsFull   atomic.Bool   // funcDBLimit reached (and warned about); databases are never unregistered
	funcWake      chan struct{} // 1-buffered: a database registered or a refresh asked for
	funcRefreshes atomic.Uint64 // RefreshFunctions calls
}

// runState is what one Run owns. Guarded by Cluster.mu.
type runState struct {
	ctx      context.Context
	wg       sync.WaitGroup
	checkers map[*Node]context.CancelFunc // one per checker goroutine; cancelled on removal
}

// New returns a cluster of cfg.Hosts, all down and of unknown role until Run
// checks them. logger may be nil.
func New(cfg Config, logger *slog.Logger) *Cluster {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{
		log:      logger,
		discover: make(chan struct{}, 1),

		funcDBLimit: maxFunctionDatabases,
		funcWake:    make(chan struct{}, 1),
	}
	cfg = cfg.withDefaults()
	switch cfg.Discovery {
	case DiscoveryStatic, DiscoveryAurora, DiscoveryDNS:
	default:
		logger.Error("unknown topology discovery; using the configured hosts only", "discovery", cfg.Discovery)
		cfg.Discovery = DiscoveryStatic
	}
	c.cfg.Store(&cfg)
	c.funcDBs.Store(&map[string]*funcDB{})
	c.seeds = c.config().Hosts
	var nodes []*Node
	seen := map[string]bool{}
	for _, h := range c.config().Hosts {
		if !seen[h.Addr] {
			seen[h.Addr] = true
			nodes = append(nodes, newNode(h))
		}
	}
	c.nodes.Store(&nodes)
	return c
}

// config returns the configuration in force. The pointer stays valid; SetConfig replaces it.
func (c *Cluster) config() *Config { return c.cfg.Load() }

// SetConfig applies a new configuration (a reload) to what runs: the health checks' interval,
// timeout, failures, login (a checker whose login changed reconnects with the new one, so a
// password fixed or rotated in the users file takes effect at the next check), discovery's
// template, DNS name and interval, and the function catalogs' refresh interval. The topology
// comes from SetHosts, not from next.Hosts. The discovery mode cannot change while Run runs: it
// keeps its running value, and SetConfig returns "discovery" so the caller can say so.
func (c *Cluster) SetConfig(next Config) (restartOnly []string) {
	next = next.withDefaults()
	cur := c.config()
	if next.Discovery != cur.Discovery {
		next.Discovery = cur.Discovery
		restartOnly = append(restartOnly, "discovery")
	}
	next.Hosts = cur.Hosts
	next.Dial, next.Resolver, next.Now = cur.Dial, cur.Resolver, cur.Now // injected, not configured
	next.Token = cur.Token                                               // likewise (IAM is configured)
	c.cfg.Store(&next)
	return restartOnly
}

// NeverReachable reports whether, since New, no node has ever passed a health check as the
// writer and now every node has been checked and none passes: not a failover to wait for, but a
// configuration or network problem (a wrong health_check_user password, unreachable hosts), so
// work for the writer fails at once (with NoWriterReason) instead of waiting failover_timeout.
func (c *Cluster) NeverReachable() bool {
	if c.writerSeen.Load() || !c.allChecked() {
		return false
	}
	for _, n := range c.Nodes() {
		if n.Up() {
			return false
		}
	}
	return true
}

// NoWriterReason says in a sentence, for a client's error message, why no writer is known: every
// node's checks fail (with the reasons, no addresses), or the nodes that answer are all replicas,
// or none was checked yet.
func (c *Cluster) NoWriterReason() string {
	nodes := c.Nodes()
	failures := map[string]int{}
	var order []string
	up, readers := 0, 0
	for _, n := range nodes {
		if n.Up() {
			up++
			if n.Role() == RoleReader {
				readers++
			}
			continue
		}
		f := n.CheckFailure()
		if f == "" {
			f = "not checked yet"
		}
		if failures[f] == 0 {
			order = append(order, f)
		}
		failures[f]++
	}
	switch {
	case len(nodes) == 0:
		return "no nodes are configured or discovered"
	case up == 0:
		parts := make([]string, len(order))
		for i, f := range order {
			parts[i] = fmt.Sprintf("%s (%d of %d nodes)", f, failures[f], len(nodes))
		}
		return "no node passes its health checks: " + strings.Join(parts, "; ")
	case readers == up:
		return fmt.Sprintf("the %d nodes that answer are all replicas (a failover may be under way)", up)
	}
	return "the nodes' roles are not settled (a failover may be under way)"
}

// Run checks every node, runs discovery if configured and loads the function
// catalogs, until ctx is done; then it returns after all its goroutines have
// stopped and closed their connections. Run must not be called again before
// it has returned.
func (c *Cluster) Run(ctx context.Context) {
	c.mu.Lock()
	if c.run != nil {
		c.mu.Unlock()
		panic("cluster: Run called while already running")
	}
	rs := &runState{ctx: ctx, checkers: map[*Node]context.CancelFunc{}}
	c.run = rs
	for _, n := range *c.nodes.Load() {
		c.startCheckerLocked(n)
	}
	if c.config().Discovery != DiscoveryStatic {
		rs.wg.Go(func() { c.runDiscovery(ctx) })
	}
	rs.wg.Go(func() { c.runFunctions(ctx) })
	c.mu.Unlock()

	<-ctx.Done()
	c.mu.Lock()
	c.run = nil // from here on topology changes start no checkers
	for _, cancel := range rs.checkers {
		cancel()
	}
	c.mu.Unlock()
	rs.wg.Wait()
}

// startCheckerLocked starts n's checker if Run is running. The caller holds c.mu.
func (c *Cluster) startCheckerLocked(n *Node) {
	rs := c.run
	if rs == nil {
		return
	}
	ctx, cancel := context.WithCancel(rs.ctx)
	rs.checkers[n] = cancel
	rs.wg.Go(func() { c.runChecker(ctx, n) })
}

// stopCheckerLocked tells n's checker to stop; Run waits for it. The caller holds c.mu.
func (c *Cluster) stopCheckerLocked(n *Node) {
	if c.run == nil {
		return
	}
	if cancel := c.run.checkers[n]; cancel != nil {
		cancel()
		delete(c.run.checkers, n)
	}
}

// Nodes returns the current nodes (not removed), in config/discovery order.
// The slice is the caller's.
func (c *Cluster) Nodes() []*Node {
	return append([]*Node(nil), *c.nodes.Load()...)
}

// Writer returns the one up node whose role is writer. If none is, or if two
// or more up nodes claim to be writer (split brain during a failover), it
// returns nil, false: writes go to neither until one steps down or is marked
// down. The split brain is logged and counted where it is detected, at the
// state change.
func (c *Cluster) Writer() (*Node, bool) {
	var w *Node
	for _, n := range *c.nodes.Load() {
		if s := n.loadState(); s.up() && s.role() == RoleWriter {
			if w != nil {
				return nil, false
			}
			w = n
		}
	}
	return w, w != nil
}

// Readers returns the up nodes whose role is reader, in Nodes order. The
// slice is the caller's.
func (c *Cluster) Readers() []*Node {
	var rs []*Node
	for _, n := range *c.nodes.Load() {
		if s := n.loadState(); s.up() && s.role() == RoleReader {
			rs = append(rs, n)
		}
	}
	return rs
}

// Changed returns a channel closed at the next state change (any Event);
// take a new one after it fires. Take it before looking at the state, so a
// change in between is not missed.
func (c *Cluster) Changed() <-chan struct{} { return c.changed.wait() }

// Subscribe registers fn to be called for every Event, synchronously, one
// event at a time, from the goroutine that made the change (a checker,
// discovery or SetHosts). fn must not block long, and must not call
// SetHosts (which waits for the event in progress). There is no
// unsubscribe: fn lives as long as the Cluster.
func (c *Cluster) Subscribe(fn func(Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subs = append(c.subs[:len(c.subs):len(c.subs)], fn)
}

// WaitChecked blocks until every current node has been checked at least
// once (success or failure) or ctx is done, so the first clients see roles.
// With discovery it first waits for the first discovery round, and then for
// the nodes that round found. Run must be running for it to return before
// ctx ends.
func (c *Cluster) WaitChecked(ctx context.Context) error {
	for {
		// Taken before looking, so a change in between is not missed.
		checked, changed := c.checked.wait(), c.changed.wait()
		if c.allChecked() {
			// A first check that changed state is applied under eventMu, and its event (and
			// the subscribers, such as the router's snapshot) run before eventMu is released:
			// wait for those too, so callers see the roles everywhere.
			c.eventMu.Lock()
			c.eventMu.Unlock()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the first health checks: %w", context.Cause(ctx))
		case <-checked:
		case <-changed:
		}
	}
}

// AllChecked reports whether every current node has been checked at least once (and, with
// discovery, the first round has run): what the nodes are, their roles and Aurora instance ids,
// is then as known as it will be.
func (c *Cluster) AllChecked() bool { return c.allChecked() }

func (c *Cluster) allChecked() bool {
	if c.config().Discovery != DiscoveryStatic && !c.discovered.Load() {
		return false
	}
	for _, n := range *c.nodes.Load() {
		if !n.loadState().checked() {
			return false
		}
	}
	return true
}

// Counters returns, for metrics, how many times nodes went down and came up,
// changed role (not counting the first role a node is seen with), and how
// many split brains began.
func (c *Cluster) Counters() (downs, ups, roleChanges, splitBrains int64) {
	return c.downs.Load(), c.ups.Load(), c.roleChanges.Load(), c.splitBrains.Load()
}

// setState moves n from prev to next: called by n's checker only. A real
// change (up or role) emits an event, is counted and logged once; cause is
// the failed check's error when the node goes down.
func (c *Cluster) setState(n *Node, prev, next nodeState, cause error) {
	if prev == next {
		return
	}
	if (prev^next)&^stateChecked == 0 {
		// Only the first-check mark: not an Event.
		if n.state.CompareAndSwap(uint32(prev), uint32(next)) {
			c.checked.notify()
		}
		return
	}
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	if n.removed.Load() {
		return // left the topology: its Removed event was its last
	}
	if !n.state.CompareAndSwap(uint32(prev), uint32(next)) {
		return // only this goroutine writes the state; cannot happen
	}
	if !prev.checked() {
		c.checked.notify()
	}
	if prev.up() && prev.role() == RoleWriter && !(next.up() && next.role() == RoleWriter) {
		c.forgetWriterLSNs(n)
	}
	ev := Event{Node: n, Up: next.up(), Role: next.role(), PrevUp: prev.up(), PrevRole: prev.role()}
	if ev.Up && ev.Role == RoleWriter {
		c.writerSeen.Store(true)
	}
	attrs := []any{"addr", n.addr, "up", ev.Up, "role", ev.Role, "prev_up", ev.PrevUp, "prev_role", ev.PrevRole}
	switch {
	case ev.PrevUp && !ev.Up:
		c.downs.Add(1)
		c.log.Warn("node down", append(attrs, "reason", n.CheckFailure(), "err", cause)...)
	case !ev.PrevUp && ev.Up:
		c.ups.Add(1)
		c.log.Info("node up", attrs...)
	default:
		c.log.Info("node changed role", attrs...)
	}
	if ev.PrevRole != RoleUnknown && ev.Role != ev.PrevRole {
		c.roleChanges.Add(1)
	}
	c.emitLocked(ev)
}

// emitLocked updates the split-brain state and delivers ev. The caller holds eventMu.
func (c *Cluster) emitLocked(ev Event) {
	c.checkSplitBrainLocked()
	c.mu.Lock()
	subs := c.subs
	c.mu.Unlock()
	for _, fn := range subs {
		fn(ev)
	}
	c.changed.notify()
}

// checkSplitBrainLocked logs and counts a split brain when it begins and
// logs when it ends. The caller holds eventMu.
func (c *Cluster) checkSplitBrainLocked() {
	var writers []string
	for _, n := range *c.nodes.Load() {
		if s := n.loadState(); s.up() && s.role() == RoleWriter {
			writers = append(writers, n.addr)
		}
	}
	split := len(writers) > 1
	if split == c.splitBrain {
		return
	}
	c.splitBrain = split
	if split {
		c.splitBrains.Add(1)
		c.log.Error(fmt.Sprintf("split brain: %d nodes claim to be writer; sending writes to none", len(writers)),
			"writers", writers)
		return
	}
	c.log.Error("split brain over: at most one node claims to be writer; writes resume", "writers", writers)
}

// broadcast is a channel closed at the next notify, made only when someone
// waits.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
