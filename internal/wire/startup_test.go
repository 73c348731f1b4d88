package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupBody encodes a StartupMessage body (after the length word): the protocol version, then
// name/value pairs, then the terminator.
func startupBody(proto uint32, kv ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, proto)
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	return append(b, 0)
}

// codeBody is a body that is just a request code, optionally followed by more bytes.
func codeBody(code uint32, more ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, code), more...)
}

// packet prefixes body with its length word.
func packet(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func protocolError(msg string) func(error) bool {
	return func(err error) bool {
		var pe *ProtocolError
		return errors.As(err, &pe) && strings.Contains(pe.Msg, msg) && IsProtocolError(err)
	}
}

func unsupported(version uint32, msg string) func(error) bool {
	return func(err error) bool {
		var ue *UnsupportedProtocolError
		return errors.As(err, &ue) && ue.Version == version && err.Error() == msg && IsProtocolError(err)
	}
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return b
}

func TestParseStartup(t *testing.T) {
	const v32 = 3<<16 | 2
	cases := []struct {
		name    string
		body    []byte
		want    *Startup
		wantErr func(error) bool
	}{
		{name: "SSLRequest", body: codeBody(codeSSL), want: &Startup{Kind: KindSSLRequest}},
		{name: "GSSENCRequest", body: codeBody(codeGSSENC), want: &Startup{Kind: KindGSSENCRequest}},
		{name: "SSLRequest with trailing bytes", body: codeBody(codeSSL, 0), wantErr: protocolError("invalid length of encryption request packet")},
		{name: "GSSENCRequest with trailing bytes", body: codeBody(codeGSSENC, 1, 2, 3, 4), wantErr: protocolError("invalid length of encryption request packet")},
		{
			name: "CancelRequest, 4-byte secret",
			body: codeBody(codeCancel, 0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef),
			want: &Startup{Kind: KindCancel, PID: 12345, Secret: []byte{0xde, 0xad, 0xbe, 0xef}},
		},
		{
			name: "CancelRequest, 32-byte secret (protocol 3.2)",
			body: codeBody(codeCancel, append([]byte{0x7f, 0xff, 0xff, 0xff}, seq(32)...)...),
			want: &Startup{Kind: KindCancel, PID: 0x7fffffff, Secret: seq(32)},
		},
		{
			name: "CancelRequest, 256-byte secret",
			body: codeBody(codeCancel, append([]byte{0, 0, 0, 1}, seq(256)...)...),
			want: &Startup{Kind: KindCancel, PID: 1, Secret: seq(256)},
		},
		{name: "CancelRequest, 257-byte secret", body: codeBody(codeCancel, append([]byte{0, 0, 0, 1}, seq(257)...)...), wantErr: protocolError("invalid length of cancel request packet")},
		{name: "CancelRequest, 3-byte secret", body: codeBody(codeCancel, 0, 0, 0, 1, 1, 2, 3), wantErr: protocolError("invalid length of cancel request packet")},
		{name: "CancelRequest, no PID", body: codeBody(codeCancel), wantErr: protocolError("invalid length of cancel request packet")},
		{
			name: "StartupMessage, params in order",
			body: startupBody(ProtocolVersion30, "user", "app", "database", "shop", "application_name", "psql", "options", "-c search_path=x", "client_encoding", ""),
			want: &Startup{Kind: KindStartup, Protocol: ProtocolVersion30, Params: []Param{
				{"user", "app"}, {"database", "shop"}, {"application_name", "psql"},
				{"options", "-c search_path=x"}, {"client_encoding", ""},
			}},
		},
		{
			name: "StartupMessage, user last, protocol extension kept",
			body: startupBody(ProtocolVersion30, "_pq_.compression", "on", "user", "app"),
			want: &Startup{Kind: KindStartup, Protocol: ProtocolVersion30, Params: []Param{{"_pq_.compression", "on"}, {"user", "app"}}},
		},
		{
			name: "StartupMessage 3.2",
			body: startupBody(v32, "user", "app"),
			want: &Startup{Kind: KindStartup, Protocol: v32, Params: []Param{{"user", "app"}}},
		},
		{
			name: "StartupMessage 3.9999 (a newer minor is negotiated, not refused)",
			body: startupBody(3<<16|9999, "user", "app"),
			want: &Startup{Kind: KindStartup, Protocol: 3<<16 | 9999, Params: []Param{{"user", "app"}}},
		},
		{name: "missing user", body: startupBody(ProtocolVersion30, "database", "shop"), wantErr: protocolError("no PostgreSQL user name specified in startup packet")},
		{name: "no params at all", body: startupBody(ProtocolVersion30), wantErr: protocolError("no PostgreSQL user name specified")},
		{name: "empty user", body: startupBody(ProtocolVersion30, "user", "", "database", "shop"), wantErr: protocolError("no PostgreSQL user name specified")},
		{name: "missing terminator", body: startupBody(ProtocolVersion30, "user", "app")[:4+len("user\x00app\x00")], wantErr: protocolError("expected terminator as last byte")},
		{name: "only the version", body: codeBody(ProtocolVersion30), wantErr: protocolError("expected terminator as last byte")},
		{name: "name without value", body: append(codeBody(ProtocolVersion30), "user\x00"...), wantErr: protocolError("expected terminator as last byte")},
		{name: "value without NUL", body: append(codeBody(ProtocolVersion30), "user\x00app"...), wantErr: protocolError("expected terminator as last byte")},
		{name: "bytes after the terminator", body: append(startupBody(ProtocolVersion30, "user", "app"), 'x'), wantErr: protocolError("expected terminator as last byte")},
		{name: "protocol 2.0", body: startupBody(2<<16, "user", "app"), wantErr: unsupported(2<<16, "unsupported frontend protocol 2.0: server supports 3.0 to 3.0")},
		{name: "protocol 4.0", body: startupBody(4<<16, "user", "app"), wantErr: unsupported(4<<16, "unsupported frontend protocol 4.0: server supports 3.0 to 3.0")},
		{name: "protocol 1234.5681 (unknown request code)", body: codeBody(1234<<16 | 5681), wantErr: unsupported(1234<<16|5681, "unsupported frontend protocol 1234.5681: server supports 3.0 to 3.0")},
		{name: "empty body", body: nil, wantErr: protocolError("invalid length of startup packet")},
		{name: "3-byte body", body: []byte{0, 3, 0}, wantErr: protocolError("invalid length of startup packet")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := bytes.Clone(tc.body)
			got, err := ParseStartup(body)
			if tc.wantErr != nil {
				if got != nil || !tc.wantErr(err) {
					t.Fatalf("ParseStartup = %+v, %T %v; not the expected error", got, err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseStartup: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseStartup = %+v, want %+v", got, tc.want)
			}
			// The result does not refer to body.
			for i := range body {
				body[i] = 0xff
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("result changed with the body it was parsed from: %+v", got)
			}
		})
	}
}

func TestStartupGet(t *testing.T) {
	s, err := ParseStartup(startupBody(ProtocolVersion30, "user", "app", "database", "", "user", "other"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		want   string
		wantOK bool
	}{
		{"user", "other", true}, // the last of duplicates, as PostgreSQL
		{"database", "", true},
		{"application_name", "", false},
		{"USER", "", false},
	} {
		if v, ok := s.Get(tc.name); v != tc.want || ok != tc.wantOK {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", tc.name, v, ok, tc.want, tc.wantOK)
		}
	}
}

func TestReadStartup(t *testing.T) {
	long := strings.Repeat("x", MaxStartupLen-4-4-len("user\x00app\x00application_name\x00\x00\x00")) // packet of exactly MaxStartupLen
	lenWord := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	cases := []struct {
		name    string
		in      []byte
		want    *Startup
		wantErr func(error) bool
	}{
		{name: "SSLRequest", in: packet(codeBody(codeSSL)), want: &Startup{Kind: KindSSLRequest}},
		{name: "StartupMessage", in: packet(startupBody(ProtocolVersion30, "user", "app")), want: &Startup{Kind: KindStartup, Protocol: ProtocolVersion30, Params: []Param{{"user", "app"}}}},
		{
			name: "exactly MaxStartupLen",
			in:   packet(startupBody(ProtocolVersion30, "user", "app", "application_name", long)),
			want: &Startup{Kind: KindStartup, Protocol: ProtocolVersion30, Params: []Param{{"user", "app"}, {"application_name", long}}},
		},
		{name: "MaxStartupLen+1", in: packet(startupBody(ProtocolVersion30, "user", "app", "application_name", long+"x")), wantErr: protocolError("invalid length of startup packet: 10001")},
		{name: "length 7", in: append(lenWord(7), 0, 0, 0), wantErr: protocolError("invalid length of startup packet: 7")},
		{name: "length 0", in: lenWord(0), wantErr: protocolError("invalid length of startup packet: 0")},
		{name: "negative length", in: lenWord(0xfffffff0), wantErr: protocolError("invalid length of startup packet: -16")},
		{name: "huge length", in: lenWord(1 << 30), wantErr: protocolError("invalid length of startup packet")},
		{name: "length word wrong for an SSLRequest", in: append(lenWord(12), codeBody(codeSSL, 0, 0, 0, 0)...), wantErr: protocolError("invalid length of encryption request packet")},
		{name: "clean EOF", in: nil, wantErr: is(io.EOF)},
		{name: "EOF in length word", in: []byte{0, 0}, wantErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF right after length word", in: lenWord(8), wantErr: is(io.ErrUnexpectedEOF)},
		{name: "EOF in body", in: packet(startupBody(ProtocolVersion30, "user", "app"))[:10], wantErr: is(io.ErrUnexpectedEOF)},
		{name: "protocol 2.0", in: packet(startupBody(2<<16, "user", "app")), wantErr: unsupported(2<<16, "unsupported frontend protocol 2.0: server supports 3.0 to 3.0")},
	}
	for _, tc := range cases {
		for _, src := range sources {
			t.Run(tc.name+"/"+src.name, func(t *testing.T) {
				// A following packet must stay unread: the proxy checks for buffered bytes after
				// an encryption request.
				next := "NEXT"
				if tc.wantErr != nil {
					next = ""
				}
				r := bytes.NewReader(append(bytes.Clone(tc.in), next...))
				wr := src.wrap(r)
				got, err := ReadStartup(wr, make([]byte, 0, 64))
				if tc.wantErr != nil {
					if got != nil || !tc.wantErr(err) {
						t.Fatalf("ReadStartup = %+v, %T %v; not the expected error", got, err, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("ReadStartup: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("ReadStartup = %+v, want %+v", got, tc.want)
				}
				if rest, _ := io.ReadAll(wr); string(rest) != next {
					t.Fatalf("ReadStartup left %q unread, want %q", rest, next)
				}
			})
		}
	}
}

// The buffer passed to ReadStartup is reused but not kept: the result survives its reuse.
func TestReadStartupBufferReuse(t *testing.T) {
	buf := make([]byte, 0, 256)
	in := append(packet(startupBody(ProtocolVersion30, "user", "app", "database", "shop")),
		packet(codeBody(codeCancel, 0, 0, 0, 7, 1, 2, 3, 4))...)
	in = append(in, packet(startupBody(ProtocolVersion30, "user", "zzz", "database", "yyyy"))...)
	r := bytes.NewReader(in)
	first, err := ReadStartup(r, buf)
	if err != nil {
		t.Fatal(err)
	}
	cancel, err := ReadStartup(r, buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStartup(r, buf); err != nil {
		t.Fatal(err)
	}
	if want := []Param{{"user", "app"}, {"database", "shop"}}; !reflect.DeepEqual(first.Params, want) {
		t.Errorf("first startup's params became %v after the buffer was reused", first.Params)
	}
	if !bytes.Equal(cancel.Secret, []byte{1, 2, 3, 4}) {
		t.Errorf("cancel secret became %v after the buffer was reused", cancel.Secret)
	}
}

// What pgx's frontend sends, pgtide reads.
func TestReadStartupFromPgproto3(t *testing.T) {
	params := map[string]string{"user": "app", "database": "shop", "application_name": "pgx", "search_path": "a,b"}
	cases := []struct {
		name  string
		msg   pgproto3.FrontendMessage
		check func(*Startup) bool
	}{
		{"SSLRequest", &pgproto3.SSLRequest{}, func(s *Startup) bool { return s.Kind == KindSSLRequest }},
		{"GSSEncRequest", &pgproto3.GSSEncRequest{}, func(s *Startup) bool { return s.Kind == KindGSSENCRequest }},
		{"CancelRequest", &pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{9, 8, 7, 6}}, func(s *Startup) bool {
			return s.Kind == KindCancel && s.PID == 42 && bytes.Equal(s.Secret, []byte{9, 8, 7, 6})
		}},
		{"CancelRequest 3.2", &pgproto3.CancelRequest{ProcessID: 42, SecretKey: seq(32)}, func(s *Startup) bool {
			return s.Kind == KindCancel && s.PID == 42 && bytes.Equal(s.Secret, seq(32))
		}},
		{"StartupMessage", &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}, func(s *Startup) bool {
			got := map[string]string{}
			for _, p := range s.Params {
				got[p.Name] = p.Value
			}
			return s.Kind == KindStartup && s.Protocol == ProtocolVersion30 && reflect.DeepEqual(got, params)
		}},
		{"StartupMessage 3.2", &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "app"}}, func(s *Startup) bool {
			return s.Kind == KindStartup && s.Protocol == 3<<16|2
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pkt, err := tc.msg.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ReadStartup(iotest.OneByteReader(bytes.NewReader(pkt)), nil)
			if err != nil {
				t.Fatalf("ReadStartup: %v", err)
			}
			if !tc.check(s) {
				t.Fatalf("ReadStartup = %+v", s)
			}
		})
	}
}

func TestErrorAppend(t *testing.T) {
	cases := []struct {
		name string
		e    Error
	}{
		{"fatal without detail", Error{Severity: SeverityFatal, Code: CodeTooManyConnections, Message: "too many client connections (max 100)"}},
		{"error with detail", Error{Severity: SeverityError, Code: CodeCannotConnectNow, Message: "no server available", Detail: "node 10.0.0.1:5432 is down"}},
		{"unicode message", Error{Severity: SeverityError, Code: CodeQueryCanceled, Message: "annulé — ожидание"}},
		{"empty fields", Error{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			out := tc.e.Append(bytes.Clone(prefix))
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("Append overwrote dst: %q", out)
			}
			msg := out[len(prefix):]
			body := checkFrame(t, msg, 'E')
			var got pgproto3.ErrorResponse
			if err := got.Decode(body); err != nil {
				t.Fatalf("pgproto3 decode: %v", err)
			}
			want := pgproto3.ErrorResponse{Severity: tc.e.Severity, SeverityUnlocalized: tc.e.Severity,
				Code: tc.e.Code, Message: tc.e.Message, Detail: tc.e.Detail}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded %+v, want %+v", got, want)
			}
			if code, m := ParseErrorFields(body); code != tc.e.Code || m != tc.e.Message {
				t.Fatalf("ParseErrorFields = %q, %q; want %q, %q", code, m, tc.e.Code, tc.e.Message)
			}
			if tc.e.Error() != tc.e.Message {
				t.Fatalf("Error() = %q, want the message", tc.e.Error())
			}
		})
	}
}

// checkFrame checks msg is exactly one message of type typ, its length word right, and returns
// the body.
func checkFrame(t *testing.T, msg []byte, typ byte) []byte {
	t.Helper()
	if len(msg) < HeaderLen || msg[0] != typ {
		t.Fatalf("message %q does not start with a %q header", msg, typ)
	}
	if n := binary.BigEndian.Uint32(msg[1:]); int(n) != len(msg)-1 {
		t.Fatalf("length word %d, want %d", n, len(msg)-1)
	}
	// And the Reader frames it the same way.
	r := newTestReader(bytes.NewReader(msg), 64, 1<<20)
	if gt, n, err := r.Next(); err != nil || gt != typ || n != len(msg)-HeaderLen {
		t.Fatalf("Reader.Next = %q, %d, %v", gt, n, err)
	}
	return msg[HeaderLen:]
}

// Encoders whose output pgproto3 decodes to the same fields, and encodes byte for byte the same.
func TestBackendEncoders(t *testing.T) {
	cases := []struct {
		name   string
		typ    byte // 0 for a startup packet (no type byte)
		got    []byte
		decode pgproto3.Message // zero value of the message; decoded into
		want   pgproto3.Message
	}{
		{"ParameterStatus", 'S', AppendParameterStatus(nil, "server_version", "17.2"),
			&pgproto3.ParameterStatus{}, &pgproto3.ParameterStatus{Name: "server_version", Value: "17.2"}},
		{"ParameterStatus empty value", 'S', AppendParameterStatus(nil, "application_name", ""),
			&pgproto3.ParameterStatus{}, &pgproto3.ParameterStatus{Name: "application_name", Value: ""}},
		{"BackendKeyData", 'K', AppendBackendKeyData(nil, 0x7fff0001, 0xdeadbeef),
			&pgproto3.BackendKeyData{}, &pgproto3.BackendKeyData{ProcessID: 0x7fff0001, SecretKey: []byte{0xde, 0xad, 0xbe, 0xef}}},
		{"ReadyForQuery idle", 'Z', AppendReadyForQuery(nil, 'I'),
			&pgproto3.ReadyForQuery{}, &pgproto3.ReadyForQuery{TxStatus: 'I'}},
		{"ReadyForQuery in transaction", 'Z', AppendReadyForQuery(nil, 'T'),
			&pgproto3.ReadyForQuery{}, &pgproto3.ReadyForQuery{TxStatus: 'T'}},
		{"ReadyForQuery failed transaction", 'Z', AppendReadyForQuery(nil, 'E'),
			&pgproto3.ReadyForQuery{}, &pgproto3.ReadyForQuery{TxStatus: 'E'}},
		{"NegotiateProtocolVersion no options", 'v', AppendNegotiateProtocolVersion(nil, ProtocolVersion30, nil),
			&pgproto3.NegotiateProtocolVersion{}, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: ProtocolVersion30, UnrecognizedOptions: []string{}}},
		{"NegotiateProtocolVersion options", 'v', AppendNegotiateProtocolVersion(nil, ProtocolVersion30, []string{"_pq_.a", "_pq_.compression"}),
			&pgproto3.NegotiateProtocolVersion{}, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: ProtocolVersion30, UnrecognizedOptions: []string{"_pq_.a", "_pq_.compression"}}},
		{"CancelRequest 4-byte secret", 0, AppendCancelRequest(nil, 1234, []byte{1, 2, 3, 4}),
			&pgproto3.CancelRequest{}, &pgproto3.CancelRequest{ProcessID: 1234, SecretKey: []byte{1, 2, 3, 4}}},
		{"CancelRequest 32-byte secret", 0, AppendCancelRequest(nil, 1234, seq(32)),
			&pgproto3.CancelRequest{}, &pgproto3.CancelRequest{ProcessID: 1234, SecretKey: seq(32)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.typ == 0 {
				if n := binary.BigEndian.Uint32(tc.got); int(n) != len(tc.got) {
					t.Fatalf("length word %d, want %d", n, len(tc.got))
				}
				body = tc.got[4:]
			} else {
				body = checkFrame(t, tc.got, tc.typ)
			}
			if err := tc.decode.Decode(body); err != nil {
				t.Fatalf("pgproto3 decode: %v", err)
			}
			if !reflect.DeepEqual(tc.decode, tc.want) {
				t.Fatalf("decoded %+v, want %+v", tc.decode, tc.want)
			}
			enc, err := tc.want.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tc.got, enc) {
				t.Fatalf("encoded %q, pgproto3 encodes %q", tc.got, enc)
			}
		})
	}
}

