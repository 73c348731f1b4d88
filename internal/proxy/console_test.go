package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
)

// The admin console's tests: every command through pgx (simple protocol) and/or psql, against
// real traffic on the test cluster.

// consoleProxy starts pgtide with scram-sha-256 for clients, "app" in admin_users and
// "app_md5" in stats_users.
func consoleProxy(t *testing.T, mutate func(*config.Config)) *testProxy {
	return startProxy(t, func(c *config.Config) {
		c.Auth.Method = config.AuthSCRAM
		c.Auth.AdminUsers = []string{"app"}
		c.Auth.StatsUsers = []string{"app_md5"}
		if mutate != nil {
			mutate(c)
		}
	})
}

// console opens a pgx connection to the admin console as user, in the simple protocol.
func (p *testProxy) console(t *testing.T, user string, notices chan<- string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.connString(user, "pgtide"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	if notices != nil {
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n.Message }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("console as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// connectApp opens a client of appdb as app, with an application_name.
func (p *testProxy) connectApp(t *testing.T, appName string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), p.connString("app", "appdb")+" application_name="+appName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// show runs a console command and returns its rows, checking its columns against want.
func show(t *testing.T, c *pgx.Conn, sql string, want []string) []map[string]any {
	t.Helper()
	rows, err := c.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var got []string
	for _, fd := range rows.FieldDescriptions() {
		got = append(got, fd.Name)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if want != nil && !slices.Equal(got, want) {
		t.Fatalf("%s: columns %v, want %v", sql, got, want)
	}
	return out
}

// find returns the rows whose column col equals v.
func find(rows []map[string]any, col string, v any) []map[string]any {
	var out []map[string]any
	for _, r := range rows {
		if r[col] == v {
			out = append(out, r)
		}
	}
	return out
}

// psqlPath finds psql: on PATH, else where Debian's postgresql package puts it.
func psqlPath(t *testing.T) string {
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql"); len(m) > 0 {
		return m[len(m)-1]
	}
	t.Skip("no psql on this machine")
	return ""
}

// psql runs psql -c sql on database db as user (unaligned, '|' between columns), returning
// stdout and stderr.
func (p *testProxy) psql(t *testing.T, user, db, sql string) (stdout, stderr string, err error) {
	t.Helper()
	pw := ""
	for _, u := range testUsers {
		if u.Name == user {
			pw = u.Password
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psqlPath(t), "-X", "-A", "-F", "|", "-P", "footer=off", "-h", "127.0.0.1",
		"-p", strconv.Itoa(p.Addr().(*net.TCPAddr).Port), "-U", user, "-d", db, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pw, "PGCONNECT_TIMEOUT=20", "PGSSLMODE=disable")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// psqlShow runs a console command through psql as app and returns its header and rows.
func (p *testProxy) psqlShow(t *testing.T, sql string) (cols []string, rows []map[string]string) {
	t.Helper()
	out, errOut, err := p.psql(t, "app", "pgtide", sql)
	if err != nil {
		t.Fatalf("psql -c %q: %v\n%s", sql, err, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	cols = strings.Split(lines[0], "|")
	for _, l := range lines[1:] {
		vals := strings.Split(l, "|")
		row := map[string]string{}
		for i, c := range cols {
			if i < len(vals) {
				row[c] = vals[i]
			}
		}
		rows = append(rows, row)
	}
	return cols, rows
}

var (
	poolsCols = []string{"database", "user", "node", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
		"sv_being_canceled", "maxwait", "maxwait_us", "pool_mode"}
	clientsCols = []string{"type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
		"request_time", "link", "tls", "application_name", "id", "endpoint", "node", "pinned"}
	serversCols = []string{"type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
		"request_time", "close_needed", "link", "remote_pid", "tls", "application_name", "node"}
	statsCols = []string{"database", "node", "total_server_assignment_count", "total_xact_count", "total_query_count",
		"total_received", "total_sent", "total_query_time", "total_wait_time", "total_server_error_count", "avg_query_time",
		"avg_wait_time"}
	databasesCols = []string{"name", "database", "pool_size", "min_pool_size", "server_lifetime", "pool_mode",
		"current_connections", "current_client_connections", "paused"}
	nodesCols = []string{"node", "role", "up", "lag_seconds", "lag_bytes", "lagging", "sv_active", "sv_idle", "budget",
		"max_connections", "reserved_connections", "backends", "outstanding", "picked", "weight", "last_check", "instance_id", "endpoints", "last_role"}
)

// beginHolding begins a transaction on c, which then holds a server connection, and returns it
// with that server's process ID; the transaction is rolled back at the end of the test unless
// it ended before.
func beginHolding(t *testing.T, c *pgx.Conn) (pgx.Tx, int64) {
	t.Helper()
	ctx := context.Background()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	var pid int64
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return tx, pid
}

// TestConsoleShow: a client holding a transaction shows in SHOW POOLS, CLIENTS and SERVERS as
// active on the primary, with its application_name and its server's PID; SHOW STATS counts its
// work; SHOW DATABASES, CONFIG (no password), VERSION and HELP answer, through pgx and psql.
func TestConsoleShow(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	primary := cluster.Primary().Addr()
	holder := p.connectApp(t, "holder")
	tx, pid := beginHolding(t, holder)
	admin := p.console(t, "app", nil)

	pools := find(find(show(t, admin, "SHOW POOLS", poolsCols), "database", "appdb"), "node", primary)
	if len(pools) != 1 || pools[0]["user"] != "app" || pools[0]["cl_active"] != int64(1) || pools[0]["sv_active"] != int64(1) ||
		pools[0]["cl_waiting"] != int64(0) || pools[0]["pool_mode"] != "transaction" {
		t.Fatalf("SHOW POOLS for appdb on the primary: %v", pools)
	}
	clients := find(show(t, admin, "show clients;", clientsCols), "application_name", "holder")
	if len(clients) != 1 {
		t.Fatalf("SHOW CLIENTS: %d rows for the holder", len(clients))
	}
	cl := clients[0]
	if cl["type"] != "C" || cl["state"] != "active" || cl["link"] != pid || cl["node"] != primary || cl["database"] != "appdb" ||
		cl["user"] != "app" || cl["endpoint"] != "auto" || cl["addr"] != "127.0.0.1" || cl["pinned"] != int64(0) || cl["tls"] != "" {
		t.Fatalf("SHOW CLIENTS row of the holder: %v (server pid %d)", cl, pid)
	}
	servers := find(show(t, admin, "SHOW SERVERS", serversCols), "remote_pid", pid)
	if len(servers) != 1 || servers[0]["state"] != "active" || servers[0]["link"] != cl["id"] || servers[0]["close_needed"] != int64(0) ||
		servers[0]["application_name"] != "holder" || servers[0]["node"] != primary || servers[0]["tls"] != "" {
		t.Fatalf("SHOW SERVERS row of the holder's server: %v", servers)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The client may read the COMMIT's ReadyForQuery just before its server connection is back
	// in the pool: it shows up idle within moments.
	waitFor(t, 10*time.Second, "the holder's server idle in SHOW SERVERS", func() bool {
		servers = find(show(t, admin, "SHOW SERVERS", serversCols), "remote_pid", pid)
		return len(servers) == 1 && servers[0]["state"] == "idle" && servers[0]["link"] == nil
	})

	stat := func() map[string]any {
		rows := find(find(show(t, admin, "SHOW STATS", statsCols), "database", "appdb"), "node", primary)
		if len(rows) != 1 {
			t.Fatalf("SHOW STATS rows for appdb on the primary: %v", rows)
		}
		return rows[0]
	}
	before := stat()
	for range 3 {
		mustExec(t, holder, "SELECT 1")
	}
	waitFor(t, 10*time.Second, "SHOW STATS to count 3 more transactions", func() bool {
		after := stat()
		return after["total_xact_count"].(int64) >= before["total_xact_count"].(int64)+3 &&
			after["total_query_count"].(int64) >= before["total_query_count"].(int64)+3 &&
			after["total_server_assignment_count"].(int64) >= before["total_server_assignment_count"].(int64)+3 &&
			// Each "SELECT 1" is 14 bytes to the server and more back; each took some time.
			after["total_sent"].(int64) >= before["total_sent"].(int64)+3*14 &&
			after["total_received"].(int64) > before["total_received"].(int64)+3*14 &&
			after["total_query_time"].(int64) > before["total_query_time"].(int64)
	})

	dbs := find(show(t, admin, "SHOW DATABASES", databasesCols), "name", "appdb")
	if len(dbs) != 1 || dbs[0]["current_client_connections"] != int64(1) || dbs[0]["paused"] != int64(0) ||
		dbs[0]["pool_size"] != int64(10) || dbs[0]["current_connections"] != int64(1) {
		t.Fatalf("SHOW DATABASES: %v", dbs)
	}
	conf := show(t, admin, "SHOW CONFIG", []string{"key", "value", "default", "changeable"})
	for _, r := range conf {
		for _, u := range testUsers {
			if u.Password != "" && (strings.Contains(r["value"].(string), u.Password) || strings.Contains(r["default"].(string), u.Password)) {
				t.Errorf("SHOW CONFIG shows a password: %v", r)
			}
		}
	}
	if r := find(conf, "key", "auth.admin_users"); len(r) != 1 || r[0]["value"] != "app" || r[0]["changeable"] != "yes" {
		t.Errorf("SHOW CONFIG auth.admin_users: %v", r)
	}
	if r := find(conf, "key", "proxy.unix_socket_dir"); len(r) != 1 || r[0]["changeable"] != "no" {
		t.Errorf("SHOW CONFIG proxy.unix_socket_dir: %v", r)
	}
	if v := show(t, admin, "SHOW VERSION", []string{"version"}); len(v) != 1 || v[0]["version"] != "pgtide (devel)" {
		t.Errorf("SHOW VERSION: %v", v)
	}

	// The same through psql, several commands in one Query as psql sends them.
	cols, rows := p.psqlShow(t, "SHOW POOLS")
	if !slices.Equal(cols, poolsCols) {
		t.Errorf("psql SHOW POOLS columns: %v", cols)
	}
	if !slices.ContainsFunc(rows, func(r map[string]string) bool {
		return r["database"] == "appdb" && r["node"] == primary && r["sv_idle"] == "1"
	}) {
		t.Errorf("psql SHOW POOLS: no idle connection for appdb on the primary: %v", rows)
	}
	out, _, err := p.psql(t, "app", "pgtide", "SHOW VERSION; SHOW DATABASES")
	if err != nil || !strings.Contains(out, "pgtide (devel)") || !strings.Contains(out, "appdb|appdb|10|") {
		t.Errorf("psql with two commands: %v\n%s", err, out)
	}
	_, notice, err := p.psql(t, "app", "pgtide", "SHOW HELP")
	if err != nil || !strings.Contains(notice, "Console usage") || !strings.Contains(notice, "KILL_CLIENT id") || !strings.Contains(notice, "SHOW NODES") {
		t.Errorf("psql SHOW HELP: %v\n%s", err, notice)
	}
}

// TestConsoleNodes: SHOW NODES shows the writer and both readers with their ceiling and budget.
func TestConsoleNodes(t *testing.T) {
	c := sharedRoutingCluster(t)
	p := routingProxy(t, c, func(cfg *config.Config) { cfg.Auth.AdminUsers = []string{"postgres"} })
	waitReaders(t, p, 2)
	cfg, err := pgx.ParseConfig(p.connString("postgres", "pgtide"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	admin, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	waitFor(t, 30*time.Second, "every node's ceiling", func() bool {
		for _, n := range show(t, admin, "SHOW NODES", nodesCols) {
			if n["max_connections"] == nil {
				return false
			}
		}
		return true
	})
	rows := show(t, admin, "SHOW NODES", nodesCols)
	if len(rows) != 3 {
		t.Fatalf("SHOW NODES: %d rows, want 3: %v", len(rows), rows)
	}
	for _, r := range rows {
		want := "reader"
		if r["node"] == c.Primary().Addr() {
			want = "writer"
		}
		if r["role"] != want || r["up"] != int64(1) || r["max_connections"] != int64(300) || r["weight"] != int64(1) ||
			r["budget"] != int64(p.Pools().NodeCap(r["node"].(string))) || r["last_check"] == nil {
			t.Errorf("SHOW NODES row: %v (want role %s, max_connections 300)", r, want)
		}
		if want == "writer" && (r["lag_bytes"] != int64(0) || r["lag_seconds"] != float64(0)) {
			t.Errorf("the writer shows lag: %v", r)
		}
	}
}

// TestConsoleRefused: only admin_users and stats_users get in, after authenticating as usual;
// stats_users may only SHOW; "pgbouncer" is an alias.
func TestConsoleRefused(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	_, err := pgx.Connect(ctx, p.connString("app_pw", "pgtide"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "not allowed to use the admin console") ||
		!strings.Contains(pgErr.Hint, "[auth] admin_users") {
		t.Fatalf("a user not in admin_users: %v", err)
	}
	_, errOut, err := p.psql(t, "app_pw", "pgbouncer", "SHOW POOLS")
	if err == nil || !strings.Contains(errOut, "not allowed to use the admin console") {
		t.Fatalf("psql as a user not in admin_users: %v\n%s", err, errOut)
	}
	if _, err := pgx.Connect(ctx, strings.Replace(p.connString("app", "pgtide"), "app secret", "wrong", 1)); pgCode(err) != "28P01" {
		t.Fatalf("an admin with a wrong password: %v", err)
	}
	alias, err := pgx.Connect(ctx, p.connString("app", "pgbouncer"))
	if err != nil {
		t.Fatalf("the pgbouncer alias: %v", err)
	}
	alias.Close(ctx)

	stats := p.console(t, "app_md5", nil)
	show(t, stats, "SHOW POOLS", poolsCols)
	if _, err := stats.Exec(ctx, "PAUSE"); pgCode(err) != "42501" {
		t.Fatalf("PAUSE by a stats user: %v", err)
	}
	if all, dbs := p.Pools().Pauses(); all || len(dbs) > 0 {
		t.Fatal("a stats user's PAUSE paused something")
	}
}

// TestConsoleErrors: unknown commands and bad arguments are syntax errors naming SHOW HELP or
// the usage; the extended protocol is refused and the connection stays usable.
func TestConsoleErrors(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	admin := p.console(t, "app", nil)
	var pgErr *pgconn.PgError
	if _, err := admin.Exec(ctx, "SHOW PEERS"); !errors.As(err, &pgErr) || pgErr.Code != "42601" || !strings.Contains(pgErr.Message, "SHOW HELP") {
		t.Fatalf("unknown command: %v", err)
	}
	if _, err := admin.Exec(ctx, "PAUSE a b"); !errors.As(err, &pgErr) || pgErr.Code != "42601" || !strings.Contains(pgErr.Message, "PAUSE [db]") {
		t.Fatalf("too many arguments: %v", err)
	}
	if _, err := admin.Exec(ctx, "KILL_CLIENT"); pgCode(err) != "42601" {
		t.Fatalf("KILL_CLIENT without an id: %v", err)
	}
	// A failing statement ends the Query: the PAUSE after it is not run.
	if _, err := admin.Exec(ctx, "SHOW NOTHING; PAUSE"); pgCode(err) != "42601" {
		t.Fatalf("two statements, the first unknown: %v", err)
	}
	if all, _ := p.Pools().Pauses(); all {
		t.Fatal("the statement after a failed one ran")
	}
	if _, err := admin.Exec(ctx, " ; "); err != nil {
		t.Fatalf("empty query: %v", err)
	}
	_, errOut, err := p.psql(t, "app", "pgtide", "SHOW TABLES")
	if err == nil || !strings.Contains(errOut, "SHOW HELP") {
		t.Fatalf("psql, unknown command: %v\n%s", err, errOut)
	}

	// pgx's default mode prepares statements: refused, and the connection goes on.
	ext, err := pgx.Connect(ctx, p.connString("app", "pgtide"))
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close(ctx)
	var version string
	if err := ext.QueryRow(ctx, "SHOW VERSION").Scan(&version); !errors.As(err, &pgErr) || pgErr.Code != "0A000" || !strings.Contains(pgErr.Message, "simple query protocol") {
		t.Fatalf("extended protocol: %v", err)
	}
	if err := ext.QueryRow(ctx, "SHOW VERSION", pgx.QueryExecModeSimpleProtocol).Scan(&version); err != nil || version != "pgtide (devel)" {
		t.Fatalf("simple protocol after the refusal: %q, %v", version, err)
	}
}

// TestConsoleReload: RELOAD applies a changed pool_size; a broken file is refused and the running
// configuration kept.
func TestConsoleReload(t *testing.T) {
	p := consoleProxy(t, nil)
	next := *p.Config()
	next.Cluster.PoolSize = 3
	writeFile(t, p.cfgPath, &next)
	if out, errOut, err := p.psql(t, "app", "pgtide", "RELOAD"); err != nil {
		t.Fatalf("RELOAD: %v\n%s%s", err, out, errOut)
	}
	if got := p.Config().Cluster.PoolSize; got != 3 {
		t.Fatalf("pool_size after RELOAD: %d", got)
	}
	_, rows := p.psqlShow(t, "SHOW CONFIG")
	if !slices.ContainsFunc(rows, func(r map[string]string) bool {
		return r["key"] == "cluster.pool_size" && r["value"] == "3" && r["default"] == "20"
	}) {
		t.Errorf("SHOW CONFIG after RELOAD: no cluster.pool_size = 3")
	}
	os.WriteFile(p.cfgPath, []byte("[cluster]\npool_size = 0\n"), 0o600)
	admin := p.console(t, "app", nil)
	if _, err := admin.Exec(context.Background(), "RELOAD"); pgCode(err) != "F0000" {
		t.Fatalf("RELOAD of a broken file: %v", err)
	}
	if got := p.Config().Cluster.PoolSize; got != 3 {
		t.Fatalf("pool_size after a failed RELOAD: %d", got)
	}
}

// TestConsolePause: PAUSE waits for the running transaction, then new queries wait until RESUME,
// and one issued during the PAUSE completes after it; PAUSE and RESUME follow PgBouncer's rules
// for what is already (not) paused; a cancelled PAUSE is undone.
func TestConsolePause(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	holder := p.connectApp(t, "holder")
	waiter := p.connectApp(t, "waiter")
	mustExec(t, waiter, "SELECT 1") // its pool exists
	notices := make(chan string, 10)
	admin := p.console(t, "app", notices)
	// An empty name is an error, not PAUSE of everything (a script's empty variable).
	for _, cmd := range []string{`PAUSE ""`, `RESUME ""`, `RECONNECT ""`} {
		if _, err := admin.Exec(ctx, cmd); pgCode(err) != "42601" {
			t.Fatalf("%s: %v, want 42601", cmd, err)
		}
	}
	if all, dbs := p.Pools().Pauses(); all || len(dbs) > 0 {
		t.Fatalf("paused after the refused commands: %v %v", all, dbs)
	}

	tx := holdTx(t, holder)
	paused := startPause(t, admin, notices, "PAUSE appdb")
	if !p.Pools().Paused("appdb") {
		t.Fatal("appdb not paused")
	}
	select {
	case err := <-paused:
		t.Fatalf("PAUSE returned before the transaction ended: %v", err)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the running transaction must finish: %v", err)
	}
	await(t, paused, "PAUSE to return after the transaction ended")
	if n := p.Pools().ServerCount("appdb"); n != 0 {
		t.Fatalf("%d server connections of appdb after PAUSE", n)
	}

	// A query issued now waits, and completes after RESUME.
	got := make(chan error, 1)
	go func() {
		var one int
		got <- waiter.QueryRow(ctx, "SELECT 1").Scan(&one)
	}()
	waitFor(t, 20*time.Second, "the waiter to wait", func() bool {
		rows := find(show(t, admin, "SHOW POOLS", poolsCols), "database", "appdb")
		return len(rows) == 1 && rows[0]["cl_waiting"] == int64(1)
	})
	if dbs := find(show(t, admin, "SHOW DATABASES", databasesCols), "name", "appdb"); dbs[0]["paused"] != int64(1) {
		t.Fatalf("SHOW DATABASES while paused: %v", dbs)
	}
	if _, err := admin.Exec(ctx, "RESUME appdb"); err != nil {
		t.Fatal(err)
	}
	await(t, got, "the query issued during the PAUSE to complete after RESUME")

	// PgBouncer's rules: a database may be paused again, not everything twice; RESUME of what is
	// not paused is an error.
	for _, step := range []struct{ sql, code string }{
		{"PAUSE appdb", ""}, {"PAUSE appdb", ""}, {"RESUME appdb", ""}, {"RESUME appdb", "55000"},
		{"PAUSE", ""}, {"PAUSE", "55000"}, {"PAUSE appdb", "55000"}, {"RESUME appdb", "55000"},
		{"RESUME", ""}, {"RESUME", "55000"}, {"PAUSE pgtide", "0A000"},
	} {
		if _, err := admin.Exec(ctx, step.sql); pgCode(err) != step.code {
			t.Fatalf("%s: %v, want SQLSTATE %q", step.sql, err, step.code)
		}
	}
	out, _, err := p.psql(t, "app", "pgtide", "PAUSE; RESUME")
	if err != nil || !strings.Contains(out, "PAUSE") || !strings.Contains(out, "RESUME") {
		t.Fatalf("psql PAUSE; RESUME: %v\n%s", err, out)
	}

	// A PAUSE cancelled (CancelRequest) while it waits is undone and the console goes on; so is
	// one whose client goes away.
	tx = holdTx(t, holder)
	paused = startPause(t, admin, notices, "PAUSE")
	if err := admin.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-paused:
		if pgCode(err) != "57014" {
			t.Fatalf("cancelled PAUSE: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the cancelled PAUSE did not return")
	}
	if all, _ := p.Pools().Pauses(); all {
		t.Fatal("the cancelled PAUSE was not undone")
	}
	show(t, admin, "SHOW VERSION", nil)

	var raw net.Conn
	cfg, err := pgconn.ParseConfig(p.connString("app", "pgtide"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		raw = c
		return c, err
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n.Message }
	leaver, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for len(notices) > 0 {
		<-notices
	}
	left := make(chan struct{})
	go func() {
		leaver.Exec(ctx, "PAUSE appdb").ReadAll()
		close(left)
	}()
	<-notices
	raw.Close()
	<-left
	waitFor(t, 20*time.Second, "the PAUSE of a client that left to be undone", func() bool { return !p.Pools().Paused("appdb") })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleReconnect: after RECONNECT, a client's next transaction runs on a new server
// connection; one in use is marked close_needed and closed when released.
func TestConsoleReconnect(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	c := p.connectApp(t, "client")
	admin := p.console(t, "app", nil)
	backend := func() int64 {
		var pid int64
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	first := backend()
	if again := backend(); again != first {
		t.Fatalf("one client alone should reuse its server connection: %d then %d", first, again)
	}
	if out, errOut, err := p.psql(t, "app", "pgtide", "RECONNECT appdb"); err != nil || !strings.Contains(out, "RECONNECT") {
		t.Fatalf("RECONNECT: %v\n%s%s", err, out, errOut)
	}
	second := backend()
	if second == first {
		t.Fatal("the transaction after RECONNECT ran on the old server connection")
	}

	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx.Conn(), "SELECT 1")
	if _, err := admin.Exec(ctx, "RECONNECT"); err != nil {
		t.Fatal(err)
	}
	if s := find(show(t, admin, "SHOW SERVERS", serversCols), "remote_pid", second); len(s) != 1 || s[0]["close_needed"] != int64(1) {
		t.Fatalf("SHOW SERVERS of the connection in use after RECONNECT: %v", s)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("RECONNECT must not interrupt a transaction: %v", err)
	}
	if third := backend(); third == second {
		t.Fatal("the connection in use during RECONNECT was reused")
	}
}

// TestConsoleKillClient: KILL_CLIENT closes that client only; an unknown id is an error.
func TestConsoleKillClient(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	victim := p.connectApp(t, "victim")
	bystander := p.connectApp(t, "bystander")
	mustExec(t, victim, "SELECT 1")
	admin := p.console(t, "app", nil)
	rows := find(show(t, admin, "SHOW CLIENTS", clientsCols), "application_name", "victim")
	if len(rows) != 1 {
		t.Fatalf("SHOW CLIENTS: %v", rows)
	}
	id := rows[0]["id"].(int64)
	if out, errOut, err := p.psql(t, "app", "pgtide", fmt.Sprintf("KILL_CLIENT %d", id)); err != nil || !strings.Contains(out, "KILL_CLIENT") {
		t.Fatalf("KILL_CLIENT: %v\n%s%s", err, out, errOut)
	}
	if _, err := victim.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("the killed client can still query")
	}
	mustExec(t, bystander, "SELECT 1")
	waitFor(t, 10*time.Second, "the killed client to leave SHOW CLIENTS", func() bool {
		return len(find(show(t, admin, "SHOW CLIENTS", clientsCols), "id", id)) == 0
	})
	if _, err := admin.Exec(ctx, fmt.Sprintf("KILL_CLIENT %d", id)); pgCode(err) != "42704" {
		t.Fatalf("KILL_CLIENT of an unknown id: %v", err)
	}
	if _, err := admin.Exec(ctx, "KILL_CLIENT victim"); pgCode(err) != "22023" {
		t.Fatalf("KILL_CLIENT of a name: %v", err)
	}

	// A client killed in the middle of a query: the query is cancelled on the server, which does
	// not go on with it (holding a connection slot) after pgtide has let go of it.
	busy := p.connectApp(t, "busy")
	busyErr := make(chan error, 1)
	go func() { _, err := busy.Exec(ctx, "SELECT pg_sleep(60)"); busyErr <- err }()
	mon := direct(t, "appdb")
	waitFor(t, 10*time.Second, "the query running on the server", func() bool {
		var n int
		return mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'").Scan(&n) == nil && n == 1
	})
	rows = find(show(t, admin, "SHOW CLIENTS", clientsCols), "application_name", "busy")
	if len(rows) != 1 {
		t.Fatalf("SHOW CLIENTS: %v", rows)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf("KILL_CLIENT %d", rows[0]["id"].(int64))); err != nil {
		t.Fatal(err)
	}
	if err := <-busyErr; err == nil {
		t.Fatal("the killed client's query succeeded")
	}
	waitFor(t, 10*time.Second, "the killed client's query gone from the server", func() bool {
		var n int
		return mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'").Scan(&n) == nil && n == 0
	})
}

// TestConsoleKillWaiting: a client killed while its request waits for a server connection
// leaves the queue at once, and its request never reaches a server.
func TestConsoleKillWaiting(t *testing.T) {
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 1
		c.Auth.Method = config.AuthTrust // for the raw client below
		c.Auth.AdminUsers = []string{"app"}
	})
	ctx := context.Background()
	holder := p.connectApp(t, "holder")
	tx, err := holder.Begin(ctx) // holds the only server connection
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx.Conn(), "SELECT 1")
	// A raw client: it sends no CancelRequest of its own when its connection is closed.
	victim := p.raw(t)
	victim.write(startupPacket(3<<16, "user", "app", "database", "appdb", "application_name", "victim"))
	victim.untilReady()
	victim.send(&pgproto3.Query{String: "CREATE TABLE killed_while_waiting ()"})
	waitFor(t, 10*time.Second, "the victim's request to wait", func() bool { return appStats(p).Waiting == 1 })
	admin := p.console(t, "app", nil)
	rows := find(show(t, admin, "SHOW CLIENTS", clientsCols), "application_name", "victim")
	if len(rows) != 1 {
		t.Fatalf("SHOW CLIENTS: %v", rows)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf("KILL_CLIENT %d", rows[0]["id"].(int64))); err != nil {
		t.Fatal(err)
	}
	// Well before query_wait_timeout (10 s), which would end the wait too.
	waitFor(t, 5*time.Second, "the killed client to leave the queue", func() bool { return appStats(p).Waiting == 0 })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var name *string
	if err := holder.QueryRow(ctx, "SELECT to_regclass('killed_while_waiting')::text").Scan(&name); err != nil || name != nil {
		t.Fatalf("the killed client's request ran: %v, %v", name, err)
	}
}

// TestConsoleShutdown: console connections do not hold up a shutdown: an idle one is closed, a
// PAUSE waiting is ended with 57P01 (once) and undone.
func TestConsoleShutdown(t *testing.T) {
	p := consoleProxy(t, nil)
	ctx := context.Background()
	idle := p.console(t, "app", nil)
	notices := make(chan string, 10)
	pausing := p.console(t, "app", notices)
	holder := p.connectApp(t, "holder")
	tx := holdTx(t, holder)
	paused := startPause(t, pausing, notices, "PAUSE")
	done := make(chan error, 1)
	go func() {
		p.Shutdown()
		done <- nil
	}()
	select {
	case err := <-paused:
		if pgCode(err) != "57P01" {
			t.Fatalf("PAUSE at shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting PAUSE was not ended by the shutdown")
	}
	if all, _ := p.Pools().Pauses(); all {
		t.Error("the PAUSE ended by the shutdown was not undone")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the transaction may finish during the shutdown: %v", err)
	}
	await(t, done, "Shutdown to return")
	if _, err := idle.Exec(ctx, "SHOW VERSION"); err == nil {
		t.Fatal("the console still answers after shutdown")
	}
}

// TestConsolePauseSessionMode: in session mode a client holds its server connection until it
// disconnects, so PAUSE waits for that (as PgBouncer's); a client logging in meanwhile is
// admitted and its first query waits for RESUME.
func TestConsolePauseSessionMode(t *testing.T) {
	p := consoleProxy(t, func(c *config.Config) { c.Proxy.PoolMode = config.PoolModeSession })
	ctx := context.Background()
	holder, err := pgx.Connect(ctx, p.connString("app", "appdb"))
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, holder, "SELECT 1")
	notices := make(chan string, 10)
	admin := p.console(t, "app", notices)
	paused := startPause(t, admin, notices, "PAUSE")
	mustExec(t, holder, "SELECT 1") // its session goes on: it has its server connection
	select {
	case err := <-paused:
		t.Fatalf("PAUSE returned while a session-mode client held its connection: %v", err)
	default:
	}
	holder.Close(ctx)
	await(t, paused, "PAUSE to return after the client left")
	late := p.connectApp(t, "late") // admitted while paused
	got := make(chan error, 1)
	go func() { got <- late.QueryRow(ctx, "SELECT 1").Scan(new(int)) }()
	waitFor(t, 20*time.Second, "the late client to wait", func() bool {
		rows := find(show(t, admin, "SHOW CLIENTS", clientsCols), "application_name", "late")
		return len(rows) == 1 && rows[0]["state"] == "waiting"
	})
	if _, err := admin.Exec(ctx, "RESUME"); err != nil {
		t.Fatal(err)
	}
	await(t, got, "the late client's query to complete after RESUME")
}

// await waits for a result on ch, failing the test if it is an error or does not come within
// 20 seconds (what says what did not happen).
func await(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// holdTx begins a transaction on c that holds a server connection until the test ends it.
func holdTx(t *testing.T, c *pgx.Conn) pgx.Tx {
	t.Helper()
	tx, err := c.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx.Conn(), "SELECT 1")
	return tx
}

// startPause runs sql, a PAUSE, on admin in the background and returns once the console has said
// that it waits for server connections (its NOTICE), with the channel of its result.
func startPause(t *testing.T, admin *pgx.Conn, notices <-chan string, sql string) <-chan error {
	t.Helper()
	for len(notices) > 0 {
		<-notices // from earlier commands (a PAUSE that waited a moment), all delivered by now
	}
	paused := make(chan error, 1)
	go func() {
		_, err := admin.Exec(context.Background(), sql)
		paused <- err
	}()
	select {
	case n := <-notices:
		if !strings.Contains(n, "PAUSE waits for 1 server connection") {
			t.Fatalf("%s: notice %q", sql, n)
		}
	case err := <-paused:
		t.Fatalf("%s returned while a server connection was in use: %v", sql, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no notice that it waits", sql)
	}
	return paused
}
