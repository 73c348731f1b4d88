package secret

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
)

// KeyLen is the length of every SCRAM-SHA-256 key, signature and proof: SHA-256's output.
const KeyLen = sha256.Size

const verifierPrefix = "SCRAM-SHA-256$"

// Verifier is a SCRAM-SHA-256 verifier as PostgreSQL stores it in pg_authid.rolpassword:
// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" with the salt and keys in base64.
// From it a server checks a client's proof and proves itself, but cannot compute a proof of its
// own: that needs the ClientKey (see ClientKeys). It prints and logs as a description only.
type Verifier struct {
	Iterations int    // of PBKDF2 (Hi in RFC 5802), at least 1
	Salt       []byte // raw bytes, at least 1
	StoredKey  [KeyLen]byte
	ServerKey  [KeyLen]byte
}

// ErrVerifier is what ParseVerifier's errors wrap.
var ErrVerifier = errors.New("not a valid SCRAM-SHA-256 verifier")

// ParseVerifier parses PostgreSQL's verifier text (pg_authid.rolpassword of a role whose password
// was set with password_encryption = scram-sha-256). It checks what PostgreSQL's
// parse_scram_secret checks — the mechanism, an integer iteration count, base64 salt and 32-byte
// base64 keys — and also that the count and the salt are not empty or below 1. The error wraps
// ErrVerifier and names the faulty part, never its content.
func ParseVerifier(text string) (Verifier, error) {
	bad := func(what string) (Verifier, error) { return Verifier{}, fmt.Errorf("%w: %s", ErrVerifier, what) }
	rest, ok := strings.CutPrefix(text, verifierPrefix)
	if !ok {
		return bad(`it does not start with "SCRAM-SHA-256$"`)
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return bad(`there is no "$" between the iterations:salt and StoredKey:ServerKey parts`)
	}
	iters, salt, ok := strings.Cut(params, ":")
	if !ok {
		return bad(`there is no ":" between the iteration count and the salt`)
	}
	stored, server, ok := strings.Cut(keys, ":")
	if !ok {
		return bad(`there is no ":" between StoredKey and ServerKey`)
	}
	var v Verifier
	n, err := strconv.ParseInt(iters, 10, 32)
	if err != nil || n < 1 || n > math.MaxInt32 {
		return bad("the iteration count is not an integer from 1 to 2147483647")
	}
	v.Iterations = int(n)
	if v.Salt, err = base64.StdEncoding.Strict().DecodeString(salt); err != nil || len(v.Salt) == 0 {
		return bad("the salt is not base64 of at least one byte")
	}
	for _, k := range []struct {
		name string
		b64  string
		dst  *[KeyLen]byte
	}{{"StoredKey", stored, &v.StoredKey}, {"ServerKey", server, &v.ServerKey}} {
		raw, err := base64.StdEncoding.Strict().DecodeString(k.b64)
		if err != nil || len(raw) != KeyLen {
			return bad(k.name + " is not base64 of 32 bytes")
		}
		copy(k.dst[:], raw)
	}
	return v, nil
}

// NewVerifier derives the verifier of password with salt and iterations as PostgreSQL's
// scram_build_secret does (RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i),
// StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword,
// "Server Key")), SASLprep-ing the password when it can and using it unprepared otherwise, as
// PostgreSQL does. It costs iterations HMACs: milliseconds at PostgreSQL's default of 4096.
func NewVerifier(password string, salt []byte, iterations int) Verifier {
	client, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		client, _ = scram.SHA256.NewClientUnprepped("", password, "")
	}
	c := client.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	v := Verifier{Iterations: iterations, Salt: []byte(c.Salt)}
	copy(v.StoredKey[:], c.StoredKey)
	copy(v.ServerKey[:], c.ServerKey)
	return v
}

// Encode returns the verifier in PostgreSQL's text form, as ParseVerifier reads it. The result
// is a secret: it is for writing a users file, never for a log.
func (v Verifier) Encode() string {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("%s%d:%s$%s:%s", verifierPrefix, v.Iterations, b64(v.Salt), b64(v.StoredKey[:]), b64(v.ServerKey[:]))
}

