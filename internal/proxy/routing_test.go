package proxy_test

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/classify"
	pgtcluster "pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
)

// routingCluster is a primary with two replicas, shared by the routing tests that do not change
// it, with a table, a sequence and a volatile user function that writes.
var routingCluster struct {
	once sync.Once
	c    *pgcluster.Cluster
	err  error
}

func sharedRoutingCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	routingCluster.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		routingCluster.c, routingCluster.err = pgcluster.Start(ctx, pgcluster.Options{
			Replicas:  2,
			ExtraConf: []string{"max_connections = 300"},
			HBA:       []string{"host all app 127.0.0.1/32 scram-sha-256"},
			InitSQL: []string{
				"CREATE ROLE app LOGIN PASSWORD 'app secret'",
				"CREATE DATABASE appdb OWNER app",
			},
		})
		if routingCluster.err == nil {
			routingCluster.err = execOn(ctx, routingCluster.c.Primary(), "app", "appdb",
				"CREATE TABLE items (id bigserial PRIMARY KEY, v text, views int DEFAULT 0)",
				"CREATE SEQUENCE tickets",
				"CREATE SCHEMA app",
				// The seeds' "read endpoint that increments a view counter".
				`CREATE FUNCTION app.bump_views(item bigint) RETURNS int LANGUAGE sql VOLATILE AS
					'UPDATE items SET views = views + 1 WHERE id = item RETURNING inet_server_port()'`,
				`CREATE FUNCTION app.port_of(x int) RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'`,
			)
		}
		if routingCluster.err == nil {
			routingCluster.err = replayed(ctx, routingCluster.c, "appdb",
				"SELECT to_regprocedure('app.port_of(int)') IS NOT NULL AND to_regclass('public.items') IS NOT NULL")
		}
	})
	if routingCluster.err != nil {
		t.Fatal(routingCluster.err)
	}
	return routingCluster.c
}

