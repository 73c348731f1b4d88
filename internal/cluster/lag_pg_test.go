package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/pgcluster"
)

// Lag on PostgreSQL: none in time or bytes on an idle cluster, although the
// last replayed transaction ages; bytes and time while a replica's replay is
// paused and the primary writes; none again once it resumes.
func TestReplicationLag(t *testing.T) {
	// A transaction for the replicas to replay: its timestamp is what ages.
	pg, primary, paused, tc := lagSetup(t, "lag_test", "CREATE TABLE lag_test (id int, pad text) WITH (autovacuum_enabled = off)")
	w, r1, r2 := tc.node(pg[0].Addr()), tc.node(pg[1].Addr()), tc.node(pg[2].Addr())
	caughtUp := func(ns ...*Node) func() error {
		return func() error {
			for _, n := range ns {
				if n.Lag() != 0 || n.LagBytes() != 0 || n.ReplayLSN() == 0 {
					return fmt.Errorf("%s: lag %v, %d bytes, replayed %X", n, n.Lag(), n.LagBytes(), n.ReplayLSN())
				}
			}
			return nil
		}
	}
	waitFor(t, 30*time.Second, "writer and replicas without lag", caughtUp(w, r1, r2))
	if err := tc.writerIs(w.Addr()); err != nil {
		t.Fatal(err)
	}

	// Idle: several seconds of checks, no lag, although the last transaction the replicas
	// replayed gets older all the while (which lag measured by it would show, growing past the
	// idle time). The primary still writes a little WAL of its own when idle (a running-xacts
	// record, a checkpoint), which a replica may be caught a moment behind: well under a second
	// and a few kilobytes.
	const idle = 3 * time.Second
	since := r1.LastCheck()
	tick := time.NewTicker(20 * time.Millisecond)
	for end := time.Now().Add(idle); time.Now().Before(end); <-tick.C {
		for _, n := range []*Node{w, r1, r2} {
			if n.Lag() >= idle/4 || n.LagBytes() > 8<<10 || n.ReplayLSN() == 0 {
				t.Fatalf("idle cluster: %s: lag %v, %d bytes, replayed %X", n, n.Lag(), n.LagBytes(), n.ReplayLSN())
			}
		}
	}
	tick.Stop()
	if checks := r1.LastCheck().Sub(since); checks < idle/2 {
		t.Fatalf("replica checked over %v of %v idle", checks, idle)
	}

	// Replay paused on r1: the primary's writes arrive there but are not replayed.
	execSQL(t, paused, "SELECT pg_wal_replay_pause()")
	waitFor(t, 30*time.Second, "replay paused", func() error {
		if s := queryValue(t, paused, "SELECT pg_get_wal_replay_pause_state()"); s != "paused" {
			return fmt.Errorf("pause state %q", s)
		}
		return nil
	})
	pausedAt := lsnOf(t, queryValue(t, paused, "SELECT pg_last_wal_replay_lsn()::text"))
	execSQL(t, primary, "INSERT INTO lag_test SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g")
	wrote := lsnOf(t, queryValue(t, primary, "SELECT pg_current_wal_lsn()::text"))
	waitFor(t, 30*time.Second, "paused replica lags in bytes and time", func() error {
		if got := r1.ReplayLSN(); got != pausedAt {
			return fmt.Errorf("paused replica replayed %X, want %X", got, pausedAt)
		}
		if want := int64(wrote - pausedAt); r1.LagBytes() < want || r1.Lag() <= 0 {
			return fmt.Errorf("paused replica lags %v, %d bytes; want > 0, >= %d", r1.Lag(), r1.LagBytes(), want)
		}
		return caughtUp(w, r2)()
	})
	t.Logf("paused replica: lag %v, %d bytes", r1.Lag(), r1.LagBytes())
	if err := tc.nodeIs(r1.Addr(), true, RoleReader); err != nil {
		t.Error(err)
	}

	execSQL(t, paused, "SELECT pg_wal_replay_resume()")
	waitFor(t, 30*time.Second, "resumed replica caught up", func() error {
		if r1.ReplayLSN() < wrote {
			return fmt.Errorf("resumed replica replayed %X, want >= %X", r1.ReplayLSN(), wrote)
		}
		return caughtUp(w, r1, r2)()
	})
}

