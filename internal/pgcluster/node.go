package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Node is one PostgreSQL server of a Cluster: a data directory, a log file
// and a loopback port. Its methods may be called from several goroutines;
// operations that run pg_ctl or edit the data directory are serialized per
// node.
type Node struct {
	c       *Cluster // owner: binaries, credentials, logging
	name    string   // immutable
	dataDir string   // immutable
	logFile string   // immutable; outside dataDir so pg_basebackup/pg_rewind leave it alone

	// port changes only while the node's first start retries after a port
	// clash, before the node is handed to the caller.
	port atomic.Int32

	opMu sync.Mutex // serializes pg_ctl runs and data directory edits
	// running says the postmaster was started through this Node and not yet
	// stopped through it. Written with opMu held; read without.
	running atomic.Bool
}

// Name returns "node0", "node1", ... in creation order.
func (n *Node) Name() string { return n.name }

// Host returns the address the node listens on: always "127.0.0.1".
func (n *Node) Host() string { return "127.0.0.1" }

// Port returns the node's TCP port. It stays the same across restarts.
func (n *Node) Port() int { return int(n.port.Load()) }

// Addr returns "127.0.0.1:PORT".
func (n *Node) Addr() string { return n.Host() + ":" + strconv.Itoa(n.Port()) }

// DataDir returns the node's data directory (under Cluster.Dir).
func (n *Node) DataDir() string { return n.dataDir }

// LogFile returns the server log, which accumulates across restarts and
// survives until Cluster.Close.
func (n *Node) LogFile() string { return n.logFile }

// Running reports whether the node was started through this package and
// not stopped since. A server that crashed on its own still reports true.
func (n *Node) Running() bool { return n.running.Load() }

// ConnString returns a libpq keyword/value connection string for user and
// database on this node, without TLS.
func (n *Node) ConnString(user, db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		n.Host(), n.Port(), connValue(user), connValue(db))
}

// connValue quotes a connection string value only when it has to.
func connValue(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, `'`, `\'`) + "'"
}

// Start starts a stopped node (pg_ctl start -w) and waits until it accepts
// connections. It is an error if the node is already running.
func (n *Node) Start(ctx context.Context) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	return n.startLocked(ctx, false)
}

// Stop shuts the node down cleanly (pg_ctl stop -m fast). Stopping a
// stopped node is a no-op.
func (n *Node) Stop(ctx context.Context) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	return n.stopLocked(ctx, "fast")
}

// Kill stops the node without a shutdown checkpoint (pg_ctl stop -m
// immediate), as a crash would; the next start runs crash recovery. Killing
// a stopped node is a no-op.
func (n *Node) Kill(ctx context.Context) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	return n.stopLocked(ctx, "immediate")
}

// Restart stops the node (fast) if it is running, then starts it.
func (n *Node) Restart(ctx context.Context) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if err := n.stopLocked(ctx, "fast"); err != nil {
		return err
	}
	return n.startLocked(ctx, false)
}

// Promote ends recovery on a running replica (pg_ctl promote -w) and returns
// once it accepts writes. Other replicas keep following their old upstream;
// use Follow or AddReplica to attach replicas to the new primary.
func (n *Node) Promote(ctx context.Context) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if !n.running.Load() {
		return fmt.Errorf("pgcluster: promote %s: not running", n.name)
	}
	if _, err := n.c.run.run(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", n.dataDir); err != nil {
		return n.withLog(fmt.Errorf("pgcluster: promote %s: %w", n.name, err))
	}
	n.c.logf("pgcluster: %s promoted", n.name)
	return nil
}

