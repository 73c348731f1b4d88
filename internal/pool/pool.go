package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/evloop"
	"pgtide/internal/pgtls"
)

// Key identifies a pool: one node, one database, one user.
type Key struct {
	Node     string // host:port
	Database string
	User     string
}

func (k Key) String() string { return fmt.Sprintf("%s@%s/%s", k.User, k.Node, k.Database) }

// Settings are the limits and timeouts a Manager applies. They can be replaced at any time
// (reload); each decision reads the current ones.
type Settings struct {
	PoolSize             int
	MaxServerConnections int
	MinIdle              int
	ServerLifetime       time.Duration
	ServerIdleTimeout    time.Duration
	ServerCheckQuery     string
	ServerCheckDelay     time.Duration
	ServerResetQuery     string
	ServerConnectTimeout time.Duration
	MaxMessageSize       int
	// ServerConnectRate caps new connections per second per node; 0 means no cap.
	ServerConnectRate int
	// SharedBudget turns the headroom gate on (budget_mode = "shared", see headroom.go): a new
	// server connection to a node needs headroom from a recent reading of the node's client
	// backends (SetNodeBackends). ProxyInstances is how many pgtide processes share each node;
	// HeadroomLifetime is how long a reading's headroom may be used (0: until the next).
	SharedBudget     bool
	ProxyInstances   int
	HeadroomLifetime time.Duration
}

// WaitTimeoutError is returned by Acquire when no connection became free in time.
type WaitTimeoutError struct {
	Key    Key
	Waited time.Duration
	Limit  string // which limit was full
	Paused bool   // the database was paused (Pause) rather than a limit full
}

func (e *WaitTimeoutError) Error() string {
	if e.Paused {
		return fmt.Sprintf("no server connection within %s: database %q is paused (PAUSE in the admin console)", e.Waited, e.Key.Database)
	}
	return fmt.Sprintf("no server connection became free within %s (pool %s is at its %s)", e.Waited, e.Key, e.Limit)
}

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("pool: closed")

// Manager owns every pool and every server connection.
type Manager struct {
	// Secret gives the secret each dial logs in with (see SecretFunc); nil: none (trust). Set
	// before use.
	Secret SecretFunc
	// DialFunc, when set, opens TCP connections (tests inject failures here).
	DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
	// ServerTLS, when set, returns server_tls in force for each new connection (a nil result:
	// plain text). Set before use.
	ServerTLS func() *pgtls.ServerTLS
	Logger    *slog.Logger
	// Loops, when set, takes over the sockets of the connections dialed from then on (see
	// DialOptions.Loops). Set before use.
	Loops *evloop.Group

	settings atomic.Pointer[Settings]
	// fitNotes log fit verdicts that changed (fitLocked), for whoever holds mu to take and call
	// once it has unlocked it; guarded by mu.
	fitNotes []func()

	mu    sync.Mutex
	nodes map[string]*node // guarded by mu
	pools map[Key]*pool    // guarded by mu
	// recent is the pool poolLocked returned last, looked at before the map: most requests of a
	// proxy go to one pool, and a Key's three strings cost more to hash than to compare (their
	// bytes are usually the same memory). Guarded by mu; nil once removed.
	recent *pool
	closed bool   // guarded by mu
	pauses pauses // databases that lend nothing (see pause.go); guarded by mu
}

// node counts the connections open to one server across its pools. Guarded by Manager.mu.
type node struct {
	total int
	// budget caps total below max_server_connections when set (SetNodeBudget); 0: not set. With
	// Settings.SharedBudget it is also what the node's client backends are measured against (room).
	budget int
	pools  []*pool
	// gen counts CloseNode calls: a connection dialed under an older generation is closed when
	// it comes back instead of being reused.
	gen     uint64
	limiter connectLimiter
	room    headroom // the shared-budget gate
	fit     fitState // whether its pools fit its cap, as last logged
}

