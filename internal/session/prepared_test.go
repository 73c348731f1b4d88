package session

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/pool"
)

// stmtSession returns a transaction-mode session with statement translation on, reading in.
func stmtSession(in []byte) *Session {
	s := routeSession(in)
	s.env.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s.maxPrepared = 200
	return s
}

// sendAll forwards every message s's client sent to srv, accounted as attach accounts for them,
// and returns what reached the server.
func sendAll(t *testing.T, s *Session, srv *pool.Conn, out *bytes.Buffer) []pgproto3.FrontendMessage {
	t.Helper()
	for {
		typ, _, err := s.r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		s.countLocked(typ)
		s.mu.Unlock()
		if err := s.forward(srv, typ); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Writer.Flush(); err != nil {
		t.Fatal(err)
	}
	be := pgproto3.NewBackend(bytes.NewReader(out.Bytes()), io.Discard)
	be.SetAuthType(pgproto3.AuthTypeOk)
	var msgs []pgproto3.FrontendMessage
	for {
		m, err := be.Receive()
		if err != nil {
			break
		}
		switch m := m.(type) { // Receive reuses its messages
		case *pgproto3.Query:
			msgs = append(msgs, &pgproto3.Query{String: m.String})
		case *pgproto3.Parse:
			msgs = append(msgs, &pgproto3.Parse{Name: m.Name, Query: m.Query})
		case *pgproto3.Bind:
			msgs = append(msgs, &pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: m.PreparedStatement})
		case *pgproto3.Close:
			msgs = append(msgs, &pgproto3.Close{ObjectType: m.ObjectType, Name: m.Name})
		default:
			msgs = append(msgs, m)
		}
	}
	return msgs
}

var deallocName = regexp.MustCompile(`(?i)DEALLOCATE\s+(?:PREPARE\s+)?(\w+)`)

// droppedBy returns the server-side statements that msgs deallocate or close.
func droppedBy(msgs []pgproto3.FrontendMessage) map[string]bool {
	dropped := make(map[string]bool)
	for _, m := range msgs {
		var sql string
		switch m := m.(type) {
		case *pgproto3.Query:
			sql = m.String
		case *pgproto3.Parse:
			sql = m.Query
		case *pgproto3.Close:
			if m.ObjectType == 'S' {
				dropped[m.Name] = true
			}
		}
		for _, match := range deallocName.FindAllStringSubmatch(sql, -1) {
			dropped[match[1]] = true
		}
	}
	return dropped
}

// TestDeallocateKeepsSharedStatement: two of a client's names with the same text share one
// server statement; an SQL DEALLOCATE of one of them, in a simple Query or in a protocol
// statement's text, must not drop that statement, which the other name still uses, on the
// server or in pgtide's records.
func TestDeallocateKeepsSharedStatement(t *testing.T) {
	const text = "SELECT $1::int + 1 AS plus"
	prepare := []pgproto3.FrontendMessage{&pgproto3.Parse{Name: "a", Query: text}, &pgproto3.Parse{Name: "b", Query: text}}
	for _, tc := range []struct {
		name string
		msgs []pgproto3.FrontendMessage
	}{
		{"simple query", []pgproto3.FrontendMessage{&pgproto3.Sync{}, &pgproto3.Query{String: "DEALLOCATE a; EXECUTE b(1)"}}},
		{"query in an extended batch", []pgproto3.FrontendMessage{&pgproto3.Query{String: "DEALLOCATE a; EXECUTE b(1)"},
			&pgproto3.Sync{}}},
		{"unnamed statement", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "DEALLOCATE a"}, &pgproto3.Bind{},
			&pgproto3.Execute{}, &pgproto3.Bind{PreparedStatement: "b"}, &pgproto3.Execute{}, &pgproto3.Sync{}}},
		{"named statement", []pgproto3.FrontendMessage{&pgproto3.Parse{Name: "c", Query: "DEALLOCATE a"},
			&pgproto3.Bind{PreparedStatement: "c"}, &pgproto3.Execute{}, &pgproto3.Bind{PreparedStatement: "b"},
			&pgproto3.Execute{}, &pgproto3.Sync{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			s := stmtSession(frontend(t, append(prepare, tc.msgs...)...))
			srv := &pool.Conn{Writer: bufio.NewWriter(&out)}
			msgs := sendAll(t, s, srv, &out)
			s.mu.Lock()
			shared := stateOf(srv).lookup(stmtKey{context: s.stmtContextLocked(), text: s.stmts["b"].key})
			s.mu.Unlock()
			if shared == nil {
				t.Fatalf("pgtide's records lost b's statement; sent %v", msgs)
			}
			if droppedBy(msgs)[shared.name] {
				t.Fatalf("b's statement %s dropped on the server; sent:\n%s", shared.name, describe(msgs))
			}
		})
	}
}

func describe(msgs []pgproto3.FrontendMessage) string {
	var b bytes.Buffer
	for _, m := range msgs {
		switch m := m.(type) {
		case *pgproto3.Query:
			b.WriteString("Query " + m.String + "\n")
		case *pgproto3.Parse:
			b.WriteString("Parse " + m.Name + " " + m.Query + "\n")
		case *pgproto3.Bind:
			b.WriteString("Bind " + m.DestinationPortal + " " + m.PreparedStatement + "\n")
		case *pgproto3.Close:
			b.WriteString("Close " + string(m.ObjectType) + " " + m.Name + "\n")
		default:
			b.WriteString("?\n")
		}
	}
	return b.String()
}