// Read your writes: after a commit at t, a replica whose ReplayLSN reaches
// WriterLSNAfter(t) has the row.
func TestReadYourWrites(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	primary := pg[0]
	t.Cleanup(func() { execSQL(t, primary, "DROP TABLE IF EXISTS ryw_test") })
	execSQL(t, primary, "CREATE TABLE ryw_test (id int)")
	tc := runCluster(t, Config{
		Hosts:               hostsOf(pg),
		HealthCheckInterval: 100 * time.Millisecond,
		HealthCheckTimeout:  5 * time.Second,
	})
	tc.waitChecked(t)
	if lsn, ok := tc.WriterLSNAfter(time.Now().Add(time.Hour)); ok {
		t.Fatalf("WriterLSNAfter(an hour from now) = %X, true", lsn)
	}
	var prev uint64
	for i := range 3 {
		execSQL(t, primary, fmt.Sprintf("INSERT INTO ryw_test VALUES (%d)", i))
		// Read after the commit returned: the commit is at or before it.
		atCommit := lsnOf(t, queryValue(t, primary, "SELECT pg_current_wal_lsn()::text"))
		committed := time.Now()
		var lsn uint64
		waitFor(t, 30*time.Second, "a writer sample after the commit", func() error {
			var ok bool
			if lsn, ok = tc.WriterLSNAfter(committed); !ok {
				return fmt.Errorf("WriterLSNAfter: none yet")
			}
			return nil
		})
		if lsn < atCommit || lsn <= prev {
			t.Fatalf("write %d: WriterLSNAfter = %X; want >= %X (the commit) and > %X (the previous write's)", i, lsn, atCommit, prev)
		}
		prev = lsn
		for _, r := range pg[1:] {
			n := tc.node(r.Addr())
			waitFor(t, 30*time.Second, r.Name()+" replayed the write", func() error {
				if n.ReplayLSN() < lsn {
					return fmt.Errorf("replayed %X, want >= %X", n.ReplayLSN(), lsn)
				}
				return nil
			})
			if got := queryValue(t, r, fmt.Sprintf("SELECT count(*)::text FROM ryw_test WHERE id = %d", i)); got != "1" {
				t.Errorf("%s: write %d not visible although ReplayLSN %X >= WriterLSNAfter %X", r.Name(), i, n.ReplayLSN(), lsn)
			}
		}
	}
}

