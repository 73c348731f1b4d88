package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
	"pgtide/internal/pgtls"
	"pgtide/internal/router"
)

// startCluster starts a cluster of its own (primary + replicas) for a test that changes it.
func startCluster(t *testing.T, replicas int) *pgcluster.Cluster {
	return startClusterWith(t, replicas, nil)
}

// startClusterWith is startCluster with mutate applied to the cluster's options first.
func startClusterWith(t *testing.T, replicas int, mutate func(*pgcluster.Options)) *pgcluster.Cluster {
	t.Helper()
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := pgcluster.Options{
		Replicas:  replicas,
		ExtraConf: []string{"max_connections = 400"},
		HBA:       []string{"host all app 127.0.0.1/32 scram-sha-256"},
		InitSQL: []string{
			"CREATE ROLE app LOGIN PASSWORD 'app secret'",
			"CREATE DATABASE appdb OWNER app",
		},
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := pgcluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clusterProxy starts pgtide with all three endpoints in front of c.
func clusterProxy(t *testing.T, c *pgcluster.Cluster, mutate func(*config.Config)) *testProxy {
	return startProxy(t, func(cfg *config.Config) {
		cfg.Cluster.Hosts = nil
		for _, n := range c.Nodes() {
			cfg.Cluster.Hosts = append(cfg.Cluster.Hosts, n.Addr())
		}
		cfg.Proxy.WriterListen = "127.0.0.1:0"
		cfg.Proxy.ReaderListen = "127.0.0.1:0"
		// Checks often, so tests see a stopped node soon (it refuses connections at once), but
		// patiently: on a busy machine a healthy node can take seconds to answer, and a node
		// marked down for that takes no work, which no test here expects.
		cfg.Cluster.HealthCheckInterval.Duration = 100 * time.Millisecond
		cfg.Cluster.HealthCheckTimeout.Duration = 5 * time.Second
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// endpointConnString is connString for a given endpoint.
func (p *testProxy) endpointConnString(ep router.Route) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=appdb password='app secret' sslmode=disable",
		p.EndpointAddr(ep).(*net.TCPAddr).Port)
}

// inRecovery reports whether a read through c ran on a replica. (Not pg_is_in_recovery(), which
// the auto endpoint sends to the writer: see TestTargetSessionAttrs.)
func inRecovery(t *testing.T, ctx context.Context, c *pgx.Conn) bool {
	t.Helper()
	var r bool
	if err := c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() IS NOT NULL").Scan(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTargetSessionAttrs: the writer and auto endpoints pass the checks drivers make of a
// session that may write, and the reader endpoint those of a standby, as PostgreSQL's primary and
// replicas do: libpq's target_session_attrs (psql; PostgreSQL 14 and later servers report
// in_hot_standby, which libpq reads from the greeting) and pgx's (SHOW transaction_read_only,
// pg_is_in_recovery()), with the auto endpoint's logins checked on a replica.
func TestTargetSessionAttrs(t *testing.T) {
	c := startCluster(t, 1)
	p := clusterProxy(t, c, func(cfg *config.Config) { cfg.Proxy.PoolMode = config.PoolModeTransaction })
	waitFor(t, 30*time.Second, "the replica to be a reader", func() bool { return len(p.Cluster().Readers()) == 1 })
	ctx := context.Background()
	writable := map[string]bool{"read-write": true, "primary": true, "read-only": false, "standby": false}
	for _, ep := range []router.Route{router.Auto, router.Writer, router.Reader} {
		for attrs, onWriter := range writable {
			want := onWriter == (ep != router.Reader)
			conn := p.endpointConnString(ep) + " target_session_attrs=" + attrs
			cmd := exec.Command(psqlPath(t), "-X", "-A", "-t", "-c", "SELECT 1", conn)
			cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=20")
			out, err := cmd.CombinedOutput()
			if got := err == nil; got != want {
				t.Errorf("psql, %s endpoint, target_session_attrs=%s: %v %s; want accepted %v", ep, attrs, err, out, want)
			}
			if attrs == "read-only" {
				continue // pgx has no such check
			}
			pc, err := pgx.Connect(ctx, conn)
			if got := err == nil; got != want {
				t.Errorf("pgx, %s endpoint, target_session_attrs=%s: %v; want accepted %v", ep, attrs, err, want)
			}
			if err == nil {
				pc.Close(ctx)
			}
		}
	}
}

// TestEndpoints: the writer and auto endpoints reach the primary, the reader endpoint a replica,
// and the reader endpoint falls back to the writer only when allowed.
func TestEndpoints(t *testing.T) {
	c := startCluster(t, 1)
	p := clusterProxy(t, c, nil)
	ctx := context.Background()
	// A read: the auto endpoint (transaction mode) sends it to a replica, as the reader endpoint
	// does; a transaction that is not READ ONLY goes to the writer there.
	for ep, wantRecovery := range map[router.Route]bool{router.Auto: true, router.Writer: false, router.Reader: true} {
		conn, err := pgx.Connect(ctx, p.endpointConnString(ep))
		if err != nil {
			t.Fatal(err)
		}
		if got := inRecovery(t, ctx, conn); got != wantRecovery {
			t.Fatalf("%s endpoint: pg_is_in_recovery() = %v", ep, got)
		}
		if ep == router.Auto {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var r bool
			if err := tx.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&r); err != nil || r {
				t.Fatalf("auto endpoint, in a transaction: pg_is_in_recovery() = %v, %v", r, err)
			}
			tx.Rollback(ctx)
		}
		conn.Close(ctx)
	}
	// The replica goes away: the reader endpoint falls back to the writer...
	if err := c.Replicas()[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the replica to be marked down", func() bool { return len(p.Cluster().Readers()) == 0 })
	conn, err := pgx.Connect(ctx, p.endpointConnString(router.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if inRecovery(t, ctx, conn) {
		t.Fatal("fallback went to a replica")
	}
	// ...unless reader_fallback_to_writer is off: then a clear error.
	next := *p.Config()
	next.Proxy.ReaderFallbackToWriter = false
	p.Reload(&next)
	_, err = conn.Exec(ctx, "SELECT 1")
	if pgCode(err) != "08001" {
		t.Fatalf("no reader, no fallback: %v", err)
	}
}

// TestReaderBalance: each session-mode client on the reader endpoint goes to a replica with the
// least outstanding work among the three, as the router counted it when the client came, and
// pg_stat_activity on each replica agrees with the router's counts. The clients come one after
// another, so the counts each one met follow from the clients before it, not from how fast the
// machine is: 90 clients end 30/30/30.
func TestReaderBalance(t *testing.T) {
	c := startCluster(t, 3)
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.PoolMode = config.PoolModeSession
		cfg.Cluster.PoolSize = 150
		cfg.Cluster.MaxServerConnections = 150
		cfg.Cluster.ServerConnectRate = 1000
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	openReaderSessions(t, ctx, p, 90)
	counts := replicaConns(t, ctx, c.Replicas()...)
	t.Logf("server connections per replica: %v", counts)
	for i, n := range counts {
		if n != 30 {
			t.Fatalf("replica %d has %d server connections, want 30 (all: %v)", i, n, counts)
		}
	}
}

// TestFailover: under a steady write load from 50 clients on the writer endpoint, the primary is
// stopped and a replica promoted. Clients between transactions see no error: they wait for the
// new writer and their writes succeed on it; every acknowledged write survives; the new writer's
// connection cap holds. (How soon the first write lands is logged, not asserted: it measures the
// machine's load as much as pgtide.)
func TestFailover(t *testing.T) { testFailover(t, nil) }

// TestFailoverTLS is TestFailover with TLS on both sides: clients verify pgtide's certificate,
// pgtide verifies the servers' (verify-full), and the new writer's connections are encrypted.
func TestFailoverTLS(t *testing.T) { testFailover(t, newTestTLS(t)) }

func testFailover(t *testing.T, tt *testTLS) {
	c := startClusterWith(t, 2, tt.serve)
	ctx := context.Background()
	primary := c.Primary()
	d, err := pgx.Connect(ctx, primary.ConnString("postgres", "appdb"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Exec(ctx, "CREATE TABLE acked (client int, seq int, PRIMARY KEY (client, seq)); ALTER TABLE acked OWNER TO app"); err != nil {
		t.Fatal(err)
	}
	d.Close(ctx)
	const cap = 20
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Cluster.PoolSize = cap
		cfg.Cluster.MaxServerConnections = cap
		cfg.Cluster.FailoverTimeout.Duration = 20 * time.Second
		tt.configure(cfg, pgtls.Require, pgtls.VerifyFull)
	})
	writerConnString := tt.connString(p.endpointConnString(router.Writer))

	var promotedAt atomic.Int64 // unix nanos
	var firstWriteAfterPromotion atomic.Int64
	type failure struct {
		client int
		start  time.Time
		err    error
	}
	failures := make(chan failure, 10000)
	acked := make([][]int, 50) // each written only by its client's goroutine
	var ackedTotal atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, writerConnString)
			if err != nil {
				failures <- failure{i, time.Now(), err}
				return
			}
			defer conn.Close(ctx)
			for seq := 0; loadCtx.Err() == nil; seq++ {
				start := time.Now()
				_, err := conn.Exec(ctx, "INSERT INTO acked VALUES ($1, $2)", i, seq)
				if err != nil {
					failures <- failure{i, start, err}
					if conn.IsClosed() {
						// The server connection died under a transaction in flight: reconnect,
						// as an application would.
						if conn, err = pgx.Connect(ctx, writerConnString); err != nil {
							failures <- failure{i, time.Now(), err}
							return
						}
					}
					continue
				}
				acked[i] = append(acked[i], seq)
				ackedTotal.Add(1)
				if pa := promotedAt.Load(); pa != 0 && start.UnixNano() > pa {
					firstWriteAfterPromotion.CompareAndSwap(0, time.Now().UnixNano())
				}
				time.Sleep(5 * time.Millisecond) // a steady load, not a flood
			}
		}(i)
	}
	waitFor(t, time.Minute, "the load to get going", func() bool { return ackedTotal.Load() > 500 })

	// Watch the new writer's connection count while it takes over.
	newWriter := c.Replicas()[0]
	var peakNew atomic.Int64
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for loadCtx.Err() == nil {
			mon, err := pgx.Connect(ctx, newWriter.ConnString("postgres", "postgres"))
			if err != nil {
				continue
			}
			for loadCtx.Err() == nil {
				var n int64
				if mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'").Scan(&n) != nil {
					break
				}
				if n > peakNew.Load() {
					peakNew.Store(n)
				}
			}
			mon.Close(ctx)
		}
	}()

	if err := primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := newWriter.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promotedAt.Store(time.Now().UnixNano())
	waitFor(t, time.Minute, "a write after the promotion", func() bool { return firstWriteAfterPromotion.Load() != 0 })
	delay := time.Duration(firstWriteAfterPromotion.Load() - promotedAt.Load())
	t.Logf("first successful write through pgtide came %s after the promotion returned", delay)
	// Keep writing to the new writer for a while: every client gets through at least once more.
	after := ackedTotal.Load()
	waitFor(t, time.Minute, "more writes on the new writer", func() bool { return ackedTotal.Load() > after+200 })
	stopLoad()
	wg.Wait()
	<-watchDone
	close(failures)

	// Only transactions in flight while the primary shut down may fail (an INSERT whose server
	// said it did not commit runs again, see TestRetryOnFailover; one that may have committed
	// does not); every client that started a transaction after the primary was down waited for
	// the new writer instead.
	inFlight := 0
	for f := range failures {
		if !f.start.After(stopped) {
			inFlight++
			continue
		}
		if !errors.Is(f.err, context.Canceled) {
			t.Errorf("client %d failed a transaction it started %s after the primary was down: %v", f.client, f.start.Sub(stopped), f.err)
		}
	}
	t.Logf("%d transactions in flight during the shutdown failed", inFlight)
	if peakNew.Load() > cap {
		t.Errorf("the new writer saw %d server connections, cap %d", peakNew.Load(), cap)
	}
	// Every acknowledged write is on the new writer.
	v, err := pgx.Connect(ctx, newWriter.ConnString("postgres", "appdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	total := 0
	for i, seqs := range acked {
		for _, seq := range seqs {
			var ok bool
			if err := v.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM acked WHERE client = $1 AND seq = $2)", i, seq).Scan(&ok); err != nil || !ok {
				t.Fatalf("acknowledged write (%d, %d) is missing: %v", i, seq, err)
			}
			total++
		}
	}
	t.Logf("%d acknowledged writes, all present on the new writer", total)
	if tt != nil {
		tt.wantServerSSL(t, v)
	}

	// The old primary comes back as a replica of the new writer: roles follow.
	if err := primary.Follow(ctx, newWriter); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the old primary to be seen as a reader", func() bool {
		for _, n := range p.Cluster().Readers() {
			if n.Addr() == primary.Addr() {
				return true
			}
		}
		return false
	})
	if w, ok := p.Cluster().Writer(); !ok || w.Addr() != newWriter.Addr() {
		t.Fatalf("writer after rejoin: %v %v", w, ok)
	}
}

