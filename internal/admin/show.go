package admin

import (
	"cmp"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"pgtide/internal/cluster"
	"pgtide/internal/pool"
	"pgtide/internal/session"
)

// The SHOW commands. Each takes its snapshots (Source), then builds its whole result; nothing is
// locked while the result is written to the client. Columns take PgBouncer's names where the
// concept is the same; README "Admin console" lists what differs.

// showPools lists the pools, one per (node, database, user).
func (c *Console) showPools([]string) error {
	cfg := c.src.Config()
	stats := sortedStats(c.src.Pools().Stats())
	active := map[pool.Key]int{}
	for _, ci := range c.src.Clients() {
		if ci.State == session.ClientActive {
			active[pool.Key{Node: ci.Node, Database: ci.Database, User: ci.User}]++
		}
	}
	// "used": idle past server_check_delay, so server_check_query runs before the next lend.
	used := map[pool.Key]int{}
	if cfg.Cluster.ServerCheckQuery != "" {
		now := time.Now()
		for _, sv := range c.src.Pools().IdleServers() {
			if now.Sub(sv.LastUsed) >= cfg.Cluster.ServerCheckDelay.Duration {
				used[sv.Key]++
			}
		}
	}
	r := newResult(textCol("database"), textCol("user"), textCol("node"), intCol("cl_active"), intCol("cl_waiting"),
		intCol("sv_active"), intCol("sv_idle"), intCol("sv_used"), intCol("sv_being_canceled"),
		intCol("maxwait"), intCol("maxwait_us"), textCol("pool_mode"))
	modes, allModes := poolModes(c.src.Router(), c.src.Cluster().Nodes())
	for _, st := range stats {
		k := st.Key
		u := min(used[k], st.Idle) // two snapshots
		r.row(k.Database, k.User, k.Node, active[k], st.Waiting, st.Total-st.Idle-st.Parked, st.Idle-u, u, st.Parked,
			int64(st.MaxWait/time.Second), int64(st.MaxWait%time.Second/time.Microsecond), cmp.Or(modes[k.Node], allModes))
	}
	c.send(r, "SHOW")
	return nil
}

// sortedStats sorts pool snapshots by database, user, node.
func sortedStats(stats []pool.Stats) []pool.Stats {
	slices.SortFunc(stats, func(a, b pool.Stats) int {
		return cmp.Or(cmp.Compare(a.Key.Database, b.Key.Database), cmp.Compare(a.Key.User, b.Key.User),
			cmp.Compare(a.Key.Node, b.Key.Node))
	})
	return stats
}

// showClients lists the client connections (not the console's own).
func (c *Console) showClients([]string) error {
	clients := c.src.Clients()
	slices.SortFunc(clients, func(a, b session.ClientInfo) int {
		return cmp.Or(a.Connected.Compare(b.Connected), cmp.Compare(a.ID, b.ID))
	})
	r := newResult(textCol("type"), textCol("user"), textCol("database"), textCol("state"), textCol("addr"), intCol("port"),
		textCol("local_addr"), intCol("local_port"), textCol("connect_time"), textCol("request_time"), intCol("link"),
		textCol("tls"), textCol("application_name"), intCol("id"), textCol("endpoint"), textCol("node"), intCol("pinned"))
	for _, ci := range clients {
		host, port := splitAddr(ci.Addr)
		lhost, lport := splitAddr(ci.LocalAddr)
		var link, node any // NULL unless it holds a server connection
		if ci.State == session.ClientActive {
			link, node = ci.ServerPID, ci.Node
		}
		r.row("C", ci.User, ci.Database, ci.State, host, port, lhost, lport, ci.Connected, ci.RequestTime, link,
			ci.TLS, ci.ApplicationName, ci.ID, ci.Endpoint, node, ci.Pinned)
	}
	c.send(r, "SHOW")
	return nil
}

