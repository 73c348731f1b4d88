package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The health check sends one query per check: pgHealthQuery to PostgreSQL,
// auroraHealthQuery to Aurora PostgreSQL, which refuses the WAL functions of
// the first (SQLSTATE 0A000, "Function pg_last_xlog_receive_location() is
// currently not supported for Aurora"; on the writer pg_current_wal_lsn()
// fails with 55000, "wal_level must be set to 'logical'"). Which one a
// server gets is decided once per health-check connection, at connect
// (detect). Both take the role from pg_is_in_recovery(), which Aurora
// answers as PostgreSQL does: true on a reader, false on the writer (AWS's
// own drivers ask it the same way).
//
// pg_is_in_recovery() is read once, in a subquery that OFFSET 0 keeps from
// being pulled up, so the columns agree even while the server is promoted.

// pgHealthQuery returns the role, a WAL position and the lag in seconds.
// The position is the replica's replay position, or the writer's flushed WAL
// position, which is what its replicas can be sent (WAL written but not yet
// flushed, such as background records before wal_writer_delay passes, is not
// sent: counting it would make healthy replicas look behind).
//
// The lag is the age of the last transaction the replica replayed, but only
// while it has received WAL it has not replayed: an idle primary sends no
// transactions, so that timestamp ages although the replica has everything,
// and a replica that has replayed all it received reports no lag. A replica
// whose WAL stops arriving (a stalled walreceiver) has replayed all it
// received and reports no lag in time either; the bytes lag, the writer's
// position minus the replay position, shows it, and so does the time lag
// pgtide derives from the writer's sampled positions (Cluster.replayLag), which replaces this
// figure wherever the samples reach the replica's position: after a quiet period on the writer
// the age of the last replayed transaction counts the quiet period too. After a restart a replica
// may have replayed past what its walreceiver has received so far (WAL from
// its own pg_wal, or nothing streamed yet): that is no lag either, hence <=.
// pg_last_wal_receive_lsn()
// is NULL when nothing streams (archive recovery); then the timestamp is all
// there is.
const pgHealthQuery = `SELECT rec,
	CASE WHEN rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END,
	CASE
		WHEN NOT rec THEN 0
		WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
		ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
	END
	FROM (SELECT pg_is_in_recovery() AS rec OFFSET 0) r`

// auroraHealthQuery returns the role and every row of aurora_replica_status()
// (none: one row of NULLs), which parseAuroraHealth reads the node's own row
// and the writer's from. Every column is cast to text so that their types,
// which AWS does not document, do not matter (the LSNs, decimal numbers on
// Aurora, are parsed in either form).
//
// The columns, as AWS documents aurora_replica_status() (Aurora User Guide,
// "aurora_replica_status"): server_id is the DB instance identifier;
// session_id is 'MASTER_SESSION_ID' on the writer's row; replica_lag_in_msec
// is how far the reader lags behind the writer (NULL on the writer's row);
// durable_lsn is, on the writer's row, the volume durable LSN (VDL) in
// effect and, on a reader's, "the VDL of the primary up to which the
// secondary has successfully been applied"; current_read_lsn is "the LSN of
// the most recent snapshot that's been applied to all readers".
const auroraHealthQuery = `SELECT r.rec, s.server_id::text, s.session_id::text,
	s.replica_lag_in_msec::text, s.durable_lsn::text, s.current_read_lsn::text
	FROM (SELECT pg_is_in_recovery() AS rec OFFSET 0) r
	LEFT JOIN aurora_replica_status() s ON true`

// auroraDetectQuery tells Aurora from PostgreSQL without an error on either:
// aurora_version() exists only on Aurora; and, since it has been reported
// missing from pg_proc on Aurora (where it still answers), also Aurora's
// aurora_stat_utils among rds.extensions, the test AWS's own drivers use.
const auroraDetectQuery = `SELECT to_regproc('aurora_version') IS NOT NULL
	OR EXISTS (SELECT FROM pg_settings WHERE name = 'rds.extensions' AND setting LIKE '%aurora_stat_utils%')`

// auroraInstanceQuery names the Aurora instance a connection is on (Aurora
// PostgreSQL 13.7, 12.11, 11.16, 10.21 and later).
const auroraInstanceQuery = `SELECT aurora_db_instance_identifier()`

