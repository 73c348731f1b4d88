package secret

import (
	"fmt"
	"log/slog"
	"strings"
)

// Kind is the form of a users-file password.
type Kind uint8

const (
	// Plaintext is the password itself.
	Plaintext Kind = iota
	// MD5 is PostgreSQL's md5 hash: "md5" followed by the 32 lower-case hex digits of
	// md5(password + user name).
	MD5
	// SCRAM is PostgreSQL's SCRAM-SHA-256 verifier:
	// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", base64 for the last three.
	SCRAM
)

func (k Kind) String() string {
	switch k {
	case MD5:
		return "an md5 hash"
	case SCRAM:
		return "a SCRAM-SHA-256 verifier"
	}
	return "a plaintext password"
}

// Secret is a users-file password in its parsed form. The zero value is an empty plaintext
// password (none). It prints and logs as its Kind only.
type Secret struct {
	Kind Kind
	// Text is the password as the users file gives it: the plaintext, the md5 hash or the
	// verifier.
	Text string
	// Verifier is Text parsed when Kind is SCRAM.
	Verifier Verifier
}

// Parse recognises the form of a users-file password by its prefix, as PostgreSQL's
// get_password_type does for rolpassword: "md5" and 32 lower-case hex digits is an md5 hash,
// "SCRAM-SHA-256$" starts a verifier, anything else is plaintext. Unlike PostgreSQL, which takes
// a malformed verifier for a plaintext password, Parse refuses one (an operator who pasted half a
// verifier would otherwise find clients asked to type it): the error says what is wrong without
// quoting the text.
func Parse(password string) (Secret, error) {
	switch {
	case isMD5Hash(password):
		return Secret{Kind: MD5, Text: password}, nil
	case strings.HasPrefix(password, verifierPrefix):
		v, err := ParseVerifier(password)
		if err != nil {
			return Secret{}, err
		}
		return Secret{Kind: SCRAM, Text: password, Verifier: v}, nil
	}
	return Secret{Kind: Plaintext, Text: password}, nil
}

// Plaintext returns the password when s is one, "" for a hash or a verifier.
func (s Secret) Plaintext() string {
	if s.Kind != Plaintext {
		return ""
	}
	return s.Text
}

// Format prints s as its kind, never its content, whatever the verb.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.Kind.String()) }

// LogValue logs s as its kind, never its content.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.Kind.String()) }

// isMD5Hash is PostgreSQL's test for an md5 hash in rolpassword: "md5" and 32 characters of
// "0123456789abcdef".
func isMD5Hash(p string) bool {
	return len(p) == 35 && strings.HasPrefix(p, "md5") && strings.Trim(p[3:], "0123456789abcdef") == ""
}
