package auth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"pgtide/internal/config"
	"pgtide/internal/wire"
)

// scriptedClient plays a client: it records what the server sends and answers with reply.
type scriptedClient struct {
	sent  [][]byte
	reply func(msg []byte) (typ byte, body []byte, err error)
	last  []byte
}

func (c *scriptedClient) Send(msg []byte) error {
	c.sent = append(c.sent, bytes.Clone(msg))
	c.last = msg
	return nil
}

func (c *scriptedClient) Receive() (byte, []byte, error) { return c.reply(c.last) }

// authCode returns the Authentication request code of a server 'R' message, and its data.
func authCode(t *testing.T, msg []byte) (uint32, []byte) {
	t.Helper()
	if len(msg) < 9 || msg[0] != 'R' {
		t.Fatalf("not an authentication request: %q", msg)
	}
	return binary.BigEndian.Uint32(msg[5:9]), msg[9:]
}

var users = config.Users{"app": {Name: "app", Password: "pencil"}}

func TestMD5Response(t *testing.T) {
	// Computed independently: "md5" + md5(hex(md5("pencil" + "app")) + salt).
	const want = "md54bfca4ca571b8df74c2fc2247888d96f"
	if got := MD5Response("app", "pencil", [4]byte{1, 2, 3, 4}); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestMD5(t *testing.T) {
	a := NewAuthenticator()
	for _, tc := range []struct {
		user, password string
		ok             bool
	}{
		{"app", "pencil", true},
		{"app", "wrong", false},
		{"nobody", "pencil", false},
	} {
		c := &scriptedClient{}
		c.reply = func(msg []byte) (byte, []byte, error) {
			code, salt := authCode(t, msg)
			if code != 5 {
				t.Fatalf("code %d, want 5 (MD5Password)", code)
			}
			return 'p', append([]byte(MD5Response(tc.user, tc.password, [4]byte(salt))), 0), nil
		}
		err := a.Authenticate(c, config.AuthMD5, tc.user, users)
		checkResult(t, err, tc.ok, tc.user)
	}
}

func checkResult(t *testing.T, err error, ok bool, user string) {
	t.Helper()
	if ok {
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		return
	}
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeInvalidPassword || we.Message != `password authentication failed for user "`+user+`"` {
		t.Fatalf("%s: got %v", user, err)
	}
}

func TestSCRAM(t *testing.T) {
	a := NewAuthenticator()
	for _, tc := range []struct {
		user, password string
		ok             bool
	}{
		{"app", "pencil", true},
		{"app", "pencil", true}, // cached keys
		{"app", "wrong", false},
		{"nobody", "pencil", false},
	} {
		conv := newConv(t, tc.password)
		c := &scriptedClient{reply: scramClient(t, conv, mechSCRAM, mechSCRAM+"\x00\x00")}
		err := a.Authenticate(c, config.AuthSCRAM, tc.user, users)
		checkResult(t, err, tc.ok, tc.user)
		if tc.ok {
			// The server's final message must prove it knows the password too.
			code, data := authCode(t, c.sent[len(c.sent)-1])
			if code != 12 {
				t.Fatalf("last message code %d, want SASLFinal", code)
			}
			if _, err := conv.Step(string(data)); err != nil || !conv.Valid() {
				t.Fatalf("server signature rejected: %v", err)
			}
		}
	}
}

func TestSCRAMMalformed(t *testing.T) {
	a := NewAuthenticator()
	for name, body := range map[string][]byte{
		"no mechanism terminator": []byte("SCRAM-SHA-256"),
		"length mismatch":         append([]byte("SCRAM-SHA-256\x00"), 0, 0, 0, 99, 'n'),
		"wrong mechanism":         append([]byte("PLAIN\x00"), 0, 0, 0, 1, 'x'),
		"garbage client-first":    append([]byte("SCRAM-SHA-256\x00"), 0, 0, 0, 3, 'x', 'y', 'z'),
	} {
		c := &scriptedClient{reply: func([]byte) (byte, []byte, error) { return 'p', body, nil }}
		err := a.Authenticate(c, config.AuthSCRAM, "app", users)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeProtocolViolation {
			t.Errorf("%s: got %v", name, err)
		}
	}
	// A message that is not a password message.
	c := &scriptedClient{reply: func([]byte) (byte, []byte, error) { return 'Q', []byte("select 1\x00"), nil }}
	var we *wire.Error
	if err := a.Authenticate(c, config.AuthMD5, "app", users); !errors.As(err, &we) || we.Code != wire.CodeProtocolViolation {
		t.Errorf("non-password message: got %v", err)
	}
}
