package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/classify"
	"pgtide/internal/config"
)

// TestPreparedStatementsPgx: 50 pgx clients with their statement cache on (named prepared
// statements, pgx's default) share pool_size 2 in transaction mode.
func TestPreparedStatementsPgx(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 2; c.Cluster.QueryWaitTimeout.Duration = 60 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := pgx.Connect(ctx, p.connString("app", "appdb")) // default mode: cached named statements
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			for j := 0; j < 20; j++ {
				var sum int
				var label string
				if err := c.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text", i, j, "x").Scan(&sum, &label); err != nil || sum != i+j {
					errs <- fmt.Errorf("client %d query %d: %d %v", i, j, sum, err)
					return
				}
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					var n int64
					if err := tx.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, $1::int)", j+1).Scan(&n); err != nil {
						return err
					}
					if n != int64(j+1) {
						return fmt.Errorf("count %d", n)
					}
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("client %d tx %d: %v", i, j, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestPreparedStatementsProtocol drives named statements message by message: Describe, Close,
// re-use of a name after Close, a duplicate name, a failed Parse, unknown names, and statements
// used on a server connection other than the one that prepared them.
func TestPreparedStatementsProtocol(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 2; c.Auth.Method = config.AuthTrust })
	ctx := context.Background()
	r := p.raw(t)
	r.login("app", "appdb")
	send, expect := r.send, r.expect
	sync := &pgproto3.Sync{}

	send(&pgproto3.Parse{Name: "a", Query: "SELECT $1::int * 2 AS doubled"},
		&pgproto3.Describe{ObjectType: 'S', Name: "a"}, sync)
	msgs := expect("ParseComplete", "ParameterDescription", "RowDescription", "ReadyForQuery")
	if pd := msgs[1].(*pgproto3.ParameterDescription); len(pd.ParameterOIDs) != 1 || pd.ParameterOIDs[0] != 23 {
		t.Fatalf("parameter description %v", pd.ParameterOIDs)
	}
	if rd := msgs[2].(*pgproto3.RowDescription); string(rd.Fields[0].Name) != "doubled" {
		t.Fatalf("row description %v", rd.Fields)
	}

	// Use it while another client holds the other server connection, and after, many times:
	// whichever server connection runs it, it works.
	other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
	for i := 0; i < 6; i++ {
		var tx pgx.Tx
		if i%2 == 0 {
			var err error
			if tx, err = other.Begin(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
		}
		send(&pgproto3.Bind{PreparedStatement: "a", Parameters: [][]byte{[]byte(fmt.Sprint(i))}},
			&pgproto3.Execute{}, sync)
		msgs := expect("BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
		if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != fmt.Sprint(2*i) {
			t.Fatalf("round %d: got %s", i, got)
		}
		if tx != nil {
			tx.Rollback(ctx)
		}
	}

	// Redefining a name is an error, as on PostgreSQL, and the rest of the batch is skipped.
	send(&pgproto3.Parse{Name: "a", Query: "SELECT 2"}, &pgproto3.Bind{PreparedStatement: "a"}, &pgproto3.Execute{}, sync)
	msgs = expect("Error:42P05", "ReadyForQuery")
	if e := msgs[0].(*pgproto3.ErrorResponse); e.Message != `prepared statement "a" already exists` {
		t.Fatalf("duplicate: %q", e.Message)
	}
	// Describe of the original still works afterwards.
	send(&pgproto3.Describe{ObjectType: 'S', Name: "a"}, sync)
	expect("ParameterDescription", "RowDescription", "ReadyForQuery")

	// Close, then the name is unknown, then it can be reused for another query.
	send(&pgproto3.Close{ObjectType: 'S', Name: "a"}, sync)
	expect("CloseComplete", "ReadyForQuery")
	send(&pgproto3.Bind{PreparedStatement: "a"}, &pgproto3.Execute{}, sync)
	msgs = expect("Error:26000", "ReadyForQuery")
	if e := msgs[0].(*pgproto3.ErrorResponse); e.Message != `prepared statement "a" does not exist` {
		t.Fatalf("unknown statement: %q", e.Message)
	}
	send(&pgproto3.Parse{Name: "a", Query: "SELECT 'reused'"}, &pgproto3.Bind{PreparedStatement: "a"}, &pgproto3.Execute{}, sync)
	msgs = expect("ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[2].(*pgproto3.DataRow).Values[0]); got != "reused" {
		t.Fatalf("reused name runs %q", got)
	}

	// Close and Describe of names never prepared: Close succeeds, Describe fails, as on PostgreSQL.
	send(&pgproto3.Close{ObjectType: 'S', Name: "never"}, sync)
	expect("CloseComplete", "ReadyForQuery")
	send(&pgproto3.Describe{ObjectType: 'S', Name: "never"}, sync)
	expect("Error:26000", "ReadyForQuery")

	// A Parse that fails leaves no statement behind.
	send(&pgproto3.Parse{Name: "bad", Query: "SELEC 1"}, sync)
	expect("Error:42601", "ReadyForQuery")
	send(&pgproto3.Bind{PreparedStatement: "bad"}, &pgproto3.Execute{}, sync)
	expect("Error:26000", "ReadyForQuery")
	// A Parse skipped because an earlier message in its batch failed leaves none either.
	send(&pgproto3.Parse{Name: "", Query: "SELECT 1/g FROM generate_series(0, 0) g"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "skipped", Query: "SELECT 1"}, sync)
	expect("ParseComplete", "BindComplete", "Error:22012", "ReadyForQuery")
	send(&pgproto3.Describe{ObjectType: 'S', Name: "skipped"}, sync)
	expect("Error:26000", "ReadyForQuery")

	// The unnamed statement survives a move to another server connection between Syncs (pgx's
	// describe-then-execute does this).
	send(&pgproto3.Parse{Query: "SELECT $1::text || '!'"}, &pgproto3.Describe{ObjectType: 'S'}, sync)
	expect("ParseComplete", "ParameterDescription", "RowDescription", "ReadyForQuery")
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec(ctx, "SELECT 1")
	send(&pgproto3.Bind{Parameters: [][]byte{[]byte("hi")}}, &pgproto3.Execute{}, sync)
	msgs = expect("BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "hi!" {
		t.Fatalf("unnamed statement: %q", got)
	}
	tx.Rollback(ctx)
}

// TestParameterTracking: clients that set different TimeZone, DateStyle, application_name,
// search_path and startup options share one server connection, and each keeps its own values
// on every transaction, with the ParameterStatus values PostgreSQL would report.
func TestParameterTracking(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 1 })
	ctx := context.Background()
	admin := direct(t, "appdb")
	for _, schema := range []string{"a_schema", "b_schema"} {
		mustExec(t, admin, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		mustExec(t, admin, "CREATE SCHEMA "+schema+" AUTHORIZATION app")
		mustExec(t, admin, "CREATE TABLE "+schema+".t AS SELECT '"+schema+"'::text AS v")
		mustExec(t, admin, "ALTER TABLE "+schema+".t OWNER TO app")
	}
	type client struct {
		c                      *pgx.Conn
		tz, style, app, schema string
		timeout                string
	}
	open := func(tz, style, app, schema, options, timeout string) *client {
		cfg, err := pgx.ParseConfig(p.connString("app", "appdb"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.RuntimeParams["application_name"] = app
		if options != "" {
			cfg.RuntimeParams["options"] = options
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		mustExec(t, c, "SET TimeZone = '"+tz+"'")
		mustExec(t, c, "SET DateStyle = '"+style+"'")
		mustExec(t, c, "SET search_path TO "+schema+", public")
		return &client{c: c, tz: tz, style: style, app: app, schema: schema, timeout: timeout}
	}
	a := open("Asia/Tokyo", "SQL, DMY", "client-a", "a_schema", "-c statement_timeout=1234", "1234ms")
	b := open("America/New_York", "German, DMY", "client-b", "b_schema", "", "0")
	pidA, pidB := backendPID(t, a.c), backendPID(t, b.c)
	if pidA != pidB {
		t.Fatalf("pool_size 1 should give both clients the same server connection: %d %d", pidA, pidB)
	}
	for i := 0; i < 10; i++ {
		for _, cl := range []*client{a, b} {
			var tz, style, app, v, timeout string
			err := cl.c.QueryRow(ctx, "SELECT current_setting('TimeZone'), current_setting('DateStyle'), "+
				"current_setting('application_name'), (SELECT v FROM t), current_setting('statement_timeout')").
				Scan(&tz, &style, &app, &v, &timeout)
			if err != nil {
				t.Fatal(err)
			}
			if tz != cl.tz || style != cl.style || app != cl.app || v != cl.schema || timeout != cl.timeout {
				t.Fatalf("round %d, %s: got %s / %s / %s / %s / %s", i, cl.app, tz, style, app, v, timeout)
			}
			if got := cl.c.PgConn().ParameterStatus("TimeZone"); got != cl.tz {
				t.Fatalf("%s: ParameterStatus TimeZone %q", cl.app, got)
			}
			if got := cl.c.PgConn().ParameterStatus("application_name"); got != cl.app {
				t.Fatalf("%s: ParameterStatus application_name %q", cl.app, got)
			}
		}
	}
	// RESET search_path goes back to the default for that client only.
	mustExec(t, b.c, "RESET search_path")
	if _, err := b.c.Exec(ctx, "SELECT v FROM t"); pgCode(err) != "42P01" {
		t.Fatalf("after RESET search_path: %v", err)
	}
	var v string
	if err := a.c.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != "a_schema" {
		t.Fatalf("other client after RESET: %q %v", v, err)
	}
	if pinned, _ := p.Pins().Counts(classify.SessionSet); pinned != 0 {
		t.Fatalf("tracked settings pinned %d clients", pinned)
	}
	// A bad startup setting fails the login, as on PostgreSQL.
	bad := strings.Replace(p.connString("app", "appdb"), "sslmode=disable", "sslmode=disable options='-c no_such.setting=1 -c statement_timeout=nonsense'", 1)
	if _, err := pgx.Connect(ctx, bad); pgCode(err) != "22023" {
		t.Fatalf("bad startup option: %v", err)
	}
}

// TestPinning: each kind of session state pins its client to its server connection (another
// client never gets it), the state keeps working, and the reason is counted. With
// pin_policy = "error" the statement is refused instead and the client goes on.
func TestPinning(t *testing.T) {
	cases := []struct {
		reason classify.Reason
		setup  []string // run by the pinned client
		check  string   // must succeed on the pinned client afterwards
	}{
		{classify.SessionSet, []string{"SET statement_timeout = '5s'"}, "SELECT 1 WHERE current_setting('statement_timeout') = '5s'"},
		{classify.Prepare, []string{"PREPARE pinned_stmt AS SELECT 42"}, "EXECUTE pinned_stmt"},
		{classify.AdvisoryLock, []string{"SELECT pg_advisory_lock(4242)"}, "SELECT pg_advisory_unlock(4242)"},
		{classify.TempObject, []string{"CREATE TEMP TABLE pinned_tmp (x int)"}, "INSERT INTO pinned_tmp VALUES (1)"},
		{classify.Listen, []string{"LISTEN pinned_channel"}, "SELECT 1"},
		{classify.HoldCursor, []string{"BEGIN", "DECLARE pinned_cur CURSOR WITH HOLD FOR SELECT 1", "COMMIT"}, "FETCH pinned_cur"},
		{classify.Role, []string{"SET ROLE app"}, "SELECT 1 WHERE current_user = 'app'"},
	}
	for _, policy := range []string{config.PinPolicyPin, config.PinPolicyError} {
		for _, tc := range cases {
			t.Run(policy+"/"+tc.reason.String(), func(t *testing.T) {
				p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 2; c.Proxy.PinPolicy = policy })
				ctx := context.Background()
				pinned := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
				var err error
				for _, sql := range tc.setup {
					if _, err = pinned.Exec(ctx, sql); err != nil {
						break
					}
				}
				gotPinned, gotRefused := p.Pins().Counts(tc.reason)
				if policy == config.PinPolicyError {
					if pgCode(err) != "0A000" || !strings.Contains(err.Error(), "pgtide") {
						t.Fatalf("refused statement: %v", err)
					}
					if gotRefused != 1 || gotPinned != 0 {
						t.Fatalf("counts: pinned %d refused %d", gotPinned, gotRefused)
					}
					pinned.Exec(ctx, "ROLLBACK")
					mustExec(t, pinned, "SELECT 1")
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if gotPinned != 1 {
					t.Fatalf("pinned count %d", gotPinned)
				}
				pid := backendPID(t, pinned)
				other := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
				for i := 0; i < 5; i++ {
					if backendPID(t, other) == pid {
						t.Fatal("another client got the pinned server connection")
					}
					if backendPID(t, pinned) != pid {
						t.Fatal("the pinned client moved to another server connection")
					}
					if _, err := pinned.Exec(ctx, tc.check); err != nil {
						t.Fatalf("state lost: %v", err)
					}
				}
				// After the pinned client leaves, its server connection is reset for the next one:
				// two clients in transactions hold both server connections, and the one that got
				// the pinned client's connection finds none of its state.
				pinned.Close(ctx)
				waitFor(t, 10*time.Second, "the pinned client to be gone", func() bool { return p.ClientCount() == 1 })
				c2 := p.connect(t, "app", "appdb", pgx.QueryExecModeSimpleProtocol)
				txs := []pgx.Tx{}
				for _, c := range []*pgx.Conn{other, c2} {
					tx, err := c.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					defer tx.Rollback(ctx)
					txs = append(txs, tx)
				}
				found := false
				for _, tx := range txs {
					var got int
					var leftovers int
					err := tx.QueryRow(ctx, `SELECT pg_backend_pid(),
						(SELECT count(*) FROM pg_prepared_statements) +
						(SELECT count(*) FROM pg_listening_channels()) +
						(SELECT count(*) FROM pg_cursors) +
						(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) +
						(SELECT count(*) FROM pg_class WHERE relname = 'pinned_tmp') +
						(CASE WHEN current_setting('statement_timeout') = '0' THEN 0 ELSE 1 END)`).Scan(&got, &leftovers)
					if err != nil {
						t.Fatal(err)
					}
					if got == pid {
						found = true
						if leftovers != 0 {
							t.Fatalf("the next client inherited %d pieces of the pinned client's state", leftovers)
						}
					}
				}
				if !found {
					t.Fatal("the pinned client's server connection was not reused")
				}
			})
		}
	}
}

// TestPgbenchPrepared: pgbench -S -M prepared -c 200 through transaction mode with pool_size 10.
func TestPgbenchPrepared(t *testing.T) {
	pgbench, err := lookPath("pgbench")
	if err != nil {
		t.Skip("pgbench not installed")
	}
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 10
		c.Cluster.QueryWaitTimeout.Duration = 60 * time.Second
	})
	cs := p.connString("app", "appdb")
	run(t, 2*time.Minute, pgbench, "-i", "-q", "-s", "1", cs)
	for _, mode := range []string{"prepared", "extended"} {
		out := run(t, 3*time.Minute, pgbench, "-n", "-S", "-M", mode, "-c", "200", "-j", "2", "-t", "50", cs)
		if strings.Contains(out, "aborted") || !strings.Contains(out, "number of failed transactions: 0 (0.000%)") ||
			!strings.Contains(out, "actually processed: 10000/10000") {
			t.Fatalf("pgbench -M %s:\n%s", mode, out)
		}
	}
}