// Follow turns the stopped node n into a streaming replica of the running
// node primary, e.g. an old primary rejoining after a failover, then starts
// it and waits until it streams. It runs pg_rewind first, which rewinds the
// data directory only if n's history diverged from primary's (pg_rewind
// decides, and says "no rewind required" otherwise); a node that was killed
// gets crash recovery from pg_rewind before that.
func (n *Node) Follow(ctx context.Context, primary *Node) error {
	if primary == nil || primary.c != n.c || primary == n {
		return fmt.Errorf("pgcluster: follow: %s needs another node of its cluster to follow", n.name)
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.running.Load() {
		return fmt.Errorf("pgcluster: follow: %s is running; stop it first", n.name)
	}
	if !primary.Running() {
		return fmt.Errorf("pgcluster: follow: %s is not running", primary.name)
	}
	// pg_rewind's single-user crash recovery refuses standby mode; the
	// signal is written again below.
	for _, f := range []string{"standby.signal", "recovery.signal"} {
		if err := os.Remove(filepath.Join(n.dataDir, f)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("pgcluster: follow: %w", err)
		}
	}
	// pg_rewind reads the source's timeline from its control file, which a
	// freshly promoted server updates only at its first checkpoint; without
	// one, PostgreSQL 15 reports "no rewind required" for a diverged node.
	if err := primary.execSQL(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("pgcluster: follow: %w", err)
	}
	out, err := n.c.run.run(ctx, "pg_rewind", "--target-pgdata="+n.dataDir,
		"--source-server="+primary.ConnString("postgres", "postgres"), "--no-sync")
	if err != nil {
		return fmt.Errorf("pgcluster: follow: %s: %w", n.name, err)
	}
	n.c.logf("pgcluster: %s: pg_rewind from %s: %s", n.name, primary.name, lastLine(out))
	// pg_rewind copies primary's configuration files, port and all, so the
	// node's own settings are written after it.
	if err := n.writeNodeConf(primary); err != nil {
		return err
	}
	if err := n.c.run.writeFile(filepath.Join(n.dataDir, "standby.signal"), nil); err != nil {
		return fmt.Errorf("pgcluster: follow: %w", err)
	}
	if err := n.startLocked(ctx, false); err != nil {
		return err
	}
	return n.waitStreaming(ctx, primary)
}

// IsInRecovery reports whether the node is a replica (SELECT
// pg_is_in_recovery()).
func (n *Node) IsInRecovery(ctx context.Context) (bool, error) {
	conn, err := n.connect(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var in bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in); err != nil {
		return false, fmt.Errorf("pgcluster: %s: %w", n.name, err)
	}
	return in, nil
}

func (n *Node) String() string { return n.name + "(" + n.Addr() + ")" }

// connect opens a superuser connection; the caller owns and closes it.
func (n *Node) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, n.ConnString("postgres", "postgres"))
	if err != nil {
		return nil, fmt.Errorf("pgcluster: connect %s: %w", n.name, err)
	}
	return conn, nil
}

func (n *Node) execSQL(ctx context.Context, stmts ...string) error {
	if len(stmts) == 0 {
		return nil
	}
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("pgcluster: %s: statement %d: %w", n.name, i, err)
		}
	}
	return nil
}

// writeNodeConf writes the settings that belong to this node rather than to
// the cluster. With upstream set, the node streams from it once it has a
// standby.signal. Only while the node is stopped.
func (n *Node) writeNodeConf(upstream *Node) error {
	settings := [][2]string{
		{"port", strconv.Itoa(n.Port())},
		{"cluster_name", n.name},
	}
	if upstream != nil {
		settings = append(settings,
			// application_name lets waitStreaming find this node in the
			// upstream's pg_stat_replication.
			[2]string{"primary_conninfo", fmt.Sprintf("host=%s port=%d user=postgres application_name=%s sslmode=disable",
				upstream.Host(), upstream.Port(), n.name)},
			[2]string{"recovery_target_timeline", "latest"},
		)
	}
	if err := setAutoConf(n.c.run, n.dataDir, settings); err != nil {
		return fmt.Errorf("pgcluster: %s: write postgresql.auto.conf: %w", n.name, err)
	}
	return nil
}