// pool is one key's connections. Guarded by Manager.mu.
type pool struct {
	key     Key
	node    *node
	total   int     // open or being dialed
	idle    []*Conn // LIFO: the most recently used is the warmest
	waiters []*waiter
	// params are the ParameterStatus values of the first connection dialed, shown to clients at
	// login without borrowing a connection.
	params map[string]string
	parked int // released connections waiting for their cancels to end (see BeginCancel)
	// gen counts Reconnect calls for the pool's database, as node.gen counts CloseNode calls.
	gen uint64
	// counters are updated without mu by the holders of the pool's connections.
	counters Counters
	// lastActive is when a connection of the pool was last asked for or given back; a pool
	// with no connections unused for server_idle_timeout is removed (see maintain).
	lastActive time.Time
	// One timer ends the waits without a goroutine at their deadlines (see queue.go): armed
	// for the earliest, at timerAt (zero: not armed).
	timer   *time.Timer
	timerAt time.Time
}

// grant is handed to a waiter: a connection, or (conn == nil) a counted slot to dial into.
type grant struct{ conn *Conn }

// waiter is one client waiting for a connection of a pool: on a goroutine (Acquire: ch), or
// with no goroutine (QueueAcquire: done). Guarded by Manager.mu, but for ch.
type waiter struct {
	ch    chan grant // 1-buffered so a grant never blocks the granter
	since time.Time

	// A wait without a goroutine: done runs under Manager.mu when it ends, with g or err set;
	// key and wait are QueueAcquire's.
	done     func()
	key      Key
	wait     time.Duration
	deadline time.Time
	queued   bool
	g        grant
	err      error
}

// give ends w's wait with g. Requires mu.
func (w *waiter) give(g grant) {
	if w.done == nil {
		w.ch <- g
		return
	}
	w.g, w.queued = g, false
	w.done()
}

// NewManager returns a Manager with the given settings.
func NewManager(s Settings) *Manager {
	m := &Manager{
		nodes:  make(map[string]*node),
		pools:  make(map[Key]*pool),
		Logger: slog.Default(),
	}
	m.settings.Store(&s)
	return m
}

// SetSettings replaces the settings (reload). Existing connections are kept; a smaller pool
// shrinks as connections are released.
func (m *Manager) SetSettings(s Settings) {
	m.settings.Store(&s)
	m.mu.Lock()
	for addr, n := range m.nodes {
		m.fitLocked(addr, n, &s)
	}
	notes := m.takeFitNotesLocked()
	m.mu.Unlock()
	logAll(notes)
}

// Settings returns the current settings.
func (m *Manager) Settings() Settings { return *m.settings.Load() }

// nodeLocked returns addr's node, creating it. Requires mu.
func (m *Manager) nodeLocked(addr string) *node {
	n := m.nodes[addr]
	if n == nil {
		n = &node{}
		m.nodes[addr] = n
	}
	return n
}

// poolLocked returns k's pool, creating it (and checking whether the node's pools still fit its
// cap: fitLocked). Requires mu.
func (m *Manager) poolLocked(k Key) *pool {
	if p := m.recent; p != nil && p.key == k {
		return p
	}
	p := m.pools[k]
	if p == nil {
		n := m.nodeLocked(k.Node)
		p = &pool{key: k, node: n, lastActive: time.Now()}
		n.pools = append(n.pools, p)
		m.pools[k] = p
		m.fitLocked(k.Node, n, m.settings.Load())
	}
	m.recent = p
	return p
}

