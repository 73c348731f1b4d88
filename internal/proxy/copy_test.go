package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/config"
)

// next reads exactly len(want) messages and compares their types (and error codes, and the
// status of a ReadyForQuery, as in "ReadyForQuery:T") with want.
func (r *rawConn) next(want ...string) {
	r.t.Helper()
	got := make([]string, 0, len(want))
	for range want {
		m, err := r.fe.Receive()
		if err != nil {
			r.t.Fatalf("after %v: %v", got, err)
		}
		name := fmt.Sprintf("%T", m)[len("*pgproto3."):]
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			name = "Error:" + m.Code
		case *pgproto3.ReadyForQuery:
			if m.TxStatus != 'I' {
				name += ":" + string(m.TxStatus)
			}
		}
		got = append(got, name)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		r.t.Fatalf("got  %v\nwant %v", got, want)
	}
}

// copyCases are COPY exchanges as drivers send them, each with the rows it leaves in copy_t.
// The extended-protocol ones are what libpq's PQexecParams, pgx's pgconn.Frontend users and
// tokio-postgres send; the simple ones what psql and pgx's CopyFrom send.
var copyCases = []struct {
	name string
	run  func(r *rawConn)
	rows int
}{
	{"extended, Sync after Execute", func(r *rawConn) {
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse")
		r.send(copyData("1\n2\n"), &pgproto3.CopyDone{}, &pgproto3.Sync{})
		r.next("CommandComplete", "ReadyForQuery")
	}, 2},
	{"extended, all pipelined before CopyInResponse", func(r *rawConn) {
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			copyData("1\n"), copyData("2\n"), &pgproto3.CopyDone{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse", "CommandComplete", "ReadyForQuery")
	}, 2},
	{"extended, pipelined with a query after", func(r *rawConn) {
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			copyData("1\n"), &pgproto3.CopyDone{}, &pgproto3.Sync{},
			parse("select 1"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse", "CommandComplete", "ReadyForQuery",
			"ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	}, 1},
	{"extended, no Sync until CopyDone", func(r *rawConn) {
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse")
		r.send(copyData("1\n"), &pgproto3.Flush{}, copyData("2\n3\n"), &pgproto3.CopyDone{}, &pgproto3.Sync{})
		r.next("CommandComplete", "ReadyForQuery")
	}, 3},
	{"extended, CopyFail", func(r *rawConn) {
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse")
		r.send(copyData("1\n"), &pgproto3.CopyFail{Message: "client gave up"}, &pgproto3.Sync{})
		r.next("Error:57014", "ReadyForQuery")
	}, 0},
	{"extended, bad row", func(r *rawConn) {
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse")
		r.send(copyData("1\nnot_a_number\n"), &pgproto3.CopyDone{}, &pgproto3.Sync{})
		r.next("Error:22P02", "ReadyForQuery")
	}, 0},
	{"extended, failing before reading any data", func(r *rawConn) {
		// A view without an INSTEAD OF trigger fails after CopyInResponse, before the server
		// reads the Sync: that Sync ends the error's skip, and the one after CopyDone is answered
		// too, as on a direct connection.
		r.send(parse("copy copy_v from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse", "Error:42809", "ReadyForQuery")
		r.send(copyData("1\n"), &pgproto3.CopyDone{}, &pgproto3.Sync{})
		r.next("ReadyForQuery")
	}, 0},
	{"extended, inside a transaction", copyInTransaction("1\n2\n", "CommandComplete", "ReadyForQuery:T", "commit"), 2},
	{"extended, failing inside a transaction", copyInTransaction("x\n", "Error:22P02", "ReadyForQuery:E", "rollback"), 0},
	{"extended, COPY TO STDOUT", func(r *rawConn) {
		r.send(parse("copy (select 1 union all select 2) to stdout"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyOutResponse", "CopyData", "CopyData", "CopyDone",
			"CommandComplete", "ReadyForQuery")
	}, 0},
	{"simple", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "copy copy_t from stdin"})
		r.next("CopyInResponse")
		r.send(copyData("1\n2\n"), &pgproto3.CopyDone{})
		r.next("CommandComplete", "ReadyForQuery")
	}, 2},
	{"simple, pipelined before CopyInResponse", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "copy copy_t from stdin"}, copyData("1\n2\n"), &pgproto3.CopyDone{})
		r.next("CopyInResponse", "CommandComplete", "ReadyForQuery")
	}, 2},
	{"simple, inside an extended batch, pipelined with a Bind after", func(r *rawConn) {
		// The Bind of the unnamed statement, which the batch parsed, waits for the Query's
		// answer in transaction mode (see internal/session/settle.go), but not for the end of
		// the COPY: that needs the data after the Query.
		r.send(parse("select 1"), &pgproto3.Query{String: "copy copy_t from stdin"}, copyData("1\n"), &pgproto3.CopyDone{},
			&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "CopyInResponse", "CommandComplete", "ReadyForQuery", "Error:26000", "ReadyForQuery")
	}, 1},
	{"simple, with a Sync inside", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "copy copy_t from stdin"})
		r.next("CopyInResponse")
		r.send(copyData("1\n"), &pgproto3.Sync{}, &pgproto3.Flush{}, copyData("2\n"), &pgproto3.CopyDone{})
		r.next("CommandComplete", "ReadyForQuery")
	}, 2},
	{"simple, CopyFail", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "copy copy_t from stdin"})
		r.next("CopyInResponse")
		r.send(copyData("1\n"), &pgproto3.CopyFail{Message: "client gave up"})
		r.next("Error:57014", "ReadyForQuery")
	}, 0},
	{"simple, bad row, then the rest of the data", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "copy copy_t from stdin"})
		r.next("CopyInResponse")
		r.send(copyData("x\n"))
		r.next("Error:22P02", "ReadyForQuery")
		// The client had more on its way: the server ignores it, and it must not take a
		// server connection from anyone.
		r.send(copyData("2\n"), &pgproto3.CopyDone{})
	}, 0},
	{"simple, inside a transaction", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "begin; copy copy_t from stdin"})
		r.next("CommandComplete", "CopyInResponse")
		r.send(copyData("1\n"), &pgproto3.CopyDone{})
		r.next("CommandComplete", "ReadyForQuery:T")
		r.send(&pgproto3.Query{String: "commit"})
		r.next("CommandComplete", "ReadyForQuery")
	}, 1},
	{"simple, COPY TO STDOUT", func(r *rawConn) {
		r.send(&pgproto3.Query{String: "copy (select 1) to stdout"})
		r.next("CopyOutResponse", "CopyData", "CopyDone", "CommandComplete", "ReadyForQuery")
	}, 0},
}

