package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The lifecycle an operator goes through: replicate, fail over, re-attach
// the old primary, crash a replica, tear down.
func TestFailoverLifecycle(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	c := startCluster(t, Options{Replicas: 2})

	nodes := c.Nodes()
	if len(nodes) != 3 || c.Primary() != nodes[0] || len(c.Replicas()) != 2 || c.Replicas()[0] != nodes[1] {
		t.Fatalf("Nodes()=%v Primary()=%v Replicas()=%v", nodes, c.Primary(), c.Replicas())
	}
	ports := map[int]bool{}
	for i, n := range nodes {
		if n.Name() != fmt.Sprintf("node%d", i) || n.Addr() != "127.0.0.1:"+strconv.Itoa(n.Port()) ||
			filepath.Dir(n.DataDir()) != c.Dir() || !n.Running() {
			t.Errorf("node %d: name=%q addr=%q datadir=%q running=%v", i, n.Name(), n.Addr(), n.DataDir(), n.Running())
		}
		if _, err := os.Stat(n.LogFile()); err != nil {
			t.Errorf("%s: log file: %v", n.Name(), err)
		}
		ports[n.Port()] = true
	}
	if len(ports) != 3 {
		t.Errorf("ports not distinct: %v", ports)
	}
	node0, node1, node2 := nodes[0], nodes[1], nodes[2]
	wantRecovery(t, node0, false)
	wantRecovery(t, node1, true)
	wantRecovery(t, node2, true)

	mustExec(t, node0, "CREATE TABLE t (v int)", "INSERT INTO t VALUES (1)")
	waitForRow(t, node1, 1)
	waitForRow(t, node2, 1)
	if err := execSQL(ctx, node1, "INSERT INTO t VALUES (99)"); !hasCode(err, "25006") {
		t.Errorf("write on replica: got %v, want read_only_sql_transaction", err)
	}

	// Fail over: clean stop of the primary, promotion of node1.
	if err := node0.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if node0.Running() {
		t.Error("node0 Running after Stop")
	}
	if err := node0.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := node1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	wantRecovery(t, node1, false)
	mustExec(t, node1, "INSERT INTO t VALUES (2)")

	node3, err := c.AddReplica(ctx, node1)
	if err != nil {
		t.Fatal(err)
	}
	if node3.Name() != "node3" || len(c.Nodes()) != 4 {
		t.Errorf("AddReplica: name %q, %d nodes", node3.Name(), len(c.Nodes()))
	}
	wantRecovery(t, node3, true)
	waitForRow(t, node3, 2)

	// The old primary comes back as a replica of the new one.
	if err := node0.Follow(ctx, node1); err != nil {
		t.Fatal(err)
	}
	wantRecovery(t, node0, true)
	waitForRow(t, node0, 2)

	// A crashed replica restarts, recovers and catches up.
	if err := node3.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if node3.Running() {
		t.Error("node3 Running after Kill")
	}
	if err := node3.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node3.Start(ctx); err == nil {
		t.Error("Start on a running node succeeded")
	}
	mustExec(t, node1, "INSERT INTO t VALUES (3)")
	wantRecovery(t, node3, true)
	waitForRow(t, node3, 3)
	waitForRow(t, node0, 3)

	// Restart of a running primary keeps its port and role.
	port := node1.Port()
	if err := node1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if node1.Port() != port {
		t.Errorf("port changed across restart: %d -> %d", port, node1.Port())
	}
	wantRecovery(t, node1, false)

	var pids []int
	for _, n := range c.Nodes() {
		pids = append(pids, postmasterPID(t, n))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir()); !os.IsNotExist(err) {
		t.Errorf("cluster dir after Close: %v", err)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("postmaster %d still running after Close", pid)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A primary that kept taking writes after a replica was promoted has
// diverged; Follow must rewind it (after crash recovery, since it was killed).
func TestFollowAfterDivergence(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	c := startCluster(t, Options{Replicas: 1})
	node0, node1 := c.Primary(), c.Replicas()[0]

	mustExec(t, node0, "CREATE TABLE t (v int)", "INSERT INTO t VALUES (1)")
	waitForRow(t, node1, 1)
	if err := node1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, node0, "INSERT INTO t VALUES (100)") // lost on failover
	mustExec(t, node1, "INSERT INTO t VALUES (2)")
	if err := node0.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node0.Follow(ctx, node1); err != nil {
		t.Fatal(err)
	}
	wantRecovery(t, node0, true)
	waitForRow(t, node0, 2)
	if got := countRows(t, node0, 100); got != 0 {
		t.Errorf("diverged row survived the rewind: count %d", got)
	}
}

func TestInitSQLHBAAndExtraConf(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	c := startCluster(t, Options{
		HBA:       []string{"host all scram_user 127.0.0.1/32 scram-sha-256"},
		InitSQL:   []string{"CREATE ROLE scram_user LOGIN PASSWORD 'secret'"},
		ExtraConf: []string{"max_connections = 50"},
	})
	p := c.Primary()

	conn, err := pgx.Connect(ctx, p.ConnString("scram_user", "postgres")+" password=secret")
	if err != nil {
		t.Fatalf("connect with password: %v", err)
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "scram_user" {
		t.Errorf("current_user = %q, %v", user, err)
	}
	conn.Close(ctx)

	for _, extra := range []string{"", " password=wrong"} {
		conn, err := pgx.Connect(ctx, p.ConnString("scram_user", "postgres")+extra)
		if err == nil {
			conn.Close(ctx)
			t.Errorf("connect with %q succeeded, want failure", extra)
		}
	}

	conn, err = pgx.Connect(ctx, p.ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatalf("trusted superuser: %v", err)
	}
	defer conn.Close(ctx)
	var maxConns string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns); err != nil || maxConns != "50" {
		t.Errorf("max_connections = %q, %v; want ExtraConf's 50", maxConns, err)
	}
}

// A server that cannot start fails Start with its log in the error and
// leaves nothing behind.
func TestStartFailureCleansUp(t *testing.T) {
	checkNoLeaks(t)
	if _, err := Start(t.Context(), Options{Replicas: -1}); err == nil {
		t.Error("Replicas -1 accepted")
	}

	// A temp dir of our own, readable by the postgres user, to see what
	// Start leaves in it.
	tmp, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)

	c, err := Start(t.Context(), Options{ExtraConf: []string{"no_such_setting = 1"}, Logf: t.Logf})
	if err == nil {
		c.Close()
		t.Fatal("Start succeeded with a bad postgresql.conf")
	}
	if !strings.Contains(err.Error(), `unrecognized configuration parameter "no_such_setting"`) {
		t.Errorf("error lacks the server log: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left behind in %s: %v", tmp, left)
	}
}

func TestSetAutoConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postgresql.auto.conf")
	old := "# Do not edit this file manually!\nport = '1'\nPrimary_Conninfo = 'host=x'\nwork_mem = '8MB'\n"
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	err := setAutoConf(&runner{}, dir, [][2]string{{"port", "5433"}, {"primary_conninfo", "application_name='it''s'"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# Do not edit this file manually!\nwork_mem = '8MB'\nport = '5433'\nprimary_conninfo = 'application_name=''it''''s'''\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.Logf = t.Logf
	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// checkNoLeaks fails the test if goroutines started during it outlive it.
// Call it first, so its cleanup runs after every other cleanup (Close).
func checkNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		err := eventually(30*time.Second, func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("%d goroutines, %d before the test", n, before)
			}
			return nil
		})
		if err != nil {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %v\n%s", err, buf[:runtime.Stack(buf, true)])
		}
	})
}

// eventually polls f until it returns nil or timeout passes.
func eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

func wantRecovery(t *testing.T, n *Node, want bool) {
	t.Helper()
	got, err := n.IsInRecovery(t.Context())
	if err != nil || got != want {
		t.Fatalf("%s: IsInRecovery = %v, %v; want %v", n.Name(), got, err, want)
	}
}

func execSQL(ctx context.Context, n *Node, stmts ...string) error {
	conn, err := pgx.Connect(ctx, n.ConnString("postgres", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func mustExec(t *testing.T, n *Node, stmts ...string) {
	t.Helper()
	if err := execSQL(t.Context(), n, stmts...); err != nil {
		t.Fatalf("%s: %v", n.Name(), err)
	}
}

func countRows(t *testing.T, n *Node, v int) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), n.ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var count int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM t WHERE v = $1", v).Scan(&count); err != nil {
		t.Fatalf("%s: %v", n.Name(), err)
	}
	return count
}

