package pool

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/xdg-go/scram"

	"pgtide/internal/auth"
	"pgtide/internal/evloop"
	"pgtide/internal/pgtls"
	"pgtide/internal/wire"
)

// ServerError is a server's refusal during login (unknown database, failed authentication, too
// many connections), or its error for a query of Conn.Exec: what the server said, to be passed
// on to the client.
type ServerError struct {
	Severity, Code, Message, Detail, Hint string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("%s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
}

// DialOptions are what a dial needs beyond the key.
type DialOptions struct {
	Password       string
	ConnectTimeout time.Duration
	MaxMessageSize int
	// Dial opens the TCP connection; nil means net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS is server_tls: how the connection is encrypted before the login (nil: not at all).
	TLS *pgtls.ServerTLS
	// RequireTLS: Password may be sent only over an encrypted connection (an RDS IAM auth token).
	// Dial then refuses to log in on a connection that is not TLS — server_tls = "prefer" and a
	// server that answers 'N' — before the startup message, with a *CredentialError wrapping
	// ErrTLSRequired: the server never gets a chance to ask for the password in the clear.
	RequireTLS bool
	// PassThrough answers the server when Password is "" and the users file holds an md5 hash or
	// a SCRAM verifier for the user (passthrough.go); nil otherwise.
	PassThrough *PassThrough
	// Loops, when set, takes the socket over once connected (see package evloop), so that the
	// connection's holder can wait for it on an event loop. A socket it cannot take stays as dialed.
	Loops *evloop.Group
}

// Dial opens a server connection for key, encrypts it as o.TLS says, and logs in as key.User,
// answering whichever authentication the server asks for (scram-sha-256, md5, password or
// trust). The whole login is bounded by o.ConnectTimeout. pgtide speaks the protocol itself here
// rather than through a driver, so nothing but the Conn ever reads the socket. A TLS failure is a
// *pgtls.Error; a refusal by the server a *ServerError.
func Dial(ctx context.Context, key Key, o DialOptions) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	dial := o.Dial
	if dial == nil {
		d := &net.Dialer{KeepAlive: 5 * time.Minute}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", key.Node)
	if err != nil {
		return nil, err
	}
	if o.Loops != nil {
		if lc, err := o.Loops.Adopt(nc, false); err == nil {
			nc = lc
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stream, err := o.TLS.Negotiate(ctx, nc, key.Node)
	if err != nil {
		nc.Close()
		return nil, err
	}
	// Encrypted by server_tls, or by o.Dial itself (a *tls.Conn): decided before anything of the
	// login is sent.
	if o.RequireTLS && !isTLS(stream) {
		nc.Close()
		return nil, &CredentialError{User: key.User, Err: ErrTLSRequired}
	}
	c := newConn(key, nc, stream, o.MaxMessageSize)
	if err := c.login(key, o.Password, o.PassThrough); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	if c.tls != nil { // the handshake is over: the login went through it
		c.tlsInfo = pgtls.Describe(c.tls.ConnectionState())
	}
	c.MarkAnswered()
	c.created = time.Now()
	c.lastUsed = c.created
	return c, nil
}

// newConn sets up a Conn over nc, the socket, and stream, what the protocol is spoken on: nc
// itself, or a *tls.Conn over it. The socket stays at hand for deadlines, closing and the checks
// that look at it directly (alive, FlushAndWait).
func newConn(key Key, nc, stream net.Conn, maxMessageSize int) *Conn {
	c := &Conn{
		Params:  make(map[string]string),
		netConn: nc,
		key:     key,
		// A Manager points this at its pool's; a Conn dialed on its own counts for itself.
		counters: new(Counters),
	}
	c.tls, _ = stream.(*tls.Conn)
	c.counted.Conn = stream
	c.counted.loop, _ = nc.(*evloop.Conn)
	c.Writer = bufio.NewWriterSize(&c.counted, wire.BufferSize)
	c.Reader = wire.NewReader(wire.NewBufReader(&c.counted, wire.BufferSize), maxMessageSize)
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.peekFn = c.peek
			c.flushWaitFn = c.flushWait
		}
	}
	return c
}

// login runs the startup exchange up to the first ReadyForQuery. hashed, when password is "",
// answers the server by pass-through.
func (c *Conn) login(key Key, password string, hashed *PassThrough) error {
	msg := []byte{0, 0, 0, 0}
	msg = binary.BigEndian.AppendUint32(msg, wire.ProtocolVersion30)
	for _, kv := range [][2]string{{"user", key.User}, {"database", key.Database}} {
		msg = append(append(msg, kv[0]...), 0)
		msg = append(append(msg, kv[1]...), 0)
	}
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg, uint32(len(msg)))
	if err := c.send(msg); err != nil {
		return err
	}
	var sc *scram.ClientConversation
	var pt passThroughLogin
	for {
		typ, _, err := c.Reader.Next()
		if err != nil {
			return err
		}
		body, err := c.Reader.Body()
		if err != nil {
			return err
		}
		switch typ {
		case 'R':
			if len(body) < 4 {
				return errMalformed
			}
			code := binary.BigEndian.Uint32(body)
			if password == "" && hashed != nil {
				err = pt.answer(c, key.User, hashed, code, body[4:])
			} else {
				sc, err = c.authenticate(key, password, code, body[4:], sc)
			}
			if err != nil {
				return err
			}
		case 'E':
			return pt.refused(key.User, parseServerError(body))
		case 'S':
			name, rest, ok := cstring(body)
			value, _, ok2 := cstring(rest)
			if !ok || !ok2 {
				return errMalformed
			}
			c.Params[name] = value
		case 'K':
			if len(body) < 8 {
				return errMalformed
			}
			c.PID = binary.BigEndian.Uint32(body)
			c.Secret = slices.Clone(body[4:])
		case 'Z':
			return nil
		case 'N', 'v':
			// Notices and protocol negotiation (we ask for plain 3.0) need no answer.
		default:
			return fmt.Errorf("unexpected message %q during login", typ)
		}
	}
}