// copyInTransaction copies data with the extended protocol inside BEGIN … end.
func copyInTransaction(data, result, ready, end string) func(r *rawConn) {
	return func(r *rawConn) {
		r.send(&pgproto3.Query{String: "begin"})
		r.next("CommandComplete", "ReadyForQuery:T")
		r.send(parse("copy copy_t from stdin"), &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		r.next("ParseComplete", "BindComplete", "CopyInResponse")
		r.send(copyData(data), &pgproto3.CopyDone{}, &pgproto3.Sync{})
		r.next(result, ready)
		r.send(&pgproto3.Query{String: end})
		r.next("CommandComplete", "ReadyForQuery")
	}
}

func parse(sql string) *pgproto3.Parse { return &pgproto3.Parse{Query: sql} }

func copyData(s string) *pgproto3.CopyData { return &pgproto3.CopyData{Data: []byte(s)} }

// runCopyCases runs every case on a fresh client of a proxy with one server connection in the
// given pool mode, then hands the client and the case's row count to after.
func runCopyCases(t *testing.T, mode string, after func(t *testing.T, p *testProxy, a *rawConn, rows int)) {
	p := startProxy(t, func(c *config.Config) {
		c.Proxy.PoolMode = mode
		c.Cluster.PoolSize = 1
		c.Auth.Method = config.AuthTrust
		c.Cluster.QueryWaitTimeout.Duration = 5 * time.Second
	})
	admin := direct(t, "appdb")
	mustExec(t, admin, "CREATE TABLE copy_t (id int PRIMARY KEY); CREATE VIEW copy_v AS SELECT * FROM copy_t; "+
		"GRANT ALL ON copy_t, copy_v TO app")
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP VIEW copy_v; DROP TABLE copy_t") })
	for _, tc := range copyCases {
		t.Run(tc.name, func(t *testing.T) {
			mustExec(t, admin, "TRUNCATE copy_t")
			a := p.raw(t)
			a.login("app", "appdb")
			tc.run(a)
			after(t, p, a, tc.rows)
		})
	}
}

// expectCount runs select count(*) from copy_t on r and checks the answer.
func (r *rawConn) expectCount(rows int) {
	r.t.Helper()
	r.send(&pgproto3.Query{String: "select count(*) from copy_t"})
	msgs := r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if got := string(msgs[1].(*pgproto3.DataRow).Values[0]); got != fmt.Sprint(rows) {
		r.t.Fatalf("copy_t has %s rows, want %d", got, rows)
	}
}

// TestCopyGivesServerBack: in transaction mode with one server connection, after every kind of
// COPY (both directions, simple and extended protocol, CopyDone, CopyFail and errors, inside and
// outside a transaction) the next client gets the server connection without waiting for
// query_wait_timeout, the data has arrived, and the copying client can go on.
func TestCopyGivesServerBack(t *testing.T) {
	runCopyCases(t, config.PoolModeTransaction, func(t *testing.T, p *testProxy, a *rawConn, rows int) {
		// Another client, while a stays connected: the server connection must be free.
		b := p.raw(t)
		b.login("app", "appdb")
		b.expectCount(rows)
		a.send(&pgproto3.Query{String: "select 'a still fine'"})
		a.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	})
}

// TestCopySessionMode: in session mode COPY is forwarded as it is; every kind works and leaves
// the client's connection usable, served on the event loops again (the relay goroutine the COPY
// needed has ended).
func TestCopySessionMode(t *testing.T) {
	runCopyCases(t, config.PoolModeSession, func(t *testing.T, p *testProxy, a *rawConn, rows int) {
		a.expectCount(rows)
		waitRelaying(t, p, 0) // the COPY's relay ended: the session is back on the loops
		a.c.Close()           // the next case needs the one server connection
	})
}