// Acquire returns a server connection for k, dialing one if the limits allow, else waiting up to
// wait (and until ctx is done). The caller owns the Conn until it calls Release. Taking an idle
// connection, the common case, allocates nothing.
func (m *Manager) Acquire(ctx context.Context, k Key, wait time.Duration) (*Conn, error) {
	start := time.Now() // one clock read for the whole fast path
	for {
		c, slot, w, err := m.tryAcquire(k, start, true, nil)
		if err != nil {
			return nil, err
		}
		waited := w != nil || slot
		if waited {
			evloop.BeforeBlock() // waiting, or dialing: not on a loop (see package evloop)
			wctx, cancel := context.WithDeadline(ctx, start.Add(wait))
			if w != nil {
				var g grant
				g, err = m.wait(wctx, k, w, start)
				c, slot = g.conn, g.conn == nil
			}
			if err == nil && slot {
				c, err = m.dialSlot(wctx, k)
			}
			cancel()
			if err != nil {
				return nil, err
			}
			if slot {
				c.counters.observeWait(time.Since(start))
				return c, nil
			}
		}
		if m.check(c, start) {
			if waited {
				c.counters.observeWait(time.Since(start))
			} else {
				c.counters.observeWait(0)
			}
			return c, nil
		}
		// The check failed: the connection is closed and its slot freed; try again.
	}
}

// ErrWouldWait is returned by TryAcquire when no connection is free and none may be opened.
var ErrWouldWait = errors.New("pool: no server connection free")

// TryAcquire is Acquire without waiting for another client's connection: it returns an idle
// connection, or dials one if the limits allow (within ctx), or fails with ErrWouldWait.
func (m *Manager) TryAcquire(ctx context.Context, k Key) (*Conn, error) {
	start := time.Now()
	for {
		c, slot, _, err := m.tryAcquire(k, start, false, nil)
		switch {
		case err != nil:
			return nil, err
		case slot:
			evloop.BeforeBlock()
			c, err := m.dialSlot(ctx, k)
			if err == nil {
				c.counters.observeWait(time.Since(start))
			}
			return c, err
		case c == nil:
			return nil, ErrWouldWait
		case m.check(c, start):
			c.counters.observeWait(0)
			return c, nil
		}
	}
}

// tryAcquire takes an idle connection, or a slot to dial into, or (if queue) queues a waiter:
// async if not nil, else a new one for a goroutine.
func (m *Manager) tryAcquire(k Key, now time.Time, queue bool, async *asyncWait) (c *Conn, slot bool, w *waiter, err error) {
	s := m.settings.Load()
	var toClose []*Conn
	m.mu.Lock()
	defer func() {
		notes := m.takeFitNotesLocked()
		m.mu.Unlock()
		closeAll(toClose)
		logAll(notes)
	}()
	if m.closed {
		return nil, false, nil, ErrClosed
	}
	p := m.poolLocked(k)
	p.lastActive = now
	if m.pauses.has(k.Database) {
		return nil, false, m.queueLocked(p, now, queue, async), nil // PAUSE: nothing is lent
	}
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(c.created) >= s.ServerLifetime {
			m.forgetLocked(p, c)
			toClose = append(toClose, c)
			continue
		}
		return c, false, nil, nil
	}
	if m.takeSlotLocked(p, s) {
		return nil, true, nil, nil
	}
	// The node is full (or its headroom used up) but this pool is not: an idle connection of
	// another pool gives way, and its place is taken at once.
	if p.total < s.PoolSize {
		if victim := m.evictIdleLocked(p.node, p); victim != nil {
			toClose = append(toClose, victim)
			if m.swapSlotLocked(p, s) {
				return nil, true, nil, nil
			}
		}
	}
	return nil, false, m.queueLocked(p, now, queue, async), nil
}

// queueLocked queues a waiter on p when queue is set (else returns nil): async's, or a new one
// with a channel. Requires mu.
func (m *Manager) queueLocked(p *pool, now time.Time, queue bool, async *asyncWait) *waiter {
	if !queue {
		return nil
	}
	var w *waiter
	if async == nil {
		w = &waiter{ch: make(chan grant, 1), since: now}
	} else {
		w = async.waiter(p.key, now)
		m.queueAsyncLocked(p, w)
	}
	p.waiters = append(p.waiters, w)
	return w
}