// TestReplicaLoss: a replica killed under a read load costs no failed transaction to clients
// between transactions: their next transaction goes to another reader.
func TestReplicaLoss(t *testing.T) {
	c := startCluster(t, 2)
	p := clusterProxy(t, c, func(cfg *config.Config) { cfg.Cluster.PoolSize = 10 })
	ctx := context.Background()
	loadCtx, stop := context.WithCancel(ctx)
	var killStart atomic.Int64
	var wg sync.WaitGroup
	var late, done atomic.Int64
	errs := make(chan error, 1000)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, p.endpointConnString(router.Reader))
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			for loadCtx.Err() == nil {
				start := time.Now().UnixNano()
				var x int
				err := conn.QueryRow(ctx, "SELECT 1").Scan(&x)
				if err != nil {
					if ks := killStart.Load(); ks != 0 && start > ks {
						late.Add(1)
						errs <- err
					}
					if conn.IsClosed() {
						if conn, err = pgx.Connect(ctx, p.endpointConnString(router.Reader)); err != nil {
							errs <- err
							return
						}
					}
					continue
				}
				done.Add(1)
			}
		}()
	}
	waitFor(t, time.Minute, "the read load to get going", func() bool { return done.Load() > 1000 })
	// Transactions in flight while the replica dies may fail; any started after it is gone must not.
	if err := c.Replicas()[0].Kill(ctx); err != nil {
		t.Fatal(err)
	}
	killStart.Store(time.Now().UnixNano())
	before := done.Load()
	waitFor(t, time.Minute, "reads to go on without the replica", func() bool { return done.Load() > before+2000 })
	stop()
	wg.Wait()
	close(errs)
	if n := late.Load(); n > 0 {
		t.Errorf("%d transactions started after the kill failed; first: %v", n, <-errs)
	}
}

