package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// scriptedSource returns data in the chunk sizes a script gives, with empty reads and a
// temporary error among them, and then io.EOF: the two readers under test each get their own
// copy, so they see the same reads.
type scriptedSource struct {
	data   []byte
	script []byte
	i      int
}

var errTemporary = errors.New("temporary")

func (s *scriptedSource) Read(p []byte) (int, error) {
	op := byte(7)
	if s.i < len(s.script) {
		op = s.script[s.i]
		s.i++
	}
	switch {
	case len(s.data) == 0:
		return 0, io.EOF
	case op == 0:
		return 0, nil // an empty read
	case op == 1:
		return 0, errTemporary // as evloop's ErrWouldBlock
	case op == 2:
		n := copy(p, s.data[:min(len(s.data), 3)])
		s.data = s.data[n:]
		return n, errTemporary // data and an error
	}
	n := copy(p, s.data[:min(len(s.data), int(op)*5)])
	s.data = s.data[n:]
	return n, nil
}

// FuzzBufReader: BufReader gives what bufio.Reader gives, call for call, for any sequence of
// Peek, Discard, Read, Buffered and Reset over a source that reads in any chunk sizes, with
// empty reads, errors and the end. Seeds: reads through a 16-byte buffer, errors mid-peek.
func FuzzBufReader(f *testing.F) {
	f.Add([]byte("some data that is longer than the buffer, to wrap it a few times"), []byte{3, 0, 1, 5, 2, 9}, []byte{0, 5, 1, 3, 2, 20, 0, 40, 3, 7, 4, 0, 1, 16})
	f.Add([]byte("0123456789"), []byte{1, 1, 2, 0, 0}, []byte{0, 17, 0, 4, 1, 9, 2, 1, 2, 64})
	f.Add([]byte{}, []byte{}, []byte{0, 1, 1, 1, 2, 1, 5, 0})
	f.Fuzz(func(t *testing.T, data, script, ops []byte) {
		a := bufio.NewReaderSize(&scriptedSource{data: bytes.Clone(data), script: script}, 16)
		b := NewBufReader(&scriptedSource{data: bytes.Clone(data), script: script}, 16)
		for i := 0; i+1 < len(ops); i += 2 {
			n := int(ops[i+1]) - 4 // a few negative counts too
			var got, want string
			switch ops[i] % 6 {
			case 0:
				p, err := a.Peek(n)
				want = fmt.Sprintf("Peek %q %v", p, err)
				q, err := b.Peek(n)
				got = fmt.Sprintf("Peek %q %v", q, err)
			case 1:
				m, err := a.Discard(n)
				want = fmt.Sprintf("Discard %d %v", m, err)
				m, err = b.Discard(n)
				got = fmt.Sprintf("Discard %d %v", m, err)
			case 2:
				p := make([]byte, max(n, 0))
				m, err := a.Read(p)
				want = fmt.Sprintf("Read %q %v", p[:m], err)
				q := make([]byte, max(n, 0))
				m, err = b.Read(q)
				got = fmt.Sprintf("Read %q %v", q[:m], err)
			case 3:
				want = fmt.Sprint("Buffered ", a.Buffered(), a.Size())
				got = fmt.Sprint("Buffered ", b.Buffered(), b.Size())
			case 4:
				rest := data[min(len(data), max(n, 0)):]
				a.Reset(&scriptedSource{data: bytes.Clone(rest), script: script})
				b.Reset(&scriptedSource{data: bytes.Clone(rest), script: script})
			case 5:
				p := make([]byte, max(n, 0))
				m, err := io.ReadFull(a, p)
				want = fmt.Sprintf("ReadFull %q %v", p[:m], err)
				q := make([]byte, max(n, 0))
				m, err = io.ReadFull(b, q)
				got = fmt.Sprintf("ReadFull %q %v", q[:m], err)
			}
			if got != want {
				t.Fatalf("op %d: bufio: %s; BufReader: %s", i/2, want, got)
			}
		}
	})
}
