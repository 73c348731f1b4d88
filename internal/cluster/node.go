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
	lagBytes  atomic.Int64  // -1 unknown
	replayLSN atomic.Uint64 // 0 unknown
	lastCheck atomic.Int64  // unix nanoseconds when the last check ended; 0 before the first
	// The server's connection ceiling (see Ceiling); 0 before it was read.
	maxConnections      atomic.Int32
	reservedConnections atomic.Int32
	backends            atomic.Int32 // client backends at the last reading (see Backends)

	// removed is set once, under Cluster.eventMu, when the node leaves the
	// topology; never cleared.
	removed atomic.Bool

	// failure is why its last check failed (checkFailure), nil when it passed.
	failure atomic.Pointer[string]

	// instanceID is the Aurora instance id (server_id) its health check found, nil until then;
	// written only by the node's checker.
	instanceID atomic.Pointer[string]
}

// InstanceID returns the node's Aurora DB instance identifier (its server_id in
// aurora_replica_status()), as its health check found it when it connected: from
// aurora_template, aurora_db_instance_identifier() or the instance endpoint's host name. "" on
// PostgreSQL, and until the first connection. Endpoints' nodes filters match it.
func (n *Node) InstanceID() string {
	if id := n.instanceID.Load(); id != nil {
		return *id
	}
	return ""
}

func (n *Node) setInstanceID(id string) {
	if cur := n.instanceID.Load(); cur == nil || *cur != id {
		n.instanceID.Store(&id)
	}
}

// CheckFailure returns in a few words, without addresses, why the node's last health check
// failed, or "" if it passed (or none ran yet).
func (n *Node) CheckFailure() string {
	if f := n.failure.Load(); f != nil {
		return *f
	}
	return ""
}

func newNode(h Host) *Node {
	n := &Node{addr: h.Addr}
	n.weight.Store(normWeight(h.Weight))
	n.lagBytes.Store(-1)
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

// Lag returns the replication lag in time a reader reported at its last
// successful check: 0 for a writer and for a replica that has replayed all it
// received. PostgreSQL: how old the last transaction the replica replayed
// is, counted only while it has received WAL it has not replayed yet (on an
// idle primary that timestamp ages with nothing to replay). A replica whose
// WAL stopped arriving shows no lag in time; LagBytes shows it. Aurora: the
// reader's replica_lag_in_msec.
func (n *Node) Lag() time.Duration { return time.Duration(n.lag.Load()) }

// LagBytes returns how many bytes of WAL a reader had still to replay at its
// last successful check, measured against the writer's position: 0 for the
// writer, -1 when unknown (no check yet, no writer to compare with).
// PostgreSQL: the writer's most recently sampled position (at most a check
// interval old) minus the replica's replay position. Aurora: the writer's
// durable_lsn minus the reader's, from the same aurora_replica_status().
func (n *Node) LagBytes() int64 { return n.lagBytes.Load() }

// ReplayLSN returns a WAL position, 0 when unknown. A reader: the position it
// had replayed (Aurora: applied) at its last successful check, so it sees
// every transaction committed at or before it. The writer: its WAL position
// at its last successful check. Compare with Cluster.WriterLSNAfter.
func (n *Node) ReplayLSN() uint64 { return n.replayLSN.Load() }

// Ceiling returns the node's max_connections and the connections it keeps for superusers and
// reserved roles (superuser_reserved_connections + reserved_connections), as its health check
// last read them (when it connects, then every few seconds); ok is false before the first read.
func (n *Node) Ceiling() (maxConnections, reserved int, ok bool) {
	m := n.maxConnections.Load()
	return int(m), int(n.reservedConnections.Load()), m > 0
}

// Backends returns how many client backends (every client's, not only pgtide's) the node had
// when its ceiling was last read: every few seconds, or at every check with
// Cluster.SetBackendsEveryCheck.
func (n *Node) Backends() int { return int(n.backends.Load()) }

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
