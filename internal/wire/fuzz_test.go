package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzReader feeds arbitrary bytes through a Reader with a 16-byte buffer and a 64-byte limit, so
// that messages fit the buffer, exceed it, and exceed the limit. Each op byte picks what to do with
// one message: Body, Forward, Skip or nothing (the next Next skips it), or with bit 0x20 PeekBody
// and ForwardReplacing; with bit 0x40, Fill and Ready are checked before the message; a high bit
// in the first op byte makes the source return one byte per Read. The Reader is checked against a model that
// frames data directly: every result, every error, and the forwarded bytes, which must be exactly
// the input bytes of the forwarded messages (a prefix of the message when the input ends inside
// it).
func FuzzReader(f *testing.F) {
	z := AppendReadyForQuery(nil, 'I')
	q := AppendMessage(nil, 'Q', []byte("SELECT 1\x00"))
	big := AppendMessage(nil, 'd', bytes.Repeat([]byte{'x'}, 50)) // over the buffer, under the limit
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	f.Add([]byte{}, []byte{})                                           // empty input: clean io.EOF
	f.Add([]byte{0, 1, 2, 3}, cat(q, z, q, z))                          // Body, Forward, Skip, implicit skip of small messages
	f.Add([]byte{1}, cat(big, z, big))                                  // Forward streams messages larger than the buffer
	f.Add([]byte{0}, cat(big, big[:30]))                                // Body through scratch, then EOF mid-body
	f.Add([]byte{0x81}, cat(q, big, z))                                 // one byte per Read: Forward must still be byte-exact
	f.Add([]byte{3, 3}, cat(z, big[:20]))                               // unconsumed truncated message: Next reports ErrUnexpectedEOF
	f.Add([]byte{2}, cat(z, z[:3]))                                     // EOF mid-header
	f.Add([]byte{0}, []byte{'Q', 0, 0, 0, 3})                           // length < 4: MalformedError
	f.Add([]byte{0}, []byte{'D', 0xff, 0xff, 0xff, 0xff})               // negative length: MalformedError
	f.Add([]byte{1}, cat(z, []byte{'D', 0, 0, 0, 65}))                  // one over the limit: MessageTooLargeError
	f.Add([]byte{1}, cat(AppendMessage(nil, 'D', make([]byte, 60)), z)) // exactly at the limit
	f.Add([]byte{0x65, 0x40, 0x2a}, cat(q, z, q))                       // Fill and Ready, PeekBody and ForwardReplacing
	f.Add([]byte{0xe3, 0x63}, cat(big, q, z[:3]))                       // the same, one byte per Read

	f.Fuzz(func(t *testing.T, ops []byte, data []byte) {
		const bufSize, max = 16, 64
		var src io.Reader = bytes.NewReader(data)
		if len(ops) > 0 && ops[0]&0x80 != 0 {
			src = iotest.OneByteReader(src)
		}
		r := NewReader(NewBufReader(src, bufSize), max)
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, bufSize)
		var want []byte // the bytes forwarded so far, from the model

		off := 0         // where the current message starts in data
		consumed := true // the last message was consumed: Fill and Ready may be called
		for i := 0; ; i++ {
			if consumed && len(ops) > 0 && ops[i%len(ops)]&0x40 != 0 {
				checkFill(t, r, data[off:], bufSize)
			}
			typ, n, err := r.Next()
			rest := data[off:]
			switch {
			case len(rest) == 0:
				if err != io.EOF {
					t.Fatalf("message %d: Next at end of input = %q, %d, %v; want io.EOF", i, typ, n, err)
				}
				return
			case len(rest) < HeaderLen:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("message %d: Next with %d header bytes = %v; want io.ErrUnexpectedEOF", i, len(rest), err)
				}
				return
			}
			l := int(int32(binary.BigEndian.Uint32(rest[1:])))
			switch {
			case l < 4:
				var me *MalformedError
				if !errors.As(err, &me) || me.Len != l || me.Type != rest[0] {
					t.Fatalf("message %d: Next with length %d = %v; want MalformedError", i, l, err)
				}
				return
			case l > max:
				var te *MessageTooLargeError
				if !errors.As(err, &te) || te.Len != l || te.Max != max || te.Type != rest[0] {
					t.Fatalf("message %d: Next with length %d = %v; want MessageTooLargeError", i, l, err)
				}
				return
			}
			if err != nil || typ != rest[0] || n != l-4 {
				t.Fatalf("message %d: Next = %q, %d, %v; want %q, %d", i, typ, n, err, rest[0], l-4)
			}
			msg := rest[:min(len(rest), HeaderLen+n)]
			complete := len(msg) == HeaderLen+n
			wantErr := error(nil)
			if !complete {
				wantErr = io.ErrUnexpectedEOF
			}

			op := byte(3)
			if len(ops) > 0 {
				op = ops[i%len(ops)] & 3
				if ops[i%len(ops)]&0x20 != 0 {
					op = 4
				}
			}
			if op == 4 && !complete {
				op = 2
			}
			consumed = op != 3
			switch op {
			case 4:
				// PeekBody, then ForwardReplacing the part peeked, or half of it, with a
				// two-byte prefix: the header's length follows.
				peek := int(ops[i%len(ops)] & 0x1f)
				head, err := r.PeekBody(peek)
				if err != nil || !bytes.Equal(head, msg[HeaderLen:HeaderLen+min(peek, n, bufSize-HeaderLen)]) {
					t.Fatalf("message %d: PeekBody(%d) = %q, %v; want %q", i, peek, head, err, msg[HeaderLen:HeaderLen+min(peek, n, bufSize-HeaderLen)])
				}
				skip := len(head) / 2
				if err := r.ForwardReplacing(w, skip, []byte("XY")); err != nil {
					t.Fatalf("message %d: ForwardReplacing: %v", i, err)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				wantMsg := AppendHeader(nil, msg[0], n-skip+2)
				wantMsg = append(append(wantMsg, "XY"...), msg[HeaderLen+skip:]...)
				got := out.Bytes()
				if !bytes.HasPrefix(got, want) || !bytes.Equal(got[len(want):], wantMsg) {
					t.Fatalf("message %d: ForwardReplacing wrote %q, want %q", i, got[len(want):], wantMsg)
				}
				want = got
			case 0:
				b, err := r.Body()
				if err != wantErr {
					t.Fatalf("message %d: Body error %v, want %v", i, err, wantErr)
				}
				if complete && !bytes.Equal(b, msg[HeaderLen:]) {
					t.Fatalf("message %d: Body = %q, want %q", i, b, msg[HeaderLen:])
				}
				if !complete && b != nil {
					t.Fatalf("message %d: Body returned %d bytes with an error", i, len(b))
				}
			case 1:
				err := r.Forward(w)
				if err != wantErr {
					t.Fatalf("message %d: Forward error %v, want %v", i, err, wantErr)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				got := out.Bytes()
				if !bytes.HasPrefix(got, want) {
					t.Fatalf("message %d: Forward rewrote earlier output", i)
				}
				this := got[len(want):]
				if complete && !bytes.Equal(this, msg) || !complete && !bytes.HasPrefix(msg, this) {
					t.Fatalf("message %d: forwarded %q, want (a prefix of) %q", i, this, msg)
				}
				want = got
			case 2:
				if err := r.Skip(); err != wantErr {
					t.Fatalf("message %d: Skip error %v, want %v", i, err, wantErr)
				}
			case 3:
				if !complete {
					if _, _, err := r.Next(); err != io.ErrUnexpectedEOF {
						t.Fatalf("message %d: Next over a truncated message = %v; want io.ErrUnexpectedEOF", i, err)
					}
				}
			}
			if out.Len() > len(data)+2*(i+1) {
				t.Fatalf("forwarded %d bytes from %d bytes of input", out.Len(), len(data))
			}
			if !complete {
				return
			}
			off += len(msg)
		}
	})
}