var errMalformed = fmt.Errorf("malformed message from server during login")

// authenticate answers one AuthenticationRequest.
func (c *Conn) authenticate(key Key, password string, code uint32, data []byte, sc *scram.ClientConversation) (*scram.ClientConversation, error) {
	needPassword := func() error {
		if password == "" {
			return fmt.Errorf("server asks for a password for user %q and the users file has none", key.User)
		}
		return nil
	}
	switch code {
	case 0: // AuthenticationOk
		return sc, nil
	case 3: // cleartext password
		if err := needPassword(); err != nil {
			return nil, err
		}
		return sc, c.send(passwordMessage([]byte(password + "\x00")))
	case 5: // md5
		if err := needPassword(); err != nil {
			return nil, err
		}
		if len(data) != 4 {
			return nil, errMalformed
		}
		return sc, c.send(passwordMessage([]byte(auth.MD5Response(key.User, password, [4]byte(data)) + "\x00")))
	case 10: // SASL: pick SCRAM-SHA-256
		if err := needPassword(); err != nil {
			return nil, err
		}
		if !slices.Contains(splitCStrings(data), "SCRAM-SHA-256") {
			return nil, fmt.Errorf("server offers no SASL mechanism pgtide supports (%q)", splitCStrings(data))
		}
		client, err := scram.SHA256.NewClient("", password, "")
		if err != nil {
			if client, err = scram.SHA256.NewClientUnprepped("", password, ""); err != nil {
				return nil, err
			}
		}
		sc = client.NewConversation()
		first, err := sc.Step("")
		if err != nil {
			return nil, err
		}
		return sc, c.send(passwordMessage(saslInitialResponse("SCRAM-SHA-256", first)))
	case 11, 12: // SASLContinue, SASLFinal
		if sc == nil {
			return nil, errMalformed
		}
		resp, err := sc.Step(string(data))
		if err != nil {
			return nil, fmt.Errorf("SCRAM authentication with the server failed: %w", err)
		}
		if code == 12 {
			if !sc.Valid() {
				return nil, fmt.Errorf("server's SCRAM signature is invalid")
			}
			return sc, nil
		}
		return sc, c.send(passwordMessage([]byte(resp)))
	}
	return nil, fmt.Errorf("server asks for an authentication method pgtide does not support (code %d)", code)
}

func passwordMessage(body []byte) []byte {
	return wire.AppendMessage(nil, 'p', body)
}

func (c *Conn) send(msg []byte) error {
	if _, err := c.Writer.Write(msg); err != nil {
		return err
	}
	return c.Writer.Flush()
}

func parseServerError(body []byte) *ServerError {
	e := &ServerError{}
	for len(body) > 0 && body[0] != 0 {
		field := body[0]
		v, rest, ok := cstring(body[1:])
		if !ok {
			break
		}
		body = rest
		switch field {
		case 'V':
			e.Severity = v
		case 'S':
			if e.Severity == "" {
				e.Severity = v
			}
		case 'C':
			e.Code = v
		case 'M':
			e.Message = v
		case 'D':
			e.Detail = v
		case 'H':
			e.Hint = v
		}
	}
	return e
}

func cstring(b []byte) (string, []byte, bool) {
	for i, x := range b {
		if x == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

func splitCStrings(b []byte) []string {
	var out []string
	for {
		s, rest, ok := cstring(b)
		if !ok || s == "" {
			return out
		}
		out = append(out, s)
		b = rest
	}
}