// TestPipelinedRequests: in transaction mode the client loop reads a request's answers itself
// only when the last message it sent is one the server answers, sent whole; anything else is
// still answered in full and in order.
func TestPipelinedRequests(t *testing.T) {
	p := startProxy(t, func(c *config.Config) { c.Cluster.PoolSize = 1; c.Auth.Method = config.AuthTrust })
	r := p.raw(t)
	r.login("app", "appdb")
	// A Query larger than the server connection's write buffer (so part of it is sent before
	// the rest is forwarded), then a CopyData outside any COPY, which the server ignores.
	big := &pgproto3.Query{String: "SELECT length('" + strings.Repeat("x", 100_000) + "')"}
	r.send(big, &pgproto3.CopyData{Data: []byte("ignored")})
	msgs := r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "100000" {
		t.Fatalf("length = %s", got)
	}
	// Two Queries in one write, the first one large; then one more once they are answered.
	r.send(big, &pgproto3.Query{String: "SELECT 2"})
	r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	msgs = r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != "2" {
		t.Fatalf("second query: %s", got)
	}
	// A transaction sent in pieces, each answered before the next is sent.
	for _, q := range []string{"BEGIN", "SELECT 3", "COMMIT"} {
		r.send(&pgproto3.Query{String: q})
		if q == "SELECT 3" {
			r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
		} else {
			r.expect("CommandComplete", "ReadyForQuery")
		}
	}
}