// A CancelRequest pgtide sends to a server is one pgtide itself would accept from a client.
func TestAppendCancelRequestRoundTrip(t *testing.T) {
	for _, secret := range [][]byte{{0, 0, 0, 0}, {1, 2, 3, 4}, seq(32), seq(256)} {
		pkt := AppendCancelRequest(nil, 77, secret)
		s, err := ReadStartup(bytes.NewReader(pkt), nil)
		if err != nil {
			t.Fatalf("%d-byte secret: %v", len(secret), err)
		}
		if s.Kind != KindCancel || s.PID != 77 || !bytes.Equal(s.Secret, secret) {
			t.Fatalf("%d-byte secret: read back %+v", len(secret), s)
		}
	}
}

func TestAppendMessage(t *testing.T) {
	var stream []byte
	stream = AppendMessage(stream, 'Q', []byte("SELECT 1\x00"))
	stream = AppendMessage(stream, 'S', nil)
	r := newTestReader(bytes.NewReader(stream), 64, 1<<20)
	for _, want := range []struct {
		typ  byte
		body string
	}{{'Q', "SELECT 1\x00"}, {'S', ""}} {
		if typ, _, err := r.Next(); err != nil || typ != want.typ {
			t.Fatalf("Next = %q, %v", typ, err)
		}
		if b, err := r.Body(); err != nil || string(b) != want.body {
			t.Fatalf("Body = %q, %v", b, err)
		}
	}
}

