package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/classify"
	"pgtide/internal/config"
)

// Transaction-mode fidelity: pgtide's records of prepared statements and settings must follow
// what the server did, so that every client sees what PostgreSQL would show it. Most tests use
// pool_size 1, so "the same server connection" is certain.

// oneConn starts a transaction-mode proxy with a single server connection and trust logins.
func oneConn(t *testing.T, mutate func(*config.Config)) *testProxy {
	return startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 1
		c.Auth.Method = config.AuthTrust
		if mutate != nil {
			mutate(c)
		}
	})
}

// prepExec parses name as sql, binds and executes it, and returns the first column of the row.
func (r *rawConn) prepExec(name, sql string) string {
	r.t.Helper()
	r.send(&pgproto3.Parse{Name: name, Query: sql}, &pgproto3.Bind{PreparedStatement: name},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	msgs := r.expect("ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	return string(msgs[2].(*pgproto3.DataRow).Values[0])
}

// execStmt binds and executes the prepared statement name and returns the first column.
func (r *rawConn) execStmt(name string, params ...string) string {
	r.t.Helper()
	var ps [][]byte
	for _, p := range params {
		ps = append(ps, []byte(p))
	}
	r.send(&pgproto3.Bind{PreparedStatement: name, Parameters: ps}, &pgproto3.Execute{}, &pgproto3.Sync{})
	msgs := r.expect("BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	return string(msgs[1].(*pgproto3.DataRow).Values[0])
}

// extended runs sql through Parse/Bind/Execute/Sync of the unnamed statement.
func (r *rawConn) extended(sql string, want ...string) []pgproto3.BackendMessage {
	r.t.Helper()
	r.send(&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	return r.expect(want...)
}

// query runs a simple Query and checks the message types.
func (r *rawConn) query(sql string, want ...string) []pgproto3.BackendMessage {
	r.t.Helper()
	r.send(&pgproto3.Query{String: sql})
	return r.expect(want...)
}

// TestDeallocateAll: DEALLOCATE ALL, however it reaches the server, drops the statements of the
// client and of the server connection, and pgtide's records follow: the client can prepare its
// names again and later clients of the connection are not given statements that are gone.
func TestDeallocateAll(t *testing.T) {
	p := oneConn(t, nil)
	for _, tc := range []struct {
		name string
		run  func(r *rawConn)
	}{
		{"simple", func(r *rawConn) { r.query("DEALLOCATE ALL", "CommandComplete", "ReadyForQuery") }},
		{"extended", func(r *rawConn) {
			r.extended("DEALLOCATE ALL", "ParseComplete", "BindComplete", "CommandComplete", "ReadyForQuery")
		}},
		{"in a multi-statement query", func(r *rawConn) {
			r.query("SELECT 1; DEALLOCATE ALL", "RowDescription", "DataRow", "CommandComplete", "CommandComplete", "ReadyForQuery")
		}},
		{"in a transaction that rolls back", func(r *rawConn) {
			// Deallocation is not transactional: the statements stay gone.
			r.query("BEGIN; DEALLOCATE ALL; SELECT 1/0", "CommandComplete", "CommandComplete", "Error:22012", "ReadyForQuery")
			r.query("ROLLBACK", "CommandComplete", "ReadyForQuery")
		}},
		{"DISCARD ALL extended", func(r *rawConn) {
			r.extended("DISCARD ALL", "ParseComplete", "BindComplete", "CommandComplete", "ReadyForQuery")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := p.raw(t)
			r.login("app", "appdb")
			if got := r.prepExec("s1", "SELECT 'one'"); got != "one" {
				t.Fatalf("s1: %q", got)
			}
			tc.run(r)
			// The name is free again, as on PostgreSQL.
			r.send(&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
			r.expect("Error:26000", "ReadyForQuery")
			if got := r.prepExec("s1", "SELECT 'again'"); got != "again" {
				t.Fatalf("s1 re-prepared: %q", got)
			}
			// In one pipeline: DEALLOCATE ALL, then the name again.
			r.send(&pgproto3.Parse{Query: "DEALLOCATE ALL"}, &pgproto3.Bind{}, &pgproto3.Execute{},
				&pgproto3.Parse{Name: "s1", Query: "SELECT 'pipelined'"}, &pgproto3.Bind{PreparedStatement: "s1"},
				&pgproto3.Execute{}, &pgproto3.Sync{})
			msgs := r.expect("ParseComplete", "BindComplete", "CommandComplete", "ParseComplete", "BindComplete",
				"DataRow", "CommandComplete", "ReadyForQuery")
			if got := string(msgs[5].(*pgproto3.DataRow).Values[0]); got != "pipelined" {
				t.Fatalf("s1 re-prepared in the pipeline: %q", got)
			}
			// Skipped after an error: nothing is deallocated.
			r.send(&pgproto3.Parse{Query: "SELECT 1/g FROM generate_series(0, 0) g"}, &pgproto3.Bind{}, &pgproto3.Execute{},
				&pgproto3.Parse{Query: "DEALLOCATE ALL"}, &pgproto3.Bind{}, &pgproto3.Execute{},
				&pgproto3.Parse{Name: "s1", Query: "SELECT 'skipped'"}, &pgproto3.Sync{})
			r.expect("ParseComplete", "BindComplete", "Error:22012", "ReadyForQuery")
			if got := r.execStmt("s1"); got != "pipelined" {
				t.Fatalf("s1 after a skipped DEALLOCATE ALL: %q", got)
			}
			// Another client preparing the first text on the same server connection.
			o := p.raw(t)
			o.login("app", "appdb")
			for i := 0; i < 2; i++ {
				if got := o.prepExec(fmt.Sprint("o", i), "SELECT 'one'"); got != "one" {
					t.Fatalf("other client: %q", got)
				}
			}
			if got := o.execStmt("o0"); got != "one" {
				t.Fatalf("other client again: %q", got)
			}
		})
	}
}

// TestSQLNamesProtocolStatements: SQL DEALLOCATE and EXECUTE name statements prepared through
// the protocol, as on PostgreSQL, where both share one namespace — on the server connection that
// prepared them and on another, and through both protocols.
func TestSQLNamesProtocolStatements(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 2; c.Auth.Method = config.AuthTrust })
	ctx := context.Background()
	r := p.raw(t)
	r.login("app", "appdb")

	r.prepExec("drv_stmt_1", "SELECT 1 AS one")
	r.query("DEALLOCATE drv_stmt_1", "CommandComplete", "ReadyForQuery")
	if got := r.prepExec("drv_stmt_1", "SELECT 2 AS two"); got != "2" {
		t.Fatalf("re-prepared: %q", got)
	}
	r.query("DEALLOCATE PREPARE drv_stmt_1", "CommandComplete", "ReadyForQuery")
	r.send(&pgproto3.Describe{ObjectType: 'S', Name: "drv_stmt_1"}, &pgproto3.Sync{})
	r.expect("Error:26000", "ReadyForQuery")

	r.send(&pgproto3.Parse{Name: "drv_stmt_2", Query: "SELECT $1::int + 1 AS n"}, &pgproto3.Sync{})
	r.expect("ParseComplete", "ReadyForQuery")
	msgs := r.query("EXECUTE drv_stmt_2(4)", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "5" {
		t.Fatalf("EXECUTE: %q", got)
	}
	msgs = r.extended("EXECUTE drv_stmt_2(9)", "ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[2].(*pgproto3.DataRow).Values[0]); got != "10" {
		t.Fatalf("EXECUTE (extended): %q", got)
	}

	// On the other server connection, which has never seen the statement: the server
	// connection the client prepared it on is busy with another client's transaction.
	other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	for i := 0; i < 2; i++ {
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		msgs = r.query(fmt.Sprintf("SELECT 0; EXECUTE drv_stmt_2(%d)", 10*i), "RowDescription", "DataRow", "CommandComplete",
			"RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
		if got := string(msgs[4].(*pgproto3.DataRow).Values[0]); got != fmt.Sprint(10*i+1) {
			t.Fatalf("EXECUTE on another connection: %q", got)
		}
		tx.Rollback(ctx)
	}

	// In a failed transaction DEALLOCATE fails and the statement stays, as on PostgreSQL.
	r.query("BEGIN; SELECT 1/0", "CommandComplete", "Error:22012", "ReadyForQuery")
	r.query("DEALLOCATE drv_stmt_2", "Error:25P02", "ReadyForQuery")
	r.query("ROLLBACK", "CommandComplete", "ReadyForQuery")
	if got := r.execStmt("drv_stmt_2", "1"); got != "2" {
		t.Fatalf("after a refused DEALLOCATE: %q", got)
	}
	// A DEALLOCATE skipped after an error in the same query leaves the statement too.
	r.query("SELECT 1/0; DEALLOCATE drv_stmt_2", "Error:22012", "ReadyForQuery")
	if got := r.execStmt("drv_stmt_2", "2"); got != "3" {
		t.Fatalf("after a skipped DEALLOCATE: %q", got)
	}
	// CREATE TABLE AS EXECUTE; and SQL PREPARE of a name the protocol defined is refused, as on
	// PostgreSQL (one namespace), without pinning the client.
	mustExec(t, direct(t, "appdb"), "DROP TABLE IF EXISTS fid_ctas")
	r.query("CREATE TABLE fid_ctas AS EXECUTE drv_stmt_2(41)", "CommandComplete", "ReadyForQuery")
	msgs = r.query("SELECT n FROM fid_ctas", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "42" {
		t.Fatalf("CREATE TABLE AS EXECUTE: %q", got)
	}
	r.query("PREPARE drv_stmt_2 AS SELECT 1", "Error:42P05", "ReadyForQuery")
	if pinned, _ := p.Pins().Counts(classify.Prepare); pinned != 0 {
		t.Fatalf("%d clients pinned by a refused PREPARE", pinned)
	}
	// Through the extended protocol, then the name is free, even for a Parse later in the same
	// pipeline.
	r.send(&pgproto3.Parse{Query: "DEALLOCATE drv_stmt_2"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "drv_stmt_2", Query: "SELECT 'free'"}, &pgproto3.Bind{PreparedStatement: "drv_stmt_2"},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	msgs = r.expect("ParseComplete", "BindComplete", "CommandComplete", "ParseComplete", "BindComplete", "DataRow",
		"CommandComplete", "ReadyForQuery")
	if got := string(msgs[5].(*pgproto3.DataRow).Values[0]); got != "free" {
		t.Fatalf("after DEALLOCATE (extended): %q", got)
	}
	// A PREPARE in a longer string: the statements before it run, and a DEALLOCATE among them
	// frees the name (this pins the client: SQL PREPARE).
	r.prepExec("late", "SELECT 'protocol'")
	r.query("SELECT 1; DEALLOCATE late; PREPARE late AS SELECT 'sql'", "RowDescription", "DataRow", "CommandComplete",
		"CommandComplete", "CommandComplete", "ReadyForQuery")
	msgs = r.query("EXECUTE late", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "sql" {
		t.Fatalf("EXECUTE of the SQL statement: %q", got)
	}
	// The server connections hold no statement pgtide does not know of: every later client's
	// statements work on both.
	for i := 0; i < 4; i++ {
		c := p.connect(t, "app", "appdb", pgx.QueryExecModeCacheStatement)
		var n int
		if err := c.QueryRow(ctx, "SELECT $1::int + 1 AS n", i).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("later client %d: %v %d", i, err, n)
		}
	}
}

// TestUnnamedSurvivesPgtideStatements: the unnamed statement parsed in one round trip and bound
// in the next works although pgtide ran its own statements on the server connection between
// them: the settings of another client that used it meanwhile (through named statements only,
// so nothing of that client's replaces the unnamed statement), or server_check_query.
func TestUnnamedSurvivesPgtideStatements(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check bool
	}{{"settings of another client", false}, {"server_check_query", true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := oneConn(t, func(c *config.Config) {
				if tc.check {
					c.Cluster.ServerCheckDelay.Duration = 0 // server_check_query before every lend
				} else {
					c.Cluster.ServerCheckQuery = ""
				}
			})
			ctx := context.Background()
			a := p.raw(t)
			a.write(startupPacket(3<<16, "user", "app", "database", "appdb", "application_name", "app_a"))
			a.untilReady()
			var b *pgx.Conn
			if !tc.check {
				cfg, err := pgx.ParseConfig(p.connString("app", "appdb") + " application_name=app_b")
				if err != nil {
					t.Fatal(err)
				}
				if b, err = pgx.ConnectConfig(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				defer b.Close(ctx)
			}
			for i := 0; i < 3; i++ {
				a.send(&pgproto3.Parse{Query: "SELECT $1::int * 2 AS v"}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{})
				a.expect("ParseComplete", "ParameterDescription", "RowDescription", "ReadyForQuery")
				if b != nil {
					var n int
					if err := b.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil {
						t.Fatal(err)
					}
				}
				a.send(&pgproto3.Bind{Parameters: [][]byte{[]byte("21")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
				msgs := a.expect("BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
				if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "42" {
					t.Fatalf("round %d: %q", i, got)
				}
			}
		})
	}
}

// TestSkippedMessagesLeaveNoTrace: messages the server skips after an error in their batch
// change nothing, whatever pgtide sent in their place: a Close skipped leaves the statement, a
// Close and a re-Parse of the same name skipped leave the old definition.
func TestSkippedMessagesLeaveNoTrace(t *testing.T) {
	p := oneConn(t, nil)
	r := p.raw(t)
	r.login("app", "appdb")
	fail := []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT 1/g FROM generate_series(0, 0) g"}, &pgproto3.Bind{}, &pgproto3.Execute{}}
	r.prepExec("a", "SELECT 'old'")

	r.send(append(fail, &pgproto3.Close{ObjectType: 'S', Name: "a"}, &pgproto3.Sync{})...)
	r.expect("ParseComplete", "BindComplete", "Error:22012", "ReadyForQuery")
	if got := r.execStmt("a"); got != "old" {
		t.Fatalf("after a skipped Close: %q", got)
	}
	r.send(append(fail, &pgproto3.Close{ObjectType: 'S', Name: "a"}, &pgproto3.Parse{Name: "a", Query: "SELECT 'new'"},
		&pgproto3.Sync{})...)
	r.expect("ParseComplete", "BindComplete", "Error:22012", "ReadyForQuery")
	if got := r.execStmt("a"); got != "old" {
		t.Fatalf("after a skipped Close and Parse: %q", got)
	}
	// A Parse of a text the connection already has, skipped: the name stays undefined.
	o := p.raw(t)
	o.login("app", "appdb")
	o.send(append(fail, &pgproto3.Parse{Name: "b", Query: "SELECT 'old'"}, &pgproto3.Sync{})...)
	o.expect("ParseComplete", "BindComplete", "Error:22012", "ReadyForQuery")
	o.send(&pgproto3.Describe{ObjectType: 'S', Name: "b"}, &pgproto3.Sync{})
	o.expect("Error:26000", "ReadyForQuery")
	// Both clients' statements still work, and a Close then a Parse of the name in one batch
	// (what drivers send after invalidating a statement) replaces it.
	r.send(&pgproto3.Close{ObjectType: 'S', Name: "a"}, &pgproto3.Parse{Name: "a", Query: "SELECT 'new'"},
		&pgproto3.Bind{PreparedStatement: "a"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	msgs := r.expect("CloseComplete", "ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[3].(*pgproto3.DataRow).Values[0]); got != "new" {
		t.Fatalf("replaced: %q", got)
	}
	if got := o.prepExec("b", "SELECT 'old'"); got != "old" {
		t.Fatalf("other client: %q", got)
	}
}

// TestSchemaChangesReachSharedStatements: a client's Parse sees the schema as it is now, even
// when another client prepared the same text on the server connection before a change; a client
// whose own statement went stale gets PostgreSQL's error once, then its re-prepared statement
// works; clients with different search_path values never share a statement.
func TestSchemaChangesReachSharedStatements(t *testing.T) {
	p := oneConn(t, nil)
	ctx := context.Background()
	admin := direct(t, "appdb")
	mustExec(t, admin, "DROP TABLE IF EXISTS fid_r04; CREATE TABLE fid_r04 (a int); INSERT INTO fid_r04 VALUES (1); GRANT ALL ON fid_r04 TO app")
	describe := func(r *rawConn, name, sql string) *pgproto3.RowDescription {
		t.Helper()
		r.send(&pgproto3.Parse{Name: name, Query: sql}, &pgproto3.Describe{ObjectType: 'S', Name: name}, &pgproto3.Sync{})
		msgs := r.expect("ParseComplete", "ParameterDescription", "RowDescription", "ReadyForQuery")
		return msgs[2].(*pgproto3.RowDescription)
	}

	a := p.raw(t)
	a.login("app", "appdb")
	if rd := describe(a, "a_stmt", "SELECT * FROM fid_r04"); len(rd.Fields) != 1 {
		t.Fatalf("before: %d columns", len(rd.Fields))
	}
	mustExec(t, admin, "ALTER TABLE fid_r04 ADD COLUMN b int DEFAULT 5")
	b := p.raw(t)
	b.login("app", "appdb")
	if rd := describe(b, "b_stmt", "SELECT * FROM fid_r04"); len(rd.Fields) != 2 {
		t.Fatalf("a new client's Parse after ADD COLUMN: %d columns", len(rd.Fields))
	}
	b.send(&pgproto3.Bind{PreparedStatement: "b_stmt"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	b.expect("BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	a.send(&pgproto3.Close{ObjectType: 'S', Name: "a_stmt"}, &pgproto3.Sync{})
	a.expect("CloseComplete", "ReadyForQuery")
	if rd := describe(a, "a_stmt", "SELECT * FROM fid_r04"); len(rd.Fields) != 2 {
		t.Fatalf("re-prepared after ADD COLUMN: %d columns", len(rd.Fields))
	}

	// One client's own statement goes stale: PostgreSQL's error, then the re-prepared one works
	// (pgx's statement cache relies on this).
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeCacheStatement)
	var x, y int
	if err := c.QueryRow(ctx, "SELECT * FROM fid_r04 WHERE a = $1", 1).Scan(&x, &y); err != nil {
		t.Fatal(err)
	}
	mustExec(t, admin, "ALTER TABLE fid_r04 DROP COLUMN b")
	err := c.QueryRow(ctx, "SELECT * FROM fid_r04 WHERE a = $1", 1).Scan(&x)
	if pgCode(err) != "0A000" {
		t.Fatalf("stale statement: %v", err)
	}
	if err := c.QueryRow(ctx, "SELECT * FROM fid_r04 WHERE a = $1", 1).Scan(&x); err != nil {
		t.Fatalf("after re-prepare: %v", err)
	}

	// A parameter's type follows a column's type change; a re-created type is found.
	mustExec(t, admin, "DROP TABLE IF EXISTS fid_t; CREATE TABLE fid_t (v int); GRANT ALL ON fid_t TO app")
	ptype := func(r *rawConn, name, sql string) uint32 {
		t.Helper()
		r.send(&pgproto3.Parse{Name: name, Query: sql}, &pgproto3.Describe{ObjectType: 'S', Name: name}, &pgproto3.Sync{})
		msgs := r.expect("ParseComplete", "ParameterDescription", "NoData", "ReadyForQuery")
		return msgs[1].(*pgproto3.ParameterDescription).ParameterOIDs[0]
	}
	if oid := ptype(a, "ins1", "INSERT INTO fid_t VALUES ($1)"); oid != 23 {
		t.Fatalf("int column: parameter type %d", oid)
	}
	mustExec(t, admin, "ALTER TABLE fid_t ALTER v TYPE boolean USING v <> 0")
	if oid := ptype(b, "ins2", "INSERT INTO fid_t VALUES ($1)"); oid != 16 {
		t.Fatalf("after the column became boolean: parameter type %d", oid)
	}
	mustExec(t, admin, "DROP TYPE IF EXISTS fid_mood; CREATE TYPE fid_mood AS ENUM ('ok')")
	a.prepExec("m1", "SELECT 'ok'::fid_mood::text")
	mustExec(t, admin, "DROP TYPE fid_mood; CREATE TYPE fid_mood AS ENUM ('ok', 'meh')")
	if got := b.prepExec("m2", "SELECT 'ok'::fid_mood::text"); got != "ok" {
		t.Fatalf("re-created type: %q", got)
	}

	// search_path: the same text means another table.
	for _, schema := range []string{"fid_a", "fid_b"} {
		mustExec(t, admin, fmt.Sprintf("DROP SCHEMA IF EXISTS %[1]s CASCADE; CREATE SCHEMA %[1]s AUTHORIZATION app", schema))
	}
	mustExec(t, admin, "CREATE TABLE fid_a.t (one int); CREATE TABLE fid_b.t (one int, two int); GRANT ALL ON ALL TABLES IN SCHEMA fid_a, fid_b TO app")
	a.query("SET search_path TO fid_a", "CommandComplete", "ReadyForQuery")
	b.query("SET search_path TO fid_b", "CommandComplete", "ReadyForQuery")
	for i := 0; i < 2; i++ {
		if rd := describe(a, fmt.Sprint("sa", i), "SELECT * FROM t"); len(rd.Fields) != 1 {
			t.Fatalf("search_path fid_a: %d columns", len(rd.Fields))
		}
		if rd := describe(b, fmt.Sprint("sb", i), "SELECT * FROM t"); len(rd.Fields) != 2 {
			t.Fatalf("search_path fid_b: %d columns", len(rd.Fields))
		}
	}
}

// TestResetToStartupValues: startup values apply as on PostgreSQL (a search_path list is a list),
// and RESET ALL, RESET name, SET name TO DEFAULT and DISCARD ALL return to them, in
// both pool modes and through both protocols; the client is told its application_name before
// the ReadyForQuery, and other clients of the same server connection keep their own values.
func TestResetToStartupValues(t *testing.T) {
	for _, mode := range []string{config.PoolModeTransaction, config.PoolModeSession} {
		t.Run(mode, func(t *testing.T) {
			p := oneConn(t, func(c *config.Config) { c.Proxy.PoolMode = mode })
			ctx := context.Background()
			r := p.raw(t)
			r.write(startupPacket(3<<16, "user", "app", "database", "appdb", "application_name", "startup_app",
				"options", "-c statement_timeout=150 -c search_path=fid_start,public"))
			r.untilReady()
			show := func(name string) string {
				t.Helper()
				msgs := r.query("SHOW "+name, "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
				return string(msgs[1].(*pgproto3.DataRow).Values[0])
			}
			check := func(when string) {
				t.Helper()
				if got := show("statement_timeout"); got != "150ms" {
					t.Fatalf("%s: statement_timeout %s", when, got)
				}
				if got := show("search_path"); got != "fid_start,public" {
					t.Fatalf("%s: search_path %s", when, got)
				}
				// A list, as the server reads a startup value: fid_start does not exist, public does.
				msgs := r.query("SELECT array_to_string(current_schemas(false), ',')", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
				if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "public" {
					t.Fatalf("%s: current_schemas %q", when, got)
				}
				if got := show("application_name"); got != "startup_app" {
					t.Fatalf("%s: application_name %s", when, got)
				}
				// The timeout is in force, not only shown.
				r.query("SELECT pg_sleep(0.4)", "RowDescription", "Error:57014", "ReadyForQuery")
			}
			set := func() {
				t.Helper()
				r.query("SET application_name = 'changed'", "CommandComplete", "ParameterStatus", "ReadyForQuery")
				r.query("SET search_path TO public", "CommandComplete", "ReadyForQuery")
			}
			otherClient := func() {
				t.Helper()
				c := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
				var timeout, appName, path string
				if err := c.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('application_name'), current_setting('search_path')").
					Scan(&timeout, &appName, &path); err != nil {
					t.Fatal(err)
				}
				if timeout != "0" || appName == "startup_app" || path == "fid_start,public" {
					t.Fatalf("another client sees statement_timeout %s, application_name %q, search_path %q", timeout, appName, path)
				}
				c.Close(ctx)
			}
			check("at start")
			for _, reset := range []func(){
				func() { r.query("RESET ALL", "CommandComplete", "ParameterStatus", "ParameterStatus", "ReadyForQuery") },
				func() {
					r.query("DISCARD ALL", "CommandComplete", "ParameterStatus", "ParameterStatus", "ReadyForQuery")
				},
				func() {
					r.query("RESET statement_timeout", "CommandComplete", "ReadyForQuery")
					r.query("SET search_path TO DEFAULT", "CommandComplete", "ReadyForQuery")
					r.query("RESET application_name", "CommandComplete", "ParameterStatus", "ParameterStatus", "ReadyForQuery")
				},
			} {
				set()
				reset()
				check("after a reset")
			}
			if mode == config.PoolModeTransaction {
				otherClient() // between r's transactions, on the same server connection
			}
			// Through the extended protocol; and inside a transaction that rolls back, the
			// reset is undone with its restore. (In transaction mode these pin the client:
			// pgtide cannot know from the SQL alone whether they took effect.)
			set()
			r.extended("RESET ALL", "ParseComplete", "BindComplete", "CommandComplete", "ParameterStatus", "ParameterStatus", "ReadyForQuery")
			check("after an extended-protocol reset")
			r.query("BEGIN; SET LOCAL statement_timeout = 0; RESET ALL", "CommandComplete", "CommandComplete", "CommandComplete",
				"ParameterStatus", "ParameterStatus", "ReadyForQuery")
			r.query("ROLLBACK", "CommandComplete", "ReadyForQuery")
			check("after a rolled-back reset")
			r.c.Close()
			otherClient() // the server connection r used, after r left
		})
	}
}

// TestSessionModeBackendPID: in session mode a client that finds a server connection free at
// login gets that server process's ID in its BackendKeyData, so pg_backend_pid() agrees and a
// client may end its own backend; one that finds none logs in all the same, with pgtide's own ID,
// and waits at its first request; the next client of the same server connection gets that PID with
// another secret, so the first client's key cancels nothing of it.
func TestSessionModeBackendPID(t *testing.T) {
	p := oneConn(t, func(c *config.Config) { c.Proxy.PoolMode = config.PoolModeSession })
	ctx := context.Background()
	a := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	var pid uint32
	if err := a.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if got := a.PgConn().PID(); got != pid {
		t.Fatalf("BackendKeyData PID %d, pg_backend_pid() %d", got, pid)
	}
	// (TestCancel checks that cancels reach the backend with this key.)
	aKey := a.PgConn().SecretKey()
	a.Close(ctx)
	waitFor(t, 10*time.Second, "a's server connection to go back to the pool", func() bool {
		st := p.Pools().Stats()
		return len(st) == 1 && st[0].Idle == 1
	})

	b := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	// With b holding the only server connection, another client still logs in.
	w := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	if w.PgConn().PID() == pid {
		t.Fatal("a client that found no server connection free got a server's PID")
	}
	wait := make(chan error, 1)
	go func() { _, err := w.Exec(ctx, "SELECT 1"); wait <- err }()
	if b.PgConn().PID() != pid {
		t.Fatalf("the next client of the same server connection got PID %d, not %d", b.PgConn().PID(), pid)
	}
	if string(b.PgConn().SecretKey()) == string(aKey) {
		t.Fatal("the next client got the same secret")
	}
	// Ending its own backend ends the client's connection, as on PostgreSQL.
	if _, err := b.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())"); err == nil {
		if err := b.Ping(ctx); err == nil {
			t.Fatal("the connection survived pg_terminate_backend of its own backend")
		}
	}
	// The waiting client gets a new backend when b's is gone.
	if err := <-wait; err != nil {
		t.Fatalf("the client that waited: %v", err)
	}
	w.Close(ctx)
	waitFor(t, 10*time.Second, "w's server connection to go back to the pool", func() bool {
		st := p.Pools().Stats()
		return len(st) == 1 && st[0].Idle == 1
	})
	// The pool recovers: a new client gets a new backend.
	c := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	var cpid uint32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&cpid); err != nil || cpid == pid || cpid != c.PgConn().PID() {
		t.Fatalf("after terminate: pid %d (was %d, key %d): %v", cpid, pid, c.PgConn().PID(), err)
	}
	c.Close(ctx)
	waitFor(t, 10*time.Second, "c's server connection to go back to the pool", func() bool {
		st := p.Pools().Stats()
		return len(st) == 1 && st[0].Idle == 1
	})
	// A backend ended from elsewhere while its client is idle, before its first request: the
	// client's connection ends at once, as a direct one would (pgx's CheckConn sees it).
	d, err := pgconn.Connect(ctx, p.connString("app", "appdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if _, err := direct(t, "appdb").Exec(ctx, "SELECT pg_terminate_backend($1)", d.PID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the client of a terminated backend to be disconnected", func() bool {
		return d.CheckConn() != nil
	})
}

// TestStatementNamesLeftAlone: errors that are not PostgreSQL's about a prepared statement keep
// their text when it holds the name of a statement pgtide created for the client, even where
// their SQLSTATE is one of those whose messages pgtide rewords.
func TestStatementNamesLeftAlone(t *testing.T) {
	p := oneConn(t, nil)
	r := p.raw(t)
	r.login("app", "appdb")
	r.prepExec("a", "SELECT 1 AS one")
	msgs := r.query("SELECT name FROM pg_prepared_statements WHERE name LIKE 'pgtide%'",
		"RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	name := string(msgs[1].(*pgproto3.DataRow).Values[0])
	for _, tc := range []struct{ sql, code string }{
		{fmt.Sprintf(`SELECT '"%s"'::int`, name), "Error:22P02"},
		{fmt.Sprintf(`SELECT * FROM "%s"`, name), "Error:42P01"},
		{fmt.Sprintf(`DO $$ BEGIN RAISE EXCEPTION 'wrong number of parameters for prepared statement "%s"' USING ERRCODE = '42601'; END $$`, name), "Error:42601"},
		{fmt.Sprintf(`DO $$ BEGIN RAISE EXCEPTION 'bind message supplies 2 parameters, but prepared statement "%s" requires 1' USING ERRCODE = '08P01'; END $$`, name), "Error:08P01"},
	} {
		msgs := r.query(tc.sql, tc.code, "ReadyForQuery")
		if m := msgs[0].(*pgproto3.ErrorResponse).Message; !strings.Contains(m, `"`+name+`"`) {
			t.Errorf("%s: %q, want the name %s as it was", tc.sql, m, name)
		}
	}
}

// TestStartupSettingsTried: a reported setting given at startup is tried at login, as a server
// would: a bad value fails the login with PostgreSQL's SQLSTATE (rather than the SETs before the
// client's first transaction, which then ran with the previous client's settings), and a good
// one is reported in the server's form, in both pool modes.
func TestStartupSettingsTried(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) {
				c.Proxy.PoolMode = mode
				c.Cluster.PoolSize = 1
				c.Auth.Method = config.AuthTrust
			})
			connect := func(params map[string]string) (*pgx.Conn, error) {
				cfg, err := pgx.ParseConfig(p.connString("app", "appdb"))
				if err != nil {
					t.Fatal(err)
				}
				maps.Copy(cfg.RuntimeParams, params)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err == nil {
					t.Cleanup(func() { c.Close(context.Background()) })
				}
				return c, err
			}
			x, err := connect(map[string]string{"options": "-c search_path=leaked_from_x", "application_name": "x"})
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, x, "SELECT 1")
			x.Close(context.Background())

			// A bad setting fails the login with the server's own FATAL.
			for _, bad := range []map[string]string{
				{"TimeZone": "Bogus/Zone"},
				{"DateStyle": "bogus"},
				{"work_mem": "abc"},
				{"options": "-c statement_timeout=-5"},
				{"no_such_setting": "1"},
				{"shared_buffers": "1MB"},
			} {
				cfg, err := pgx.ParseConfig(cluster.Primary().ConnString("postgres", "appdb"))
				if err != nil {
					t.Fatal(err)
				}
				maps.Copy(cfg.RuntimeParams, bad)
				_, derr := pgx.ConnectConfig(context.Background(), cfg)
				var want *pgconn.PgError
				if !errors.As(derr, &want) {
					t.Fatalf("login straight to PostgreSQL with %v: %v", bad, derr)
				}
				_, err = connect(bad)
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != want.Code || pe.Message != want.Message ||
					pe.Detail != want.Detail || pe.Hint != want.Hint {
					t.Fatalf("login with %v: %v; PostgreSQL says %s %s %q (detail %q, hint %q)", bad, err,
						want.Severity, want.Code, want.Message, want.Detail, want.Hint)
				}
			}

			y, err := connect(map[string]string{"TimeZone": "asia/tokyo"})
			if err != nil {
				t.Fatal(err)
			}
			if tz := y.PgConn().ParameterStatus("TimeZone"); tz != "Asia/Tokyo" {
				t.Fatalf("reported TimeZone %q; want PostgreSQL's form", tz)
			}
			var path, tz string
			if err := y.QueryRow(context.Background(), "SELECT current_setting('search_path'), current_setting('TimeZone')").Scan(&path, &tz); err != nil {
				t.Fatal(err)
			}
			if path == "leaked_from_x" || tz != "Asia/Tokyo" {
				t.Fatalf("search_path %q, TimeZone %q", path, tz)
			}
			y.Close(context.Background())

			// A partial DateStyle takes the rest from the server's default, not from the
			// DateStyle another client left on the server connection.
			want := map[string]string{}
			for _, ds := range []string{"ISO", "SQL", "German", "mdy", "Postgres, YMD"} {
				cfg, err := pgx.ParseConfig(cluster.Primary().ConnString("postgres", "appdb"))
				if err != nil {
					t.Fatal(err)
				}
				cfg.RuntimeParams["DateStyle"] = ds
				d, err := pgx.ConnectConfig(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				want[ds] = d.PgConn().ParameterStatus("DateStyle")
				d.Close(context.Background())
			}
			for _, prev := range []string{"SQL, DMY", "German, YMD"} {
				for _, ds := range []string{"ISO", "SQL", "German", "mdy", "Postgres, YMD"} {
					z, err := connect(map[string]string{"DateStyle": prev})
					if err != nil {
						t.Fatal(err)
					}
					mustExec(t, z, "SELECT 1")
					z.Close(context.Background())
					w, err := connect(map[string]string{"DateStyle": ds})
					if err != nil {
						t.Fatal(err)
					}
					var got string
					if err := w.QueryRow(context.Background(), "SELECT current_setting('DateStyle')").Scan(&got); err != nil {
						t.Fatal(err)
					}
					if rep := w.PgConn().ParameterStatus("DateStyle"); got != want[ds] || rep != want[ds] {
						t.Fatalf("DateStyle %q after a client with %q: reported %q, in effect %q; PostgreSQL says %q", ds, prev, rep, got, want[ds])
					}
					w.Close(context.Background())
				}
			}
		})
	}
}