// TestReloadHosts: a host added by reload gets reader work on the next transactions; a removed
// one gets no new work.
func TestReloadHosts(t *testing.T) {
	c := startCluster(t, 2)
	r1, r2 := c.Replicas()[0], c.Replicas()[1]
	p := clusterProxy(t, c, func(cfg *config.Config) { cfg.Cluster.Hosts = []string{c.Primary().Addr(), r1.Addr()} })
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.endpointConnString(router.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	port := func() int {
		var port int
		if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			t.Fatal(err)
		}
		return port
	}
	if got := port(); got != r1.Port() {
		t.Fatalf("reader endpoint reached port %d, want %d", got, r1.Port())
	}
	next := *p.Config()
	next.Cluster.Hosts = []string{c.Primary().Addr(), r2.Addr()}
	p.Reload(&next)
	waitFor(t, 10*time.Second, "the new host to take reader work", func() bool { return port() == r2.Port() })
	for i := 0; i < 20; i++ {
		if got := port(); got == r1.Port() {
			t.Fatal("the removed host still gets work")
		}
	}
}

// TestConnectRate: with server_connect_rate = 20, forty clients that all need a new server
// connection at once get them no faster than 20 per second after a burst of 2. Each holds its
// transaction open until all forty exist: a transaction that ended sooner would hand its
// connection to a waiting client, and how many dials the forty need would depend on timing.
func TestConnectRate(t *testing.T) {
	c := startCluster(t, 0)
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Cluster.PoolSize = 40
		cfg.Cluster.ServerConnectRate = 20
		cfg.Proxy.ReaderListen = ""
		cfg.Cluster.QueryWaitTimeout.Duration = 30 * time.Second
	})
	ctx := context.Background()
	var conns []*pgx.Conn
	for i := 0; i < 40; i++ {
		conn, err := pgx.Connect(ctx, p.endpointConnString(router.Writer))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		conns = append(conns, conn)
	}
	start := time.Now()
	release := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { // also when the test fails first
		select {
		case <-release:
		default:
			close(release)
		}
		wg.Wait()
	}()
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx, err := conn.Begin(ctx) // each holds its own server connection
			if err != nil {
				t.Error(err)
				return
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Error(err)
				return
			}
			<-release
		}()
	}
	d, err := pgx.Connect(ctx, c.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	waitFor(t, time.Minute, "all 40 server connections", func() bool { return serverConns(t, d, "app") >= 40 })
	took := time.Since(start)
	close(release)
	wg.Wait()
	// 38 dials after the burst of 2, 50ms apart at least: 1.9s.
	t.Logf("40 server connections took %s at server_connect_rate 20", took)
	if took < 1800*time.Millisecond {
		t.Fatalf("40 connections opened in %s: faster than server_connect_rate allows", took)
	}
}

