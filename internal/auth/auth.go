// Package auth owns client authentication: pgtide plays the server's part of the trust, md5 and
// scram-sha-256 exchanges (SCRAM-SHA-256-PLUS too, over TLS) against the users file, whose
// passwords may be plaintext, md5 hashes or SCRAM verifiers (package secret). A client's SCRAM
// login against a verifier leaves its ClientKey with the Authenticator, from which package pool
// logs in to the servers as that user (pass-through, see PassThroughKeys).
package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/xdg-go/scram"

	"pgtide/internal/config"
	"pgtide/internal/secret"
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

// Authenticator verifies clients. It caches the SCRAM keys derived from each plaintext password,
// since the derivation costs milliseconds of CPU per login, and keeps the pass-through keys of
// the users whose entry is a SCRAM verifier, in memory only, for the life of the process. It is
// safe for concurrent use.
type Authenticator struct {
	// Logger receives the warnings about users-file entries that cannot serve a login (an md5
	// hash asked for SCRAM). Set before use; nil logs nothing.
	Logger *slog.Logger

	mockKey [32]byte // makes the made-up SCRAM keys of users without any; immutable

	mu     sync.Mutex
	creds  map[credKey]scram.StoredCredentials // guarded by mu
	keys   map[string]secret.ClientKeys        // pass-through keys by user; guarded by mu
	warned map[string]time.Time                // last warning per user; guarded by mu
}

type credKey struct{ user, password string }

// NewAuthenticator returns an Authenticator with empty caches.
func NewAuthenticator() *Authenticator {
	a := &Authenticator{creds: make(map[credKey]scram.StoredCredentials),
		keys: make(map[string]secret.ClientKeys), warned: make(map[string]time.Time)}
	rand.Read(a.mockKey[:])
	return a
}

// Authenticate runs method's exchange for user against the users file, following PostgreSQL's
// rules for the stored form of the password (pg_hba.conf's md5 and scram-sha-256 methods):
//   - md5: a plaintext password or an md5 hash answer an md5 exchange; a SCRAM verifier makes it a
//     SCRAM exchange ("If md5 is specified and the password is SCRAM-encrypted, SCRAM is used").
//   - scram-sha-256: a plaintext password or a verifier; an md5 hash cannot serve SCRAM, so the
//     exchange runs against made-up keys and fails with 28P01, and the reason is logged.
//
// Over TLS (ex is a TLSExchange with a certificate) SCRAM-SHA-256-PLUS is offered first. An
// unknown user goes through the same motions and fails the same way as a wrong password. It does
// not send AuthenticationOk. A failure is a *wire.Error to send to the client; it never holds a
// password, hash, verifier or proof.
func (a *Authenticator) Authenticate(ex Exchange, method, user string, users config.Users) error {
	if method == config.AuthTrust {
		return nil
	}
	u, known := users[user]
	sec, err := secret.Parse(u.Password)
	if err != nil {
		known = false // Validate refuses such a users file; never trust one that got through
	}
	switch method {
	case config.AuthMD5:
		if known && sec.Kind == secret.SCRAM {
			return a.scram(ex, user, sec, known)
		}
		return a.md5(ex, user, sec, known)
	case config.AuthSCRAM:
		if known && sec.Kind == secret.MD5 {
			a.warn(user, "the users file has an md5 hash for this user, which cannot serve SCRAM: "+
				"replace it with the role's SCRAM verifier (SELECT rolpassword FROM pg_authid) or set auth.method = \"md5\"")
			known = false
		}
		return a.scram(ex, user, sec, known)
	}
	return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidAuthorization,
		Message: fmt.Sprintf("authentication method %q is not supported", method)}
}

// warnEvery bounds how often the same user's unusable entry is logged.
const warnEvery = 10 * time.Second

// warn logs why user's login cannot succeed, as PostgreSQL logs the detail it keeps from the
// client (User "%s" does not have a valid SCRAM secret.), at most once per warnEvery.
func (a *Authenticator) warn(user, why string) {
	if a.Logger == nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	last, seen := a.warned[user]
	if !seen || now.Sub(last) >= warnEvery {
		a.warned[user] = now
	}
	a.mu.Unlock()
	if !seen || now.Sub(last) >= warnEvery {
		a.Logger.Warn("client login refused: "+why, "user", user)
	}
}

// PassThroughKeys returns the ClientKeys the latest SCRAM login of user proved, provided it was
// checked against verifier v (the users file's entry now: keys learnt against an older entry
// are not used after a reload changed it). ok is false until a client of user has logged in
// with SCRAM since start. The keys stay in memory until the process ends.
func (a *Authenticator) PassThroughKeys(user string, v secret.Verifier) (keys secret.ClientKeys, ok bool) {
	a.mu.Lock()
	keys, ok = a.keys[user]
	a.mu.Unlock()
	if !ok || !keys.Verifier.Equal(v) {
		return secret.ClientKeys{}, false
	}
	return keys, true
}

// failed is the error PostgreSQL gives for a wrong password and, so as not to reveal which users
// exist, for an unknown user too.
func failed(user string) *wire.Error {
	return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidPassword,
		Message: fmt.Sprintf("password authentication failed for user %q", user)}
}

// md5 runs the md5 exchange. sec is a plaintext password or an md5 hash: either gives the hash
// the client's answer is made from.
func (a *Authenticator) md5(ex Exchange, user string, sec secret.Secret, known bool) error {
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
	hash := sec.Text
	if sec.Kind != secret.MD5 {
		hash = secret.MD5Hash(user, sec.Text)
	}
	want := secret.MD5Response(hash, salt)
	if subtle.ConstantTimeCompare(got, []byte(want)) != 1 || !known {
		return failed(user)
	}
	return nil
}

// MD5Response is what a client sends for md5 authentication: "md5" + md5(md5(password+user)+salt).
func MD5Response(user, password string, salt [4]byte) string {
	return secret.MD5Response(secret.MD5Hash(user, password), salt)
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