// waitForRow polls n until replication has brought it the row v.
func waitForRow(t *testing.T, n *Node, v int) {
	t.Helper()
	err := eventually(15*time.Second, func() error {
		conn, err := pgx.Connect(t.Context(), n.ConnString("postgres", "postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var count int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM t WHERE v = $1", v).Scan(&count); err != nil {
			return err
		}
		if count != 1 {
			return fmt.Errorf("%d rows with v=%d", count, v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s never got row %d: %v", n.Name(), v, err)
	}
}

func hasCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

func postmasterPID(t *testing.T, n *Node) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatalf("%s: %v", n.Name(), err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatalf("%s: postmaster.pid: %v", n.Name(), err)
	}
	return pid
}

// processAlive treats zombies as dead: in a container nobody may reap the
// daemonized postmaster.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

func TestConnStringAndPortClash(t *testing.T) {
	n := &Node{name: "node0"}
	n.port.Store(5433)
	for _, tc := range []struct{ user, db, want string }{
		{"postgres", "postgres", "host=127.0.0.1 port=5433 user=postgres dbname=postgres sslmode=disable"},
		{"it's", "my db", `host=127.0.0.1 port=5433 user='it\'s' dbname='my db' sslmode=disable`},
		{"u", "", "host=127.0.0.1 port=5433 user=u dbname='' sslmode=disable"},
	} {
		if got := n.ConnString(tc.user, tc.db); got != tc.want {
			t.Errorf("ConnString(%q, %q) = %q, want %q", tc.user, tc.db, got, tc.want)
		}
	}
	for log, want := range map[string]bool{
		`LOG:  could not bind IPv4 address "127.0.0.1": Address already in use`: true,
		`FATAL:  could not create any TCP/IP sockets`:                           true,
		`FATAL:  configuration file "x" contains errors`:                        false,
	} {
		if portClash(log) != want {
			t.Errorf("portClash(%q) = %v", log, !want)
		}
	}
}

// TestRemoveOrphans: a cluster whose owner process is gone (killed: it could not clean up) has
// its servers stopped and its directory removed; a cluster whose owner runs is left alone.
func TestRemoveOrphans(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	live, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	orphan, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer orphan.Close()
	// Make the orphan's owner a process that has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan.Dir(), ownerFile), []byte(fmt.Sprintf("%d 1 %s\n", dead.Process.Pid, pidNamespace())), 0o644); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Others' orphans (killed test runs on this machine) may go too; never a live cluster.
	if !slices.Contains(removed, orphan.Dir()) || slices.Contains(removed, live.Dir()) {
		t.Fatalf("removed %v, want %s and not %s", removed, orphan.Dir(), live.Dir())
	}
	if _, err := os.Stat(orphan.Dir()); !os.IsNotExist(err) {
		t.Fatalf("the orphan's directory is still there: %v", err)
	}
	if orphan.Primary().alive(ctx) {
		t.Fatal("the orphan's server still runs")
	}
	if !live.Primary().alive(ctx) {
		t.Fatal("the live cluster's server was stopped")
	}
}
