package main

import (
	"encoding/binary"
	"testing"
)

// msg builds one protocol message.
func msg(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// TestScanSplits feeds a request and its answer cut at every byte boundary into two reads: the
// bookkeeping that decides when a server goes back to the pool must not depend on where the
// kernel cut the stream.
func TestScanSplits(t *testing.T) {
	request := concat(msg('P', "\x00SELECT 1\x00\x00\x00"), msg('B', "\x00\x00\x00\x00\x00\x00\x00\x00"),
		msg('D', "P\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S', ""), msg('Q', "BEGIN\x00"))
	answer := concat(msg('1', ""), msg('2', ""), msg('T', "x"), msg('D', "yy"), msg('C', "SELECT 1\x00"),
		msg('Z', "I"), msg('C', "BEGIN\x00"), msg('Z', "T"))
	for cut := 0; cut <= len(request); cut++ {
		c, s := &conn{}, &conn{}
		for _, part := range [][]byte{request[:cut], request[cut:]} {
			if end, term := scanRequest(c, s, part); end != len(part) || term {
				t.Fatalf("cut %d: scanRequest = %d, %v; want %d, false", cut, end, term, len(part))
			}
		}
		if s.unanswered != 2 || s.midRequest {
			t.Fatalf("request cut at %d: unanswered %d, midRequest %v; want 2, false", cut, s.unanswered, s.midRequest)
		}
	}
	for cut := 0; cut <= len(answer); cut++ {
		s := &conn{unanswered: 2}
		scanAnswer(s, answer[:cut])
		scanAnswer(s, answer[cut:])
		if s.unanswered != 0 || s.txStatus != 'T' || s.atRest() {
			t.Fatalf("answer cut at %d: unanswered %d, status %q, at rest %v; want 0, 'T', false",
				cut, s.unanswered, s.txStatus, s.atRest())
		}
	}
}

func TestScanRequestTerminate(t *testing.T) {
	q := msg('Q', "SELECT 1\x00")
	c, s := &conn{}, &conn{}
	end, term := scanRequest(c, s, concat(q, msg('X', "")))
	if !term || end != len(q) || s.unanswered != 1 {
		t.Fatalf("scanRequest = %d, %v, unanswered %d; want %d, true, 1", end, term, s.unanswered, len(q))
	}
	// A Terminate whose header began in the previous read cannot be cut out any more.
	c, s = &conn{}, &conn{}
	x := msg('X', "")
	scanRequest(c, s, x[:2])
	if end, term := scanRequest(c, s, x[2:]); !term || end >= 0 {
		t.Fatalf("split Terminate: scanRequest = %d, %v; want a negative end, true", end, term)
	}
}

func TestFramerRejectsShortLength(t *testing.T) {
	var f framer
	if _, _, ok := f.step([]byte{'Q', 0, 0, 0, 3}, 0); ok || !f.bad {
		t.Fatalf("length 3: ok %v, bad %v; want false, true", ok, f.bad)
	}
}

func TestRing(t *testing.T) {
	var r ring
	conns := make([]*conn, 40)
	for i := range conns {
		conns[i] = &conn{fd: i}
	}
	for _, c := range conns[:10] {
		r.push(c)
	}
	for i := range 5 {
		if got := r.pop(); got != conns[i] {
			t.Fatalf("pop %d: fd %d", i, got.fd)
		}
	}
	for _, c := range conns[10:] { // grows while wrapped around
		r.push(c)
	}
	for i := 5; i < len(conns); i++ {
		if got := r.pop(); got != conns[i] {
			t.Fatalf("pop %d: fd %d", i, got.fd)
		}
	}
	if r.pop() != nil {
		t.Fatal("pop on empty ring")
	}
}