// checkFill checks Fill and Ready between messages, rest being the input from the next message
// on: Fill reads until the message is whole in a buffer of bufSize bytes, unless it cannot be
// (its length is invalid or larger than the buffer: Ready then leaves it to Next), or the input
// ends first (Fill's error, and Ready false).
func checkFill(t *testing.T, r *Reader, rest []byte, bufSize int) {
	t.Helper()
	err := r.Fill()
	ready := r.Ready()
	if len(rest) < HeaderLen {
		if err == nil || ready {
			t.Fatalf("Fill with %d bytes left = %v, Ready %v; want an error, not ready", len(rest), err, ready)
		}
		return
	}
	l := int(int32(binary.BigEndian.Uint32(rest[1:])))
	whole := l < 4 || 1+l > bufSize || 1+l <= len(rest)
	if (err == nil) != whole || ready != whole {
		t.Fatalf("Fill of a message of length %d with %d bytes left = %v, Ready %v; want whole %v", l, len(rest), err, ready, whole)
	}
}

// FuzzParseStartup parses arbitrary startup packet bodies. It must never panic; every error is a
// protocol error; every accepted body re-encodes to itself (a StartupMessage from its version and
// params, a CancelRequest with AppendCancelRequest) and parses to the same result; ReadStartup of
// the length-prefixed body agrees with ParseStartup.
func FuzzParseStartup(f *testing.F) {
	f.Add(startupBody(ProtocolVersion30, "user", "app", "database", "shop")) // StartupMessage with params
	f.Add(startupBody(3<<16|2, "user", "app", "_pq_.x", ""))                 // protocol 3.2 with an extension and an empty value
	f.Add(startupBody(ProtocolVersion30, "database", "shop"))                // missing user
	f.Add(startupBody(ProtocolVersion30, "user", "app")[:12])                // missing terminator
	f.Add(append(startupBody(ProtocolVersion30, "user", "app"), 'x'))        // bytes after the terminator
	f.Add(startupBody(2<<16, "user", "app"))                                 // protocol 2.0: unsupported
	f.Add(startupBody(4<<16, "user", "app"))                                 // protocol 4.0: unsupported
	f.Add(codeBody(codeSSL))                                                 // SSLRequest
	f.Add(codeBody(codeGSSENC, 0))                                           // GSSENCRequest with a stray byte
	f.Add(codeBody(codeCancel, 0, 0, 0, 9, 1, 2, 3, 4))                      // CancelRequest, 4-byte secret
	f.Add(codeBody(codeCancel, append([]byte{0, 0, 0, 9}, seq(32)...)...))   // CancelRequest, 32-byte secret
	f.Add([]byte{0, 3})                                                      // shorter than a code

	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseStartup(body)
		if err != nil {
			if s != nil {
				t.Fatalf("ParseStartup returned %+v with error %v", s, err)
			}
			if !IsProtocolError(err) {
				t.Fatalf("ParseStartup error %T %v is not a protocol error", err, err)
			}
		} else {
			var re []byte
			switch s.Kind {
			case KindStartup:
				if s.Protocol>>16 != 3 {
					t.Fatalf("accepted protocol %d.%d", s.Protocol>>16, s.Protocol&0xffff)
				}
				if v, ok := s.Get("user"); !ok || v == "" {
					t.Fatalf("accepted a StartupMessage without a user: %+v", s)
				}
				kv := make([]string, 0, 2*len(s.Params))
				for _, p := range s.Params {
					kv = append(kv, p.Name, p.Value)
				}
				re = startupBody(s.Protocol, kv...)
			case KindCancel:
				re = AppendCancelRequest(nil, s.PID, s.Secret)[4:]
			case KindSSLRequest:
				re = codeBody(codeSSL)
			case KindGSSENCRequest:
				re = codeBody(codeGSSENC)
			default:
				t.Fatalf("unknown kind %d", s.Kind)
			}
			if !bytes.Equal(re, body) {
				t.Fatalf("%+v re-encodes to %q, parsed from %q", s, re, body)
			}
			s2, err := ParseStartup(re)
			if err != nil || !reflect.DeepEqual(s2, s) {
				t.Fatalf("re-encoded body parses to %+v, %v; want %+v", s2, err, s)
			}
		}

		pkt := packet(body)
		s3, err3 := ReadStartup(bytes.NewReader(pkt), nil)
		if len(pkt) < 8 || len(pkt) > MaxStartupLen {
			var pe *ProtocolError
			if s3 != nil || !errors.As(err3, &pe) {
				t.Fatalf("ReadStartup of a %d-byte packet = %+v, %v; want a ProtocolError", len(pkt), s3, err3)
			}
			return
		}
		if !reflect.DeepEqual(s3, s) || (err == nil) != (err3 == nil) || err != nil && err.Error() != err3.Error() {
			t.Fatalf("ReadStartup = %+v, %v; ParseStartup = %+v, %v", s3, err3, s, err)
		}
	})
}