// showServers lists the server connections lent to clients and the idle ones. Connections being
// opened, checked, reset or parked for a cancel are counted in SHOW POOLS only.
func (c *Console) showServers([]string) error {
	cfg := c.src.Config()
	type server struct {
		key                  pool.Key
		state                string
		pid                  uint32
		local                string
		connected, requested time.Time
		closeNeeded          bool
		link                 any // the client's id; NULL when idle
		app                  string
		tls                  string
	}
	var servers []server
	for _, ci := range c.src.Clients() {
		if ci.State == session.ClientActive {
			servers = append(servers, server{pool.Key{Node: ci.Node, Database: ci.Database, User: ci.User}, "active",
				ci.ServerPID, ci.ServerLocalAddr, ci.ServerConnected, ci.RequestTime, ci.ServerCloseNeeded, ci.ID, ci.ApplicationName, ci.ServerTLS})
		}
	}
	now := time.Now()
	for _, sv := range c.src.Pools().IdleServers() {
		state := "idle"
		if cfg.Cluster.ServerCheckQuery != "" && now.Sub(sv.LastUsed) >= cfg.Cluster.ServerCheckDelay.Duration {
			state = "used"
		}
		servers = append(servers, server{sv.Key, state, sv.PID, sv.LocalAddr, sv.Connected, sv.LastUsed, false, nil, "", sv.TLS})
	}
	slices.SortFunc(servers, func(a, b server) int {
		return cmp.Or(cmp.Compare(a.key.Database, b.key.Database), cmp.Compare(a.key.User, b.key.User),
			cmp.Compare(a.key.Node, b.key.Node), cmp.Compare(a.pid, b.pid))
	})
	r := newResult(textCol("type"), textCol("user"), textCol("database"), textCol("state"), textCol("addr"), intCol("port"),
		textCol("local_addr"), intCol("local_port"), textCol("connect_time"), textCol("request_time"), intCol("close_needed"),
		intCol("link"), intCol("remote_pid"), textCol("tls"), textCol("application_name"), textCol("node"))
	for _, s := range servers {
		host, port := splitAddr(s.key.Node)
		lhost, lport := splitAddr(s.local)
		r.row("S", s.key.User, s.key.Database, s.state, host, port, lhost, lport, s.connected, s.requested, s.closeNeeded,
			s.link, s.pid, s.tls, s.app, s.key.Node)
	}
	c.send(r, "SHOW")
	return nil
}

// showStats lists the cumulative counts since start, per database and node (PgBouncer's are per
// database; pgtide's pools are per node too). The counts of the pools of one database and node
// (one per user) are summed.
func (c *Console) showStats([]string) error {
	type dbNode struct{ database, node string }
	type sums struct{ assignments, xacts, queries, errors, waitUs, queryUs, received, sent int64 }
	var order []dbNode
	totals := map[dbNode]*sums{}
	for _, st := range sortedStats(c.src.Pools().Stats()) {
		k := dbNode{st.Key.Database, st.Key.Node}
		t := totals[k]
		if t == nil {
			t = new(sums)
			totals[k] = t
			order = append(order, k)
		}
		w := st.Counters.Waits()
		t.assignments += int64(w.Count)
		t.waitUs += w.Sum.Microseconds()
		t.xacts += st.Counters.Transactions.Load()
		t.queries += st.Counters.Queries.Load()
		t.errors += st.Counters.ServerErrors.Load()
		t.queryUs += st.Counters.QueryNanos.Load() / 1000
		t.received += st.Counters.BytesReceived.Load()
		t.sent += st.Counters.BytesSent.Load()
	}
	slices.SortFunc(order, func(a, b dbNode) int {
		return cmp.Or(cmp.Compare(a.database, b.database), cmp.Compare(a.node, b.node))
	})
	// total_received and total_sent are from the servers' side (PgBouncer's are the clients'):
	// bytes pgtide read from and sent to the servers.
	r := newResult(textCol("database"), textCol("node"), intCol("total_server_assignment_count"), intCol("total_xact_count"),
		intCol("total_query_count"), intCol("total_received"), intCol("total_sent"), intCol("total_query_time"),
		intCol("total_wait_time"), intCol("total_server_error_count"), intCol("avg_query_time"), intCol("avg_wait_time"))
	for _, k := range order {
		t := totals[k]
		r.row(k.database, k.node, t.assignments, t.xacts, t.queries, t.received, t.sent, t.queryUs, t.waitUs, t.errors,
			t.queryUs/max(t.queries, 1), t.waitUs/max(t.assignments, 1))
	}
	c.send(r, "SHOW")
	return nil
}

