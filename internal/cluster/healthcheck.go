package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// healthQuery reports whether the server is a replica and, if so, how far
// its replay is behind. An idle primary sends no transactions, so the replay
// timestamp ages although the replica has everything: a replica that has
// replayed all it received reports no lag. pg_last_wal_receive_lsn() is NULL
// when nothing streams (archive recovery); then the timestamp is all there is.
const healthQuery = `SELECT pg_is_in_recovery(),
	CASE
		WHEN NOT pg_is_in_recovery() THEN 0
		WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
		ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
	END`

// checker is one node's health checker. It is owned by its goroutine
// (runChecker); only it writes the node's live state.
type checker struct {
	c      *Cluster
	n      *Node
	conn   *probeConn // reused across checks; nil after an error until the next check reconnects
	misses int        // failed checks in a row
}

// runChecker checks n at once and then every HealthCheckInterval (±10%)
// until ctx ends, then closes its connection.
func (c *Cluster) runChecker(ctx context.Context, n *Node) {
	k := &checker{c: c, n: n}
	defer k.closeConn()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		k.check(ctx)
		if ctx.Err() != nil {
			return
		}
		// Measured from the start so a slow check does not stretch the
		// period; a check that took longer than the period is followed at once.
		t.Reset(time.Until(start.Add(jitter(c.cfg.HealthCheckInterval))))
	}
}

// jitter returns d ±10%, so checkers started together drift apart.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// check runs one health check, bounded by HealthCheckTimeout, and applies
// its result to the node.
func (k *checker) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, k.c.cfg.HealthCheckTimeout)
	inRecovery, lag, err := k.probe(cctx)
	cancel()
	if ctx.Err() != nil {
		return // stopping: a check cut short says nothing about the node
	}
	k.n.lastCheck.Store(k.c.cfg.Now().UnixNano())
	prev := k.n.loadState()
	next := prev | stateChecked
	if err != nil {
		k.misses++
		if k.misses >= k.c.cfg.HealthCheckFailures {
			next = next.withUp(false)
		}
		if (next^prev)&^stateChecked == 0 { // no state change, so no event to log it
			k.c.log.Debug("health check failed", "addr", k.n.addr, "misses", k.misses, "err", err)
		}
	} else {
		k.misses = 0
		role := RoleWriter
		if inRecovery {
			role = RoleReader
		}
		next = next.withUp(true).withRole(role)
		k.n.lag.Store(int64(lag))
	}
	k.c.setState(k.n, prev, next, err)
}

// probe runs the health query, connecting first if needed. On any error the
// connection is closed, to be opened again by the next check.
func (k *checker) probe(ctx context.Context) (inRecovery bool, lag time.Duration, err error) {
	if k.conn == nil {
		conn, err := k.c.connect(ctx, k.n.addr)
		if err != nil {
			return false, 0, err
		}
		k.conn = conn
	}
	rows, err := k.conn.query(ctx, healthQuery)
	if err == nil {
		inRecovery, lag, err = parseHealth(rows)
	}
	if err != nil {
		k.closeConn()
	}
	return inRecovery, lag, err
}

func (k *checker) closeConn() {
	if k.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.c.cfg.HealthCheckTimeout)
	k.conn.close(ctx)
	cancel()
	k.conn = nil
}

// maxLagSeconds keeps an absurd lag from overflowing time.Duration.
const maxLagSeconds = 100 * 365 * 24 * 3600

func parseHealth(rows [][][]byte) (inRecovery bool, lag time.Duration, err error) {
	if len(rows) != 1 || len(rows[0]) != 2 {
		return false, 0, errors.New("health query: unexpected result shape")
	}
	switch string(rows[0][0]) {
	case "t":
		inRecovery = true
	case "f":
	default:
		return false, 0, fmt.Errorf("health query: pg_is_in_recovery() = %q", rows[0][0])
	}
	secs, err := strconv.ParseFloat(string(rows[0][1]), 64)
	if err != nil {
		return false, 0, fmt.Errorf("health query: lag %q: %w", rows[0][1], err)
	}
	switch {
	case secs < 0: // replica clock behind the primary's
		secs = 0
	case secs > maxLagSeconds:
		secs = maxLagSeconds
	}
	return inRecovery, time.Duration(secs * float64(time.Second)), nil
}
