// Package auth owns client authentication: pgtide plays the server's part of the trust, md5 and
// scram-sha-256 exchanges against the users file. (Logging in to the servers is done by pgconn in
// package pool, with the same user's password.)
package auth

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/xdg-go/scram"

	"pgtide/internal/config"
	"pgtide/internal/wire"
)

// Exchange is the client's side of the connection while it authenticates.
type Exchange interface {
	// Send writes msg (one or more whole messages) and flushes it.
	Send(msg []byte) error
	// Receive reads the next message. body is valid until the next Receive.
	Receive() (typ byte, body []byte, err error)
}

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// Authenticator verifies clients. It caches the SCRAM keys derived from each password, since the
// derivation costs milliseconds of CPU per login. It is safe for concurrent use.
type Authenticator struct {
	mu    sync.Mutex
	creds map[credKey]scram.StoredCredentials // guarded by mu
}

type credKey struct{ user, password string }

// NewAuthenticator returns an Authenticator with an empty cache.
func NewAuthenticator() *Authenticator {
	return &Authenticator{creds: make(map[credKey]scram.StoredCredentials)}
}

// Authenticate runs method's exchange for user. It does not send AuthenticationOk. A failure is a
// *wire.Error to send to the client.
func (a *Authenticator) Authenticate(ex Exchange, method, user string, users config.Users) error {
	if method == config.AuthTrust {
		return nil
	}
	u, known := users[user]
	switch method {
	case config.AuthMD5:
		return a.md5(ex, user, u.Password, known)
	case config.AuthSCRAM:
		return a.scram(ex, user, u.Password, known)
	}
	return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidAuthorization,
		Message: fmt.Sprintf("authentication method %q is not supported", method)}
}

// failed is the error PostgreSQL gives for a wrong password and, so as not to reveal which users
// exist, for an unknown user too.
func failed(user string) *wire.Error {
	return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidPassword,
		Message: fmt.Sprintf("password authentication failed for user %q", user)}
}

func (a *Authenticator) md5(ex Exchange, user, password string, known bool) error {
	var salt [4]byte
	rand.Read(salt[:])
	msg := wire.AppendHeader(nil, 'R', 8)
	msg = binary.BigEndian.AppendUint32(msg, 5)
	msg = append(msg, salt[:]...)
	if err := ex.Send(msg); err != nil {
		return err
	}
	body, err := receivePassword(ex)
	if err != nil {
		return err
	}
	got := bytes.TrimSuffix(body, []byte{0})
	want := MD5Response(user, password, salt)
	if !known || subtle.ConstantTimeCompare(got, []byte(want)) != 1 {
		return failed(user)
	}
	return nil
}

// MD5Response is what a client sends for md5 authentication: "md5" + md5(md5(password+user)+salt).
func MD5Response(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	h := hex.EncodeToString(inner[:])
	outer := md5.Sum(append([]byte(h), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}

func (a *Authenticator) scram(ex Exchange, user, password string, known bool) error {
	const mech = "SCRAM-SHA-256"
	msg := wire.AppendHeader(nil, 'R', 4+len(mech)+2)
	msg = binary.BigEndian.AppendUint32(msg, 10)
	msg = append(msg, mech...)
	msg = append(msg, 0, 0)
	if err := ex.Send(msg); err != nil {
		return err
	}
	body, err := receivePassword(ex)
	if err != nil {
		return err
	}
	gotMech, data, err := parseSASLInitial(body)
	if err != nil {
		return err
	}
	if gotMech != mech {
		return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
			Message: "client selected an invalid SASL authentication mechanism"}
	}

	// An unknown user runs the exchange against made-up keys and fails at the end, as PostgreSQL
	// does, so the exchange does not reveal whether the user exists.
	creds := a.storedCredentials(user, password, known)
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		return err
	}
	conv := srv.NewConversation()
	for step := 0; ; step++ {
		resp, err := conv.Step(string(data))
		if err != nil {
			if step == 0 {
				return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
					Message: "malformed SCRAM message"}
			}
			return failed(user)
		}
		code := uint32(11) // AuthenticationSASLContinue
		if conv.Done() {
			code = 12 // AuthenticationSASLFinal
		}
		if conv.Done() && (!conv.Valid() || !known) {
			return failed(user)
		}
		msg := wire.AppendHeader(nil, 'R', 4+len(resp))
		msg = binary.BigEndian.AppendUint32(msg, code)
		msg = append(msg, resp...)
		if err := ex.Send(msg); err != nil {
			return err
		}
		if conv.Done() {
			return nil
		}
		if data, err = receivePassword(ex); err != nil {
			return err
		}
	}
}

func (a *Authenticator) storedCredentials(user, password string, known bool) scram.StoredCredentials {
	if !known {
		password = rand.Text()
	}
	k := credKey{user, password}
	a.mu.Lock()
	c, ok := a.creds[k]
	a.mu.Unlock()
	if ok {
		return c
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	client, err := scram.SHA256.NewClient(user, password, "")
	if err != nil {
		// SASLprep rejected the password: use it unprepared, as PostgreSQL does.
		client, _ = scram.SHA256.NewClientUnprepped(user, password, "")
	}
	c = client.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if known {
		a.mu.Lock()
		a.creds[k] = c
		a.mu.Unlock()
	}
	return c
}

func receivePassword(ex Exchange) ([]byte, error) {
	typ, body, err := ex.Receive()
	if err != nil {
		return nil, err
	}
	if typ != 'p' {
		return nil, &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
			Message: fmt.Sprintf("expected password response, got message type %q", typ)}
	}
	return body, nil
}

// parseSASLInitial decodes a SASLInitialResponse: mechanism name, int32 length, data.
func parseSASLInitial(body []byte) (mech string, data []byte, err error) {
	bad := &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
		Message: "malformed SASLInitialResponse message"}
	i := bytes.IndexByte(body, 0)
	if i < 0 || len(body) < i+5 {
		return "", nil, bad
	}
	mech = string(body[:i])
	n := int32(binary.BigEndian.Uint32(body[i+1:]))
	data = body[i+5:]
	if n < 0 || int(n) != len(data) {
		return "", nil, bad
	}
	return mech, data, nil
}