// startLocked starts the postmaster and waits until it takes connections.
// newPortOnClash allows moving to another port when the chosen one was taken
// meanwhile; only for a node's first start, since callers hold on to Addr
// after that. The caller holds opMu.
func (n *Node) startLocked(ctx context.Context, newPortOnClash bool) error {
	if n.running.Load() {
		return fmt.Errorf("pgcluster: start %s: already running", n.name)
	}
	for attempt := 1; ; attempt++ {
		logStart := fileSize(n.logFile)
		_, err := n.c.run.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", n.dataDir, "-l", n.logFile)
		if err == nil {
			break
		}
		err = n.withLog(fmt.Errorf("pgcluster: start %s: %w", n.name, err))
		// pg_ctl gives up waiting but leaves a slow server running.
		if cerr := n.forceStop(); cerr != nil {
			return errors.Join(err, cerr)
		}
		if !newPortOnClash || attempt >= 5 || !portClash(readFrom(n.logFile, logStart)) {
			return err
		}
		port, perr := n.c.freePort()
		if perr != nil {
			return errors.Join(err, perr)
		}
		n.c.logf("pgcluster: %s: port %d taken, retrying on %d", n.name, n.Port(), port)
		n.port.Store(int32(port))
		if werr := setAutoConf(n.c.run, n.dataDir, [][2]string{{"port", strconv.Itoa(port)}}); werr != nil {
			return errors.Join(err, werr)
		}
	}
	n.running.Store(true)
	err := poll(ctx, readyTimeout, func(ctx context.Context) (bool, error) {
		conn, err := n.connect(ctx)
		if err != nil {
			return false, err
		}
		defer conn.Close(context.Background())
		return conn.Ping(ctx) == nil, nil
	})
	if err != nil {
		err = n.withLog(fmt.Errorf("pgcluster: %s started but takes no connections: %w", n.name, err))
		return errors.Join(err, n.stopLocked(context.Background(), "immediate"))
	}
	n.c.logf("pgcluster: %s started on %s", n.name, n.Addr())
	return nil
}

func portClash(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

// stopLocked runs pg_ctl stop in the given mode. A node that is not running
// (no postmaster.pid) is left alone. The caller holds opMu.
func (n *Node) stopLocked(ctx context.Context, mode string) error {
	if !n.running.Load() && !n.hasPIDFile() {
		return nil
	}
	_, err := n.c.run.run(ctx, "pg_ctl", "stop", "-m", mode, "-w", "-t", "60", "-D", n.dataDir)
	if err != nil && n.alive(ctx) {
		return n.withLog(fmt.Errorf("pgcluster: stop %s: %w", n.name, err))
	}
	// Either stopped now or already gone (crashed, stale postmaster.pid).
	if n.running.Swap(false) {
		n.c.logf("pgcluster: %s stopped (%s)", n.name, mode)
	}
	return nil
}

// forceStop ends whatever a failed start left behind. The caller holds opMu.
func (n *Node) forceStop() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return n.stopLocked(ctx, "immediate")
}

// alive asks pg_ctl status whether a postmaster runs on the data directory.
func (n *Node) alive(ctx context.Context) bool {
	_, err := n.c.run.run(ctx, "pg_ctl", "status", "-D", n.dataDir)
	return err == nil
}

func (n *Node) hasPIDFile() bool {
	_, err := os.Stat(filepath.Join(n.dataDir, "postmaster.pid"))
	return err == nil
}

// discard stops a node that never made it into the cluster and removes its
// data directory; its log file stays for Close to remove.
func (n *Node) discard() {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if err := n.forceStop(); err != nil {
		n.c.logf("pgcluster: discard %s: %v", n.name, err)
	}
	os.RemoveAll(n.dataDir)
}

// waitStreaming waits until n is in recovery and upstream lists it in
// pg_stat_replication as streaming.
func (n *Node) waitStreaming(ctx context.Context, upstream *Node) error {
	err := poll(ctx, streamingTimeout, func(ctx context.Context) (bool, error) {
		in, err := n.IsInRecovery(ctx)
		if err == nil && !in {
			err = fmt.Errorf("%s is not in recovery", n.name)
		}
		if err != nil {
			return false, err
		}
		conn, err := upstream.connect(ctx)
		if err != nil {
			return false, err
		}
		defer conn.Close(context.Background())
		var streaming bool
		err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication
			WHERE application_name = $1 AND state = 'streaming')`, n.name).Scan(&streaming)
		if err == nil && !streaming {
			err = fmt.Errorf("%s not streaming in %s's pg_stat_replication", n.name, upstream.name)
		}
		return streaming, err
	})
	if err != nil {
		return n.withLog(fmt.Errorf("pgcluster: %s does not stream from %s: %w", n.name, upstream.name, err))
	}
	n.c.logf("pgcluster: %s streams from %s", n.name, upstream.name)
	return nil
}

// withLog appends the tail of the node's server log to err: the server's
// own words are what make a failed start debuggable in CI.
func (n *Node) withLog(err error) error {
	return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, n.logFile, tailFile(n.logFile, 30))
}

// poll calls check every pollInterval until it reports done, ctx ends or
// timeout passes; the last error from check is kept for the report.
func poll(ctx context.Context, timeout time.Duration, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		done, err := check(ctx)
		if done {
			return nil
		}
		// An error caused by the deadline itself says less than the one
		// before it.
		if err != nil && ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