// A replica that receives no WAL (its walreceiver cut off, as one left following a dead primary
// after a failover) has replayed all it received, so its own figure says no lag; the writer's
// sampled positions show it behind, by a time that keeps growing past what the samples reach,
// and back to none once it streams again.
func TestStalledReplicaLag(t *testing.T) {
	checkNoLeaks(t)
	pc := startPG(t, 1)
	primary, replica := pc.Primary(), pc.Replicas()[0]
	execSQL(t, primary, "CREATE TABLE stall_test (id int)")
	syncReplicas(t, pc)
	tc := runCluster(t, Config{
		Hosts:               hostsOf(pc.Nodes()),
		HealthCheckInterval: 100 * time.Millisecond,
		HealthCheckTimeout:  5 * time.Second,
	})
	tc.waitChecked(t)
	r := tc.node(replica.Addr())
	waitFor(t, 30*time.Second, "the replica without lag", func() error {
		if r.Lag() != 0 || r.Role() != RoleReader {
			return fmt.Errorf("lag %v, role %v", r.Lag(), r.Role())
		}
		return nil
	})
	conninfo := queryValue(t, replica, "SHOW primary_conninfo")
	execSQL(t, replica, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
	waitFor(t, 30*time.Second, "the walreceiver to stop", func() error {
		if v := queryValue(t, replica, "SELECT count(*) FROM pg_stat_wal_receiver"); v != "0" {
			return fmt.Errorf("%s walreceivers", v)
		}
		return nil
	})
	execSQL(t, primary, "INSERT INTO stall_test VALUES (1)")
	waitFor(t, 30*time.Second, "the stalled replica's lag past 500ms", func() error {
		if r.Lag() < 500*time.Millisecond {
			return fmt.Errorf("lag %v", r.Lag())
		}
		return nil
	})
	// Past the 16 samples (1.6 s at this interval): the lag keeps growing.
	waitFor(t, 30*time.Second, "the stalled replica's lag past 3s", func() error {
		execSQL(t, primary, "INSERT INTO stall_test VALUES (2)")
		if r.Lag() < 3*time.Second {
			return fmt.Errorf("lag %v", r.Lag())
		}
		return nil
	})
	execSQL(t, replica, "ALTER SYSTEM SET primary_conninfo = '"+strings.ReplaceAll(conninfo, "'", "''")+"'", "SELECT pg_reload_conf()")
	waitFor(t, 60*time.Second, "the replica caught up", func() error {
		if r.Lag() != 0 {
			return fmt.Errorf("lag %v", r.Lag())
		}
		return nil
	})
}

// After a quiet period on the writer, a replica whose replay is paused as writes begin lags by
// the time since they began — how long ago the writer was at its position — not by the time
// since the last transaction it replayed, which is the quiet period longer.
func TestLagAfterQuietPeriod(t *testing.T) {
	// The last commit before the quiet period.
	_, primary, paused, tc := lagSetup(t, "quiet_test", "CREATE TABLE quiet_test (id int)")
	r := tc.node(paused.Addr())
	waitFor(t, 30*time.Second, "the replica without lag", func() error {
		if r.Lag() != 0 || r.LagBytes() != 0 || r.Role() != RoleReader {
			return fmt.Errorf("lag %v, %d bytes, role %v", r.Lag(), r.LagBytes(), r.Role())
		}
		return nil
	})
	// The quiet period: no writes, and no lag all along.
	const quiet = 10 * time.Second
	tick := time.NewTicker(50 * time.Millisecond)
	for end := time.Now().Add(quiet); time.Now().Before(end); <-tick.C {
		if r.Lag() != 0 {
			t.Fatalf("quiet writer: replica lag %v", r.Lag())
		}
	}
	tick.Stop()

	pausing := time.Now()
	execSQL(t, paused, "SELECT pg_wal_replay_pause()")
	waitFor(t, 30*time.Second, "replay paused", func() error {
		if s := queryValue(t, paused, "SELECT pg_get_wal_replay_pause_state()"); s != "paused" {
			return fmt.Errorf("pause state %q", s)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, primary.ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { // writes, from now on, ten a second
		defer close(done)
		defer conn.Close(context.Background())
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if _, err := conn.Exec(ctx, "INSERT INTO quiet_test VALUES ($1)", i); err != nil {
				if ctx.Err() == nil {
					t.Errorf("write: %v", err)
				}
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { cancel(); <-done }()
	// The lag grows with the writes; it never counts the quiet period. The bound leaves a second
	// for WAL the writer flushed just before the pause took hold (whose replay the pause cut off).
	waitFor(t, 60*time.Second, "the paused replica's lag past 3s, tracking the writes", func() error {
		lag, since := r.Lag(), time.Since(pausing)
		if lag > since+time.Second {
			t.Fatalf("lag %v, %v after replay was paused at the end of a %v quiet period: it counts the quiet period", lag, since, quiet)
		}
		if lag < 3*time.Second {
			return fmt.Errorf("lag %v", lag)
		}
		return nil
	})
}

// lagSetup runs create (which makes table) on the shared cluster's primary, waits until every
// replica has replayed it, and starts a checker over the cluster that checks every 100 ms. It
// returns the nodes, the primary and the replica the test may pause (pg[1]); at the end its replay
// is resumed and table dropped.
func lagSetup(t *testing.T, table, create string) (pg []*pgcluster.Node, primary, paused *pgcluster.Node, tc *testCluster) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg = pc.Nodes()
	primary, paused = pg[0], pg[1]
	t.Cleanup(func() {
		execSQL(t, paused, "SELECT pg_wal_replay_resume()")
		execSQL(t, primary, "DROP TABLE IF EXISTS "+table)
	})
	execSQL(t, primary, create)
	syncReplicas(t, pc)
	tc = runCluster(t, Config{
		Hosts:               hostsOf(pg),
		HealthCheckInterval: 100 * time.Millisecond,
		HealthCheckTimeout:  5 * time.Second, // a healthy node on a busy machine is not marked down
	})
	tc.waitChecked(t)
	return pg, primary, paused, tc
}