// Equal reports whether v and w are the same verifier, in constant time for the keys.
func (v Verifier) Equal(w Verifier) bool {
	return v.Iterations == w.Iterations && subtle.ConstantTimeCompare(v.Salt, w.Salt) == 1 &&
		subtle.ConstantTimeCompare(v.StoredKey[:], w.StoredKey[:])&subtle.ConstantTimeCompare(v.ServerKey[:], w.ServerKey[:]) == 1
}

// StoredCredentials returns v as xdg-go/scram's server wants it.
func (v Verifier) StoredCredentials() scram.StoredCredentials {
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations},
		StoredKey:  v.StoredKey[:],
		ServerKey:  v.ServerKey[:],
	}
}

// Format prints v as a description, never its content, whatever the verb.
func (v Verifier) Format(f fmt.State, _ rune) { fmt.Fprint(f, "SCRAM-SHA-256 verifier") }

// LogValue logs v as a description, never its content.
func (v Verifier) LogValue() slog.Value { return slog.StringValue("SCRAM-SHA-256 verifier") }

// ServerSignature is HMAC(ServerKey, AuthMessage) (RFC 5802 §3): what a server sends in its final
// message ("v=" and its base64) to prove it holds the verifier.
func (v Verifier) ServerSignature(authMessage string) [KeyLen]byte {
	return hmacSHA256(v.ServerKey[:], authMessage)
}

// RecoverClientKey checks a client's proof against v and returns the client's ClientKey (RFC 5802
// §3: ClientSignature = HMAC(StoredKey, AuthMessage); ClientKey = ClientProof XOR
// ClientSignature; the proof is right when H(ClientKey) = StoredKey, compared in constant time).
// authMessage is client-first-message-bare + "," + server-first-message + "," +
// client-final-message-without-proof; proof is the decoded "p=" attribute. ok is false for a
// wrong proof, which includes one that is not 32 bytes long.
func (v Verifier) RecoverClientKey(authMessage string, proof []byte) (clientKey [KeyLen]byte, ok bool) {
	if len(proof) != KeyLen {
		return clientKey, false
	}
	sig := hmacSHA256(v.StoredKey[:], authMessage)
	subtle.XORBytes(clientKey[:], proof, sig[:])
	stored := sha256.Sum256(clientKey[:])
	if subtle.ConstantTimeCompare(stored[:], v.StoredKey[:]) != 1 {
		return [KeyLen]byte{}, false
	}
	return clientKey, true
}

// ClientKeys are what SCRAM pass-through needs to log in to a server as a user without the
// password: the ClientKey a client proved it holds (Verifier.RecoverClientKey) and the verifier
// it was checked against. A server whose role has this same verifier accepts a proof made from
// them. pgtide keeps them in memory only. They print and log as a description only.
type ClientKeys struct {
	Verifier  Verifier
	ClientKey [KeyLen]byte
}

// Proof is ClientKey XOR HMAC(StoredKey, AuthMessage) (RFC 5802 §3): the client's proof for
// authMessage.
func (k ClientKeys) Proof(authMessage string) [KeyLen]byte {
	var p [KeyLen]byte
	sig := hmacSHA256(k.Verifier.StoredKey[:], authMessage)
	subtle.XORBytes(p[:], k.ClientKey[:], sig[:])
	return p
}

// Format prints k as a description, never its content, whatever the verb.
func (k ClientKeys) Format(f fmt.State, _ rune) { fmt.Fprint(f, "SCRAM-SHA-256 client keys") }

// LogValue logs k as a description, never its content.
func (k ClientKeys) LogValue() slog.Value { return slog.StringValue("SCRAM-SHA-256 client keys") }

func hmacSHA256(key []byte, msg string) [KeyLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	var out [KeyLen]byte
	m.Sum(out[:0])
	return out
}
