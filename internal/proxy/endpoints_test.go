package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
	"pgtide/internal/router"
)

// The [[endpoint]] tables on a primary and three replicas: custom endpoints over a subset of the
// readers (the seed's analytics case), each with its own route and pool mode, added and removed
// by reload under load, Aurora instance-id globs, and an endpoint's pool_size.
func TestCustomEndpoints(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := execOn(ctx, c.Primary(), "postgres", "appdb", "CREATE SEQUENCE endpoint_seq", "GRANT USAGE ON SEQUENCE endpoint_seq TO app"); err != nil {
		t.Fatal(err)
	}
	if err := replayed(ctx, c, "appdb", "SELECT to_regclass('endpoint_seq') IS NOT NULL"); err != nil {
		t.Fatal(err)
	}
	t.Run("analytics", func(t *testing.T) { testAnalyticsEndpoints(t, c) })
	t.Run("modes", func(t *testing.T) { testEndpointModes(t, c) })
	t.Run("reload", func(t *testing.T) { testEndpointReload(t, c) })
	t.Run("aurora", func(t *testing.T) { testAuroraEndpoints(t, c) })
	t.Run("pool_size", func(t *testing.T) { testEndpointPoolSize(t, c) })
	t.Run("drain bound", func(t *testing.T) { testEndpointDrainBound(t, c) })
}

// endpointsProxy starts pgtide in front of c with the given [[endpoint]] tables and no
// shorthand endpoint, in transaction mode.
func endpointsProxy(t *testing.T, c *pgcluster.Cluster, eps []config.Endpoint, mutate func(*config.Config)) *testProxy {
	return clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.Listen, cfg.Proxy.WriterListen, cfg.Proxy.ReaderListen = "", "", ""
		cfg.Proxy.PoolMode = config.PoolModeTransaction
		cfg.Proxy.MaxReplicaLag.Duration = 10 * time.Second // a busy machine's replicas must not drop out
		cfg.Cluster.PoolSize = 20
		cfg.Auth.AdminUsers = []string{"app"}
		cfg.Endpoint = eps
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// epConnString is the connection string of endpoint name as app, with application_name app.
func (p *testProxy) epConnString(name, app string) string {
	a := p.NamedEndpointAddr(name)
	if a == nil {
		p.t.Fatalf("no endpoint %q", name)
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=appdb password='app secret' sslmode=disable application_name=%s",
		a.(*net.TCPAddr).Port, app)
}

// portSet is the set of server ports some work landed on. Safe for concurrent use.
type portSet struct {
	mu    sync.Mutex
	ports map[int]int
}

func (s *portSet) add(port int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ports == nil {
		s.ports = map[int]int{}
	}
	s.ports[port]++
}

func (s *portSet) keys() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.ports))
}

