package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// testMsg is one message of a test stream and what the test does with it after Next.
type testMsg struct {
	typ  byte
	body []byte
	op   byte // 'B' Body, 'F' Forward, 'S' Skip, 'N' nothing (the next Next skips it)
}

func (m testMsg) bytes() []byte { return AppendMessage(nil, m.typ, m.body) }

// sources wrap the raw stream so that every case also runs with short and odd-sized reads.
var sources = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one-byte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"eof-with-data", iotest.DataErrReader},
}

func newTestReader(src io.Reader, bufSize, max int) *Reader {
	return NewReader(NewBufReader(src, bufSize), max)
}

func TestReaderSequence(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 bytes: more than BufferSize
	small := []byte("SELECT 1\x00")
	cases := []struct {
		name    string
		bufSize int
		msgs    []testMsg
	}{
		{"empty stream", BufferSize, nil},
		{"one body", BufferSize, []testMsg{{'Q', small, 'B'}}},
		{"one forward", BufferSize, []testMsg{{'Q', small, 'F'}}},
		{"one skip", BufferSize, []testMsg{{'Q', small, 'S'}}},
		{"unconsumed is skipped by Next", BufferSize, []testMsg{{'Q', small, 'N'}, {'Z', []byte("I"), 'B'}}},
		{"empty bodies", BufferSize, []testMsg{{'S', nil, 'B'}, {'H', nil, 'F'}, {'c', nil, 'S'}, {'X', nil, 'N'}}},
		{"mixed sequence", BufferSize, []testMsg{
			{'T', []byte("\x00\x01abalance\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"), 'F'},
			{'D', []byte("\x00\x01\x00\x00\x00\x040042"), 'F'},
			{'C', []byte("SELECT 1\x00"), 'B'},
			{'Z', []byte("I"), 'B'},
			{'N', []byte("SWARNING\x00"), 'S'},
			{'Z', []byte("T"), 'F'},
		}},
		{"exactly the buffer size", 16, []testMsg{{'D', bytes.Repeat([]byte{'x'}, 16-HeaderLen), 'B'}, {'D', bytes.Repeat([]byte{'y'}, 16-HeaderLen), 'F'}}},
		{"one past the buffer size", 16, []testMsg{{'D', bytes.Repeat([]byte{'x'}, 17-HeaderLen), 'B'}, {'D', bytes.Repeat([]byte{'y'}, 17-HeaderLen), 'F'}}},
		{"larger than buffer: body uses scratch", 16, []testMsg{{'d', big[:100], 'B'}, {'d', big[:300], 'B'}, {'Z', []byte("I"), 'B'}}},
		{"larger than buffer: forward streams", 16, []testMsg{{'d', big[:100], 'F'}, {'Z', []byte("I"), 'F'}, {'d', big[:1000], 'F'}}},
		{"larger than buffer: skip discards", 16, []testMsg{{'d', big[:100], 'S'}, {'d', big[:1000], 'N'}, {'Z', []byte("E"), 'B'}}},
		{"larger than BufferSize", BufferSize, []testMsg{{'d', big, 'F'}, {'d', big, 'B'}, {'d', big, 'S'}, {'d', big, 'N'}, {'Z', []byte("I"), 'F'}}},
	}
	for _, tc := range cases {
		var in, wantFwd []byte
		for _, m := range tc.msgs {
			in = append(in, m.bytes()...)
			if m.op == 'F' {
				wantFwd = append(wantFwd, m.bytes()...)
			}
		}
		for _, src := range sources {
			t.Run(tc.name+"/"+src.name, func(t *testing.T) {
				r := newTestReader(src.wrap(bytes.NewReader(in)), tc.bufSize, 1<<20)
				var out bytes.Buffer
				w := bufio.NewWriterSize(&out, 16)
				for i, m := range tc.msgs {
					typ, n, err := r.Next()
					if err != nil {
						t.Fatalf("message %d: Next: %v", i, err)
					}
					if typ != m.typ || n != len(m.body) {
						t.Fatalf("message %d: Next = %q, %d; want %q, %d", i, typ, n, m.typ, len(m.body))
					}
					switch m.op {
					case 'B':
						b, err := r.Body()
						if err != nil {
							t.Fatalf("message %d: Body: %v", i, err)
						}
						if !bytes.Equal(b, m.body) {
							t.Fatalf("message %d: Body = %q, want %q", i, trunc(b), trunc(m.body))
						}
					case 'F':
						if err := r.Forward(w); err != nil {
							t.Fatalf("message %d: Forward: %v", i, err)
						}
					case 'S':
						if err := r.Skip(); err != nil {
							t.Fatalf("message %d: Skip: %v", i, err)
						}
					}
				}
				if typ, n, err := r.Next(); err != io.EOF {
					t.Fatalf("Next at end = %q, %d, %v; want io.EOF", typ, n, err)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Bytes(), wantFwd) {
					t.Fatalf("forwarded %d bytes %q, want %d bytes %q", out.Len(), trunc(out.Bytes()), len(wantFwd), trunc(wantFwd))
				}
			})
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestReaderErrors(t *testing.T) {
	hdr := func(typ byte, length uint32) []byte {
		return []byte{typ, byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length)}
	}
	q := AppendMessage(nil, 'Q', []byte("SELECT 1\x00"))
	large := AppendMessage(nil, 'd', bytes.Repeat([]byte{'z'}, 100)) // larger than the 16-byte buffer
	boom := errors.New("boom")

	cases := []struct {
		name    string
		in      []byte
		src     io.Reader // overrides in
		max     int
		op      byte // action after a successful Next
		nextErr func(error) bool
		opErr   func(error) bool
	}{
		{name: "clean EOF on empty stream", in: nil, nextErr: is(io.EOF)},
		{name: "EOF after 1 header byte", in: q[:1], nextErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF after 4 header bytes", in: q[:4], nextErr: is(io.ErrUnexpectedEOF)},
		{name: "length 3", in: hdr('Q', 3), nextErr: malformed('Q', 3)},
		{name: "length 0", in: hdr('X', 0), nextErr: malformed('X', 0)},
		{name: "negative length", in: hdr('D', 0xffffffff), nextErr: malformed('D', -1)},
		{name: "most negative length", in: hdr('D', 0x80000000), nextErr: malformed('D', -1<<31)},
		{name: "length 3 with body following", in: append(hdr('Q', 3), "abc"...), nextErr: malformed('Q', 3)},
		{name: "length over max", in: hdr('D', 101), max: 100, nextErr: tooLarge('D', 101, 100)},
		{name: "length at max", in: append(hdr('D', 100), make([]byte, 96)...), max: 100, op: 'B', opErr: is(nil)},
		{name: "huge length", in: hdr('D', 0x7fffffff), max: 1 << 20, nextErr: tooLarge('D', 0x7fffffff, 1<<20)},
		{name: "EOF mid-body: Body", in: q[:len(q)-1], op: 'B', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF mid-body: Forward", in: q[:len(q)-1], op: 'F', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF mid-body: Skip", in: q[:len(q)-1], op: 'S', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF mid-body: Next", in: q[:len(q)-1], op: 'N', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF right after header: Body", in: q[:HeaderLen], op: 'B', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF mid large body: Body", in: large[:50], op: 'B', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF mid large body: Forward", in: large[:50], op: 'F', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF mid large body: Skip", in: large[:50], op: 'S', opErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF right after large header: Body", in: large[:HeaderLen], op: 'B', opErr: is(io.ErrUnexpectedEOF)},
		{name: "read error in header", src: io.MultiReader(bytes.NewReader(q[:2]), iotest.ErrReader(boom)), nextErr: is(boom)},
		{name: "read error in body: Body", src: io.MultiReader(bytes.NewReader(q[:7]), iotest.ErrReader(boom)), op: 'B', opErr: is(boom)},
		{name: "read error in body: Forward", src: io.MultiReader(bytes.NewReader(large[:40]), iotest.ErrReader(boom)), op: 'F', opErr: is(boom)},
		{name: "read error in body: Skip", src: io.MultiReader(bytes.NewReader(large[:40]), iotest.ErrReader(boom)), op: 'S', opErr: is(boom)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if src == nil {
				src = bytes.NewReader(tc.in)
			}
			max := tc.max
			if max == 0 {
				max = 1 << 20
			}
			r := newTestReader(src, 16, max)
			_, _, err := r.Next()
			if tc.nextErr != nil {
				if !tc.nextErr(err) {
					t.Fatalf("Next: error %T %v is not the expected one", err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			switch tc.op {
			case 'B':
				_, err = r.Body()
			case 'F':
				err = r.Forward(bufio.NewWriter(io.Discard))
			case 'S':
				err = r.Skip()
			case 'N':
				_, _, err = r.Next()
			}
			if !tc.opErr(err) {
				t.Fatalf("%c: error %T %v is not the expected one", tc.op, err, err)
			}
		})
	}
}

func is(want error) func(error) bool {
	return func(err error) bool {
		if want == nil {
			return err == nil
		}
		return errors.Is(err, want)
	}
}

func malformed(typ byte, n int) func(error) bool {
	return func(err error) bool {
		var me *MalformedError
		return errors.As(err, &me) && *me == MalformedError{Type: typ, Len: n} &&
			IsProtocolError(err) && strings.Contains(err.Error(), "invalid message length")
	}
}

func tooLarge(typ byte, n, max int) func(error) bool {
	return func(err error) bool {
		var te *MessageTooLargeError
		return errors.As(err, &te) && *te == MessageTooLargeError{Type: typ, Len: n, Max: max} &&
			IsProtocolError(err) && strings.Contains(err.Error(), "more than the limit")
	}
}

// A Forward whose destination fails reports the destination's error.
func TestReaderForwardWriteError(t *testing.T) {
	in := AppendMessage(nil, 'd', bytes.Repeat([]byte{'w'}, 100))
	r := newTestReader(bytes.NewReader(in), 16, 1<<20)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := r.Forward(bufio.NewWriterSize(errWriter{boom}, 16)); !errors.Is(err, boom) {
		t.Fatalf("Forward = %v, want %v", err, boom)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// A large message that arrives in pieces is forwarded as it arrives, not after the whole message:
// the first bytes reach the destination while the rest has not been sent, and the result is
// byte-exact.
func TestReaderForwardStreamsPieces(t *testing.T) {
	body := make([]byte, 1000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	msg := AppendMessage(nil, 'd', body)
	const split = 300

	pr, pw := io.Pipe()
	defer pr.Close()
	r := newTestReader(pr, 64, 1<<20)
	dst := &syncBuffer{}
	w := bufio.NewWriterSize(dst, 64)

	firstSent := make(chan error, 1)
	sendRest := make(chan struct{})
	go func() {
		_, err := pw.Write(msg[:split])
		firstSent <- err
		<-sendRest
		pw.Write(msg[split:])
		pw.Close()
	}()
	done := make(chan error, 1)
	go func() {
		if _, _, err := r.Next(); err != nil {
			done <- err
			return
		}
		done <- r.Forward(w)
	}()

	select {
	case err := <-firstSent:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-done:
		t.Fatalf("Forward returned before the message was complete: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Forward did not consume the first piece of the message") // it waited for the rest
	}
	// The pipe handed over the first piece only as the relay read it, through a 64-byte buffer
	// into a writer with 64 bytes of room: all but those 128 bytes must be at the destination
	// already, before the rest of the message is sent.
	if n := dst.Len(); n < split-2*64 {
		t.Fatalf("only %d bytes forwarded of the %d received", n, split)
	}
	close(sendRest)
	if err := <-done; err != nil {
		t.Fatalf("Forward: %v", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := dst.Bytes(); !bytes.Equal(got, msg) {
		t.Fatalf("forwarded %d bytes, want the %d input bytes exactly", len(got), len(msg))
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// Body of a message that fits the buffer points into the buffer; a larger one goes into the
// reader's scratch buffer, which is reused and grown only when needed.
func TestReaderBodyScratchReuse(t *testing.T) {
	var in []byte
	for _, n := range []int{200, 100, 200, 300} {
		in = AppendMessage(in, 'd', bytes.Repeat([]byte{byte(n)}, n))
	}
	src := &repeatReader{data: in}
	r := newTestReader(src, 64, 1<<20)
	next := func() ([]byte, error) {
		if _, _, err := r.Next(); err != nil {
			return nil, err
		}
		return r.Body()
	}
	read := func() []byte {
		t.Helper()
		b, err := next()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b200 := read()
	b100 := read()
	if &b100[0] != &b200[0] {
		t.Error("a smaller large body did not reuse the scratch buffer")
	}
	if !bytes.Equal(b100, bytes.Repeat([]byte{100}, 100)) {
		t.Error("reused scratch holds the wrong body")
	}
	read()
	if b300 := read(); len(b300) != 300 || b300[299] != byte(300%256) {
		t.Errorf("grown scratch holds the wrong body")
	}
	// Steady state: no allocation per message, whatever its size.
	allocs := testing.AllocsPerRun(100, func() {
		for range 4 {
			if _, err := next(); err != nil {
				panic(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Body allocates %v times per 4 messages in steady state, want 0", allocs)
	}
}

func TestReaderBodyWithoutNextPanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(r *Reader)
	}{
		{"Body", func(r *Reader) { r.Body() }},
		{"Forward", func(r *Reader) { r.Forward(bufio.NewWriter(io.Discard)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReader(bytes.NewReader(AppendReadyForQuery(nil, 'I')), 16, 100)
			defer func() {
				if recover() == nil {
					t.Errorf("%s without Next did not panic", tc.name)
				}
			}()
			tc.call(r)
		})
	}
	// Skip without a current message is a no-op.
	r := newTestReader(bytes.NewReader(AppendReadyForQuery(nil, 'I')), 16, 100)
	if err := r.Skip(); err != nil {
		t.Fatalf("Skip without Next: %v", err)
	}
	if typ, _, err := r.Next(); err != nil || typ != 'Z' {
		t.Fatalf("Next after a no-op Skip = %q, %v", typ, err)
	}
}

func TestReaderResetSetMaxBuffered(t *testing.T) {
	z := AppendReadyForQuery(nil, 'I')
	two := append(AppendMessage(nil, 'C', []byte("SELECT 1\x00")), z...)
	r := newTestReader(bytes.NewReader(two), 64, 100)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != len(two) {
		t.Errorf("Buffered = %d, want %d", got, len(two))
	}
	// Reset drops the current message and the old stream.
	r.Reset(NewBufReader(bytes.NewReader(z), 64))
	if typ, n, err := r.Next(); typ != 'Z' || n != 1 || err != nil {
		t.Fatalf("Next after Reset = %q, %d, %v", typ, n, err)
	}
	if _, err := r.Body(); err != nil {
		t.Fatal(err)
	}
	if r.Buffered() != 0 {
		t.Errorf("Buffered = %d after the last message, want 0", r.Buffered())
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next = %v, want io.EOF", err)
	}

	r.Reset(NewBufReader(bytes.NewReader(two), 64))
	r.SetMax(8)
	if _, _, err := r.Next(); !tooLarge('C', 13, 8)(err) {
		t.Fatalf("Next with max 8 = %v, want MessageTooLargeError", err)
	}
	r.SetMax(13)
	if typ, _, err := r.Next(); typ != 'C' || err != nil {
		t.Fatalf("Next with max 13 = %q, %v", typ, err)
	}
}

func TestAppendHeader(t *testing.T) {
	for _, tc := range []struct {
		typ  byte
		n    int
		want []byte
	}{
		{'Z', 1, []byte{'Z', 0, 0, 0, 5}},
		{'S', 0, []byte{'S', 0, 0, 0, 4}},
		{'d', 1 << 20, []byte{'d', 0, 0x10, 0, 4}},
	} {
		if got := AppendHeader([]byte("x"), tc.typ, tc.n); !bytes.Equal(got, append([]byte("x"), tc.want...)) {
			t.Errorf("AppendHeader(%q, %d) = %v, want %v", tc.typ, tc.n, got[1:], tc.want)
		}
	}
}