// poolOfLocked returns the pool c counts in: a pool is not removed while it counts a
// connection, so the one c was dialed for. Requires mu.
func (m *Manager) poolOfLocked(c *Conn) *pool {
	if c.pool != nil {
		return c.pool
	}
	return m.pools[c.key] // a Conn the Manager did not dial (tests)
}

// nodeCapLocked is the most server connections n may have: max_server_connections, or its budget
// where that is lower. Requires mu.
func nodeCapLocked(n *node, s *Settings) int {
	if n.budget > 0 && n.budget < s.MaxServerConnections {
		return n.budget
	}
	return s.MaxServerConnections
}

// takeSlotLocked counts a connection to dial for p, if pool_size, the node's cap and the node's
// headroom allow it. Requires mu.
func (m *Manager) takeSlotLocked(p *pool, s *Settings) bool { return m.slotLocked(p, s, false) }

// swapSlotLocked is takeSlotLocked for a connection that replaces one just closed to make room
// for p: it needs no headroom. Requires mu.
func (m *Manager) swapSlotLocked(p *pool, s *Settings) bool { return m.slotLocked(p, s, true) }

func (m *Manager) slotLocked(p *pool, s *Settings, swap bool) bool {
	if p.total < s.PoolSize && p.node.total < nodeCapLocked(p.node, s) && p.node.room.take(time.Now(), s, swap) {
		p.total++
		p.node.total++
		return true
	}
	return false
}

// evictIdleLocked closes the longest-idle connection of another pool on n.
func (m *Manager) evictIdleLocked(n *node, except *pool) *Conn {
	var victim *pool
	for _, q := range n.pools {
		if q != except && len(q.idle) > 0 && (victim == nil || q.idle[0].lastUsed.Before(victim.idle[0].lastUsed)) {
			victim = q
		}
	}
	if victim == nil {
		return nil
	}
	c := victim.idle[0]
	victim.idle = victim.idle[1:]
	m.forgetLocked(victim, c)
	return c
}

// forgetLocked uncounts c, which the caller will close.
func (m *Manager) forgetLocked(p *pool, _ *Conn) {
	p.total--
	p.node.total--
}

func (m *Manager) wait(ctx context.Context, k Key, w *waiter, start time.Time) (grant, error) {
	evloop.BeforeBlock() // a loop must not wait (see package evloop)
	select {
	case g := <-w.ch:
		return g, nil
	case <-ctx.Done():
	}
	s := m.settings.Load()
	m.mu.Lock()
	p := m.pools[k]
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			limit := limitLocked(p, s)
			m.mu.Unlock()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return grant{}, &WaitTimeoutError{Key: k, Waited: time.Since(start).Round(time.Millisecond), Limit: limit,
					Paused: m.Paused(k.Database)}
			}
			return grant{}, ctx.Err()
		}
	}
	m.mu.Unlock()
	// Granted while we were giving up: use it rather than waste it.
	return <-w.ch, nil
}

// limitLocked names the limit p's waiter waited for. Requires mu.
func limitLocked(p *pool, s *Settings) string {
	n := p.node
	switch {
	case p.total >= s.PoolSize:
		return fmt.Sprintf("pool_size of %d", s.PoolSize)
	case n.total < nodeCapLocked(n, s) && s.SharedBudget:
		return fmt.Sprintf("node's shared budget of %d, with %d client backends at its last reading", n.budget, n.room.backends)
	}
	return fmt.Sprintf("node's server connection cap of %d", nodeCapLocked(n, s))
}