// runClients connects n clients to endpoint name (application_name name) and has each run
// rounds of SELECT inet_server_port(), recording where each ran; it returns the first error.
func runClients(ctx context.Context, p *testProxy, name string, n, rounds int, ports *portSet) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, p.epConnString(name, name))
			if err != nil {
				errs <- fmt.Errorf("%s: connect: %w", name, err)
				return
			}
			defer conn.Close(context.Background())
			for range rounds {
				var port int
				if err := conn.QueryRow(ctx, "SELECT inet_server_port() FROM pg_sleep(0.002)").Scan(&port); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				ports.add(port)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// backendApps samples, on node, the application_name of the app backends now running a query
// into apps (pgtide sets each client's application_name on the server connection it lends it).
func backendApps(ctx context.Context, node *pgcluster.Node, apps *sync.Map) error {
	conn, err := pgx.Connect(ctx, node.ConnString("postgres", "appdb"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT application_name FROM pg_stat_activity
		WHERE usename = 'app' AND datname = 'appdb' AND state = 'active' AND pid <> pg_backend_pid()`)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, name := range names {
		apps.Store(name, true)
	}
	return err
}

// testAnalyticsEndpoints: an "analytics" endpoint over one replica and a "users" reader endpoint
// excluding it: 100 clients on each land only on their own nodes, as inet_server_port() and each
// node's pg_stat_activity (sampled while they run) show; SHOW ENDPOINTS and SHOW NODES say so.
func testAnalyticsEndpoints(t *testing.T, c *pgcluster.Cluster) {
	replicas := c.Replicas()
	reporting := replicas[2]
	p := endpointsProxy(t, c, []config.Endpoint{
		{Name: "analytics", Listen: "127.0.0.1:0", Route: config.RouteReader, Nodes: []string{reporting.Addr()}},
		{Name: "users", Listen: "127.0.0.1:0", Route: config.RouteReader, ExcludeNodes: []string{reporting.Addr()}},
	}, nil)
	waitReaders(t, p, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var apps [4]sync.Map // per node: the application_names seen running there
	nodes := c.Nodes()
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			for i, n := range nodes {
				backendApps(ctx, n, &apps[i])
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	var analytics, users portSet
	var wg sync.WaitGroup
	var errA, errU error
	wg.Go(func() { errA = runClients(ctx, p, "analytics", 100, 10, &analytics) })
	wg.Go(func() { errU = runClients(ctx, p, "users", 100, 10, &users) })
	wg.Wait()
	close(stop)
	sampler.Wait()
	for _, err := range []error{errA, errU} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := analytics.keys(); !slices.Equal(got, []int{reporting.Port()}) {
		t.Errorf("analytics ran on ports %v, want only %d", got, reporting.Port())
	}
	if got, want := users.keys(), []int{min(replicas[0].Port(), replicas[1].Port()), max(replicas[0].Port(), replicas[1].Port())}; !slices.Equal(got, want) {
		t.Errorf("users ran on ports %v, want %v (both, never %d)", got, want, reporting.Port())
	}
	seen := func(i int, app string) bool { _, ok := apps[i].Load(app); return ok }
	for i, n := range nodes {
		onReporting := n == reporting
		if seen(i, "users") && (onReporting || i == 0) || seen(i, "analytics") && !onReporting {
			t.Errorf("pg_stat_activity on %s: users %v, analytics %v", n, seen(i, "users"), seen(i, "analytics"))
		}
	}
	// The sampling above may miss short queries on a loaded machine; a query held long enough
	// to be seen shows each endpoint at work where it must be, and only there.
	for _, ep := range []string{"analytics", "users"} {
		conn, err := pgx.Connect(ctx, p.epConnString(ep, ep))
		if err != nil {
			t.Fatal(err)
		}
		qctx, stopQuery := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			conn.Exec(qctx, "SELECT pg_sleep(60)")
		}()
		waitFor(t, 30*time.Second, ep+" at work in pg_stat_activity", func() bool {
			var on [4]sync.Map
			for i, n := range nodes {
				backendApps(ctx, n, &on[i])
			}
			running := func(i int) bool { _, ok := on[i].Load(ep); return ok }
			if ep == "analytics" {
				return running(3) && !running(0) && !running(1) && !running(2)
			}
			return (running(1) || running(2)) && !running(0) && !running(3)
		})
		stopQuery()
		<-done
		conn.Close(context.Background())
	}

	admin := p.console(t, "app", nil)
	eps := show(t, admin, "SHOW ENDPOINTS", nil)
	if r := find(eps, "name", "analytics"); len(r) != 1 || r[0]["readers"] != reporting.Addr() || r[0]["route"] != "reader" {
		t.Errorf("SHOW ENDPOINTS analytics: %v", r)
	}
	if r := find(eps, "name", "users"); len(r) != 1 || strings.Contains(r[0]["readers"].(string), reporting.Addr()) ||
		r[0]["picked"].(int64) < 1000 {
		t.Errorf("SHOW ENDPOINTS users: %v", r)
	}
	for _, r := range show(t, admin, "SHOW NODES", nil) {
		want := map[string]string{c.Primary().Addr(): "", reporting.Addr(): "analytics"}[r["node"].(string)]
		if r["node"] != c.Primary().Addr() && r["node"] != reporting.Addr() {
			want = "users"
		}
		if r["endpoints"] != want {
			t.Errorf("SHOW NODES %s: endpoints %q, want %q", r["node"], r["endpoints"], want)
		}
	}
}

// testEndpointModes: an auto endpoint in transaction mode routes each transaction (reads to a
// replica, nextval to the writer) beside a writer endpoint in session mode, whose client keeps
// one server connection, its BackendKeyData naming it.
func testEndpointModes(t *testing.T, c *pgcluster.Cluster) {
	p := endpointsProxy(t, c, []config.Endpoint{
		{Name: "app", Listen: "127.0.0.1:0", Route: config.RouteAuto, PoolMode: config.PoolModeTransaction},
		{Name: "ops", Listen: "127.0.0.1:0", Route: config.RouteWriter, PoolMode: config.PoolModeSession},
	}, func(cfg *config.Config) { cfg.Proxy.PoolMode = config.PoolModeSession }) // tables override [proxy]
	waitReaders(t, p, 3)
	ctx := context.Background()
	writer := c.Primary().Port()

	app, err := pgx.Connect(ctx, p.epConnString("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	var port int
	if err := app.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil || port == writer {
		t.Errorf("a read on the auto endpoint ran on %d (%v), want a replica", port, err)
	}
	if err := app.QueryRow(ctx, "SELECT inet_server_port() FROM nextval('endpoint_seq')").Scan(&port); err != nil || port != writer {
		t.Errorf("nextval on the auto endpoint ran on %d (%v), want the writer %d", port, err, writer)
	}

	ops, err := pgx.Connect(ctx, p.epConnString("ops", "ops"))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close(ctx)
	var pids []uint32
	for range 3 {
		var pid uint32
		if err := ops.QueryRow(ctx, "SELECT pg_backend_pid() FROM (SELECT inet_server_port() AS port) s WHERE port = $1", writer).Scan(&pid); err != nil {
			t.Fatalf("ops on the writer: %v", err)
		}
		pids = append(pids, pid)
	}
	if pids[0] != pids[1] || pids[1] != pids[2] || ops.PgConn().PID() != pids[0] {
		t.Errorf("session mode: backend pids %v, BackendKeyData %d; want one server connection, named", pids, ops.PgConn().PID())
	}
	for _, ci := range p.Clients() {
		if ci.Endpoint != "app" && ci.Endpoint != "ops" {
			t.Errorf("client on endpoint %q", ci.Endpoint)
		}
	}
}

// testEndpointReload: a reload adds an endpoint, moves one to a new address and removes one,
// while clients of the endpoints that stay run without a single error; the removed endpoint's
// client finishes its transaction, then is told why it is ended.
func testEndpointReload(t *testing.T, c *pgcluster.Cluster) {
	p := endpointsProxy(t, c, []config.Endpoint{
		{Name: "app", Listen: "127.0.0.1:0", Route: config.RouteAuto},
		{Name: "reports", Listen: "127.0.0.1:0", Route: config.RouteReader},
	}, nil)
	waitReaders(t, p, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The load: clients of app and reports, each querying in a loop until told to stop.
	var queries, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := range 20 {
		name := []string{"app", "reports"}[i%2]
		conn, err := pgx.Connect(ctx, p.epConnString(name, name))
		if err != nil {
			t.Fatal(err)
		}
		load.Go(func() {
			defer conn.Close(context.Background())
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				queries.Add(1)
			}
		})
	}
	progress := func(what string) {
		t.Helper()
		from := queries.Load()
		waitFor(t, 30*time.Second, "the load to go on "+what, func() bool { return queries.Load() >= from+200 })
	}
	progress("at start")

	reload := func(eps []config.Endpoint) {
		t.Helper()
		next := *p.Config()
		next.Endpoint = eps
		writeFile(t, p.cfgPath, &next)
		if err := p.ReloadFile(p.cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	app := config.Endpoint{Name: "app", Listen: "127.0.0.1:0", Route: config.RouteAuto}
	reports := config.Endpoint{Name: "reports", Listen: "127.0.0.1:0", Route: config.RouteReader}
	appAddr, reportsAddr := p.NamedEndpointAddr("app"), p.NamedEndpointAddr("reports")

	// Added.
	reload([]config.Endpoint{app, reports, {Name: "batch", Listen: "127.0.0.1:0", Route: config.RouteWriter}})
	batch, err := pgx.Connect(ctx, p.epConnString("batch", "batch"))
	if err != nil {
		t.Fatalf("the added endpoint: %v", err)
	}
	defer batch.Close(ctx)
	var inRecovery bool
	if err := batch.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("the added writer endpoint: in recovery %v, %v", inRecovery, err)
	}
	progress("after an endpoint was added")
	if p.NamedEndpointAddr("app").String() != appAddr.String() || p.NamedEndpointAddr("reports").String() != reportsAddr.String() {
		t.Fatal("a reload moved endpoints that did not change")
	}

	// reports moves to another address: its clients stay; the old address refuses.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	moved := probe.Addr().String()
	probe.Close()
	reports.Listen = moved
	tx, err := batch.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT nextval('endpoint_seq')"); err != nil {
		t.Fatal(err)
	}
	// ... and batch is removed while its client is inside a transaction.
	reload([]config.Endpoint{app, reports})
	if got := p.NamedEndpointAddr("reports"); got == nil || got.String() != moved {
		t.Fatalf("reports listens on %v, want %s", got, moved)
	}
	if c, err := net.DialTimeout("tcp", reportsAddr.String(), time.Second); err == nil {
		c.Close()
		t.Errorf("reports' old address %s still accepts", reportsAddr)
	}
	if c, err := pgx.Connect(ctx, p.epConnString("reports", "reports")); err != nil {
		t.Errorf("reports at its new address: %v", err)
	} else {
		c.Close(ctx)
	}
	if _, err := tx.Exec(ctx, "SELECT nextval('endpoint_seq')"); err != nil {
		t.Fatalf("the removed endpoint's transaction in progress: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the removed endpoint's commit: %v", err)
	}
	_, err = batch.Exec(ctx, "SELECT 1")
	if pgCode(err) != "57P01" || !strings.Contains(err.Error(), `terminating connection because its endpoint "batch" was removed`) {
		t.Errorf("after the transaction on the removed endpoint: %v", err)
	}
	progress("after endpoints were removed and moved")

	// An address in use: the reload is refused whole, the running endpoints stay.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	next := *p.Config()
	next.Endpoint = []config.Endpoint{app, {Name: "late", Listen: busy.Addr().String(), Route: config.RouteWriter}}
	writeFile(t, p.cfgPath, &next)
	if err := p.ReloadFile(p.cfgPath); err == nil || !strings.Contains(err.Error(), `endpoint "late"`) {
		t.Fatalf("a reload with an address in use: %v", err)
	}
	if p.NamedEndpointAddr("late") != nil || p.NamedEndpointAddr("reports") == nil || len(p.Config().Endpoint) != 2 ||
		p.Config().Endpoint[1].Name != "reports" {
		t.Fatal("a refused reload changed the endpoints")
	}
	progress("after a refused reload")
	close(stop)
	load.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d clients of the endpoints that stayed failed: %v", n, *firstErr.Load())
	}
	t.Logf("%d queries through three reloads, none failed", queries.Load())
	if len(p.logged(`msg="reload: endpoint removed`, "endpoint=batch")) != 1 {
		t.Error("the removal was not logged")
	}
}

// testAuroraEndpoints: with Aurora discovery (the stub aurora_replica_status() of the discovery
// tests; instance ids are the ports, through aurora_template), endpoints filter readers by
// instance-id globs.
func testAuroraEndpoints(t *testing.T, c *pgcluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := c.Nodes()
	var rows []string
	for i, n := range nodes {
		session := fmt.Sprintf("'replica-%d'", n.Port())
		if i == 0 {
			session = "'MASTER_SESSION_ID'"
		}
		rows = append(rows, fmt.Sprintf("('%d', %s, 1000::numeric, NULL::numeric, 10::float8, now())", n.Port(), session))
	}
	stub := `CREATE FUNCTION aurora_replica_status()
		RETURNS TABLE(server_id text, session_id text, durable_lsn numeric, current_read_lsn numeric,
			replica_lag_in_msec float8, last_update_timestamp timestamptz)
		LANGUAGE sql AS $$ VALUES ` + strings.Join(rows, ", ") + ` $$`
	for _, db := range []string{"postgres", "appdb"} {
		if err := execOn(ctx, c.Primary(), "postgres", db, stub); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			execOn(context.Background(), c.Primary(), "postgres", db, "DROP FUNCTION IF EXISTS aurora_replica_status()")
		})
	}
	if err := replayed(ctx, c, "postgres", "SELECT to_regproc('aurora_replica_status') IS NOT NULL"); err != nil {
		t.Fatal(err)
	}
	reporting := c.Replicas()[2]
	var ids []string
	for _, n := range nodes {
		ids = append(ids, strconv.Itoa(n.Port()))
	}
	glob := suffixGlob(strconv.Itoa(reporting.Port()), ids)
	p := endpointsProxy(t, c, []config.Endpoint{
		{Name: "analytics", Listen: "127.0.0.1:0", Route: config.RouteReader, Nodes: []string{glob}},
		{Name: "users", Listen: "127.0.0.1:0", Route: config.RouteReader, ExcludeNodes: []string{glob}},
	}, func(cfg *config.Config) {
		cfg.Cluster.Hosts = []string{c.Primary().Addr()} // the seed
		cfg.Cluster.Discovery = config.DiscoveryAurora
		cfg.Cluster.AuroraTemplate = "127.0.0.1:{id}"
		cfg.Cluster.DiscoveryInterval.Duration = 100 * time.Millisecond
	})
	waitReaders(t, p, 3)
	for _, n := range p.Cluster().Nodes() {
		if _, port, _ := net.SplitHostPort(n.Addr()); n.InstanceID() != port {
			t.Errorf("%s: instance id %q, want %s", n, n.InstanceID(), port)
		}
	}
	var analytics, users portSet
	if err := runClients(ctx, p, "analytics", 20, 10, &analytics); err != nil {
		t.Fatal(err)
	}
	if err := runClients(ctx, p, "users", 20, 10, &users); err != nil {
		t.Fatal(err)
	}
	if got := analytics.keys(); !slices.Equal(got, []int{reporting.Port()}) {
		t.Errorf("analytics (nodes = [%q]) ran on %v, want only %d", glob, got, reporting.Port())
	}
	if got := users.keys(); len(got) != 2 || slices.Contains(got, reporting.Port()) || slices.Contains(got, c.Primary().Port()) {
		t.Errorf("users (exclude_nodes = [%q]) ran on %v, want the two other replicas", glob, got)
	}
}

