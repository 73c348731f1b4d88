package admin

import (
	"slices"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/evloop"
	"pgtide/internal/pool"
	"pgtide/internal/session"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports pgtide's state as Prometheus metrics, read from its Source at scrape time
// (see the package doc). Every metric name starts with pgtide_; label sets are fixed.
type Collector struct {
	src Source
}

// NewCollector returns a Collector reading src.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// MetricInfo describes one metric family the Collector exports: what rules and dashboards may
// name.
type MetricInfo struct {
	Name   string
	Labels []string // the variable labels, in order
	// Histogram: the family is a histogram, served as Name_bucket, Name_sum and Name_count.
	Histogram bool
}

// catalog lists every family, filled as the descriptors below are made.
var catalog []MetricInfo

// Metrics returns every metric family the Collector exports (the Go and process collectors'
// go_* and process_* families come on top).
func Metrics() []MetricInfo { return slices.Clone(catalog) }

func desc(name, help string, labels ...string) *prometheus.Desc {
	catalog = append(catalog, MetricInfo{Name: name, Labels: labels})
	return prometheus.NewDesc(name, help, labels, nil)
}

func histogramDesc(name, help string, labels ...string) *prometheus.Desc {
	catalog = append(catalog, MetricInfo{Name: name, Labels: labels, Histogram: true})
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descBuildInfo = desc("pgtide_build_info", "Always 1; the version label says which pgtide runs.", "version")
	descWriter    = desc("pgtide_writer_known", "1 while a writer (primary) is known, else 0.")

	descNodeUp      = desc("pgtide_node_up", "1 while the node's health checks pass, else 0.", "node")
	descNodeRole    = desc("pgtide_node_role", "1 for the node's current role (writer, reader, or unknown: never checked, or down), 0 for the others.", "node", "role")
	descLag         = desc("pgtide_node_replication_lag_seconds", "How far the node's replay is behind its writer, as the health checks measure it (0 on the writer).", "node")
	descLagBytes    = desc("pgtide_node_replication_lag_bytes", "WAL bytes between the writer's position and the node's replay position (0 on the writer and when unknown).", "node")
	descLagging     = desc("pgtide_node_lagging", "1 while the node is kept off reads because of its lag (max_replica_lag, max_replica_lag_bytes).", "node")
	descNodeServers = desc("pgtide_node_server_connections", "pgtide's server connections to the node, by state (active: lent to a client or being opened; idle).", "node", "state")
	descBudget      = desc("pgtide_node_budget_connections", "The most server connections pgtide may hold to the node: its budget from max_connections and safety_factor, or max_server_connections where lower.", "node")
	descMaxConns    = desc("pgtide_node_max_connections", "The node's max_connections, its ceiling (0 before the first read).", "node")
	descReserved    = desc("pgtide_node_reserved_connections", "The node's superuser_reserved_connections plus reserved_connections.", "node")
	descHeadroom    = desc("pgtide_node_headroom_connections", "budget_mode = \"shared\": new server connections this process may still open on the node before its next reading of the node's backends (absent in static mode).", "node")
	descBackends    = desc("pgtide_node_backends", "The node's client backends, all clients and not only pgtide's (pg_stat_activity), at the last read; absent while the node is down.", "node")
	descOutstanding = desc("pgtide_node_outstanding", "Transactions (or sessions) the router has on the node now: what least-outstanding balancing compares.", "node")
	descPicked      = desc("pgtide_node_picked_total", "Times the router picked the node.", "node")

	descPoolServers = desc("pgtide_pool_server_connections", "Server connections of the pool, by state.", "node", "database", "user", "state")
	descPoolWaiting = desc("pgtide_pool_clients_waiting", "Clients waiting for a server connection in the pool.", "node", "database", "user")
	descPoolMaxWait = desc("pgtide_pool_max_wait_seconds", "How long the pool's longest-waiting client has waited (0 with none waiting).", "node", "database", "user")
	descPoolWait    = histogramDesc("pgtide_pool_wait_seconds", "Time clients waited for a server connection of the pool (0 when one was idle).", "node", "database", "user")
	descPoolXacts   = desc("pgtide_pool_transactions_total", "Transactions the pool's server connections finished (autocommit statements count).", "node", "database", "user")
	descPoolQueries = desc("pgtide_pool_queries_total", "Requests the pool's server connections answered (one per ReadyForQuery).", "node", "database", "user")
	descPoolErrors  = desc("pgtide_pool_server_errors_total", "ErrorResponses the pool's servers sent to clients.", "node", "database", "user")
	descPoolBusy    = desc("pgtide_pool_query_seconds_total", "Time the pool's servers were busy with clients' requests, from a request's first message to its ReadyForQuery.", "node", "database", "user")
	descPoolRecv    = desc("pgtide_pool_received_bytes_total", "Bytes pgtide read from the pool's servers.", "node", "database", "user")
	descPoolSent    = desc("pgtide_pool_sent_bytes_total", "Bytes pgtide sent to the pool's servers.", "node", "database", "user")

	descClients      = desc("pgtide_client_connections", "Client connections, by endpoint and state (login, active, waiting, idle).", "endpoint", "state")
	descEPServers    = desc("pgtide_endpoint_server_connections", "Server connections the endpoint's clients hold now, over every node and pool (its pool_size caps these plus its clients waiting for a pool).", "endpoint")
	descEPPoolSize   = desc("pgtide_endpoint_pool_size", "The endpoint's pool_size: the most server connections its clients may hold at once (0: no cap beyond the pools').", "endpoint")
	descEPWaiting    = desc("pgtide_endpoint_clients_waiting", "The endpoint's clients waiting for a server connection under its pool_size.", "endpoint")
	descEPReaders    = desc("pgtide_endpoint_readers", "Up readers the endpoint's nodes and exclude_nodes leave it now (lag aside); 0 for a writer endpoint, which uses none.", "endpoint")
	descEPPicked     = desc("pgtide_endpoint_picked_total", "Times the router picked a node for the endpoint's clients' work.", "endpoint")
	descClientErrors = desc("pgtide_client_errors_total", "ErrorResponses sent to clients (the servers' and pgtide's own), by SQLSTATE class (\"\" when malformed).", "class")
	descWaitWriter   = desc("pgtide_failover_waiting_clients", "Clients waiting for a writer (during a failover).")
	descParked       = desc("pgtide_client_connections_parked", "Clients waiting for their next request without a goroutine (transaction mode on the event loops; over TLS after a second idle); also counted in pgtide_client_connections.")
	descLoopHandoffs = desc("pgtide_event_loop_handoffs_total", "Times an event loop gave its thread's work to a new goroutine because what it ran had to wait: a client that does not read its results, a dial, a failover, a message larger than a buffer (a wait for a server connection in a pool's or an endpoint's queue is not one).")
	descAcceptErrors = desc("pgtide_accept_errors_total", "Failures to accept a client connection (out of file descriptors, ...); pgtide keeps accepting after a pause.")
	descCertExpiry   = desc("pgtide_tls_certificate_expiry_timestamp_seconds", "When the certificate pgtide presents to clients ([tls] cert_file, as last loaded) expires: its not_after, in Unix seconds; absent without client TLS.")

	descStateChanges = desc("pgtide_node_state_changes_total", "Node health changes, by change (down, up).", "change")
	descRoleChanges  = desc("pgtide_role_changes_total", "Node role changes seen by the health checks.")
	descFailovers    = desc("pgtide_failovers_total", "Times a reader became the writer.")
	descSplitBrains  = desc("pgtide_split_brains_total", "Times more than one node claimed to be the writer.")

	descPinned  = desc("pgtide_pinned_clients_total", "Transaction-mode clients pinned to their server connection, by reason.", "reason")
	descRefused = desc("pgtide_refused_statements_total", "Statements refused under pin_policy = \"error\", by reason.", "reason")
	descRouted  = desc("pgtide_routing_decisions_total", "Transactions the auto endpoint routed, by route and reason.", "route", "reason")
	descRetries = desc("pgtide_routing_retries_total", "Requests a replica refused that ran on the writer instead (the safety net), by the reason they went to a replica.", "reason")

	descFailoverRetries = desc("pgtide_failover_retries_total", "Requests outside a transaction block whose server connection ended before they were answered (retry_on_failover), by outcome: retried (run again on another server connection, unseen by the client), unsafe (not run again: it may have committed; the client got the error).", "outcome")
)

var roles = [...]cluster.Role{cluster.RoleWriter, cluster.RoleReader, cluster.RoleUnknown}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuildInfo, descWriter, descNodeUp, descNodeRole, descLag, descLagBytes, descLagging,
		descNodeServers, descBudget, descMaxConns, descReserved, descHeadroom, descBackends, descOutstanding, descPicked, descPoolServers,
		descPoolWaiting, descPoolMaxWait, descPoolWait, descPoolXacts, descPoolQueries, descPoolErrors, descPoolBusy, descPoolRecv, descPoolSent, descClients,
		descEPServers, descEPPoolSize, descEPWaiting, descEPReaders, descEPPicked, descClientErrors, descWaitWriter, descAcceptErrors, descLoopHandoffs, descParked, descCertExpiry, descStateChanges, descRoleChanges, descFailovers, descSplitBrains, descPinned,
		descRefused, descRouted, descRetries, descFailoverRetries} {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	src := c.src
	gauge(ch, descBuildInfo, 1, src.Version())
	_, ok := src.Cluster().Writer()
	gauge(ch, descWriter, bool01(ok))
	c.collectNodes(ch)
	c.collectPools(ch)
	c.collectClients(ch)
	c.collectEndpoints(ch)

	downs, ups, roleChanges, splitBrains := src.Cluster().Counters()
	counter(ch, descStateChanges, float64(downs), "down")
	counter(ch, descStateChanges, float64(ups), "up")
	counter(ch, descRoleChanges, float64(roleChanges))
	counter(ch, descFailovers, float64(src.History().Failovers()))
	counter(ch, descSplitBrains, float64(splitBrains))
	gauge(ch, descWaitWriter, float64(src.Router().Waiting()))
	counter(ch, descAcceptErrors, float64(src.AcceptErrors()))
	gauge(ch, descParked, float64(src.ParkedClients()))
	counter(ch, descLoopHandoffs, float64(evloop.Handoffs()))
	if cert := src.ClientCertificate(); cert != nil {
		gauge(ch, descCertExpiry, float64(cert.NotAfter.Unix()))
	}

	pins := src.Pins()
	for r := range session.NumPinReasons {
		reason := classify.Reason(r)
		if reason == classify.None || reason.String() == "unknown" {
			continue
		}
		pinned, refused := pins.Counts(reason)
		counter(ch, descPinned, float64(pinned), reason.String())
		counter(ch, descRefused, float64(refused), reason.String())
	}
	routes := src.Routes()
	for r := range classify.NumRouteReasons {
		why := classify.RouteReason(r)
		// Each reason leads to one route; both series exist so that dashboards sum cleanly.
		counter(ch, descRouted, float64(routes.Routed(classify.RouteWriter, why)), "writer", why.String())
		counter(ch, descRouted, float64(routes.Routed(classify.RouteReader, why)), "reader", why.String())
		counter(ch, descRetries, float64(routes.Retried(why)), why.String())
	}
	for o := range session.NumFailoverOutcomes {
		outcome := session.FailoverOutcome(o)
		counter(ch, descFailoverRetries, float64(routes.FailoverRetries(outcome)), outcome.String())
	}
}