// target is what a health-check connection's server is, decided at connect.
type target struct {
	aurora bool
	// serverID is the node's server_id in aurora_replica_status(); "" when
	// it could not be told (see auroraServerID).
	serverID string
}

// health is one successful health check's answer.
type health struct {
	inRecovery bool
	lag        time.Duration
	// lsn is a replica's replay (Aurora: applied) position or the writer's
	// WAL position; 0 when unknown.
	lsn uint64
	// writerLSN is, on Aurora, the writer's durable_lsn in the same answer;
	// 0 when unknown, and always on PostgreSQL.
	writerLSN uint64
	// ownRow is false when an Aurora reader's own row was not found and the
	// values are the most lagging reader's.
	ownRow bool
}

// detect decides, on a new connection, which health query its server gets.
// With aurora discovery the cluster is Aurora whatever the detection says.
func (c *Cluster) detect(ctx context.Context, conn *probeConn, addr string) (target, error) {
	var t target
	if c.config().Discovery == DiscoveryAurora {
		t.aurora = true
	} else {
		rows, err := conn.query(ctx, auroraDetectQuery)
		if err != nil {
			return t, fmt.Errorf("telling Aurora from PostgreSQL: %w", err)
		}
		if len(rows) != 1 || len(rows[0]) != 1 {
			return t, errors.New("telling Aurora from PostgreSQL: unexpected result shape")
		}
		t.aurora = string(rows[0][0]) == "t"
	}
	if !t.aurora {
		return t, nil
	}
	id, err := c.auroraServerID(ctx, conn, addr)
	t.serverID = id
	return t, err
}

// auroraServerID finds the node's row in aurora_replica_status(): the
// server_id that the aurora template turns into addr (so discovered nodes
// need no query); else what aurora_db_instance_identifier() says, where it
// exists; else the first label of the host name, which is the instance
// identifier in an Aurora instance endpoint
// (<instance>.<cluster>.<region>.rds.amazonaws.com). "" when none applies;
// then a reader is given the most lagging reader's values.
func (c *Cluster) auroraServerID(ctx context.Context, conn *probeConn, addr string) (string, error) {
	if id := serverIDFromTemplate(c.config().AuroraTemplate, addr); id != "" {
		return id, nil
	}
	rows, err := conn.query(ctx, auroraInstanceQuery)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		// An older Aurora without the function: the connection is still good.
		c.log.Debug("health check: no aurora_db_instance_identifier()", "addr", addr, "err", err)
	case err != nil:
		return "", fmt.Errorf("naming the Aurora instance: %w", err)
	case len(rows) == 1 && len(rows[0]) == 1 && len(rows[0][0]) > 0:
		return string(rows[0][0]), nil
	}
	return hostLabel(addr), nil
}

// serverIDFromTemplate returns the id that template (an AuroraTemplate with
// {id} once) turns into addr; "" if none does.
func serverIDFromTemplate(template, addr string) string {
	prefix, suffix, ok := strings.Cut(template, "{id}")
	if !ok || strings.Contains(suffix, "{id}") || len(addr) <= len(prefix)+len(suffix) ||
		!strings.HasPrefix(addr, prefix) || !strings.HasSuffix(addr, suffix) {
		return ""
	}
	return addr[len(prefix) : len(addr)-len(suffix)]
}

// hostLabel returns the first label of addr's host name; "" for an IP address.
func hostLabel(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) != nil {
		return ""
	}
	label, _, _ := strings.Cut(host, ".")
	return label
}

// maxLagSeconds keeps an absurd lag from overflowing time.Duration.
const maxLagSeconds = 100 * 365 * 24 * 3600

// lagOf turns a lag in seconds, as a server computed it, into a Duration:
// negative (the replica's clock behind the primary's) is 0.
func lagOf(secs float64) time.Duration {
	switch {
	case secs < 0:
		secs = 0
	case secs > maxLagSeconds:
		secs = maxLagSeconds
	}
	return time.Duration(secs * float64(time.Second))
}

func parseRecovery(b []byte) (bool, error) {
	switch string(b) {
	case "t":
		return true, nil
	case "f":
		return false, nil
	}
	return false, fmt.Errorf("pg_is_in_recovery() = %q", b)
}