func TestParseErrorFields(t *testing.T) {
	full, err := (&pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42P01", Message: `relation "nope" does not exist`,
		Detail: "d", Hint: "h", Position: 15, Where: "w", SchemaName: "s", TableName: "t", File: "parse_relation.c",
		Line: 1392, Routine: "parserOpenTable",
	}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	notice, err := (&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello"}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		body       []byte
		code, mess string
	}{
		{"pgproto3 ErrorResponse with every field", full[HeaderLen:], "42P01", `relation "nope" does not exist`},
		{"NoticeResponse", notice[HeaderLen:], "00000", "hello"},
		{"message before code", []byte("Mfirst\x00Cx\x00\x00"), "x", "first"},
		{"empty body", nil, "", ""},
		{"terminator only", []byte{0}, "", ""},
		{"fields after the terminator are ignored", []byte("C1\x00\x00M2\x00\x00"), "1", ""},
		{"truncated value", []byte("C123"), "123", ""},
		{"field type with no value", []byte("C"), "", ""},
		{"later field wins", []byte("Ca\x00Cb\x00\x00"), "b", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code, m := ParseErrorFields(tc.body); code != tc.code || m != tc.mess {
				t.Fatalf("ParseErrorFields = %q, %q; want %q, %q", code, m, tc.code, tc.mess)
			}
			if code := ErrorCode(tc.body); string(code) != tc.code {
				t.Fatalf("ErrorCode = %q; want %q", code, tc.code)
			}
		})
	}
}

