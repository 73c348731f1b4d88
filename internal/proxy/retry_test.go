package proxy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgcluster"
	"pgtide/internal/router"
	"pgtide/internal/session"
)

// Tests of retry_on_failover: a statement in flight outside a transaction block when its server
// connection ends. Each makes the statement be in flight for certain before it acts: it waits
// for a lock another session holds, or in pg_sleep, as pg_stat_activity shows.

// retryCluster starts a primary and a replica with the tables the retry tests write, owned by
// app (replayed on the replica), and pgtide in front of them.
func retryCluster(t *testing.T) (*pgcluster.Cluster, *testProxy) {
	t.Helper()
	c := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execOn(ctx, c.Primary(), "postgres", "appdb",
		"CREATE TABLE inflight (who text)", "ALTER TABLE inflight OWNER TO app",
		"CREATE TABLE slept (who text)", "ALTER TABLE slept OWNER TO app"); err != nil {
		t.Fatal(err)
	}
	if err := replayed(ctx, c, "appdb", "SELECT to_regclass('slept') IS NOT NULL"); err != nil {
		t.Fatal(err)
	}
	return c, clusterProxy(t, c, nil)
}

// wantOutcomes checks what p counted of requests whose server connection ended before they were
// answered.
func wantOutcomes(t *testing.T, p *testProxy, retried, unsafe int64) {
	t.Helper()
	if n := p.Routes().FailoverRetries(session.FailoverRetried); n != retried {
		t.Errorf("%d requests run again, want %d", n, retried)
	}
	if n := p.Routes().FailoverRetries(session.FailoverUnsafe); n != unsafe {
		t.Errorf("%d requests counted unsafe, want %d", n, unsafe)
	}
}