// replayed waits until check, a query returning one boolean, is true in database db on every
// replica of c: the replicas have replayed what the primary did.
func replayed(ctx context.Context, c *pgcluster.Cluster, db, check string) error {
	for _, r := range c.Replicas() {
		conn, err := pgx.Connect(ctx, r.ConnString("postgres", db))
		if err != nil {
			return err
		}
		for {
			var ok bool
			err := conn.QueryRow(ctx, check).Scan(&ok)
			if err != nil || ok {
				conn.Close(ctx)
				if err != nil {
					return err
				}
				break
			}
			select {
			case <-ctx.Done():
				conn.Close(context.Background())
				return fmt.Errorf("replica %s did not replay %q: %w", r, check, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// closeRoutingCluster stops the shared routing cluster, if a test started it (from TestMain).
func closeRoutingCluster() {
	if routingCluster.c != nil {
		routingCluster.c.Close()
	}
}

// execOn runs stmts on n as user in db.
func execOn(ctx context.Context, n *pgcluster.Node, user, db string, stmts ...string) error {
	pw := ""
	if user == "app" {
		pw = " password='app secret'"
	}
	c, err := pgx.Connect(ctx, n.ConnString(user, db)+pw)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// sharedRoutingProxy starts pgtide in front of the shared routing cluster, with both replicas
// seen as readers.
func sharedRoutingProxy(t *testing.T) (*pgcluster.Cluster, *testProxy) {
	t.Helper()
	c := sharedRoutingCluster(t)
	p := routingProxy(t, c, nil)
	waitReaders(t, p, 2)
	return c, p
}

// routingProxy starts pgtide in transaction mode in front of c, routing on its auto endpoint.
func routingProxy(t *testing.T, c *pgcluster.Cluster, mutate func(*config.Config)) *testProxy {
	return clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.PoolMode = config.PoolModeTransaction
		cfg.Cluster.PoolSize = 20
		// On a busy machine a replica can fall 100ms behind for a moment; the tests of lag set
		// their own bound, the others must not depend on the machine's speed.
		cfg.Proxy.MaxReplicaLag.Duration = 10 * time.Second
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// ports returns the writer's port and the replicas' ports of c.
func ports(c *pgcluster.Cluster) (writer int, readers map[int]bool) {
	readers = map[int]bool{}
	for _, r := range c.Replicas() {
		readers[r.Port()] = true
	}
	return c.Primary().Port(), readers
}

// waitReaders waits until the proxy's health checks see both replicas as readers.
func waitReaders(t *testing.T, p *testProxy, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, "readers up", func() bool {
		return len(p.Cluster().Readers()) >= n
	})
}

// TestRouteReadsAndWrites: through the auto endpoint in transaction mode, plain reads land on
// replicas (both of them) and writes on the writer, in the simple and the extended protocol; a
// volatile user function and nextval run on the writer and succeed.
func TestRouteReadsAndWrites(t *testing.T) {
	c, p := sharedRoutingProxy(t)
	writer, readers := ports(c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The catalog of user functions is read from the writer in the background.
	waitFor(t, 30*time.Second, "function catalog", func() bool {
		return p.Cluster().Functions("appdb") != nil
	})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			// Reads on a connection of their own: after a write, a connection's reads go to the
			// writer until the replicas have caught up (read_your_writes, tested below).
			conn := p.connect(t, "app", "appdb", mode)
			rd := p.connect(t, "app", "appdb", mode)
			on := func(c *pgx.Conn, sql string, args ...any) int {
				t.Helper()
				var n int
				if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				return n
			}
			port := func(sql string, args ...any) int { t.Helper(); return on(conn, sql, args...) }
			read := func(sql string, args ...any) int { t.Helper(); return on(rd, sql, args...) }
			seen := map[int]int{}
			for range 40 {
				seen[read("SELECT inet_server_port()")]++
			}
			for p := range seen {
				if !readers[p] {
					t.Fatalf("a plain read ran on port %d, not a replica (readers %v): %v", p, readers, seen)
				}
			}
			if len(seen) != 2 {
				t.Errorf("reads went to %d replicas, want both: %v", len(seen), seen)
			}
			if got := port("INSERT INTO items (v) VALUES ('x') RETURNING inet_server_port()"); got != writer {
				t.Errorf("an INSERT ran on port %d, want the writer %d", got, writer)
			}
			if got := port("WITH d AS (DELETE FROM items WHERE v = 'none' RETURNING 1) SELECT inet_server_port() FROM (SELECT 1) s LEFT JOIN d ON true LIMIT 1"); got != writer {
				t.Errorf("a data-modifying CTE ran on port %d, want the writer %d", got, writer)
			}
			var id int64
			if err := conn.QueryRow(ctx, "INSERT INTO items (v) VALUES ('viewed') RETURNING id").Scan(&id); err != nil {
				t.Fatal(err)
			}
			if got := port("SELECT app.bump_views($1)", id); got != writer {
				t.Errorf("a volatile user function ran on port %d, want the writer %d", got, writer)
			}
			if got := port(`SELECT "app"."bump_views"($1)`, id); got != writer {
				t.Errorf("a quoted volatile user function ran on port %d, want the writer %d", got, writer)
			}
			if got := read("SELECT app.port_of(1)"); !readers[got] {
				t.Errorf("a stable user function ran on port %d, want a replica", got)
			}
			// A volatile built-in that acts on the server it runs on (pg_promote would promote
			// a replica) goes to the writer; one known to be harmless does not.
			if got := read("SELECT inet_server_port() FROM (SELECT random(), clock_timestamp()) s"); !readers[got] {
				t.Errorf("random() ran on port %d, want a replica", got)
			}
			if got := port("SELECT inet_server_port() FROM (SELECT setseed(0.5)) s"); got != writer {
				t.Errorf("setseed() (volatile, not known harmless) ran on port %d, want the writer %d", got, writer)
			}
			var ticket int64
			if err := conn.QueryRow(ctx, "SELECT nextval('tickets')").Scan(&ticket); err != nil {
				t.Fatalf("nextval: %v", err)
			}
			if got := port("SELECT inet_server_port() FROM items FOR UPDATE LIMIT 1"); got != writer {
				t.Errorf("SELECT … FOR UPDATE ran on port %d, want the writer", got)
			}
			// A transaction stays on one server: BEGIN goes to the writer, BEGIN READ ONLY to a reader.
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var a, b int
			tx.QueryRow(ctx, "SELECT inet_server_port()").Scan(&a)
			tx.QueryRow(ctx, "SELECT inet_server_port()").Scan(&b)
			tx.Rollback(ctx)
			if a != writer || b != writer {
				t.Errorf("a read-write transaction ran on %d then %d, want the writer %d", a, b, writer)
			}
			tx, err = rd.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
			if err != nil {
				t.Fatal(err)
			}
			tx.QueryRow(ctx, "SELECT inet_server_port()").Scan(&a)
			tx.QueryRow(ctx, "SELECT inet_server_port()").Scan(&b)
			tx.Commit(ctx)
			if !readers[a] || a != b {
				t.Errorf("a read-only transaction ran on %d then %d, want one replica", a, b)
			}
		})
	}
}

// TestRouteSafetyNet: a write forced onto a replica by a reader hint, or by SET pgtide.route =
// 'reader', is refused there (25006) and re-run on the writer: the client sees only the writer's
// answer, and the re-run is counted.
func TestRouteSafetyNet(t *testing.T) {
	c, p := sharedRoutingProxy(t)
	writer, _ := ports(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			conn := p.connect(t, "app", "appdb", mode)
			before := p.Routes().Retried(classify.ReasonHintReader)
			var got int
			err := conn.QueryRow(ctx, "/* pgtide:reader */ INSERT INTO items (v) VALUES ('misrouted') RETURNING inet_server_port()").Scan(&got)
			if err != nil {
				t.Fatalf("a misrouted INSERT failed: %v", err)
			}
			if got != writer {
				t.Fatalf("the misrouted INSERT ran on %d, want the writer %d", got, writer)
			}
			if n := p.Routes().Retried(classify.ReasonHintReader) - before; n != 1 {
				t.Errorf("re-runs counted: %d, want 1", n)
			}
			// The session setting works the same way, and SHOW answers it.
			if _, err := conn.Exec(ctx, "SET pgtide.route = 'reader'", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			var route string
			if err := conn.QueryRow(ctx, "SHOW pgtide.route", pgx.QueryExecModeSimpleProtocol).Scan(&route); err != nil || route != "reader" {
				t.Fatalf("SHOW pgtide.route = %q, %v; want reader", route, err)
			}
			if err := conn.QueryRow(ctx, "UPDATE items SET views = views WHERE false RETURNING 1").Scan(new(int)); err != pgx.ErrNoRows {
				t.Fatalf("an UPDATE under pgtide.route = reader: %v, want no rows", err)
			}
			if _, err := conn.Exec(ctx, "DISCARD ALL", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, "SHOW pgtide.route", pgx.QueryExecModeSimpleProtocol).Scan(&route); err != nil || route != "auto" {
				t.Fatalf("SHOW pgtide.route after DISCARD ALL = %q, %v; want auto", route, err)
			}
			if _, err := conn.Exec(ctx, "SET pgtide.route TO writer", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			if got := readPort(t, ctx, conn); got != writer {
				t.Fatalf("a read under pgtide.route = writer ran on %d, want the writer %d", got, writer)
			}
			if tag, err := conn.Exec(ctx, "RESET pgtide.route", pgx.QueryExecModeSimpleProtocol); err != nil || tag.String() != "RESET" {
				t.Fatalf("RESET pgtide.route: tag %q, %v; want RESET", tag, err)
			}
			if err := conn.QueryRow(ctx, "SHOW pgtide.route", pgx.QueryExecModeSimpleProtocol).Scan(&route); err != nil || route != "auto" {
				t.Fatalf("SHOW pgtide.route = %q, %v; want auto", route, err)
			}
			if _, err := conn.Exec(ctx, "SET pgtide.route = 'sideways'", pgx.QueryExecModeSimpleProtocol); pgCode(err) != "22023" {
				t.Fatalf("SET pgtide.route to a bad value: %v, want SQLSTATE 22023", err)
			}
			// Anywhere else (the extended protocol, a longer string) it is refused, not sent
			// to a server where it would do nothing.
			rows, _ := conn.Query(ctx, "SET pgtide.route = 'writer'", pgx.QueryExecModeExec) // pgx's Exec would use the simple protocol
			rows.Close()
			if err := rows.Err(); pgCode(err) != "0A000" {
				t.Fatalf("SET pgtide.route in the extended protocol: %v, want SQLSTATE 0A000", err)
			}
			if _, err := conn.Exec(ctx, "SET pgtide.route = 'writer'; SELECT 1", pgx.QueryExecModeSimpleProtocol); pgCode(err) != "0A000" {
				t.Fatalf("SET pgtide.route in a longer string: %v, want SQLSTATE 0A000", err)
			}
			if err := conn.QueryRow(ctx, "SHOW pgtide.route", pgx.QueryExecModeSimpleProtocol).Scan(&route); err != nil || route != "auto" {
				t.Fatalf("SHOW pgtide.route = %q, %v; want auto", route, err)
			}
		})
	}
	// A write inside an explicit transaction is never retried: BEGIN goes to the writer anyway.
	// A read-only transaction that writes fails as it would on any server.
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "INSERT INTO items (v) VALUES ('no')")
	tx.Rollback(ctx)
	if pgCode(err) != "25006" {
		t.Fatalf("a write in a READ ONLY transaction: %v, want SQLSTATE 25006", err)
	}
}

// TestRouteReadYourWrites: 1,000 times "insert a row, then select it at once" through the auto
// endpoint return the row every time, while another client's reads keep going to replicas.
func TestRouteReadYourWrites(t *testing.T) {
	c, p := sharedRoutingProxy(t)
	_, readers := ports(c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeCacheStatement)
	other := p.connect(t, "app", "appdb", pgx.QueryExecModeCacheStatement)
	otherOnReplicas := 0
	for i := range 1000 {
		var id int64
		if err := conn.QueryRow(ctx, "INSERT INTO items (v) VALUES ($1) RETURNING id", fmt.Sprint("ryw", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := conn.QueryRow(ctx, "SELECT v FROM items WHERE id = $1", id).Scan(&v); err != nil {
			t.Fatalf("iteration %d: the row just inserted is not there: %v", i, err)
		}
		var port int
		if err := other.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			t.Fatal(err)
		}
		if readers[port] {
			otherOnReplicas++
		}
	}
	if otherOnReplicas < 900 {
		t.Errorf("another client's reads went to replicas %d times out of 1000, want nearly all", otherOnReplicas)
	}
	// The writing client's reads come back to the replicas once they caught up.
	waitFor(t, 30*time.Second, "reads back on replicas", func() bool {
		var port int
		return conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port) == nil && readers[port]
	})
}

// TestRouteLaggingReplica: a replica that applies WAL 2 s late (recovery_min_apply_delay) gets no
// reads while it lags behind a write load, and gets them back once it has caught up.
func TestRouteLaggingReplica(t *testing.T) {
	c := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := execOn(ctx, c.Primary(), "app", "appdb", "CREATE TABLE ticks (t timestamptz)"); err != nil {
		t.Fatal(err)
	}
	p := routingProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.ReadYourWrites = config.ReadYourWritesOff
		cfg.Proxy.MaxReplicaLag.Duration = time.Second // the slow replica lags 2s
	})
	waitReaders(t, p, 2)
	slow := c.Replicas()[1]
	if err := execOn(ctx, slow, "postgres", "postgres",
		"ALTER SYSTEM SET recovery_min_apply_delay = '2s'", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a steady write load on the primary
		defer wg.Done()
		w, err := pgx.Connect(ctx, c.Primary().ConnString("app", "appdb")+" password='app secret'")
		if err != nil {
			t.Error(err)
			return
		}
		defer w.Close(context.Background())
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			w.Exec(ctx, "INSERT INTO ticks VALUES (now())")
		}
	}()
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	read := func() int {
		var port int
		if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			t.Fatal(err)
		}
		return port
	}
	node := func() bool { // the proxy sees the slow replica lagging
		for _, n := range p.Cluster().Readers() {
			if n.Addr() == slow.Addr() {
				return n.Lag() > time.Second
			}
		}
		return false
	}
	waitFor(t, 60*time.Second, "the slow replica lagging", node)
	for i := range 100 {
		if port := read(); port == slow.Port() {
			t.Fatalf("read %d went to the lagging replica", i)
		}
	}
	close(stop)
	wg.Wait()
	if err := execOn(ctx, slow, "postgres", "postgres",
		"ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "reads back on the caught-up replica", func() bool { return read() == slow.Port() })
}