// showDatabases lists the databases pgtide knows of: those with pools or clients, and those
// paused by name. pgtide has no [databases] section: every database has the same settings.
func (c *Console) showDatabases([]string) error {
	cfg := c.src.Config()
	pools := c.src.Pools()
	servers, clients := map[string]int{}, map[string]int{}
	for _, st := range pools.Stats() {
		servers[st.Key.Database] += st.Total
	}
	for _, ci := range c.src.Clients() {
		clients[ci.Database]++
	}
	all, paused := pools.Pauses()
	names := slices.Clone(paused)
	for db := range servers {
		names = append(names, db)
	}
	for db := range clients {
		names = append(names, db)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	r := newResult(textCol("name"), textCol("database"), intCol("pool_size"), intCol("min_pool_size"),
		intCol("server_lifetime"), textCol("pool_mode"), intCol("current_connections"),
		intCol("current_client_connections"), intCol("paused"))
	_, allModes := poolModes(c.src.Router(), nil)
	for _, db := range names {
		r.row(db, db, cfg.Cluster.PoolSize, cfg.Cluster.MinIdle, int64(cfg.Cluster.ServerLifetime.Seconds()),
			allModes, servers[db], clients[db], all || slices.Contains(paused, db))
	}
	c.send(r, "SHOW")
	return nil
}

// showNodes lists the nodes as the health checks and the router see them (pgtide's own);
// endpoints names the endpoints that may read from the node now (see readersOf).
//
// role is as the metrics have it (nodeRole): a node that is down plays none, "unknown", and
// last_role says what it was.
func (c *Console) showNodes([]string) error {
	pools := c.src.Pools()
	servers := nodeServers(pools.Stats())
	rt := c.src.Router()
	endpoints := readersOf(rt)
	r := newResult(textCol("node"), textCol("role"), intCol("up"), floatCol("lag_seconds"), intCol("lag_bytes"),
		intCol("lagging"), intCol("sv_active"), intCol("sv_idle"), intCol("budget"), intCol("max_connections"),
		intCol("reserved_connections"), intCol("backends"), intCol("outstanding"), intCol("picked"), intCol("weight"),
		textCol("last_check"), textCol("instance_id"), textCol("endpoints"), textCol("last_role"))
	for _, n := range c.src.Cluster().Nodes() {
		addr := n.Addr()
		var lagBytes, maxConns, reserved, backends any // NULL until known
		if b := n.LagBytes(); b >= 0 {
			lagBytes = b
		}
		if m, res, ok := n.Ceiling(); ok {
			maxConns, reserved, backends = m, res, n.Backends()
		}
		role, last := nodeRole(n)
		r.row(addr, role, n.Up(), n.Lag().Seconds(), lagBytes, rt.Lagging(n), servers[addr].active, servers[addr].idle,
			pools.NodeCap(addr), maxConns, reserved, backends, rt.Outstanding(n), rt.Picked(n), n.Weight(), n.LastCheck(),
			n.InstanceID(), strings.Join(endpoints[addr], ","), last)
	}
	c.send(r, "SHOW")
	return nil
}

// showConfig lists every setting of the configuration file with its value, default and whether a
// reload applies it. The users file is never shown.
func (c *Console) showConfig([]string) error {
	r := newResult(textCol("key"), textCol("value"), textCol("default"), textCol("changeable"))
	for _, s := range c.src.Config().Settings() {
		changeable := "no"
		if s.Reloadable {
			changeable = "yes"
		}
		r.row(s.Key, s.Value, s.Default, changeable)
	}
	c.send(r, "SHOW")
	return nil
}

func (c *Console) showVersion([]string) error {
	r := newResult(textCol("version"))
	r.row("pgtide " + c.src.Version())
	c.send(r, "SHOW")
	return nil
}

// splitAddr splits host:port for the addr and port columns (port NULL when there is none).
func splitAddr(addr string) (host string, port any) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, nil
	}
	if n, err := strconv.Atoi(p); err == nil {
		return h, n
	}
	return h, nil
}

// nodeRole returns n's role as SHOW NODES, the status page and the metrics show it: "unknown"
// while it is down (its last role is history: after a failover the stopped old primary is no
// writer), with last, the role it last had ("" when it is up or was never checked).
func nodeRole(n *cluster.Node) (role, last string) {
	if n.Up() {
		return n.Role().String(), ""
	}
	if r := n.Role(); r != cluster.RoleUnknown {
		last = r.String()
	}
	return cluster.RoleUnknown.String(), last
}