// nodeConn connects to n as postgres, to database db, until the test ends.
func nodeConn(t *testing.T, n *pgcluster.Node, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.ConnString("postgres", db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitBackend waits until one of app's backends on n matches where (a condition on
// pg_stat_activity) and returns its process ID.
func waitBackend(t *testing.T, n *pgcluster.Node, where string) int {
	t.Helper()
	conn := nodeConn(t, n, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		var pid int
		err := conn.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND "+where+" LIMIT 1").Scan(&pid)
		if err == nil {
			return pid
		}
		if err != pgx.ErrNoRows {
			t.Fatalf("waiting for a backend where %s: %v", where, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no backend where %s", where)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rows counts table's rows written by who on n.
func rows(t *testing.T, n *pgcluster.Node, table, who string) int {
	t.Helper()
	var count int
	if err := nodeConn(t, n, "appdb").QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE who = $1", who).Scan(&count); err != nil {
		t.Fatal(err)
	}
	return count
}

// holdLock takes a SHARE lock on table on n in a transaction that stays open until the test
// ends or the server goes away: INSERTs into it wait meanwhile. release commits it.
func holdLock(t *testing.T, n *pgcluster.Node, table string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := nodeConn(t, n, "appdb").Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// inBackground runs f in a goroutine and returns where its error arrives.
func inBackground(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// outcome returns what done delivers, failing the test if nothing comes within a minute.
func outcome(t *testing.T, what string, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("%s: no answer within a minute", what)
		return nil
	}
}

// connectTo opens a client connection to endpoint ep of p, in query mode mode, closed when the
// test ends.
func connectTo(t *testing.T, p *testProxy, ep router.Route, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.endpointConnString(ep))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// lostConnection reports whether err is what a client sees when its session's server went away
// under a statement: the server's 57P01, pgtide's 08006, or the connection closed.
func lostConnection(err error) bool {
	switch pgCode(err) {
	case "57P01", "08006":
		return true
	case "":
		return err != nil
	}
	return false
}

// TestRetryOnFailover: the primary is stopped fast and a replica promoted while four statements
// are in flight through the writer endpoint. An autocommit INSERT (extended protocol with a
// cached statement, and simple protocol) waiting for a lock gets its success from the new writer,
// and its row is there once; an INSERT inside a transaction block gets the error and is not run
// again; an autocommit INSERT sent while retry_on_failover was off (a reload) gets the error, as
// before.
func TestRetryOnFailover(t *testing.T) {
	c, p := retryCluster(t)
	ctx := context.Background()
	mode := pgx.QueryExecModeCacheStatement
	extended, simple := connectTo(t, p, router.Writer, mode), connectTo(t, p, router.Writer, mode)
	inTx, retryOff := connectTo(t, p, router.Writer, mode), connectTo(t, p, router.Writer, mode)
	// The extended client's statement is prepared (and cached by pgx) before: what is in flight
	// is its Bind, Execute and Sync, whose statement pgtide must prepare again on the new writer.
	const insert = "INSERT INTO inflight VALUES ($1)"
	if _, err := extended.Exec(ctx, insert, "warm-up"); err != nil {
		t.Fatal(err)
	}
	holdLock(t, c.Primary(), "inflight")
	setRetry := func(on bool) {
		next := *p.Config()
		next.Proxy.RetryOnFailover = on
		p.Reload(&next)
	}

	setRetry(false)
	offDone := inBackground(func() error {
		_, err := retryOff.Exec(ctx, "INSERT INTO slept SELECT 'retry-off' FROM pg_sleep(600)")
		return err
	})
	waitBackend(t, c.Primary(), "wait_event = 'PgSleep' AND query LIKE '%retry-off%'")
	setRetry(true)
	extDone := inBackground(func() error { _, err := extended.Exec(ctx, insert, "extended"); return err })
	simpleDone := inBackground(func() error {
		_, err := simple.Exec(ctx, "INSERT INTO inflight VALUES ('simple')", pgx.QueryExecModeSimpleProtocol)
		return err
	})
	txDone := inBackground(func() error {
		tx, err := inTx.Begin(ctx)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO slept SELECT 'in-tx' FROM pg_sleep(600)")
		return err
	})
	waitBackend(t, c.Primary(), "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO inflight VALUES ($1)%'")
	waitBackend(t, c.Primary(), "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO inflight VALUES (''simple'')%'")
	waitBackend(t, c.Primary(), "wait_event = 'PgSleep' AND query LIKE '%in-tx%'")

	if err := c.Primary().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	newWriter := c.Replicas()[0]
	if err := newWriter.Promote(ctx); err != nil {
		t.Fatal(err)
	}

	if err := outcome(t, "extended INSERT", extDone); err != nil {
		t.Errorf("autocommit INSERT (extended protocol) in flight during the failover: %v", err)
	}
	if err := outcome(t, "simple INSERT", simpleDone); err != nil {
		t.Errorf("autocommit INSERT (simple protocol) in flight during the failover: %v", err)
	}
	if err := outcome(t, "INSERT in a transaction", txDone); !lostConnection(err) {
		t.Errorf("INSERT inside a transaction block: got %v, want the lost connection's error", err)
	}
	if err := outcome(t, "INSERT with retry_on_failover off", offDone); !lostConnection(err) {
		t.Errorf("autocommit INSERT with retry_on_failover off: got %v, want the lost connection's error", err)
	}
	for _, who := range []string{"extended", "simple"} {
		if n := rows(t, newWriter, "inflight", who); n != 1 {
			t.Errorf("%s: %d rows on the new writer, want 1", who, n)
		}
	}
	for _, who := range []string{"in-tx", "retry-off"} {
		if n := rows(t, newWriter, "slept", who); n != 0 {
			t.Errorf("%s: %d rows on the new writer, want none", who, n)
		}
	}
	wantOutcomes(t, p, 2, 0)
	if n := len(p.logged("running the request again")); n != 2 {
		t.Errorf("%d re-runs logged, want 2", n)
	}
}

// TestRetryAfterCrash: the primary is stopped with -m immediate (each backend warns 57P01 and
// exits at once, as after a crash) and a replica promoted. A read in flight runs again on the new
// writer and its client sees only the answer; a write in flight may have committed as far as
// pgtide can tell, so its client gets the error, and it is counted as unsafe.
func TestRetryAfterCrash(t *testing.T) {
	c, p := retryCluster(t)
	ctx := context.Background()
	// Both through the writer endpoint: the read runs on the primary.
	reader := connectTo(t, p, router.Writer, pgx.QueryExecModeCacheStatement)
	writer := connectTo(t, p, router.Writer, pgx.QueryExecModeSimpleProtocol)
	holdLock(t, c.Primary(), "inflight")
	var slept int
	readDone := inBackground(func() error {
		return reader.QueryRow(ctx, "SELECT count(*) FROM pg_sleep($1::float8)", 1.5).Scan(&slept)
	})
	writeDone := inBackground(func() error {
		_, err := writer.Exec(ctx, "INSERT INTO inflight VALUES ('crash')")
		return err
	})
	waitBackend(t, c.Primary(), "wait_event = 'PgSleep'")
	waitBackend(t, c.Primary(), "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO inflight%'")

	if err := c.Primary().Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Replicas()[0].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := outcome(t, "read", readDone); err != nil || slept != 1 {
		t.Errorf("read in flight during the crash: %d, %v; want its answer", slept, err)
	}
	if err := outcome(t, "write", writeDone); !lostConnection(err) {
		t.Errorf("write in flight during the crash: got %v, want the lost connection's error", err)
	}
	wantOutcomes(t, p, 1, 1) // the read; the write
}

// TestRetrySyncStandby: the primary waits for a synchronous standby that is stopped, so an INSERT
// has committed locally and waits; its backend is terminated. PostgreSQL warns that the
// transaction "has already committed locally" and closes: the client sees that warning and an
// error, the INSERT is not run again, and its row is there once.
func TestRetrySyncStandby(t *testing.T) {
	c, p := retryCluster(t)
	ctx := context.Background()
	if err := c.Replicas()[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitSyncRep(t, c.Primary())
	cfg, err := pgx.ParseConfig(p.endpointConnString(router.Writer))
	if err != nil {
		t.Fatal(err)
	}
	notices := make(chan *pgconn.Notice, 10)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	done := inBackground(func() error {
		_, err := conn.Exec(ctx, "INSERT INTO slept VALUES ('sync')", pgx.QueryExecModeSimpleProtocol)
		return err
	})
	pid := waitBackend(t, c.Primary(), "wait_event = 'SyncRep'")
	if err := execOn(ctx, c.Primary(), "postgres", "postgres", fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid)); err != nil {
		t.Fatal(err)
	}
	if err := outcome(t, "INSERT waiting for its standby", done); !lostConnection(err) {
		t.Fatalf("got %v, want the lost connection's error", err)
	}
	select {
	case n := <-notices:
		if n.Code != "57P01" || n.Severity != "WARNING" {
			t.Errorf("the client was told %s %s %q, want PostgreSQL's warning", n.Severity, n.Code, n.Message)
		}
	default:
		t.Error("the client did not see the warning that the transaction committed locally")
	}
	if n := rows(t, c.Primary(), "slept", "sync"); n != 1 {
		t.Errorf("%d rows, want the one that committed locally", n)
	}
	wantOutcomes(t, p, 0, 1)
}

// waitSyncRep makes n's commits wait for a synchronous standby (there is none), and returns once
// they do: a probe INSERT is seen waiting for its standby (then cancelled; it has committed
// locally).
func waitSyncRep(t *testing.T, n *pgcluster.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execOn(ctx, n, "postgres", "postgres",
		"ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	probe, mon := nodeConn(t, n, "appdb"), nodeConn(t, n, "postgres")
	var pid int
	if err := probe.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	for {
		done := inBackground(func() error { _, err := probe.Exec(ctx, "INSERT INTO slept VALUES ('probe')"); return err })
		for waiting := false; !waiting; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				done = nil // committed without waiting: not in force yet
			case <-ctx.Done():
				t.Fatal("commits do not wait for a synchronous standby")
			case <-time.After(10 * time.Millisecond):
			}
			if done == nil {
				break
			}
			if err := mon.QueryRow(ctx, "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'", pid).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
		}
		if done != nil {
			if _, err := mon.Exec(ctx, "SELECT pg_cancel_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// TestRetryTerminatedBackend: on the shared test cluster (no failover), pg_terminate_backend of
// the server connection under an autocommit INSERT that waits for a lock runs the INSERT again
// (it had not committed), and the client gets its success once the lock is released; one that
// got a notice first is not run again, and its client gets the error.
func TestRetryTerminatedBackend(t *testing.T) {
	p := startProxy(t, nil)
	ctx := context.Background()
	d := direct(t, "appdb")
	if _, err := d.Exec(ctx, `DROP TABLE IF EXISTS retried; CREATE TABLE retried (who text); ALTER TABLE retried OWNER TO app;
		CREATE OR REPLACE FUNCTION notice_then_sleep() RETURNS text LANGUAGE plpgsql AS
			$$BEGIN RAISE NOTICE 'about to sleep'; PERFORM pg_sleep(600); RETURN 'noticed'; END$$`); err != nil {
		t.Fatal(err)
	}
	terminate := func(pid int) {
		if _, err := d.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
	}

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		who := mode.String()
		conn := p.connect(t, "app", "appdb", mode)
		release := holdLock(t, cluster.Primary(), "retried")
		done := inBackground(func() error { _, err := conn.Exec(ctx, "INSERT INTO retried VALUES ($1)", who); return err })
		pid := waitBackend(t, cluster.Primary(), "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO retried%'")
		terminate(pid)
		// It runs again, on another backend, and waits for the lock there.
		waitBackend(t, cluster.Primary(), fmt.Sprintf("wait_event_type = 'Lock' AND query LIKE 'INSERT INTO retried%%' AND pid <> %d", pid))
		release()
		if err := outcome(t, who, done); err != nil {
			t.Errorf("%s: INSERT whose backend was terminated: %v", who, err)
		}
		if n := rows(t, cluster.Primary(), "retried", who); n != 1 {
			t.Errorf("%s: %d rows, want 1", who, n)
		}
	}

	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	done := inBackground(func() error { _, err := conn.Exec(ctx, "INSERT INTO retried SELECT notice_then_sleep()"); return err })
	terminate(waitBackend(t, cluster.Primary(), "wait_event = 'PgSleep'"))
	if err := outcome(t, "INSERT after a notice", done); pgCode(err) != "57P01" {
		t.Errorf("INSERT terminated after a notice: got %v, want the server's 57P01", err)
	}
	if n := rows(t, cluster.Primary(), "retried", "noticed"); n != 0 {
		t.Errorf("%d rows from the INSERT after a notice, want none", n)
	}
	wantOutcomes(t, p, 2, 0) // the notice ended the retry before the end was judged
}