// TestNetFailure: network failures read as libpq words them, never with addresses or Go's text.
func TestNetFailure(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5432}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: syscall.ECONNREFUSED}, "connection refused"},
		{&net.OpError{Op: "read", Net: "tcp", Addr: addr, Err: syscall.ECONNRESET}, "server closed the connection unexpectedly"},
		{io.ErrUnexpectedEOF, "server closed the connection unexpectedly"},
		{context.DeadlineExceeded, "timeout expired"},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: syscall.EHOSTUNREACH}, "no route to host"},
		{&net.DNSError{Err: "no such host", Name: "db.internal"}, "could not resolve the server's host name"},
		{errors.New("something else at 10.1.2.3:5432"), "network error"},
	} {
		if got := NetFailure(tc.err); got != tc.want {
			t.Errorf("NetFailure(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestErrorSeverity(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want string
	}{
		{"unlocalized first", "SFATAL\x00VFATAL\x00C57P01\x00\x00", "FATAL"},
		{"unlocalized wins over a translation", "SSCHWERWIEGEND\x00VFATAL\x00\x00", "FATAL"},
		{"before 9.6: the S field", "SWARNING\x00C57P02\x00\x00", "WARNING"},
		{"none", "C57P01\x00\x00", ""},
		{"empty body", "", ""},
	} {
		if got := ErrorSeverity([]byte(tc.body)); string(got) != tc.want {
			t.Errorf("%s: ErrorSeverity = %q, want %q", tc.name, got, tc.want)
		}
	}
}
