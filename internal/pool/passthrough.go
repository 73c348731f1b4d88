package pool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"pgtide/internal/secret"
	"pgtide/internal/wire"
)

// PassThrough is what a dial answers a server's password request with when the users file holds
// an md5 hash or a SCRAM verifier for the user instead of the password (pass-through, as PgBouncer
// does since 1.14): the md5 hash answers an md5 request; the keys a client's SCRAM login proved
// (auth.Authenticator.PassThroughKeys) answer a SCRAM request from a server whose role has the
// same verifier. Nothing answers a request for the plaintext password.
type PassThrough struct {
	// Kind is the form the users file holds: secret.MD5 or secret.SCRAM.
	Kind secret.Kind
	// MD5 is the hash, when Kind is secret.MD5.
	MD5 string
	// Keys are valid when HaveKeys: when Kind is secret.SCRAM and a client of the user has
	// logged in with SCRAM against the users file's verifier since pgtide started.
	Keys     secret.ClientKeys
	HaveKeys bool
}

// SecretError is a login to a server that pass-through could not make: the users file's md5
// hash or verifier cannot answer what the server asks, no client has logged in yet to give the
// keys, or the server's role has another verifier. Reason is written for the operator and the
// client; it never holds a secret.
type SecretError struct {
	User   string
	Reason string
	// Server is the server's refusal when it refused the proof (28P01), else nil.
	Server *ServerError
}

func (e *SecretError) Error() string {
	return fmt.Sprintf("pgtide cannot log in to the server as user %q: %s", e.User, e.Reason)
}

// Unwrap returns the server's refusal, if any.
func (e *SecretError) Unwrap() error {
	if e.Server == nil {
		return nil
	}
	return e.Server
}

// passThroughLogin is one login's pass-through state, owned by Conn.login.
type passThroughLogin struct {
	client *secret.KeyClient // set once the server asked for SCRAM
	proved bool              // a proof was sent: a refusal now means another verifier
}

// answer answers the server's AuthenticationRequest code (with its data) from s.
func (p *passThroughLogin) answer(c *Conn, user string, s *PassThrough, code uint32, data []byte) error {
	fail := func(format string, args ...any) error {
		return &SecretError{User: user, Reason: fmt.Sprintf(format, args...)}
	}
	switch code {
	case 0: // AuthenticationOk
		return nil
	case 3:
		return fail("the server asks for the plaintext password (pg_hba.conf method \"password\"), and the users file has %s instead; "+
			"use scram-sha-256 (or md5) for this user in the server's pg_hba.conf", s.Kind)
	case 5:
		if s.Kind != secret.MD5 {
			return fail("the server asks for md5 authentication, which the users file's SCRAM verifier cannot answer; the role's password " +
				"on the server is not that verifier (PostgreSQL would do SCRAM for an md5 line if it were)")
		}
		if len(data) != 4 {
			return errMalformed
		}
		return c.send(passwordMessage([]byte(secret.MD5Response(s.MD5, [4]byte(data)) + "\x00")))
	case 10:
		if s.Kind != secret.SCRAM {
			return fail("the server asks for SCRAM authentication, which the users file's md5 hash cannot answer; give the users file " +
				"the role's SCRAM verifier (SELECT rolpassword FROM pg_authid), or use md5 for this user on the server")
		}
		if !s.HaveKeys {
			return fail("no client of this user has logged in with SCRAM since pgtide started (or since the users file's verifier " +
				"changed), and pass-through needs the keys such a login proves; the first client login provides them")
		}
		if !slices.Contains(splitCStrings(data), "SCRAM-SHA-256") {
			return fmt.Errorf("server offers no SASL mechanism pgtide supports (%q)", splitCStrings(data))
		}
		p.client = secret.NewKeyClient(s.Keys)
		return c.send(passwordMessage(saslInitialResponse("SCRAM-SHA-256", p.client.First())))
	case 11: // SASLContinue: the server-first-message
		if p.client == nil {
			return errMalformed
		}
		final, err := p.client.Final(string(data))
		if errors.Is(err, secret.ErrSaltMismatch) {
			return fail("the server's salt or iteration count for the role differ from the users file's verifier, so the role has " +
				"another verifier on the server (its password was set again there); copy the server's pg_authid.rolpassword into the users file")
		}
		if err != nil {
			return fmt.Errorf("SCRAM pass-through with the server failed: %w", err)
		}
		p.proved = true
		return c.send(passwordMessage([]byte(final)))
	case 12: // SASLFinal
		if p.client == nil {
			return errMalformed
		}
		if err := p.client.Verify(string(data)); err != nil {
			if errors.Is(err, secret.ErrServerSignature) {
				return fail("the server's SCRAM signature does not match the users file's verifier (the role's verifier on the server differs)")
			}
			return fmt.Errorf("SCRAM pass-through with the server failed: %w", err)
		}
		return nil
	}
	return fmt.Errorf("server asks for an authentication method pgtide does not support (code %d)", code)
}

// refused turns the server's refusal of a pass-through proof into a SecretError naming the likely
// cause; any other error is returned as it is.
func (p *passThroughLogin) refused(user string, se *ServerError) error {
	if p.proved && se.Code == wire.CodeInvalidPassword {
		return &SecretError{User: user, Server: se,
			Reason: "the server refused the proof made from the users file's SCRAM verifier (" + se.Message + "): the role's verifier on " +
				"the server differs from the users file's; copy the server's pg_authid.rolpassword into the users file"}
	}
	return se
}

// saslInitialResponse is the body of a SASLInitialResponse: mechanism, int32 length, data.
func saslInitialResponse(mech, data string) []byte {
	body := append([]byte(mech+"\x00"), binary.BigEndian.AppendUint32(nil, uint32(len(data)))...)
	return append(body, data...)
}
