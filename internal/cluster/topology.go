package cluster

// SetHosts replaces the configured host list (reload). Without discovery it
// is the topology: new hosts are added (and checked at once while Run runs),
// removed ones are marked Removed (an Event with Removed) and dropped from
// Nodes, kept hosts keep their live state and take the new weight. With
// discovery, hosts are the seeds used to reach the cluster and the weights
// of the nodes discovered at their addresses; discovery runs again at once.
func (c *Cluster) SetHosts(hosts []Host) {
	hosts = append([]Host(nil), hosts...)
	c.mu.Lock()
	c.seeds = hosts
	c.mu.Unlock()
	if c.config().Discovery == DiscoveryStatic {
		c.setTopology(hosts)
		return
	}
	for _, n := range *c.nodes.Load() {
		n.weight.Store(normWeight(c.weightOf(n.addr)))
	}
	select {
	case c.discover <- struct{}{}:
	default: // a round is already due
	}
}

// weightOf returns the configured weight for addr, 0 (meaning 1) when none is.
func (c *Cluster) weightOf(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.seeds {
		if h.Addr == addr {
			return h.Weight
		}
	}
	return 0
}

// setTopology makes hosts (deduplicated, in order) the node set: nodes at
// addresses no longer listed are removed, new addresses get new nodes, and
// the rest keep their Node and live state and take the new weight.
func (c *Cluster) setTopology(hosts []Host) {
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	old := *c.nodes.Load()
	byAddr := make(map[string]*Node, len(old))
	for _, n := range old {
		byAddr[n.addr] = n
	}
	next := make([]*Node, 0, len(hosts))
	listed := make(map[string]bool, len(hosts))
	var added, removed []*Node
	for _, h := range hosts {
		if listed[h.Addr] {
			continue
		}
		listed[h.Addr] = true
		if n := byAddr[h.Addr]; n != nil {
			n.weight.Store(normWeight(h.Weight))
			next = append(next, n)
			continue
		}
		n := newNode(h)
		added = append(added, n)
		next = append(next, n)
	}
	for _, n := range old {
		if !listed[n.addr] {
			removed = append(removed, n)
		}
	}
	c.nodes.Store(&next)
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	for _, n := range removed {
		n.removed.Store(true) // before the checker could emit another event: it checks under eventMu
	}
	c.mu.Lock()
	for _, n := range removed {
		c.stopCheckerLocked(n)
	}
	for _, n := range added {
		c.startCheckerLocked(n) // its first event waits for eventMu, so Added comes first
	}
	c.mu.Unlock()
	for _, n := range removed {
		s := n.loadState()
		c.log.Info("node removed from the topology", "addr", n.addr, "up", s.up(), "role", s.role())
		c.emitLocked(Event{Node: n, Up: s.up(), Role: s.role(), PrevUp: s.up(), PrevRole: s.role(), Removed: true})
	}
	for _, n := range added {
		c.log.Info("node added to the topology", "addr", n.addr)
		c.emitLocked(Event{Node: n, Added: true})
	}
}