// TestRoutePgbench: pgbench -S through the auto endpoint spreads reads over both replicas, and
// pgbench's default TPC-B-like script through it completes with no failed transaction.
func TestRoutePgbench(t *testing.T) {
	pgbench, err := lookPath("pgbench")
	if err != nil {
		t.Skip("pgbench not installed")
	}
	c := startCluster(t, 2)
	p := routingProxy(t, c, nil)
	waitReaders(t, p, 2)
	port := p.Addr().(*net.TCPAddr).Port
	cs := fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=appdb password='app secret' sslmode=disable", port)
	run(t, 2*time.Minute, pgbench, "-i", "-q", "-s", "1", cs)
	before := map[int]int64{}
	for _, r := range c.Replicas() {
		before[r.Port()] = p.Router().Picked(p.nodeAt(t, r.Port()))
	}
	out := run(t, 3*time.Minute, pgbench, "-n", "-S", "-c", "8", "-j", "2", "-t", "200", cs)
	for _, r := range c.Replicas() {
		if n := p.Router().Picked(p.nodeAt(t, r.Port())) - before[r.Port()]; n < 100 {
			t.Errorf("replica %s served %d of pgbench -S's 1600 transactions, want a share", r, n)
		}
	}
	checkPgbench(t, out, 1600)
	out = run(t, 3*time.Minute, pgbench, "-n", "-c", "8", "-j", "2", "-t", "100", cs)
	checkPgbench(t, out, 800)
}

