package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Startup packet codes (the int32 after the length).
const (
	ProtocolVersion30 = 3<<16 | 0
	codeCancel        = 80877102
	codeSSL           = 80877103
	codeGSSENC        = 80877104
)

// MaxStartupLen is the longest startup packet accepted, as in PostgreSQL (MAX_STARTUP_PACKET_LENGTH).
const MaxStartupLen = 10000

// StartupKind tells what a startup packet asks for.
type StartupKind int

// The kinds of startup packet.
const (
	KindStartup StartupKind = iota + 1
	KindSSLRequest
	KindGSSENCRequest
	KindCancel
)

// Startup is a decoded startup packet.
type Startup struct {
	Kind StartupKind
	// Protocol is the requested protocol version (KindStartup), major<<16 | minor.
	Protocol uint32
	// Params holds the StartupMessage parameters in the order sent (KindStartup). Options starting
	// with "_pq_." are protocol extensions.
	Params []Param
	// PID and Secret identify the query to cancel (KindCancel).
	PID    uint32
	Secret []byte
}

// Param is one name/value pair of a StartupMessage.
type Param struct{ Name, Value string }

// Get returns the value of the named parameter and whether it was sent. When a name is sent
// twice the last value counts, as in PostgreSQL.
func (s *Startup) Get(name string) (string, bool) {
	for i := len(s.Params) - 1; i >= 0; i-- {
		if s.Params[i].Name == name {
			return s.Params[i].Value, true
		}
	}
	return "", false
}

// ProtocolError is a startup packet that does not follow the protocol. Its message is written for
// the client.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return e.Msg }

// UnsupportedProtocolError is a StartupMessage for a protocol major version other than 3.
type UnsupportedProtocolError struct{ Version uint32 }

func (e *UnsupportedProtocolError) Error() string {
	return fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0",
		e.Version>>16, e.Version&0xffff)
}

// PeekStartup reads the header of a startup packet, the first 8 bytes of hdr: the packet's
// length (including itself) and whether it is an encryption request (SSLRequest or
// GSSENCRequest, as ReadStartup would return it: of length 8), which ssl tells apart.
func PeekStartup(hdr []byte) (n int, encryption, ssl bool) {
	n = int(int32(binary.BigEndian.Uint32(hdr)))
	code := binary.BigEndian.Uint32(hdr[4:])
	encryption = n == 8 && (code == codeSSL || code == codeGSSENC)
	return n, encryption, code == codeSSL
}

// ReadStartup reads one startup packet from r. buf is reused to hold the packet when large enough.
func ReadStartup(r io.Reader, buf []byte) (*Startup, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > MaxStartupLen {
		return nil, &ProtocolError{Msg: fmt.Sprintf("invalid length of startup packet: %d", n)}
	}
	if cap(buf) < n-4 {
		buf = make([]byte, n-4)
	}
	body := buf[:n-4]
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, unexpected(err)
	}
	return ParseStartup(body)
}

// ParseStartup decodes the body of a startup packet (everything after the length word). The result
// does not refer to body.
func ParseStartup(body []byte) (*Startup, error) {
	if len(body) < 4 {
		return nil, &ProtocolError{Msg: "invalid length of startup packet"}
	}
	code := binary.BigEndian.Uint32(body)
	rest := body[4:]
	switch code {
	case codeSSL, codeGSSENC:
		if len(rest) != 0 {
			return nil, &ProtocolError{Msg: "invalid length of encryption request packet"}
		}
		if code == codeSSL {
			return &Startup{Kind: KindSSLRequest}, nil
		}
		return &Startup{Kind: KindGSSENCRequest}, nil
	case codeCancel:
		// Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256.
		if len(rest) < 8 || len(rest) > 4+256 {
			return nil, &ProtocolError{Msg: "invalid length of cancel request packet"}
		}
		return &Startup{
			Kind:   KindCancel,
			PID:    binary.BigEndian.Uint32(rest),
			Secret: bytes.Clone(rest[4:]),
		}, nil
	}
	if code>>16 != 3 {
		return nil, &UnsupportedProtocolError{Version: code}
	}
	s := &Startup{Kind: KindStartup, Protocol: code}
	for {
		name, r, err := cstring(rest)
		if err != nil {
			return nil, err
		}
		if name == "" {
			if len(r) != 0 {
				return nil, &ProtocolError{Msg: "invalid startup packet layout: expected terminator as last byte"}
			}
			break
		}
		value, r, err := cstring(r)
		if err != nil {
			return nil, err
		}
		s.Params = append(s.Params, Param{Name: name, Value: value})
		rest = r
	}
	if v, ok := s.Get("user"); !ok || v == "" {
		return nil, &ProtocolError{Msg: "no PostgreSQL user name specified in startup packet"}
	}
	return s, nil
}

var errNoTerminator = &ProtocolError{Msg: "invalid startup packet layout: expected terminator as last byte"}

func cstring(b []byte) (string, []byte, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, errNoTerminator
	}
	return string(b[:i]), b[i+1:], nil
}

// IsProtocolError reports whether err is a malformed or unsupported startup packet.
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	var ue *UnsupportedProtocolError
	var me *MalformedError
	var te *MessageTooLargeError
	return errors.As(err, &pe) || errors.As(err, &ue) || errors.As(err, &me) || errors.As(err, &te)
}