// parsePGHealth reads pgHealthQuery's answer.
func parsePGHealth(rows [][][]byte) (health, error) {
	var h health
	if len(rows) != 1 || len(rows[0]) != 3 {
		return h, errors.New("health query: unexpected result shape")
	}
	r := rows[0]
	var err error
	if h.inRecovery, err = parseRecovery(r[0]); err != nil {
		return h, fmt.Errorf("health query: %w", err)
	}
	if h.lsn, _, err = parseLSN(r[1]); err != nil {
		return h, fmt.Errorf("health query: %w", err)
	}
	secs, err := strconv.ParseFloat(string(r[2]), 64)
	if err != nil {
		return h, fmt.Errorf("health query: lag %q: %w", r[2], err)
	}
	h.lag = lagOf(secs)
	h.ownRow = true
	return h, nil
}

// parseAuroraHealth reads auroraHealthQuery's answer for the node whose
// server_id is serverID ("" unknown).
//
// A reader's applied position is its row's durable_lsn: AWS defines it, for
// a reader, as the writer's VDL up to which the reader has applied the log,
// the same scale as the writer row's durable_lsn, which is the writer's
// position. Where a reader's durable_lsn is NULL its current_read_lsn is
// used, defined as applied to all readers and so no later than this
// reader's. A reader whose row is not found gets the most lagging reader's
// values (the highest lag, the lowest position): never better than its own.
func parseAuroraHealth(rows [][][]byte, serverID string) (health, error) {
	var h health
	if len(rows) == 0 {
		return h, errors.New("aurora health query: unexpected result shape")
	}
	var err error
	if h.inRecovery, err = parseRecovery(rows[0][0]); err != nil {
		return h, fmt.Errorf("aurora health query: %w", err)
	}
	var own auroraRow
	var worstLag time.Duration // of every reader row
	var worstLSN uint64
	readers, positions := 0, 0 // reader rows, and those with a position
	for _, r := range rows {
		if len(r) != 6 {
			return h, errors.New("aurora health query: unexpected result shape")
		}
		if r[1] == nil {
			continue // aurora_replica_status() returned no rows
		}
		row, err := parseAuroraRow(r)
		if err != nil {
			return h, fmt.Errorf("aurora health query: %w", err)
		}
		if row.writer {
			h.writerLSN = row.lsn
			continue
		}
		if serverID != "" && strings.EqualFold(row.id, serverID) {
			own, h.ownRow = row, true
		}
		readers++
		worstLag = max(worstLag, row.lag)
		if row.lsnOK {
			if positions == 0 || row.lsn < worstLSN {
				worstLSN = row.lsn
			}
			positions++
		}
	}
	switch {
	case !h.inRecovery:
		h.lsn, h.ownRow = h.writerLSN, true
	case h.ownRow:
		h.lag, h.lsn = own.lag, own.lsn
	default:
		h.lag = worstLag
		if positions == readers { // one reader without a position: the worst is unknown
			h.lsn = worstLSN
		}
	}
	return h, nil
}

// auroraRow is one row of aurora_replica_status(), as auroraHealthQuery has it.
type auroraRow struct {
	id     string
	writer bool
	lag    time.Duration
	lsn    uint64 // durable_lsn, else current_read_lsn
	lsnOK  bool
}

func parseAuroraRow(r [][]byte) (auroraRow, error) {
	row := auroraRow{id: string(r[1]), writer: string(r[2]) == auroraWriterSession}
	if r[3] != nil {
		ms, err := strconv.ParseFloat(string(r[3]), 64)
		if err != nil {
			return row, fmt.Errorf("replica_lag_in_msec of %s: %q: %w", row.id, r[3], err)
		}
		row.lag = lagOf(ms / 1000)
	}
	var err error
	if row.lsn, row.lsnOK, err = parseLSN(r[4]); err != nil {
		return row, fmt.Errorf("durable_lsn of %s: %w", row.id, err)
	}
	if !row.lsnOK {
		if row.lsn, row.lsnOK, err = parseLSN(r[5]); err != nil {
			return row, fmt.Errorf("current_read_lsn of %s: %w", row.id, err)
		}
	}
	return row, nil
}
