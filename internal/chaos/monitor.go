package chaos

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// countBackends counts a node's backends of the clients' role: the proxy's server connections,
// as the server sees them.
const countBackends = `SELECT count(*) FROM pg_stat_activity WHERE usename = '` + clientUser + `'`

// capGrace is how long connections may stay above a cap that was just lowered.
const capGrace = time.Second

// nodeStats is what the monitor saw of one node during a window.
type nodeStats struct {
	maxConns int // the proxy's server connections (pgtide: /metrics), highest sample
	// firstCap and lastCap are the proxy's cap on them (pgtide: its budget, or pool_size where
	// lower; PgBouncer: default_pool_size) at the window's first and last sample.
	firstCap, lastCap int
	// overCap counts the samples in which the connections exceeded the cap of that moment,
	// once that cap had held for capGrace: busy connections above a lowered cap close as they
	// come back.
	overCap      int
	capChangedAt time.Time
	maxBackends  int // pg_stat_activity's client backends but the suite's, highest sample
}

// monitor samples the proxy's server connections and every node's backends every 200 ms while
// a window is open. run is its goroutine; it ends with its context.
type monitor struct {
	proxy proxy
	nodes func() []string // the addresses to count backends on
	// fixedCap is the cap for a proxy that reports no budget of its own (PgBouncer): its pool
	// size.
	fixedCap func() int

	mu  sync.Mutex            // guards cur
	cur map[string]*nodeStats // nil between windows

	conns map[string]*pgx.Conn // owned by run
}

func (m *monitor) begin() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cur = map[string]*nodeStats{}
}

func (m *monitor) end() map[string]nodeStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]nodeStats, len(m.cur))
	for node, s := range m.cur {
		out[node] = *s
	}
	m.cur = nil
	return out
}

func (m *monitor) run(ctx context.Context) {
	m.conns = map[string]*pgx.Conn{}
	defer func() {
		for _, c := range m.conns {
			c.Close(context.Background())
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m.mu.Lock()
		open := m.cur != nil
		m.mu.Unlock()
		if open {
			m.sampleOnce(ctx)
		}
	}
}

func (m *monitor) sampleOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	own, _ := m.proxy.sample(ctx) // a failed scrape (pgtide restarting) is a missing sample
	backends := map[string]int{}
	for _, node := range m.nodes() {
		if n, ok := m.backends(ctx, node); ok {
			backends[node] = n
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil {
		return
	}
	for node, s := range own {
		m.note(node, s)
	}
	for node, n := range backends {
		st := m.stats(node)
		st.maxBackends = max(st.maxBackends, n)
		if own == nil { // the proxy does not count: its connections are the backends
			m.note(node, nodeSample{conns: n, cap: m.fixedCap()})
		}
	}
}

// note folds one sample into the window. Requires mu.
func (m *monitor) note(node string, s nodeSample) {
	st := m.stats(node)
	st.maxConns = max(st.maxConns, s.conns)
	if s.cap <= 0 {
		return
	}
	if st.firstCap == 0 {
		st.firstCap, st.lastCap = s.cap, s.cap
	}
	if s.cap != st.lastCap {
		st.lastCap, st.capChangedAt = s.cap, time.Now()
	}
	if s.conns > s.cap && time.Since(st.capChangedAt) >= capGrace {
		st.overCap++
	}
}

// stats returns node's entry of the open window. Requires mu.
func (m *monitor) stats(node string) *nodeStats {
	st := m.cur[node]
	if st == nil {
		st = &nodeStats{}
		m.cur[node] = st
	}
	return st
}

// backends counts node's backends on the monitor's own connection to it, opening one when
// needed; a node that is down gives no sample.
func (m *monitor) backends(ctx context.Context, node string) (int, bool) {
	c := m.conns[node]
	if c == nil || c.IsClosed() {
		var err error
		if c, err = pgx.Connect(ctx, directConnString(node)); err != nil {
			return 0, false
		}
		m.conns[node] = c
	}
	var n int
	if err := c.QueryRow(ctx, countBackends, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
		c.Close(context.Background())
		delete(m.conns, node)
		return 0, false
	}
	return n, true
}
