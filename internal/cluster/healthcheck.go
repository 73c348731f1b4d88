package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgtls"
)

// checker is one node's health checker. It is owned by its goroutine
// (runChecker); only it writes the node's live state.
type checker struct {
	c      *Cluster
	n      *Node
	conn   *probeConn // reused across checks; nil after an error until the next check reconnects
	target target     // what conn's server is, decided when conn was opened
	misses int        // failed checks in a row
	// sinceCeiling counts checks since the ceiling was last read (see checkCeiling); -1: read
	// it at the next check (a new connection).
	sinceCeiling int
	busy         bool // the node's backends are over 80% of its ceiling (see noteBusy)
	// backendsFailing: the last reading of the ceiling and backends failed while every check
	// reads them (see noteBackendsRead).
	backendsFailing bool
	// behind: the last successful PostgreSQL check found WAL received and not replayed yet (see
	// timeLag).
	behind bool
	// lagRef is the writer's sample the replica's lag was last measured from (see replayLag).
	lagRef lagRef

	// Logged once per episode:
	seen      target // the last connection's target, to log when it changes
	refused   string // SQLSTATE and message of the SQL error the health query fails with; "" when it works
	failing   string // why checks fail otherwise (checkFailure); "" when they pass
	notOwnRow bool   // an Aurora reader's own row was missing from aurora_replica_status()
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
		t.Reset(time.Until(start.Add(jitter(c.config().HealthCheckInterval))))
	}
}

// jitter returns d ±10%, so checkers started together drift apart.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// check runs one health check, bounded by HealthCheckTimeout, and applies
// its result to the node.
func (k *checker) check(ctx context.Context) {
	// For WriterLSNAfter: the writer's WAL position this check finds is at
	// least its position when the check started.
	started := k.c.config().Now()
	if k.conn != nil && k.c.outdated(k.conn) {
		k.closeConn() // reconnect with the login a reload gave
	}
	cctx, cancel := context.WithTimeout(ctx, k.c.config().HealthCheckTimeout)
	h, err := k.probe(cctx)
	cancel()
	if ctx.Err() != nil {
		return // stopping: a check cut short says nothing about the node
	}
	k.n.lastCheck.Store(k.c.config().Now().UnixNano())
	prev := k.n.loadState()
	next := prev | stateChecked
	if err != nil {
		k.misses++
		if k.misses >= k.c.config().HealthCheckFailures || gone(err) {
			next = next.withUp(false)
		}
		if (next^prev)&^stateChecked == 0 { // no state change, so no event to log it
			k.c.log.Debug("health check failed", "addr", k.n.addr, "misses", k.misses, "err", err)
		}
		k.noteRefusal(err)
	} else {
		k.misses = 0
		k.noteAnswer(h)
		role := RoleWriter
		if h.inRecovery {
			role = RoleReader
		}
		next = next.withUp(true).withRole(role)
		lag := k.timeLag(h.lag)
		if role == RoleReader && !k.target.aurora { // Aurora measures its readers' lag itself
			// The writer's samples, where they reach the replica's position, say how long
			// ago the writer was there; the replica's own figure (the age of its last replayed
			// commit) only when they do not, as a figure that may overstate.
			if l, exact := k.c.replayLag(started, h.lsn, &k.lagRef); exact {
				lag = l
			} else {
				lag = max(lag, l)
			}
		}
		k.n.lag.Store(int64(lag))
		k.n.replayLSN.Store(h.lsn)
		if role == RoleWriter {
			k.n.lagBytes.Store(0)
			if h.lsn != 0 {
				k.c.recordWriterLSN(k.n, started, h.lsn)
			}
		} else {
			k.n.lagBytes.Store(k.c.lagBytes(h))
		}
	}
	k.c.setState(k.n, prev, next, err)
	if err == nil {
		k.checkCeiling(ctx)
	}
}

// lagBytes returns how far a replica's answer h is behind the writer: the
// writer's position in the same answer (Aurora), else the current writer's
// most recent sample; -1 when either position is unknown.
func (c *Cluster) lagBytes(h health) int64 {
	if h.lsn == 0 {
		return -1
	}
	w := h.writerLSN
	if w == 0 {
		r := c.currentWriterLSNs()
		if r == nil {
			return -1
		}
		w = r.newest().lsn
	}
	return lsnDistance(w, h.lsn)
}

// noteRefusal records why a check failed, on the node (Node.CheckFailure) and, once per
// episode and again when the reason changes, in the log at warning level, so that failing
// checks are never silent at the default level (a wrong health_check_user password, an
// unreachable host, a server refusing the health query):
//   - a SQL error from the health query (an ErrorResponse): "health query refused by the
//     server", unlike a lost connection or a timeout not going to pass by itself, and a node
//     refusing every check is marked down however well it runs;
//   - anything else (the login refused, no connection, no answer in time): "health checks
//     failing", with the reason.
func (k *checker) noteRefusal(err error) {
	reason := checkFailure(err)
	k.n.failure.Store(&reason)
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	if errors.As(err, &pgErr) && !errors.As(err, &connErr) {
		if key := pgErr.Code + " " + pgErr.Message; key != k.refused {
			k.refused = key
			k.c.log.Warn("health query refused by the server", "addr", k.n.addr,
				"sqlstate", pgErr.Code, "err", pgErr.Message, "aurora", k.target.aurora)
		}
		return
	}
	if reason != k.failing {
		k.failing = reason
		k.c.log.Warn("health checks failing", "addr", k.n.addr, "reason", reason, "err", err,
			"user", k.c.config().User, "database", k.c.config().Database)
	}
}