func (m *Manager) dialSlot(ctx context.Context, k Key) (*Conn, error) {
	s := m.settings.Load()
	m.mu.Lock()
	n := m.pools[k].node
	gen, pgen := n.gen, m.pools[k].gen
	delay := n.limiter.reserve(time.Now(), s.ServerConnectRate)
	m.mu.Unlock()
	var c *Conn
	var err error
	if delay > 0 {
		// server_connect_rate: wait for this dial's turn (the slot is already counted).
		t := time.NewTimer(delay)
		evloop.BeforeBlock() // a loop must not wait (see package evloop)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			err = ctx.Err()
		}
	}
	var secret ServerSecret
	if err == nil && m.Secret != nil {
		sctx, cancel := context.WithTimeout(ctx, s.ServerConnectTimeout)
		if secret, err = m.Secret(sctx, k.Node, k.User); err != nil {
			err = &CredentialError{User: k.User, Err: err}
		}
		cancel()
	}
	if err == nil {
		c, err = Dial(ctx, k, DialOptions{
			Password:       secret.Password,
			RequireTLS:     secret.RequireTLS,
			PassThrough:    secret.PassThrough,
			ConnectTimeout: s.ServerConnectTimeout,
			MaxMessageSize: s.MaxMessageSize,
			Dial:           m.DialFunc,
			TLS:            m.serverTLS(),
			Loops:          m.Loops,
		})
	}
	if err != nil {
		m.mu.Lock()
		p := m.pools[k]
		p.total--
		p.node.total--
		p.node.room.dialed(time.Now(), false, s)
		m.grantSlotsLocked(p.node)
		var se *ServerError
		if p.params == nil && errors.As(err, &se) {
			// Never logged in, and the server refuses (an unknown database or user): no pool
			// is kept for it, so failed logins leave nothing behind.
			m.removeIfUnusedLocked(p)
		}
		notes := m.takeFitNotesLocked()
		m.mu.Unlock()
		logAll(notes)
		return nil, err
	}
	m.mu.Lock()
	p := m.pools[k]
	p.node.room.dialed(time.Now(), true, s)
	if p.params == nil {
		p.params = maps.Clone(c.Params) // c.Params changes with the connection's session
	}
	c.gen, c.pgen = gen, pgen
	c.counters, c.pool = &p.counters, p
	m.mu.Unlock()
	return c, nil
}

func (m *Manager) serverTLS() *pgtls.ServerTLS {
	if m.ServerTLS == nil {
		return nil
	}
	return m.ServerTLS()
}

// Params returns the ParameterStatus values a server connection of pool k reported at login, if
// one has been dialed. The map is read-only.
func (m *Manager) Params(k Key) (map[string]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.pools[k]; p != nil && p.params != nil {
		return p.params, true
	}
	return nil, false
}

// check makes sure an idle connection is fit to lend: always a peek at the socket (a server that
// shut down or terminated the backend has closed it, maybe microseconds ago, as in a failover),
// and server_check_query after server_check_delay idle. A failed connection is closed and its
// slot given to a waiter.
func (m *Manager) check(c *Conn, now time.Time) bool {
	s := m.settings.Load()
	idle := now.Sub(c.lastUsed)
	if !c.alive() {
		m.Logger.Info("idle server connection was closed by the server; replacing it", "pool", c.key.String())
		c.broken = true
		m.discard(c)
		return false
	}
	if s.ServerCheckQuery == "" || idle < s.ServerCheckDelay {
		return true
	}
	if err := c.Exec(s.ServerCheckQuery, s.ServerConnectTimeout); err != nil {
		m.Logger.Info("server connection failed its check; closing it", "pool", c.key.String(), "err", err)
		c.broken = true
		m.discard(c)
		return false
	}
	return true
}

