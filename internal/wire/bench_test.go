package wire

import (
	"bufio"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// repeatReader returns data over and over, forever, without allocating: a benchmark's source that
// never needs a reset. Each benchmark iteration consumes exactly len(data) bytes, so messages stay
// aligned across iterations.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

// pgbenchQuery is a client's simple-protocol query as pgbench -S sends it.
func pgbenchQuery() []byte {
	return AppendMessage(nil, 'Q', []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 4212345;\x00"))
}

// pgbenchResponse is the server's answer to pgbenchQuery.
func pgbenchResponse(b testing.TB) []byte {
	msgs := []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
			Name: []byte("abalance"), TableOID: 16397, TableAttributeNumber: 3,
			DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1, Format: 0,
		}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("-2345")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	}
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func BenchmarkForward(b *testing.B) {
	large := AppendMessage(nil, 'D', make([]byte, 100<<10)) // a 100 KiB row: streamed
	for _, bc := range []struct {
		name   string
		stream []byte
		msgs   int // messages per iteration
	}{
		{"query", pgbenchQuery(), 1},
		{"response", pgbenchResponse(b), 4},
		{"large-row", large, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := NewReader(NewBufReader(&repeatReader{data: bc.stream}, BufferSize), 1<<30)
			w := bufio.NewWriterSize(io.Discard, BufferSize)
			b.SetBytes(int64(len(bc.stream)))
			b.ReportAllocs()
			for b.Loop() {
				for range bc.msgs {
					if _, _, err := r.Next(); err != nil {
						b.Fatal(err)
					}
					if err := r.Forward(w); err != nil {
						b.Fatal(err)
					}
				}
				// Flush per round trip, as the relay does when the reading side is drained.
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkNextBody(b *testing.B) {
	r := NewReader(NewBufReader(&repeatReader{data: AppendReadyForQuery(nil, 'I')}, BufferSize), 1<<30)
	b.SetBytes(6)
	b.ReportAllocs()
	for b.Loop() {
		typ, _, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		body, err := r.Body()
		if err != nil {
			b.Fatal(err)
		}
		if typ != 'Z' || body[0] != 'I' {
			b.Fatalf("read %q %q", typ, body)
		}
	}
}
