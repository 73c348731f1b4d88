package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ceilingQuery reads a server's connection ceiling: max_connections and the connections it keeps
// back, superuser_reserved_connections and (PostgreSQL 16 and later) reserved_connections, which
// older servers do not have (NULL); and how many client backends it has now, pgtide's and
// everyone else's. It works on Aurora too.
const ceilingQuery = `SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'),
	current_setting('reserved_connections', true),
	(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')`

// ceilingEvery is how many health checks pass between reads of the ceiling and the client
// backends on one connection (about a second at the default interval): the ceiling changes only
// with a restart or, on Aurora Serverless v2, with capacity (and a restart opens a new
// connection, which reads it at once), but the backends move all the time, and the 80% warning,
// the metrics and the status page show them. SetBackendsEveryCheck makes it every check.
const ceilingEvery = 4

// SetBackendsEveryCheck makes every health check read its node's ceiling and client backends
// (on) instead of every ceilingEvery checks (off, the default): budget_mode = "shared" gates new
// server connections on that count. It applies from each node's next check.
func (c *Cluster) SetBackendsEveryCheck(on bool) { c.backendsEveryCheck.Store(on) }

// SubscribeBackends registers fn to be called with every successful reading of a node's client
// backends (see Node.Backends), from that node's checker goroutine, after the ceiling Event the
// same reading may have caused. at is when the reading began: a connection that finished
// logging in to the server before then is in backends, one that finished later may not be.
// fn must not block; there is no unsubscribe.
func (c *Cluster) SubscribeBackends(fn func(n *Node, backends int, at time.Time)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.backendSubs = append(c.backendSubs[:len(c.backendSubs):len(c.backendSubs)], fn)
}

// checkCeiling reads the node's ceiling on a new connection and every ceilingEvery checks (every
// check with SetBackendsEveryCheck), emits an Event when it is first known or changes, and hands
// the node's client backends to SubscribeBackends' functions. A failed read keeps the last
// ceiling (the next check's health query finds out whether the node is gone) and calls no one.
func (k *checker) checkCeiling(ctx context.Context) {
	every := k.c.backendsEveryCheck.Load()
	if k.conn == nil || k.sinceCeiling >= 0 && k.sinceCeiling < ceilingEvery && !every {
		k.sinceCeiling++
		return
	}
	k.sinceCeiling = 0
	at := k.c.config().Now()
	cctx, cancel := context.WithTimeout(ctx, k.c.config().HealthCheckTimeout)
	rows, err := k.conn.query(cctx, ceilingQuery)
	cancel()
	var maxConns, reserved, backends int
	if err == nil {
		maxConns, reserved, backends, err = parseCeiling(rows)
	}
	k.noteBackendsRead(err, every)
	if err != nil {
		k.sinceCeiling = -1 // again at the next check
		return
	}
	k.n.backends.Store(int32(backends))
	k.noteBusy(maxConns, backends)
	if int(k.n.maxConnections.Load()) != maxConns || int(k.n.reservedConnections.Load()) != reserved {
		k.n.maxConnections.Store(int32(maxConns))
		k.n.reservedConnections.Store(int32(reserved))
		k.c.log.Info("node connection ceiling", "addr", k.n.addr, "max_connections", maxConns, "reserved", reserved)
		k.c.eventMu.Lock()
		s := k.n.loadState()
		k.c.emitLocked(Event{Node: k.n, Up: s.up(), Role: s.role(), PrevUp: s.up(), PrevRole: s.role(), Ceiling: true})
		k.c.eventMu.Unlock()
	}
	k.c.mu.Lock()
	subs := k.c.backendSubs
	k.c.mu.Unlock()
	for _, fn := range subs {
		fn(k.n, backends, at)
	}
}

// noteBackendsRead logs a failed reading of the ceiling and backends: at debug level normally,
// and as a warning, once per episode, when every check reads them (budget_mode = "shared": no
// new server connections open to the node until a reading succeeds), with a line when one does.
func (k *checker) noteBackendsRead(err error, every bool) {
	switch {
	case err != nil && every && !k.backendsFailing:
		k.backendsFailing = true
		k.c.log.Warn("reading the node's client backends failed; no new server connections to it until a reading succeeds",
			"addr", k.n.addr, "err", err)
	case err != nil:
		k.c.log.Debug("reading the connection ceiling failed", "addr", k.n.addr, "err", err)
	case k.backendsFailing:
		k.backendsFailing = false
		k.c.log.Info("reading the node's client backends works again", "addr", k.n.addr)
	}
}

// busyShare is the share of its ceiling a node's backends (all clients, not only pgtide) may
// take before pgtide warns: the seeds' leading indicator of connection exhaustion, 80%.
const busyShare = 0.8

// noteBusy logs a warning when the node's client backends pass busyShare of its ceiling, and a
// line when they are back under, once per change.
func (k *checker) noteBusy(maxConns, backends int) {
	busy := float64(backends) > busyShare*float64(maxConns)
	if busy == k.busy {
		return
	}
	k.busy = busy
	if busy {
		k.c.log.Warn("node's client backends passed 80% of its max_connections (all clients, not only pgtide's)",
			"addr", k.n.addr, "backends", backends, "max_connections", maxConns)
		return
	}
	k.c.log.Info("node's client backends back under 80% of its max_connections",
		"addr", k.n.addr, "backends", backends, "max_connections", maxConns)
}

// parseCeiling reads ceilingQuery's row.
func parseCeiling(rows [][][]byte) (maxConns, reserved, backends int, err error) {
	if len(rows) != 1 || len(rows[0]) != 4 {
		return 0, 0, 0, errors.New("ceiling query: unexpected result shape")
	}
	r := rows[0]
	maxConns, err = strconv.Atoi(string(r[0]))
	if err != nil || maxConns < 1 {
		return 0, 0, 0, fmt.Errorf("ceiling query: max_connections %q", r[0])
	}
	for _, v := range r[1:3] {
		if len(v) == 0 { // reserved_connections before PostgreSQL 16 is NULL
			continue
		}
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return 0, 0, 0, fmt.Errorf("ceiling query: reserved connections %q", v)
		}
		reserved += n
	}
	backends, err = strconv.Atoi(string(r[3]))
	if err != nil || backends < 0 {
		return 0, 0, 0, fmt.Errorf("ceiling query: client backends %q", r[3])
	}
	return maxConns, reserved, backends, nil
}