func checkPgbench(t *testing.T, out string, want int) {
	t.Helper()
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] || m[1] != fmt.Sprint(want) {
		t.Fatalf("not every transaction was processed: %v\n%s", m, out)
	}
	if strings.Contains(out, "aborted") || !strings.Contains(out, "number of failed transactions: 0 (0.000%)") {
		t.Fatalf("pgbench reported failures:\n%s", out)
	}
}

// TestRouteAurora: on Aurora (a local cluster whose WAL functions fail for the health-check user
// as Aurora's do, with aurora_version(), aurora_db_instance_identifier() and
// aurora_replica_status() stubbed from a table), readers stay up, a reader whose
// replica_lag_in_msec is over max_replica_lag gets no reads until it is back under, and a client's
// reads after its write go to the writer while the readers' durable_lsn is behind the writer's.
func TestRouteAurora(t *testing.T) {
	c := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, r1, r2 := c.Primary().Port(), c.Replicas()[0].Port(), c.Replicas()[1].Port()
	refuse := func(fn, returns, code string) string {
		return fmt.Sprintf(`CREATE FUNCTION aurora_shadow.%s() RETURNS %s LANGUAGE plpgsql AS
			$$ BEGIN RAISE EXCEPTION 'Function %s() is currently not supported for Aurora' USING ERRCODE = '%s'; END $$`, fn, returns, fn, code)
	}
	if err := execOn(ctx, c.Primary(), "postgres", "postgres",
		"CREATE ROLE pgtide_aurora LOGIN",
		"CREATE SCHEMA aurora_shadow",
		"GRANT USAGE ON SCHEMA aurora_shadow TO pgtide_aurora",
		"ALTER ROLE pgtide_aurora SET search_path = aurora_shadow, pg_catalog, public",
		refuse("pg_last_wal_receive_lsn", "pg_lsn", "0A000"),
		refuse("pg_last_wal_replay_lsn", "pg_lsn", "0A000"),
		refuse("pg_last_xact_replay_timestamp", "timestamptz", "0A000"),
		refuse("pg_current_wal_lsn", "pg_lsn", "55000"),
		refuse("pg_current_wal_flush_lsn", "pg_lsn", "55000"),
		"CREATE FUNCTION aurora_shadow.aurora_version() RETURNS text LANGUAGE sql AS $$ SELECT '15.4.3' $$",
		"CREATE FUNCTION aurora_shadow.aurora_db_instance_identifier() RETURNS text LANGUAGE sql AS $$ SELECT current_setting('port') $$",
		`CREATE TABLE aurora_shadow.status (server_id text, session_id text, durable_lsn numeric,
			current_read_lsn numeric, replica_lag_in_msec float8)`,
		"GRANT SELECT ON aurora_shadow.status TO pgtide_aurora",
		`CREATE FUNCTION aurora_shadow.aurora_replica_status() RETURNS TABLE(server_id text, session_id text,
			durable_lsn numeric, current_read_lsn numeric, replica_lag_in_msec float8, last_update_timestamp timestamptz)
			LANGUAGE sql AS $$ SELECT *, now() FROM aurora_shadow.status $$`,
		fmt.Sprintf(`INSERT INTO aurora_shadow.status VALUES ('%d', 'MASTER_SESSION_ID', 5000, NULL, NULL),
			('%d', 'r1', 4000, NULL, 5), ('%d', 'r2', 4000, NULL, 800)`, w, r1, r2),
	); err != nil {
		t.Fatal(err)
	}
	if err := execOn(ctx, c.Primary(), "app", "appdb", "CREATE TABLE notes (v text)"); err != nil {
		t.Fatal(err)
	}
	setRow := func(port int, lsn, lagMS int) {
		t.Helper()
		if err := execOn(ctx, c.Primary(), "postgres", "postgres", fmt.Sprintf(
			"UPDATE aurora_shadow.status SET durable_lsn = %d, replica_lag_in_msec = %d WHERE server_id = '%d'", lsn, lagMS, port)); err != nil {
			t.Fatal(err)
		}
	}
	p := routingProxy(t, c, func(cfg *config.Config) {
		cfg.Cluster.HealthCheckUser = "pgtide_aurora"
		cfg.Proxy.MaxReplicaLag.Duration = 100 * time.Millisecond // the default: r2 reports 800ms
	})
	waitReaders(t, p, 2)
	reads := func(conn *pgx.Conn, n int) map[int]int {
		t.Helper()
		seen := map[int]int{}
		for range n {
			var port int
			if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
				t.Fatal(err)
			}
			seen[port]++
		}
		return seen
	}
	reader := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	waitFor(t, 30*time.Second, "the health checks to see r2's lag", func() bool {
		return p.nodeAt(t, r2).Lag() == 800*time.Millisecond && p.nodeAt(t, r1).Lag() == 5*time.Millisecond
	})
	if seen := reads(reader, 40); seen[r1] != 40 || !p.Router().Lagging(p.nodeAt(t, r2)) {
		t.Fatalf("reads with r2 lagging 800ms: %v, want all on r1 (%d)", seen, r1)
	}
	// A client that wrote reads from the writer: both readers' durable_lsn (4000) are behind
	// the writer's (5000).
	writer := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	if _, err := writer.Exec(ctx, "INSERT INTO notes VALUES ('x')"); err != nil {
		t.Fatal(err)
	}
	if seen := reads(writer, 10); seen[w] != 10 {
		t.Fatalf("reads after a write with the readers behind: %v, want all on the writer (%d)", seen, w)
	}
	setRow(r2, 5000, 0)
	setRow(r1, 5000, 0)
	waitFor(t, 30*time.Second, "reads back on r2", func() bool { return reads(reader, 1)[r2] == 1 })
	if p.Router().Lagging(p.nodeAt(t, r2)) {
		t.Fatal("r2 serves reads but is said to lag")
	}
	waitFor(t, 30*time.Second, "the writing client's reads to reach a caught-up reader", func() bool {
		seen := reads(writer, 1)
		return seen[r1]+seen[r2] == 1
	})
}