// suffixGlob returns the shortest "*<suffix>" glob that matches id and none of the others.
func suffixGlob(id string, all []string) string {
	for n := 1; ; n++ {
		g := "*" + id[len(id)-n:]
		if !slices.ContainsFunc(all, func(o string) bool { return o != id && strings.HasSuffix(o, id[len(id)-n:]) }) {
			return g
		}
	}
}

// testEndpointPoolSize: an endpoint's clients hold at most its pool_size server connections at
// once; the next waits, and after query_wait_timeout gets a full pool's 53300. Another endpoint
// on the same node is not held back.
func testEndpointPoolSize(t *testing.T, c *pgcluster.Cluster) {
	p := endpointsProxy(t, c, []config.Endpoint{
		{Name: "capped", Listen: "127.0.0.1:0", Route: config.RouteWriter, PoolSize: 1},
		{Name: "free", Listen: "127.0.0.1:0", Route: config.RouteWriter},
	}, func(cfg *config.Config) {
		cfg.Cluster.ServerConnectTimeout.Duration = time.Second
		cfg.Cluster.QueryWaitTimeout.Duration = time.Second
	})
	ctx := context.Background()
	conn := func(name string) *pgx.Conn {
		cn, err := pgx.Connect(ctx, p.epConnString(name, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cn.Close(context.Background()) })
		return cn
	}
	a, b, free := conn("capped"), conn("capped"), conn("free")
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	var capped *router.Endpoint
	for _, ep := range p.Router().Endpoints() {
		if ep.Name() == "capped" {
			capped = ep
		}
	}
	if held, _ := capped.Leases(); held != 1 {
		t.Fatalf("capped holds %d server connections, want 1", held)
	}
	start := time.Now()
	_, err = b.Exec(ctx, "SELECT 1")
	if pgCode(err) != "53300" || !strings.Contains(err.Error(), `endpoint "capped" is at its pool_size, 1`) {
		t.Fatalf("a second client over pool_size: %v", err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("gave up after %s, before query_wait_timeout", waited)
	}
	mustExec(t, free, "SELECT 1") // the other endpoint on the same node is not held back
	done := make(chan error, 1)
	go func() {
		_, err := b.Exec(ctx, "SELECT 1")
		done <- err
	}()
	waitFor(t, 10*time.Second, "b to wait for the endpoint", func() bool { _, w := capped.Leases(); return w == 1 })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("b once a's transaction ended: %v", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// testEndpointDrainBound: a removed endpoint's client that stays in its transaction is closed
// once shutdown_timeout has passed, as at shutdown, and that is logged; the other endpoints'
// clients are not touched.
func testEndpointDrainBound(t *testing.T, c *pgcluster.Cluster) {
	app := config.Endpoint{Name: "app", Listen: "127.0.0.1:0", Route: config.RouteAuto}
	gone := config.Endpoint{Name: "gone", Listen: "127.0.0.1:0", Route: config.RouteWriter}
	p := endpointsProxy(t, c, []config.Endpoint{app, gone}, func(cfg *config.Config) {
		cfg.Proxy.ShutdownTimeout.Duration = time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stays, err := pgx.Connect(ctx, p.epConnString("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer stays.Close(ctx)
	client, err := pgx.Connect(ctx, p.epConnString("gone", "gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	if _, err := client.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	next := *p.Config()
	next.Endpoint = []config.Endpoint{app}
	writeFile(t, p.cfgPath, &next)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the removed endpoint's client closed after shutdown_timeout", func() bool {
		return len(p.logged("closed the removed endpoints' clients still in a transaction", "clients=1")) == 1
	})
	if _, err := client.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the removed endpoint's client still runs queries after shutdown_timeout")
	}
	if _, err := stays.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("the client of an endpoint that stayed: %v", err)
	}
}
