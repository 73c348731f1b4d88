package pool

// Whether a node's pools fit its cap (its budget, or max_server_connections where lower): k
// pools (the (database, user) pairs clients have used on the node) of pool_size p need k × p
// connections when all are busy, and min_idle × k are kept open whether busy or not. When they
// do not fit, nothing breaks: the cap holds, and clients wait for a server connection (up to
// query_wait_timeout) when the pools are busy at once, or min_idle is not kept on every pool;
// but the operator should know. The verdict is logged once per change: a warning when the pools
// stop fitting, again when the cap, pool_size or min_idle change while they do not, and a line
// when they fit again. A new pool on a node that already does not fit logs nothing (with many
// databases or users it would be a line per pool).

type fitVerdict int

const (
	fits        fitVerdict = iota
	poolsOver              // k × pool_size > cap
	minIdleOver            // k × min_idle > cap: min_idle cannot be kept on every pool
)

// fitState is what was last logged for a node. Guarded by Manager.mu.
type fitState struct {
	verdict                fitVerdict
	cap, poolSize, minIdle int
}

// fitLocked checks n's pools against its cap and, if the verdict changed (see above), adds the
// line that says so to m.fitNotes, to log after unlocking mu (takeFitNotesLocked). Requires mu.
func (m *Manager) fitLocked(addr string, n *node, s *Settings) {
	k := len(n.pools)
	now := fitState{fits, nodeCapLocked(n, s), s.PoolSize, s.MinIdle}
	switch {
	case k*s.MinIdle > now.cap:
		now.verdict = minIdleOver
	case k*s.PoolSize > now.cap:
		now.verdict = poolsOver
	}
	if now == n.fit || now.verdict == fits && n.fit.verdict == fits {
		return
	}
	n.fit = now
	attrs := []any{"node", addr, "pools", k, "pool_size", s.PoolSize, "min_idle", s.MinIdle, "budget", now.cap}
	log := m.Logger
	var note func()
	switch now.verdict {
	case minIdleOver:
		note = func() {
			log.Warn("min_idle cannot be kept on every pool of the node: pools × min_idle is over its budget "+
				"(or max_server_connections where lower); some pools stay under min_idle, and clients wait for server "+
				"connections when the pools are busy at once. Lower min_idle or pool_size, raise the node's "+
				"max_connections, or run fewer proxy_instances", append(attrs, "need", k*s.MinIdle)...)
		}
	case poolsOver:
		note = func() {
			log.Warn("the node's pools cannot all fit its budget: pools × pool_size is over it (or over "+
				"max_server_connections where lower), so clients wait for server connections when the pools are busy "+
				"at once. Lower pool_size, raise the node's max_connections, or run fewer proxy_instances",
				append(attrs, "need", k*s.PoolSize)...)
		}
	default:
		note = func() { log.Info("the node's pools fit its budget again", attrs...) }
	}
	m.fitNotes = append(m.fitNotes, note)
}

// takeFitNotesLocked returns the lines fitLocked left to log, nil mostly. Requires mu.
func (m *Manager) takeFitNotesLocked() []func() {
	notes := m.fitNotes
	m.fitNotes = nil
	return notes
}

// logAll calls each of notes.
func logAll(notes []func()) {
	for _, f := range notes {
		f()
	}
}