// Release gives c back. reset runs server_reset_query first (session mode, after the client left).
// A connection marked broken, past its lifetime, or over a shrunken pool_size is closed instead.
func (m *Manager) Release(c *Conn, reset bool) {
	s := m.settings.Load()
	c.countTraffic()
	if reset && !c.broken && s.ServerResetQuery != "" {
		if err := c.Exec(s.ServerResetQuery, s.ServerConnectTimeout); err != nil {
			m.Logger.Info("server reset query failed; closing the connection", "pool", c.key.String(), "err", err)
			c.broken = true
		}
		// DISCARD ALL (the default) drops prepared statements and returns parameters to their
		// defaults; the ParameterStatus messages it caused were recorded by Exec. Any other reset
		// query leaves the state unknown, so forget it too: a later client re-establishes what it needs.
		c.SessionState = nil // the reset query ended whatever the holder created
	}
	if c.broken {
		// Closed, so never lent again: a cancel in flight for it cannot reach anyone else.
		m.discard(c)
		return
	}
	c.MarkAnswered() // the releaser read every answer; the reset query's too
	var toClose *Conn
	m.mu.Lock()
	if c.cancels > 0 {
		// A CancelRequest for this backend is on its way: lent now, the connection could run
		// another client's query when it lands. It waits, still counted, for EndCancel.
		c.parked = true
		m.poolOfLocked(c).parked++
	} else {
		toClose = m.putBackLocked(c, s)
	}
	m.mu.Unlock()
	if toClose != nil {
		toClose.close()
	}
}

// putBackLocked gives a released connection to the longest waiter, or keeps it idle, or uncounts
// it and returns it for the caller to close (see closeOnReleaseLocked, or to make room for a
// starved pool). Requires mu.
func (m *Manager) putBackLocked(c *Conn, s *Settings) (toClose *Conn) {
	p := m.poolOfLocked(c)
	now := time.Now()
	c.lastUsed = now
	p.lastActive = now
	switch {
	case m.closeOnReleaseLocked(p, c, s, now):
		m.forgetLocked(p, c)
		m.grantSlotsLocked(p.node)
		return c
	case len(p.waiters) > 0:
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w.give(grant{conn: c})
	case (p.node.total >= nodeCapLocked(p.node, s) || !p.node.room.open(now, s)) && m.starvedLocked(p.node, s) != nil:
		// Another pool on this node waits for a slot (or headroom) this idle connection holds.
		m.forgetLocked(p, c)
		m.grantSwapLocked(p.node)
		return c
	default:
		p.idle = append(p.idle, c)
	}
	return nil
}

// closeOnReleaseLocked reports whether c, of pool p, is to be closed rather than kept when it is
// released at now: past its lifetime, over a shrunken pool_size or node budget, from an older
// node generation (CloseNode) or pool generation (Reconnect), of a paused database, or after
// Close. Requires mu.
func (m *Manager) closeOnReleaseLocked(p *pool, c *Conn, s *Settings, now time.Time) bool {
	return m.closed || p.total > s.PoolSize || now.Sub(c.created) >= s.ServerLifetime ||
		c.gen != p.node.gen || c.pgen != p.gen || m.pauses.has(p.key.Database) ||
		p.node.total > nodeCapLocked(p.node, s) // the node's budget shrank: closed as it comes back
}

// BeginCancel records that a CancelRequest for c's backend is about to be sent. The caller must
// hold c (lent to it, not yet released: the session decides this under its own lock, which
// also orders it before its Release) and must call EndCancel once the request has been sent or
// has failed. Until then a released c is parked: not lent to anyone, still counted toward
// pool_size and max_server_connections. c.Key().Node, c.PID and c.Secret, which the request
// needs, never change and may be read without a lock.
func (m *Manager) BeginCancel(c *Conn) {
	m.mu.Lock()
	c.cancels++
	m.mu.Unlock()
}

// EndCancel ends what BeginCancel began. When the last cancel in flight for a parked c ends, c
// goes back to the pool as Release would have put it.
func (m *Manager) EndCancel(c *Conn) {
	var toClose *Conn
	m.mu.Lock()
	c.cancels--
	if c.cancels == 0 && c.parked {
		c.parked = false
		m.poolOfLocked(c).parked--
		toClose = m.putBackLocked(c, m.settings.Load())
	}
	m.mu.Unlock()
	if toClose != nil {
		toClose.close()
	}
}

// discard closes c and gives its slot to a waiter.
func (m *Manager) discard(c *Conn) {
	m.mu.Lock()
	p := m.poolOfLocked(c)
	m.forgetLocked(p, c)
	m.grantSlotsLocked(p.node)
	m.mu.Unlock()
	c.close()
}