// nodeAt returns the proxy's node at port.
func (p *testProxy) nodeAt(t *testing.T, port int) *pgtcluster.Node {
	t.Helper()
	for _, n := range p.Cluster().Nodes() {
		if n.Addr() == fmt.Sprintf("127.0.0.1:%d", port) {
			return n
		}
	}
	t.Fatalf("no node at port %d", port)
	return nil
}

// readPort returns the port of the server that runs a plain read on conn.
func readPort(t *testing.T, ctx context.Context, conn *pgx.Conn) int {
	t.Helper()
	var port int
	if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
		t.Fatal(err)
	}
	return port
}

// TestRouteSafetyNetPipeline: a client pipelines a misrouted write and a read, each its own
// request (Sync), in one go. The write is re-run on the writer before anything else of the
// client's is sent anywhere; the read then runs as a transaction of its own, on a replica; the
// client gets both answers in order.
func TestRouteSafetyNetPipeline(t *testing.T) {
	c, p := sharedRoutingProxy(t)
	writer, readers := ports(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	before := p.Routes().Retried(classify.ReasonHintReader)
	for round := range 20 {
		pl := conn.PgConn().StartPipeline(ctx)
		pl.SendQueryParams("/* pgtide:reader */ INSERT INTO items (v) VALUES ('pipelined') RETURNING inet_server_port()", nil, nil, nil, nil)
		pl.SendPipelineSync()
		pl.SendQueryParams("SELECT inet_server_port()", nil, nil, nil, nil)
		pl.SendPipelineSync()
		if err := pl.Flush(); err != nil {
			t.Fatal(err)
		}
		var got []int
		for len(got) < 2 {
			res, err := pl.GetResults()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if rr, ok := res.(*pgconn.ResultReader); ok {
				r := rr.Read()
				if r.Err != nil {
					t.Fatalf("round %d: %v", round, r.Err)
				}
				var port int
				fmt.Sscan(string(r.Rows[0][0]), &port)
				got = append(got, port)
			}
		}
		if res, err := pl.GetResults(); err != nil {
			t.Fatal(err)
		} else if _, ok := res.(*pgconn.PipelineSync); !ok {
			t.Fatalf("round %d: %T, want the last Sync", round, res)
		}
		if err := pl.Close(); err != nil {
			t.Fatal(err)
		}
		if got[0] != writer {
			t.Fatalf("round %d: the write ran on %d, want the writer %d", round, got[0], writer)
		}
		// After that write, this client's read goes to the writer until the replicas caught up,
		// or to a replica that has.
		if got[1] != writer && !readers[got[1]] {
			t.Fatalf("round %d: the read ran on %d", round, got[1])
		}
	}
	// The first round's write was refused by a replica and re-run; later ones may go to the
	// writer at once, while the replicas have not caught up with this client's last write.
	if n := p.Routes().Retried(classify.ReasonHintReader) - before; n < 1 {
		t.Fatalf("%d re-runs counted, want at least 1", n)
	}
}

// TestRouteUnnamedStatementMoves: pgx's describe-exec mode prepares the unnamed statement in one
// request and binds it in the next; the two may run on different replicas, so the second
// re-creates the statement where it runs, even after a failed batch. Creating a temporary table
// by a prepared statement pins the client on the writer, not on the replica its Parse was sent to.
func TestRouteUnnamedStatementMoves(t *testing.T) {
	_, p := sharedRoutingProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeDescribeExec, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe} {
		t.Run(mode.String(), func(t *testing.T) {
			conn := p.connect(t, "app", "appdb", mode)
			for i := range 20 {
				batch := &pgx.Batch{}
				batch.BeginTx(pgx.TxOptions{BeginQuery: "begin garbage"})
				batch.Queue("select 1")
				if err := conn.SendBatch(ctx, batch).Close(); err == nil {
					t.Fatal("begin garbage succeeded")
				}
				var n int32
				if err := conn.QueryRow(ctx, "select 1").Scan(&n); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
			}
			rows, err := conn.Query(ctx, "create temporary table t (id serial)")
			if err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if err := rows.Err(); err != nil || rows.CommandTag().String() != "CREATE TABLE" {
				t.Fatalf("create temporary table: %v, tag %q", err, rows.CommandTag())
			}
			if _, err := conn.Exec(ctx, "insert into t default values"); err != nil {
				t.Fatalf("the pinned client's temporary table: %v", err)
			}
		})
	}
}

