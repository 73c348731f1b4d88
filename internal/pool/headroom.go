package pool

import (
	"slices"
	"time"
)

// The headroom gate (Settings.SharedBudget, budget_mode = "shared").
//
// Several pgtide processes, and clients that are not pgtide at all, share a node's budget of
// connections. None of them knows what the others hold; the node does: its health check reads
// the node's client backends (pg_stat_activity) at every check and hands the count to
// SetNodeBackends. From that reading this process may open
//
//	left = max(0, ceil(free / N) − ceil((N − 1) × (unseen + recent) / N))
//	free = budget − backends − unseen
//
// new server connections until the next reading, where N is Settings.ProxyInstances, unseen
// the connections this process was opening when the reading began (in flight then, or finished
// since: pg_stat_activity shows a backend only once it has authenticated, so the reading may
// have missed them; they count against free, and not twice), and recent the connections this
// process opened in the HeadroomLifetime before the reading. Each dial started takes one from
// left, whatever its outcome; nothing else adds to it. Connections this process closes, and dials
// that fail, give nothing back until a reading shows the places free: another process may be
// counting on the same places already. The one exception is a swap: an idle connection closed to
// make room for a pool that waits (see evictIdleLocked and putBackLocked) is replaced at once
// without headroom, as this process's count does not change. A reading's left lapses
// HeadroomLifetime after it began: when the health check fails or falls behind, no connection
// opens on a stale count. Reusing an open connection never needs headroom, and nothing is closed
// because of others' use.
//
// Why the second term. If every process read the same backends at the same moment and took all
// the free places, together they would take N times them; with ceil(free / N) each, they take
// at most free + N − 1. But readings are not simultaneous, and each process has a share of an
// older reading that it may still be opening: connections the others' readings have not seen
// (in flight, or not yet opened). A process that opens and reads again sees its own connections
// (or knows them, unseen) but not those shares, so its next ceil(free / N) would count the same
// places again. Holding back (N − 1) / N of what it opened, or is opening, since the others'
// readings (at most HeadroomLifetime ago: older shares have lapsed) covers exactly that. The
// worst case, then, is the node's client backends at budget + N − 1, provided that no one else
// opens connections after a reading (pgtide cannot hold back other clients: what they open, the
// opens that reading allowed may add to) and that every process's readings are at most
// HeadroomLifetime apart. The price: a single busy process grows into the free places by about
// 1/N of them every HeadroomLifetime or so, not all at once. With N = 1 nothing is held back and
// it takes all the free places.

// headroom is one node's gate. Guarded by Manager.mu.
type headroom struct {
	readAt   time.Time // when the last reading began; zero before the first
	backends int       // the node's client backends at that reading
	left     int       // new connections the reading still allows
	opening  int       // dials counted and not finished
	// opened holds when this process's successful dials to the node finished, oldest first,
	// back to HeadroomLifetime before the last reading: for unseen and recent.
	opened []time.Time
}

// open reports whether a new connection may be opened now without a swap.
func (h *headroom) open(now time.Time, s *Settings) bool {
	if !s.SharedBudget {
		return true
	}
	return h.left > 0 && (s.HeadroomLifetime <= 0 || now.Before(h.readAt.Add(s.HeadroomLifetime)))
}

// take counts a dial that is about to start: it uses one place of the reading's unless swap.
// It reports false, counting nothing, when the gate is shut.
func (h *headroom) take(now time.Time, s *Settings, swap bool) bool {
	if !swap && !h.open(now, s) {
		return false
	}
	if s.SharedBudget && !swap {
		h.left--
	}
	h.opening++
	return true
}

// dialed records the end of a dial that take counted.
func (h *headroom) dialed(now time.Time, ok bool, s *Settings) {
	h.opening--
	if ok {
		h.opened = append(h.opened, now)
	}
	// Keep what the next reading can look at, HeadroomLifetime before it began, with room for
	// readings that began a while before they arrive.
	h.forget(now.Add(-2 * s.HeadroomLifetime))
}

// forget drops the dials in opened that ended at or before t.
func (h *headroom) forget(t time.Time) {
	if i := h.countBefore(t.Add(time.Nanosecond)); i > 0 {
		h.opened = h.opened[i:]
	}
}

// read applies a reading of the node's client backends that began at at.
func (h *headroom) read(backends int, at time.Time, budget int, s *Settings) {
	if at.Before(h.readAt) {
		return // an older reading (a node's checker that was replaced) says nothing new
	}
	h.readAt, h.backends = at, backends
	h.forget(at.Add(-s.HeadroomLifetime))
	n := max(1, s.ProxyInstances)
	before := h.countBefore(at)
	unseen := h.opening + len(h.opened) - before // in flight, or ended after the reading began
	recent := before                             // ended in the HeadroomLifetime before it
	free := budget - backends - unseen
	h.left = 0
	if budget > 0 && free > 0 {
		h.left = max(0, ceilDiv(free, n)-ceilDiv((n-1)*(unseen+recent), n))
	}
}

// shrink takes from left what a smaller budget no longer allows (a reload; a ceiling that
// drops is followed by a reading at once).
func (h *headroom) shrink(by int) { h.left = max(0, h.left-by) }

// countBefore returns how many of opened are before t.
func (h *headroom) countBefore(t time.Time) int {
	i, _ := slices.BinarySearchFunc(h.opened, t, func(e, t time.Time) int { return e.Compare(t) })
	return i
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// Headroom is what the shared-budget gate of one node knows, for metrics and the console. With
// Shared false the gate is off (budget_mode = "static") and the rest may still show the last
// reading.
type Headroom struct {
	Shared   bool
	Budget   int       // the node's whole budget (0: its ceiling is not known yet)
	Backends int       // the node's client backends, everyone's, at the last reading
	ReadAt   time.Time // when that reading began; zero before the first
	// Left is how many new server connections this process may still open before the next
	// reading: 0 once the reading is older than HeadroomLifetime. Only with Shared.
	Left    int
	Opening int // dials in progress
}

// NodeHeadroom returns addr's gate as it is now.
func (m *Manager) NodeHeadroom(addr string) Headroom {
	s := m.settings.Load()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	hr := Headroom{Shared: s.SharedBudget}
	n := m.nodes[addr]
	if n == nil {
		return hr
	}
	hr.Budget, hr.Backends, hr.ReadAt, hr.Opening = n.budget, n.room.backends, n.room.readAt, n.room.opening
	if s.SharedBudget && n.room.open(now, s) {
		hr.Left = n.room.left
	}
	return hr
}

// SetNodeBackends applies a reading of addr's client backends, everyone's, that began at at (see
// the headroom gate above): with Settings.SharedBudget it gives this process new headroom there
// until the next reading, and wakes clients waiting for it. at must come from the same clock as
// time.Now.
func (m *Manager) SetNodeBackends(addr string, backends int, at time.Time) {
	s := m.settings.Load()
	m.mu.Lock()
	n := m.nodeLocked(addr)
	n.room.read(backends, at, n.budget, s)
	m.grantSlotsLocked(n)
	m.mu.Unlock()
}