// starvedLocked returns the pool on n whose longest waiter has waited longest and which is below
// its pool_size (so it waits for a node slot, not for its own connections).
func (m *Manager) starvedLocked(n *node, s *Settings) *pool {
	var best *pool
	for _, q := range n.pools {
		if len(q.waiters) > 0 && q.total < s.PoolSize && !m.pauses.has(q.key.Database) &&
			(best == nil || q.waiters[0].since.Before(best.waiters[0].since)) {
			best = q
		}
	}
	return best
}

// grantSlotsLocked hands free node slots to waiting pools, longest waiter first, as far as the
// node's headroom allows.
func (m *Manager) grantSlotsLocked(n *node) { m.grantLocked(n, 0) }

// grantSwapLocked is grantSlotsLocked after closing a connection to make room for a waiting
// pool: its replacement needs no headroom.
func (m *Manager) grantSwapLocked(n *node) { m.grantLocked(n, 1) }

// grantLocked hands out slots; the first swaps of them need no headroom.
func (m *Manager) grantLocked(n *node, swaps int) {
	s := m.settings.Load()
	for {
		q := m.starvedLocked(n, s)
		if q == nil || !m.slotLocked(q, s, swaps > 0) {
			return
		}
		swaps--
		w := q.waiters[0]
		q.waiters = q.waiters[1:]
		w.give(grant{})
	}
}

// SetNodeBudget caps the server connections to addr at budget (0 removes the cap;
// max_server_connections stays a hard cap above it), for a budget derived from the node's own
// max_connections. A smaller budget closes idle connections at once, longest idle first, and
// connections in use as they come back: no transaction is interrupted. With
// Settings.SharedBudget the budget is the node's whole one, shared with everyone, and the
// headroom gate measures the node's client backends against it (SetNodeBackends); a smaller
// budget takes its difference from the headroom left. It returns the budget it replaces.
func (m *Manager) SetNodeBudget(addr string, budget int) (prev int) {
	s := m.settings.Load()
	m.mu.Lock()
	n := m.nodeLocked(addr)
	prev, n.budget = n.budget, max(0, budget)
	if n.budget < prev {
		n.room.shrink(prev - n.budget)
	}
	var toClose []*Conn
	for n.total > nodeCapLocked(n, s) {
		c := m.evictIdleLocked(n, nil)
		if c == nil {
			break
		}
		toClose = append(toClose, c)
	}
	m.grantSlotsLocked(n) // a larger budget frees slots for waiters
	m.fitLocked(addr, n, s)
	notes := m.takeFitNotesLocked()
	m.mu.Unlock()
	closeAll(toClose)
	logAll(notes)
	return prev
}

// NodeCap returns the most server connections addr may have now: max_server_connections, or the
// node's budget where that is lower.
func (m *Manager) NodeCap(addr string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.settings.Load()
	if n := m.nodes[addr]; n != nil {
		return nodeCapLocked(n, s)
	}
	return s.MaxServerConnections
}

// CloseNode closes every idle server connection to addr and makes the ones in use close when
// they come back: the node went down or changed role (failover). Sessions using one find out
// from the server itself.
func (m *Manager) CloseNode(addr string) {
	m.mu.Lock()
	n := m.nodes[addr]
	if n == nil {
		m.mu.Unlock()
		return
	}
	n.gen++
	var toClose []*Conn
	for _, p := range n.pools {
		toClose = m.closeIdleLocked(p, toClose)
	}
	m.grantSlotsLocked(n)
	m.mu.Unlock()
	closeAll(toClose)
}

// Stats is a snapshot of one pool.
type Stats struct {
	Key     Key
	Total   int // open or being dialed
	Idle    int
	Waiting int
	Parked  int // released while a cancel for them is in flight (see BeginCancel); in Total
	// MaxWait is how long the longest-waiting client has waited (0 with none waiting).
	MaxWait time.Duration
	// Counters are the pool's live counters (not a copy); they live as long as the Manager.
	Counters *Counters
}