// TestRouteSerializableDefault: a hot standby refuses serializable transactions, read-only or
// not. A client whose startup options make its transactions serializable has its reads, and its
// READ ONLY transactions, sent to the writer; one whose database makes them serializable behind
// pgtide's back (ALTER DATABASE) still gets every read answered: the replica's refusal (0A000) is
// caught by the safety net and the read runs on the writer.
func TestRouteSerializableDefault(t *testing.T) {
	c, p := sharedRoutingProxy(t)
	writer, _ := ports(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execOn(ctx, c.Primary(), "postgres", "postgres",
		"CREATE DATABASE serialdb OWNER app",
		"ALTER DATABASE serialdb SET default_transaction_isolation = 'serializable'"); err != nil {
		t.Fatal(err)
	}
	defer execOn(context.Background(), c.Primary(), "postgres", "postgres", "DROP DATABASE serialdb WITH (FORCE)")
	// Reads of serialdb go to the replicas: they must have it, and its setting, first.
	if err := replayed(ctx, c, "postgres", `SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_database d
		ON d.oid = s.setdatabase WHERE d.datname = 'serialdb')`); err != nil {
		t.Fatal(err)
	}
	connect := func(db string, params map[string]string) *pgx.Conn {
		t.Helper()
		cfg, err := pgx.ParseConfig(p.connString("app", db))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range params {
			cfg.RuntimeParams[k] = v
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	check := func(conn *pgx.Conn, what string) {
		t.Helper()
		for i := range 10 {
			var port int
			var iso string
			if err := conn.QueryRow(ctx, "SELECT inet_server_port(), current_setting('transaction_isolation')").Scan(&port, &iso); err != nil {
				t.Fatalf("%s, read %d: %v", what, i, err)
			}
			if port != writer || iso != "serializable" {
				t.Fatalf("%s, read %d ran on %d at %s, want the writer %d, serializable", what, i, port, iso, writer)
			}
		}
	}
	startup := connect("appdb", map[string]string{"default_transaction_isolation": "serializable"})
	check(startup, "startup option")
	tx, err := startup.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a READ ONLY transaction with serializable by default: %v", err)
	}
	tx.Commit(ctx)

	before := p.Routes().Retried(classify.ReasonReadOnly)
	check(connect("serialdb", nil), "ALTER DATABASE")
	if n := p.Routes().Retried(classify.ReasonReadOnly) - before; n < 1 {
		t.Fatalf("%d re-runs counted, want the replicas' refusals caught", n)
	}
}

// TestRouteLoginWithoutWriter: while there is no writer (the primary is down), a new client of
// the auto endpoint logs in at once and its reads run on the replica; a write waits for a writer
// as before (failover_timeout).
func TestRouteLoginWithoutWriter(t *testing.T) {
	c := startCluster(t, 1)
	p := routingProxy(t, c, func(cfg *config.Config) { cfg.Cluster.FailoverTimeout.Duration = time.Second })
	waitReaders(t, p, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Primary().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the writer to be gone", func() bool { _, ok := p.Cluster().Writer(); return !ok })
	start := time.Now()
	conn := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	if got := readPort(t, ctx, conn); got != c.Replicas()[0].Port() {
		t.Fatalf("a read without a writer ran on %d, want the replica", got)
	}
	t.Logf("logged in and read in %v", time.Since(start))
	if _, err := conn.Exec(ctx, "CREATE TABLE nope (a int)"); pgCode(err) != "57P03" {
		t.Fatalf("a write without a writer: %v, want 57P03 after failover_timeout", err)
	}
}

// TestRefusedStatementRunsNothingElse: a statement pgtide refuses in the extended protocol (SET
// pgtide.route; with pin_policy = "error", any statement that would pin) fails with pgtide's
// error and runs nothing else, even when the server connection's unnamed statement was last
// another client's: the client's previous statement is not run again.
func TestRefusedStatementRunsNothingElse(t *testing.T) {
	p := startProxy(t, func(cfg *config.Config) {
		cfg.Proxy.PoolMode = config.PoolModeTransaction
		cfg.Proxy.PinPolicy = config.PinPolicyError
		cfg.Cluster.PoolSize = 1 // both clients share one server connection
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	b := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
	mustExec(t, a, "CREATE TABLE IF NOT EXISTS refused_runs (v text)")
	mustExec(t, a, "DELETE FROM refused_runs")
	for _, refused := range []string{"SET pgtide.route = 'writer'", "RESET pgtide.route", "SET work_mem = '8MB'", "SELECT set_config('work_mem', '8MB', false)"} {
		for _, name := range []string{"unnamed", "named"} {
			mode := pgx.QueryExecModeExec
			if name == "named" {
				mode = pgx.QueryExecModeCacheStatement
			}
			if _, err := a.Exec(ctx, "INSERT INTO refused_runs VALUES ($1)", refused+" "+name); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Exec(ctx, "SELECT $1::int", 1); err != nil { // the server's unnamed statement is b's now
				t.Fatal(err)
			}
			rows, _ := a.Query(ctx, refused, mode)
			rows.Close()
			if err := rows.Err(); pgCode(err) != "0A000" {
				t.Fatalf("%s (%s): %v, want SQLSTATE 0A000", refused, name, err)
			}
			var n int
			if err := a.QueryRow(ctx, "SELECT count(*) FROM refused_runs WHERE v = $1", refused+" "+name).Scan(&n); err != nil || n != 1 {
				t.Fatalf("%s (%s): the INSERT before it ran %d times (%v), want once", refused, name, n, err)
			}
		}
	}
	// A refused named statement is the client's only: another client cannot run it by name.
	var n int
	if err := b.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE 'pgtide_%' AND name <> ''").Scan(&n); err != nil || n != 0 {
		t.Fatalf("statements under clients' own names on the server: %d (%v)", n, err)
	}
}
