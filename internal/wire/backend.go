package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// SQLSTATE codes pgtide uses in its own ErrorResponses.
const (
	CodeProtocolViolation     = "08P01"
	CodeConnectionFailure     = "08006"
	CodeCannotConnectNow      = "57P03"
	CodeUnableToConnect       = "08001"
	CodeServerRejected        = "08004"
	CodeFeatureNotSupported   = "0A000"
	CodeInvalidPassword       = "28P01"
	CodeInvalidAuthorization  = "28000"
	CodeTooManyConnections    = "53300"
	CodeAdminShutdown         = "57P01"
	CodeQueryCanceled         = "57014"
	CodeInternalError         = "XX000"
	CodeInvalidParameterValue = "22023"
	// The admin console's.
	CodeSyntaxError            = "42601"
	CodeInsufficientPrivilege  = "42501"
	CodeUndefinedObject        = "42704"
	CodeProgramLimitExceeded   = "54000"
	CodeNotInPrerequisiteState = "55000"
	CodeConfigFileError        = "F0000"
)

// Severities.
const (
	SeverityError = "ERROR"
	SeverityFatal = "FATAL"
)

// Error is an ErrorResponse pgtide sends to a client. Message is written for the person reading it.
type Error struct {
	Severity string
	Code     string
	Message  string
	Detail   string
	Hint     string
}

func (e *Error) Error() string { return e.Message }

// Append appends e as an ErrorResponse message.
func (e *Error) Append(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, 'E', 0, 0, 0, 0)
	dst = appendField(dst, 'S', e.Severity)
	dst = appendField(dst, 'V', e.Severity)
	dst = appendField(dst, 'C', e.Code)
	dst = appendField(dst, 'M', e.Message)
	if e.Detail != "" {
		dst = appendField(dst, 'D', e.Detail)
	}
	if e.Hint != "" {
		dst = appendField(dst, 'H', e.Hint)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

func appendField(dst []byte, field byte, v string) []byte {
	dst = append(dst, field)
	dst = append(dst, v...)
	return append(dst, 0)
}

// AppendReadyForQuery appends a ReadyForQuery message with the given transaction status.
func AppendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, 'Z', 0, 0, 0, 5, status)
}

// AppendMessage appends a message with the given type and body.
func AppendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = AppendHeader(dst, typ, len(body))
	return append(dst, body...)
}

// AppendParameterStatus appends a ParameterStatus message.
func AppendParameterStatus(dst []byte, name, value string) []byte {
	dst = AppendHeader(dst, 'S', len(name)+len(value)+2)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// AppendBackendKeyData appends a BackendKeyData message (protocol 3.0: 4-byte secret).
func AppendBackendKeyData(dst []byte, pid, secret uint32) []byte {
	dst = AppendHeader(dst, 'K', 8)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return binary.BigEndian.AppendUint32(dst, secret)
}

// AppendSSLRequest appends an SSLRequest packet, which asks a server to speak TLS: it answers
// 'S' (go on with the TLS handshake) or 'N' (no TLS here).
func AppendSSLRequest(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 8)
	return binary.BigEndian.AppendUint32(dst, codeSSL)
}

// TLSHandshakeByte is the first byte of a TLS handshake record (a ClientHello). No startup packet
// starts with it (their length is below 2^24), so a client that starts TLS at once, without an
// SSLRequest (PostgreSQL 17's direct TLS), is told apart by its first byte.
const TLSHandshakeByte = 0x16

// AppendCancelRequest appends a CancelRequest packet for the server connection (pid, secret).
func AppendCancelRequest(dst []byte, pid uint32, secret []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(secret)))
	dst = binary.BigEndian.AppendUint32(dst, codeCancel)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return append(dst, secret...)
}

// AppendNegotiateProtocolVersion appends a NegotiateProtocolVersion message offering newest, the
// newest protocol version the server speaks for the client's major version, encoded as in the
// startup packet (major<<16 | minor: 196608 for 3.0, as PostgreSQL sends PG_PROTOCOL_LATEST in
// postmaster.c's SendNegotiateProtocolVersion), and listing the protocol options it did not
// recognise.
func AppendNegotiateProtocolVersion(dst []byte, newest uint32, unrecognized []string) []byte {
	n := 8
	for _, o := range unrecognized {
		n += len(o) + 1
	}
	dst = AppendHeader(dst, 'v', n)
	dst = binary.BigEndian.AppendUint32(dst, newest)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(unrecognized)))
	for _, o := range unrecognized {
		dst = append(dst, o...)
		dst = append(dst, 0)
	}
	return dst
}

// ParseErrorFields extracts the SQLSTATE and message of an ErrorResponse or NoticeResponse body.
func ParseErrorFields(body []byte) (code, message string) {
	for f, v, rest, ok := nextErrorField(body); ok; f, v, rest, ok = nextErrorField(rest) {
		switch f {
		case 'C':
			code = string(v)
		case 'M':
			message = string(v)
		}
	}
	return code, message
}

// ReplaceErrorField returns a copy of an ErrorResponse or NoticeResponse body with the value of
// every field of type f replaced by v, or with the field added before the terminator if body has
// none. The other fields keep their order and values. body is not changed.
func ReplaceErrorField(body []byte, f byte, v string) []byte {
	out := make([]byte, 0, len(body)+len(v)+2)
	found := false
	for g, w, rest, ok := nextErrorField(body); ok; g, w, rest, ok = nextErrorField(rest) {
		if g == f {
			w, found = []byte(v), true
		}
		out = append(append(append(out, g), w...), 0)
	}
	if !found {
		out = appendField(out, f, v)
	}
	return append(out, 0)
}

// nextErrorField splits the first field off an ErrorResponse or NoticeResponse body: its type,
// its value (without the terminator; cut short if the body is) and the rest. ok is false at the
// body's end or terminator.
func nextErrorField(body []byte) (f byte, v, rest []byte, ok bool) {
	if len(body) == 0 || body[0] == 0 {
		return 0, nil, nil, false
	}
	f, body = body[0], body[1:]
	end := 0
	for end < len(body) && body[end] != 0 {
		end++
	}
	v = body[:end]
	if end < len(body) {
		end++
	}
	return f, v, body[end:], true
}

// ErrorCode returns the SQLSTATE field of an ErrorResponse or NoticeResponse body as
// ParseErrorFields reads it (nil if it has none), a slice of body, without allocating.
func ErrorCode(body []byte) (code []byte) { return errorField(body, 'C') }

// ErrorSeverity returns the severity of an ErrorResponse or NoticeResponse body (ERROR, FATAL,
// PANIC, WARNING, NOTICE, ...): the never-localized V field PostgreSQL sends since 9.6, else the
// S field, which may be translated (nil if neither is there). A slice of body, not a copy.
func ErrorSeverity(body []byte) []byte {
	if v := errorField(body, 'V'); v != nil {
		return v
	}
	return errorField(body, 'S')
}

// errorField returns the last field of type f in an ErrorResponse or NoticeResponse body, nil if
// there is none.
func errorField(body []byte, f byte) (v []byte) {
	for g, w, rest, ok := nextErrorField(body); ok; g, w, rest, ok = nextErrorField(rest) {
		if g == f {
			v = w
		}
	}
	return v
}

// NetFailure words a network failure for a client as libpq would, without addresses or Go's
// error text: what pgtide's own messages say when a server could not be reached or was lost.
func NetFailure(err error) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout expired"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.As(err, &dns):
		return "could not resolve the server's host name"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "server closed the connection unexpectedly"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout expired"
	}
	return "network error"
}