// Stats returns a snapshot of every pool.
func (m *Manager) Stats() []Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Stats, 0, len(m.pools))
	now := time.Now()
	for _, p := range m.pools {
		st := Stats{Key: p.key, Total: p.total, Idle: len(p.idle), Waiting: len(p.waiters), Parked: p.parked, Counters: &p.counters}
		if len(p.waiters) > 0 {
			st.MaxWait = now.Sub(p.waiters[0].since)
		}
		out = append(out, st)
	}
	return out
}

// NodeTotal returns the number of server connections open or being dialed to node.
func (m *Manager) NodeTotal(addr string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[addr]; n != nil {
		return n.total
	}
	return 0
}

// Run closes idle connections past server_idle_timeout (down to min_idle) or server_lifetime, and
// opens connections up to min_idle, once per tick until ctx is done.
func (m *Manager) Run(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.maintain(ctx)
		}
	}
}

func (m *Manager) maintain(ctx context.Context) {
	s := m.settings.Load()
	now := time.Now()
	var toClose []*Conn
	var toDial []Key
	m.mu.Lock()
	for _, p := range m.pools {
		if now.Sub(p.lastActive) >= s.ServerIdleTimeout && m.removeIfUnusedLocked(p) {
			continue // deleting the current key of a range over a map is allowed
		}
		kept := p.idle[:0]
		for i, c := range p.idle {
			// idle is LIFO, so the oldest-used come first; keep min_idle of the warmest.
			expired := now.Sub(c.created) >= s.ServerLifetime
			idleTooLong := now.Sub(c.lastUsed) >= s.ServerIdleTimeout && p.total > s.MinIdle
			if expired || idleTooLong {
				m.forgetLocked(p, c)
				toClose = append(toClose, c)
				continue
			}
			kept = append(kept, p.idle[i])
		}
		clear(p.idle[len(kept):])
		p.idle = kept
		// Top up to min_idle, a few per tick so a restart does not become a storm.
		for i := 0; i < 4 && p.total < s.MinIdle && len(p.waiters) == 0 && !m.pauses.has(p.key.Database) && m.takeSlotLocked(p, s); i++ {
			toDial = append(toDial, p.key)
		}
	}
	notes := m.takeFitNotesLocked()
	m.mu.Unlock()
	logAll(notes)
	closeAll(toClose)
	for _, k := range toDial {
		c, err := m.dialSlot(ctx, k)
		if err != nil {
			m.Logger.Warn("could not open a min_idle server connection", "pool", k.String(), "err", err)
			continue
		}
		m.Release(c, false)
	}
}

// Close closes every idle connection and makes Acquire fail. Connections held by sessions are
// closed when released.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	var toClose []*Conn
	for _, p := range m.pools {
		for _, c := range p.idle {
			m.forgetLocked(p, c)
			toClose = append(toClose, c)
		}
		p.idle = nil
	}
	m.mu.Unlock()
	closeAll(toClose)
}

func closeAll(cs []*Conn) {
	for _, c := range cs {
		c.close()
	}
}

// removeIfUnusedLocked removes p if it has no connection (open, being dialed, parked) and no
// waiter, and reports whether it did. Its counters go with it. Requires mu.
func (m *Manager) removeIfUnusedLocked(p *pool) bool {
	if p.total > 0 || len(p.waiters) > 0 || p.parked > 0 || len(p.idle) > 0 || m.pools[p.key] != p {
		return false
	}
	delete(m.pools, p.key)
	if m.recent == p {
		m.recent = nil
	}
	n := p.node
	if i := slices.Index(n.pools, p); i >= 0 {
		n.pools = slices.Delete(n.pools, i, i+1)
	}
	m.fitLocked(p.key.Node, n, m.settings.Load())
	return true
}