func (c *Collector) collectNodes(ch chan<- prometheus.Metric) {
	src := c.src
	pools := src.Pools()
	servers := nodeServers(pools.Stats())
	rt := src.Router()
	for _, n := range src.Cluster().Nodes() {
		addr := n.Addr()
		gauge(ch, descNodeUp, bool01(n.Up()), addr)
		role := n.Role()
		if !n.Up() {
			role = cluster.RoleUnknown // its last role is history: a node down plays none
		}
		for _, r := range roles {
			gauge(ch, descNodeRole, bool01(r == role), addr, r.String())
		}
		gauge(ch, descLag, n.Lag().Seconds(), addr)
		gauge(ch, descLagBytes, float64(max(0, n.LagBytes())), addr)
		gauge(ch, descLagging, bool01(rt.Lagging(n)), addr)
		gauge(ch, descNodeServers, float64(servers[addr].active), addr, "active")
		gauge(ch, descNodeServers, float64(servers[addr].idle), addr, "idle")
		gauge(ch, descBudget, float64(pools.NodeCap(addr)), addr)
		maxConns, reserved, _ := n.Ceiling()
		gauge(ch, descMaxConns, float64(maxConns), addr)
		gauge(ch, descReserved, float64(reserved), addr)
		if n.Up() { // a reading from before the node went down says nothing about it now
			gauge(ch, descBackends, float64(n.Backends()), addr)
		}
		if h := pools.NodeHeadroom(addr); h.Shared {
			gauge(ch, descHeadroom, float64(h.Left), addr)
		}
		gauge(ch, descOutstanding, float64(rt.Outstanding(n)), addr)
		counter(ch, descPicked, float64(rt.Picked(n)), addr)
	}
}

