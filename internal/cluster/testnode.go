package cluster

import "time"

// NodeStateForTest is a node's live state as a test of another package sets it (see NewNodeForTest).
type NodeStateForTest struct {
	Up        bool
	Role      Role
	Weight    int // relative share of reads; 0 means 1
	Lag       time.Duration
	LagBytes  int64 // 0 means 0; use -1 for unknown
	ReplayLSN uint64
	Removed   bool
	// InstanceID is the node's Aurora instance id; "" for none.
	InstanceID string
}

// NewNodeForTest returns a node at addr that belongs to no Cluster and is never checked, in state
// s, for tests of packages that read nodes (the router's pick). Production code never calls it.
func NewNodeForTest(addr string, s NodeStateForTest) *Node {
	n := newNode(Host{Addr: addr, Weight: s.Weight})
	SetNodeStateForTest(n, s)
	return n
}

// SetNodeStateForTest sets the live state of a node made by NewNodeForTest (its weight aside).
func SetNodeStateForTest(n *Node, s NodeStateForTest) {
	n.state.Store(uint32(nodeState(stateChecked).withUp(s.Up).withRole(s.Role)))
	n.lag.Store(int64(s.Lag))
	n.lagBytes.Store(s.LagBytes)
	n.replayLSN.Store(s.ReplayLSN)
	n.removed.Store(s.Removed)
	if s.InstanceID != "" {
		n.setInstanceID(s.InstanceID)
	}
}