// TestReaderWeights: weights split reader work in proportion: each session-mode client goes to the
// replica with the least outstanding work per unit of weight, so 200 clients, one after another,
// over two replicas weighted 3:1 land 150/50.
func TestReaderWeights(t *testing.T) {
	c := startCluster(t, 2)
	r1, r2 := c.Replicas()[0], c.Replicas()[1]
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.PoolMode = config.PoolModeSession
		cfg.Cluster.PoolSize = 200
		cfg.Cluster.MaxServerConnections = 200
		cfg.Cluster.ServerConnectRate = 1000
		cfg.Cluster.Weights = map[string]int{r1.Addr(): 3, r2.Addr(): 1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	openReaderSessions(t, ctx, p, 200)
	counts := replicaConns(t, ctx, r1, r2)
	t.Logf("server connections: weight 3 → %d, weight 1 → %d", counts[0], counts[1])
	if counts[0] != 150 || counts[1] != 50 {
		t.Fatalf("weights 3:1 gave %v, want 150/50", counts)
	}
}

// TestAuroraDiscovery: with discovery = "aurora" and only the primary configured, pgtide finds
// the replica from aurora_replica_status() (a stub of Aurora's function on the local cluster) and
// sends reader work to it.
func TestAuroraDiscovery(t *testing.T) {
	c := startCluster(t, 1)
	replica := c.Replicas()[0]
	ctx := context.Background()
	d, err := pgx.Connect(ctx, c.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	stub := fmt.Sprintf(`CREATE FUNCTION aurora_replica_status()
		RETURNS TABLE(server_id text, session_id text, durable_lsn numeric, current_read_lsn numeric,
			replica_lag_in_msec float8, last_update_timestamp timestamptz)
		LANGUAGE sql AS $$ VALUES ('%d', 'MASTER_SESSION_ID', 1000::numeric, NULL::numeric, 0::float8, now()),
			('%d', 'a-replica-session', 1000, NULL, 5::float8, now()) $$`,
		c.Primary().Port(), replica.Port())
	if _, err := d.Exec(ctx, stub); err != nil {
		t.Fatal(err)
	}
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Cluster.Hosts = []string{c.Primary().Addr()}
		cfg.Cluster.Discovery = config.DiscoveryAurora
		cfg.Cluster.AuroraTemplate = "127.0.0.1:{id}"
		cfg.Cluster.DiscoveryInterval.Duration = 200 * time.Millisecond
		cfg.Proxy.ReaderFallbackToWriter = false
	})
	waitFor(t, 10*time.Second, "the replica to be discovered and checked", func() bool { return len(p.Cluster().Readers()) == 1 })
	conn, err := pgx.Connect(ctx, p.endpointConnString(router.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var port int
	if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil || port != replica.Port() {
		t.Fatalf("reader endpoint reached port %d (%v), want the discovered replica's %d", port, err, replica.Port())
	}
}

// openReaderSessions connects n session-mode clients to the reader endpoint, one after another,
// each holding its server connection (it ran a query) until the test ends. Each must have gone to
// a reader with the least outstanding work per unit of weight, as the router counted it just
// before the client came: nothing else picks meanwhile, so those are the counts its pick saw.
func openReaderSessions(t *testing.T, ctx context.Context, p *testProxy, n int) {
	t.Helper()
	readers := p.Cluster().Readers()
	for i := 0; i < n; i++ {
		seen := make(map[string]int64, len(readers))
		for _, r := range readers {
			seen[r.Addr()] = p.Router().Outstanding(r)
		}
		conn, err := pgx.Connect(ctx, p.endpointConnString(router.Reader))
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		var port int // session mode: the server connection is held from here on
		if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		got := fmt.Sprintf("127.0.0.1:%d", port)
		weight := int64(0)
		for _, r := range readers {
			if r.Addr() == got {
				weight = int64(r.Weight())
			}
		}
		if weight == 0 {
			t.Fatalf("client %d reached %s, not a reader", i, got)
		}
		for _, r := range readers {
			// A smaller load per unit of weight than the picked reader's, without division.
			if seen[r.Addr()]*weight < seen[got]*int64(r.Weight()) {
				t.Fatalf("client %d went to %s (outstanding %d, weight %d) while %s had %d (weight %d); all: %v",
					i, got, seen[got], weight, r.Addr(), seen[r.Addr()], r.Weight(), seen)
			}
		}
	}
}

// replicaConns returns the server connections of user app on each node, from its pg_stat_activity.
func replicaConns(t *testing.T, ctx context.Context, nodes ...*pgcluster.Node) []int {
	t.Helper()
	var counts []int
	for _, n := range nodes {
		d, err := pgx.Connect(ctx, n.ConnString("postgres", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, serverConns(t, d, "app"))
		d.Close(ctx)
	}
	return counts
}