func (c *Collector) collectPools(ch chan<- prometheus.Metric) {
	for _, st := range c.src.Pools().Stats() {
		k := st.Key
		l := []string{k.Node, k.Database, k.User}
		gauge(ch, descPoolServers, float64(st.Total-st.Idle), k.Node, k.Database, k.User, "active")
		gauge(ch, descPoolServers, float64(st.Idle), k.Node, k.Database, k.User, "idle")
		gauge(ch, descPoolWaiting, float64(st.Waiting), l...)
		gauge(ch, descPoolMaxWait, st.MaxWait.Seconds(), l...)
		h := st.Counters.Waits()
		buckets := make(map[float64]uint64, len(pool.WaitBuckets))
		for i, b := range pool.WaitBuckets {
			buckets[b] = h.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(descPoolWait, h.Count, h.Sum.Seconds(), buckets, l...)
		counter(ch, descPoolXacts, float64(st.Counters.Transactions.Load()), l...)
		counter(ch, descPoolQueries, float64(st.Counters.Queries.Load()), l...)
		counter(ch, descPoolErrors, float64(st.Counters.ServerErrors.Load()), l...)
		counter(ch, descPoolBusy, float64(st.Counters.QueryNanos.Load())/1e9, l...)
		counter(ch, descPoolRecv, float64(st.Counters.BytesReceived.Load()), l...)
		counter(ch, descPoolSent, float64(st.Counters.BytesSent.Load()), l...)
	}
}

func (c *Collector) collectEndpoints(ch chan<- prometheus.Metric) {
	rt := c.src.Router()
	for _, ep := range rt.Endpoints() {
		name := ep.Name()
		held, waiting := ep.Leases()
		gauge(ch, descEPServers, float64(held), name)
		gauge(ch, descEPPoolSize, float64(ep.Config().PoolSize), name)
		gauge(ch, descEPWaiting, float64(waiting), name)
		gauge(ch, descEPReaders, float64(len(rt.EndpointReaders(ep))), name)
		counter(ch, descEPPicked, float64(ep.Picked()), name)
	}
}

func (c *Collector) collectClients(ch chan<- prometheus.Metric) {
	counts := countClients(c.src.Router().Endpoints(), c.src.Clients())
	for ep, n := range counts {
		for i, s := range clientStates {
			gauge(ch, descClients, float64(n[i]), ep, s)
		}
	}
	seen := map[string]bool{}
	c.src.Errors().Each(func(class string, n int64) {
		seen[class] = true
		counter(ch, descClientErrors, float64(n), class)
	})
	// The classes operators alert on exist from the start, so rate() sees their first error.
	for _, class := range []string{"08", "53", "57", "58", "XX"} {
		if !seen[class] {
			counter(ch, descClientErrors, 0, class)
		}
	}
}
