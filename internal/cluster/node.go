package cluster

import (
	"sync/atomic"
	"time"
)

// Role is what a node's last successful health check said it is.
type Role int32

const (
	RoleUnknown Role = iota // never checked successfully yet
	RoleWriter              // pg_is_in_recovery() = false
	RoleReader              // pg_is_in_recovery() = true
)

func (r Role) String() string {
	switch r {
	case RoleWriter:
		return "writer"
	case RoleReader:
		return "reader"
	default:
		return "unknown"
	}
}

// Node is one server: its address and weight (config) and its live state.
// A Node belongs to one topology membership: when its address leaves the
// topology the Node is marked Removed for good, and an address that comes
// back later gets a new Node.
type Node struct {
	addr string // immutable

	// weight is config: written by topology updates (SetHosts), read by anyone.
	weight atomic.Int32

	// Live state, written only by the node's checker goroutine; read by anyone.
	state     atomic.Uint32 // a nodeState
	lag       atomic.Int64  // time.Duration
	lastCheck atomic.Int64  // unix nanoseconds when the last check ended; 0 before the first

	// removed is set once, under Cluster.eventMu, when the node leaves the
	// topology; never cleared.
	removed atomic.Bool
}

func newNode(h Host) *Node {
	n := &Node{addr: h.Addr}
	n.weight.Store(normWeight(h.Weight))
	return n
}

// Addr returns the node's host:port.
func (n *Node) Addr() string { return n.addr }

// Weight returns the node's relative share of reads, at least 1.
func (n *Node) Weight() int { return int(n.weight.Load()) }

// Up reports whether the node answers its health checks: true after one
// success, false after HealthCheckFailures misses in a row and before the
// first check.
func (n *Node) Up() bool { return n.loadState().up() }

// Role returns the role seen by the last successful check; it is kept while
// the node is down.
func (n *Node) Role() Role { return n.loadState().role() }

// Lag returns the replication lag a reader reported at its last successful
// check: 0 for a writer and for a replica that has replayed all it received.
func (n *Node) Lag() time.Duration { return time.Duration(n.lag.Load()) }

// LastCheck returns when the last health check (success or failure) ended;
// the zero Time before the first.
func (n *Node) LastCheck() time.Time {
	ns := n.lastCheck.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Removed reports that the node is no longer in the topology (reload or
// discovery): finish what runs on it, start nothing new.
func (n *Node) Removed() bool { return n.removed.Load() }

func (n *Node) String() string { return n.addr }

func (n *Node) loadState() nodeState { return nodeState(n.state.Load()) }

// nodeState packs a node's up flag, role and first-check mark into one word,
// so a change is one compare-and-swap and readers never see half of one.
type nodeState uint32

const (
	stateUp        nodeState = 1 << 0
	stateChecked   nodeState = 1 << 1 // at least one check finished
	stateRoleShift           = 2
	stateRoleMask  nodeState = 3 << stateRoleShift
)

func (s nodeState) up() bool      { return s&stateUp != 0 }
func (s nodeState) checked() bool { return s&stateChecked != 0 }
func (s nodeState) role() Role    { return Role((s & stateRoleMask) >> stateRoleShift) }

func (s nodeState) withUp(up bool) nodeState {
	if up {
		return s | stateUp
	}
	return s &^ stateUp
}

func (s nodeState) withRole(r Role) nodeState {
	return s&^stateRoleMask | nodeState(r)<<stateRoleShift&stateRoleMask
}
