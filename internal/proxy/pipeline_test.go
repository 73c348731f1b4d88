package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A client that sends far more queries at once than the sockets between pgtide and the server
// can hold, reading the answers as they come, gets every answer: pgtide reads the server's
// answers while it is still writing the queries, as PostgreSQL does (it answers while reading).
func TestPipelineLargerThanBuffers(t *testing.T) {
	p := startProxy(t, nil)
	r := p.raw(t)
	r.login("app", "appdb")
	const n = 20000 // 10 MB of queries, 200 MB of answers
	q := &pgproto3.Query{String: "SELECT repeat('x', 10000) /* " + strings.Repeat("p", 450) + " */"}
	var buf []byte
	for range n {
		buf, _ = q.Encode(buf)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.c.Write(buf)
		errc <- err
	}()
	r.c.SetDeadline(time.Now().Add(time.Minute))
	for i := range n {
		var rows int
		for {
			m, err := r.fe.Receive()
			if err != nil {
				t.Fatalf("answer %d of %d: %v", i, n, err)
			}
			if _, ok := m.(*pgproto3.DataRow); ok {
				rows++
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		if rows != 1 {
			t.Fatalf("answer %d: %d rows", i, rows)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r.send(&pgproto3.Query{String: "SELECT 1"})
	r.expect("RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
}