// noteAnswer logs the end of a refusal or failure episode, and an Aurora reader whose
// own row went missing from aurora_replica_status() or came back.
func (k *checker) noteAnswer(h health) {
	k.n.failure.Store(nil)
	if k.refused != "" {
		k.refused = ""
		k.c.log.Info("health query answered again", "addr", k.n.addr)
	}
	if k.failing != "" {
		k.failing = ""
		k.c.log.Info("health checks pass again", "addr", k.n.addr)
	}
	if missing := !h.ownRow; missing != k.notOwnRow {
		k.notOwnRow = missing
		if missing {
			k.c.log.Warn("aurora: the node's row is not in aurora_replica_status(); its lag is taken as the most lagging reader's",
				"addr", k.n.addr, "server_id", k.target.serverID)
		} else {
			k.c.log.Info("aurora: the node's row is in aurora_replica_status() again", "addr", k.n.addr, "server_id", k.target.serverID)
		}
	}
}

// probe runs the health query, connecting first if needed. On any error the
// connection is closed, to be opened again by the next check.
func (k *checker) probe(ctx context.Context) (health, error) {
	if k.conn == nil {
		if err := k.connect(ctx); err != nil {
			return health{}, err
		}
		k.sinceCeiling = -1
	}
	var h health
	var rows [][][]byte
	var err error
	if k.target.aurora {
		if rows, err = k.conn.query(ctx, auroraHealthQuery); err == nil {
			h, err = parseAuroraHealth(rows, k.target.serverID)
		}
	} else if rows, err = k.conn.query(ctx, pgHealthQuery); err == nil {
		h, err = parsePGHealth(rows)
	}
	if err != nil {
		k.closeConn()
	}
	return h, err
}

// connect opens the checker's connection and decides which health query its
// server gets.
func (k *checker) connect(ctx context.Context) error {
	conn, err := k.c.connect(ctx, k.n.addr)
	if err != nil {
		return err
	}
	t, err := k.c.detect(ctx, conn, k.n.addr)
	if err != nil {
		conn.close(ctx)
		return err
	}
	k.conn, k.target = conn, t
	if t.serverID != "" {
		k.n.setInstanceID(t.serverID) // before the check's result: its event finds the id known
	}
	if t != k.seen && (t.aurora || k.seen.aurora) {
		k.c.log.Info("health check: server kind", "addr", k.n.addr, "aurora", t.aurora, "server_id", t.serverID)
	}
	k.seen = t
	return nil
}

func (k *checker) closeConn() {
	if k.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.c.config().HealthCheckTimeout)
	k.conn.close(ctx)
	cancel()
	k.conn = nil
}

// timeLag returns the time lag to record from the lag a health query measured. On PostgreSQL
// the query measures the age of the last replayed transaction whenever the replica has WAL it
// has not replayed yet; between the moment a replica receives a transaction and the moment it
// replays it (well under a millisecond) that age is the time since the previous transaction,
// which on a quiet primary may be minutes. So a replica counts as lagging in time only when two
// checks in a row find it behind: one that really lags stays behind, and its figure is then the
// age of what it replayed last. A failed check in between changes nothing: a lagging replica
// whose check failed once is still behind at the next. (A lag shorter than the check interval under sparse writes goes
// unseen in time; the bytes lag still sees it.) Aurora measures the lag itself.
func (k *checker) timeLag(measured time.Duration) time.Duration {
	if k.target.aurora {
		return measured
	}
	was := k.behind
	k.behind = measured > 0
	if !was {
		return 0
	}
	return measured
}

// checkFailure says in a few words, without addresses, why a check failed: what clients are
// told when no writer is known (see Cluster.NoWriterReason).
func checkFailure(err error) string {
	var pgErr *pgconn.PgError
	var ne net.Error
	var tlsErr *pgtls.Error
	switch {
	case errors.Is(err, errIAMNeedsTLS):
		return errIAMNeedsTLS.Error()
	case errors.Is(err, errIAMToken):
		return errIAMToken.Error() + " (see pgtide's log)"
	case errors.As(err, &tlsErr):
		return "TLS with the server failed: " + tlsErr.Reason()
	case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28"):
		return "the server refuses the health check's login (health_check_user): " + pgErr.Message
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		return "health_check_database does not exist"
	case errors.As(err, &pgErr) && (pgErr.Code == "57P03" || pgErr.Code == "57P01"):
		return "the server is starting up or shutting down"
	case errors.As(err, &pgErr):
		return "the health query fails: " + pgErr.Message
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, new(*net.DNSError)):
		return "the host name does not resolve"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no answer within health_check_timeout"
	}
	return "no connection"
}

// gone reports whether a failed check proves the node is not serving now, so that it is down at
// once rather than after health_check_failures misses: nothing listens on its port (connection
// refused), or the server says it is shutting down or starting up (57P01, 57P02, 57P03, in the
// health query's answer or at login). During a failover this keeps the old primary from counting
// as a second writer while the promoted replica is already seen. A timeout or a lost connection
// proves nothing by itself (a busy server, an idle connection closed): those count as misses.
func gone(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03":
			return true
		}
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
