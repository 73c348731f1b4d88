package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// auroraQuery lists an Aurora cluster's instances. The age of each row is
// computed by the server, so the proxy's clock does not matter.
const auroraQuery = `SELECT server_id, session_id, replica_lag_in_msec,
	EXTRACT(EPOCH FROM now() - last_update_timestamp)
	FROM aurora_replica_status()`

const (
	// auroraWriterSession is the session_id of the writer's row.
	auroraWriterSession = "MASTER_SESSION_ID"
	// auroraStaleAfter: a row not updated for this long is an instance that
	// is gone or going (deleted, failed); Aurora keeps listing it for a while.
	auroraStaleAfter = 5 * time.Minute
)

// discoverer is the discovery loop's state, owned by its goroutine.
type discoverer struct {
	c        *Cluster
	conn     *probeConn // aurora: the discovery connection, kept while it works
	connAddr string
	failing  bool // in a failure streak: warned already
}

// runDiscovery updates the topology at once and then every
// DiscoveryInterval (or when SetHosts asks) until ctx ends.
func (c *Cluster) runDiscovery(ctx context.Context) {
	d := &discoverer{c: c}
	defer d.closeConn()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.discover:
		}
		d.round(ctx)
		if ctx.Err() != nil {
			return
		}
		if !c.discovered.Swap(true) {
			c.checked.notify() // WaitChecked waits for the first round
		}
		t.Reset(jitter(c.config().DiscoveryInterval))
	}
}

// round runs one discovery and applies its result. A failure keeps the
// current topology and warns once per failure streak.
func (d *discoverer) round(ctx context.Context) {
	var addrs []string
	var err error
	switch d.c.config().Discovery {
	case DiscoveryAurora:
		addrs, err = d.aurora(ctx)
	case DiscoveryDNS:
		addrs, err = d.dns(ctx)
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		if !d.failing {
			d.failing = true
			d.c.log.Warn("topology discovery failed; keeping the current nodes",
				"discovery", d.c.config().Discovery, "nodes", len(*d.c.nodes.Load()), "err", err)
		} else {
			d.c.log.Debug("topology discovery failed again", "discovery", d.c.config().Discovery, "err", err)
		}
		return
	}
	if d.failing {
		d.failing = false
		d.c.log.Info("topology discovery works again", "discovery", d.c.config().Discovery)
	}
	hosts := make([]Host, len(addrs))
	for i, a := range addrs {
		hosts[i] = Host{Addr: a, Weight: d.c.weightOf(a)}
	}
	d.c.setTopology(hosts)
}

// dns resolves DNSName's host: every address, with DNSName's port, is a
// node. Addresses are sorted so a round-robin answer does not reorder Nodes.
func (d *discoverer) dns(ctx context.Context) ([]string, error) {
	host, port, err := net.SplitHostPort(d.c.config().DNSName)
	if err != nil {
		return nil, fmt.Errorf("dns discovery name %q: %w", d.c.config().DNSName, err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.c.config().HealthCheckTimeout)
	defer cancel()
	ips, err := d.c.config().Resolver.LookupHost(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	addrs := make([]string, len(ips))
	for i, ip := range ips {
		addrs[i] = net.JoinHostPort(ip, port)
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// aurora asks aurora_replica_status() on the first node that answers: the
// one that answered last time, then the current nodes in order, then the
// configured seeds.
func (d *discoverer) aurora(ctx context.Context) ([]string, error) {
	var errs []error
	failed := ""
	if d.conn != nil && d.c.outdated(d.conn) {
		d.closeConn() // reconnect with the login a reload gave
	}
	if d.conn != nil {
		addrs, err := d.auroraOn(ctx, d.conn)
		if err == nil {
			return addrs, nil
		}
		failed = d.connAddr
		errs = append(errs, fmt.Errorf("%s: %w", failed, err))
		d.closeConn()
	}
	for _, addr := range d.candidates() {
		if addr == failed {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cctx, cancel := context.WithTimeout(ctx, d.c.config().HealthCheckTimeout)
		conn, err := d.c.connect(cctx, addr)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		d.conn, d.connAddr = conn, addr
		addrs, err := d.auroraOn(ctx, conn)
		if err == nil {
			return addrs, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		d.closeConn()
	}
	if len(errs) == 0 {
		return nil, errors.New("no node to ask")
	}
	return nil, errors.Join(errs...)
}

func (d *discoverer) candidates() []string {
	var addrs []string
	for _, n := range *d.c.nodes.Load() {
		addrs = append(addrs, n.addr)
	}
	d.c.mu.Lock()
	for _, h := range d.c.seeds {
		addrs = append(addrs, h.Addr)
	}
	d.c.mu.Unlock()
	return dedupe(addrs)
}

func (d *discoverer) auroraOn(ctx context.Context, conn *probeConn) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.c.config().HealthCheckTimeout)
	defer cancel()
	rows, err := conn.query(ctx, auroraQuery)
	if err != nil {
		return nil, err
	}
	return d.auroraRows(rows)
}

// auroraRows turns aurora_replica_status() rows into node addresses, sorted
// by server_id. Stale rows are skipped, except the writer's; a NULL
// timestamp counts as fresh.
func (d *discoverer) auroraRows(rows [][][]byte) ([]string, error) {
	type inst struct {
		id     string
		writer bool
	}
	var insts []inst
	for _, r := range rows {
		if len(r) != 4 || r[0] == nil {
			return nil, errors.New("aurora_replica_status(): unexpected row")
		}
		in := inst{id: string(r[0]), writer: string(r[1]) == auroraWriterSession}
		if r[3] != nil && !in.writer {
			age, err := strconv.ParseFloat(string(r[3]), 64)
			if err != nil {
				return nil, fmt.Errorf("aurora_replica_status(): age of %s: %w", in.id, err)
			}
			if age := time.Duration(age * float64(time.Second)); age > auroraStaleAfter {
				d.c.log.Debug("aurora discovery: ignoring a stale instance", "server_id", in.id, "age", age)
				continue
			}
		}
		if in.writer {
			d.c.log.Debug("aurora discovery: writer instance", "server_id", in.id, "lag_ms", string(r[2]))
		}
		insts = append(insts, in)
	}
	if len(insts) == 0 {
		return nil, errors.New("aurora_replica_status(): no current instances")
	}
	slices.SortFunc(insts, func(a, b inst) int { return strings.Compare(a.id, b.id) })
	addrs := make([]string, 0, len(insts))
	for _, in := range insts {
		addrs = append(addrs, strings.ReplaceAll(d.c.config().AuroraTemplate, "{id}", in.id))
	}
	return dedupe(addrs), nil
}

func (d *discoverer) closeConn() {
	if d.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.c.config().HealthCheckTimeout)
	d.conn.close(ctx)
	cancel()
	d.conn, d.connAddr = nil, ""
}

// dedupe drops repeated strings, keeping the first of each in order.
func dedupe(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