// FuzzErrorCode: ErrorCode, which the data path uses to count errors without allocating, reads
// the same SQLSTATE as ParseErrorFields from any body. Seeds: a well-formed error, two codes
// (the later wins), a code cut short, no terminator.
func FuzzErrorCode(f *testing.F) {
	f.Add([]byte("SERROR\x00C42601\x00Msyntax error\x00\x00"))
	f.Add([]byte("Ca\x00Cb\x00\x00"))
	f.Add([]byte("C12"))
	f.Add([]byte("Mno code\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		want, _ := ParseErrorFields(body)
		if got := ErrorCode(body); string(got) != want {
			t.Fatalf("ErrorCode = %q, ParseErrorFields code = %q", got, want)
		}
	})
}

// FuzzReplaceErrorField: after ReplaceErrorField, any body reads with the new message and the
// same SQLSTATE and other fields, and ends in the terminator. Seeds as FuzzErrorCode's.
func FuzzReplaceErrorField(f *testing.F) {
	f.Add([]byte("SERROR\x00C42601\x00Msyntax error\x00\x00"), "other")
	f.Add([]byte("Ma\x00Mb\x00\x00"), "")
	f.Add([]byte("C12"), "m")
	f.Add([]byte("\x00Mafter the end\x00"), "m")
	f.Fuzz(func(t *testing.T, body []byte, v string) {
		if strings.IndexByte(v, 0) >= 0 {
			return // a field value cannot hold a NUL
		}
		out := ReplaceErrorField(body, 'M', v)
		code, msg := ParseErrorFields(out)
		if want, _ := ParseErrorFields(body); code != want || msg != v {
			t.Fatalf("ReplaceErrorField(%q) = %q: code %q (want %q), message %q (want %q)", body, out, code, want, msg, v)
		}
		if out[len(out)-1] != 0 || errorField(out, 'D') == nil != (errorField(body, 'D') == nil) {
			t.Fatalf("ReplaceErrorField(%q) = %q", body, out)
		}
	})
}