// TestSkippedAfterError: after an error in an extended-protocol message, the server skips every
// message until Sync, a simple Query among them too, which then gets no ReadyForQuery. pgtide
// must count the same way in both pool modes, or the client's next request hangs (found by
// FuzzPreparedStatements). Also with a long pipeline before the Query, so that pgtide has
// dropped the answered messages from its account of the batch meanwhile.
func TestSkippedAfterError(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := trustProxy(t, mode, 1)
			r := p.raw(t)
			r.login("app", "appdb")
			one := &pgproto3.Query{String: "SELECT 1"}
			bad := &pgproto3.Parse{Query: "SELEC 1"}
			// The Query after the failed Parse is skipped: one ReadyForQuery, for the Sync.
			r.send(bad, one, &pgproto3.Sync{})
			r.expect("Error:42601", "ReadyForQuery")
			r.send(one)
			r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")

			// The client waits for the error (Flush) before sending the rest of the batch.
			r.send(bad, &pgproto3.Flush{})
			r.expectError("42601", false)
			r.send(one, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
			r.expect("ReadyForQuery")

			// A Query that fails itself inside a batch gets its ReadyForQuery, and the batch
			// goes on after it (with a named statement: a Query drops the unnamed one).
			r.send(&pgproto3.Parse{Name: "two", Query: "SELECT 2"}, &pgproto3.Query{String: "SELEC 1"},
				&pgproto3.Bind{PreparedStatement: "two"}, &pgproto3.Execute{}, &pgproto3.Sync{})
			r.expect("ParseComplete", "Error:42601", "ReadyForQuery")
			r.expect("BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")

			// 200 statements answered, then a failing Bind, then a Query: skipped.
			for range 200 {
				r.fe.Send(&pgproto3.Parse{Query: "SELECT 3"})
				r.fe.Send(&pgproto3.Bind{})
				r.fe.Send(&pgproto3.Execute{})
			}
			r.send(&pgproto3.Bind{PreparedStatement: "nope"}, one, &pgproto3.Sync{})
			var want []string
			for range 200 {
				want = append(want, "ParseComplete", "BindComplete", "DataRow", "CommandComplete")
			}
			r.expect(append(want, "Error:26000", "ReadyForQuery")...)
			r.send(one)
			r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
		})
	}
}
