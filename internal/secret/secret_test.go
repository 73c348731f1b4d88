package secret

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// The example exchange of RFC 7677 §3 (user "user", password "pencil").
const (
	rfcSalt        = "W22ZaJ0SNY7soEsUEjb6gQ=="
	rfcClientBare  = "n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcFinalNoPf   = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcProof       = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerSig   = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func rfcVerifier(t *testing.T) Verifier {
	t.Helper()
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	return NewVerifier("pencil", salt, 4096)
}

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC7677: the keys arithmetic reproduces the RFC's proof and server signature, and the
// ClientKey recovered from the proof makes the same proof again.
func TestRFC7677(t *testing.T) {
	v := rfcVerifier(t)
	authMessage := rfcClientBare + "," + rfcServerFirst + "," + rfcFinalNoPf
	ck, ok := v.RecoverClientKey(authMessage, b64(t, rfcProof))
	if !ok {
		t.Fatal("the RFC's proof was refused")
	}
	keys := ClientKeys{Verifier: v, ClientKey: ck}
	if p := keys.Proof(authMessage); base64.StdEncoding.EncodeToString(p[:]) != rfcProof {
		t.Fatalf("proof %x", p)
	}
	if s := v.ServerSignature(authMessage); base64.StdEncoding.EncodeToString(s[:]) != rfcServerSig {
		t.Fatalf("server signature %x", s)
	}
	// A proof of another exchange, or a flipped bit, is refused.
	bad := b64(t, rfcProof)
	bad[0] ^= 1
	if _, ok := v.RecoverClientKey(authMessage, bad); ok {
		t.Fatal("a wrong proof was accepted")
	}
	if _, ok := v.RecoverClientKey(authMessage+"x", b64(t, rfcProof)); ok {
		t.Fatal("a proof for another message was accepted")
	}
	if _, ok := v.RecoverClientKey(authMessage, b64(t, rfcProof)[:31]); ok {
		t.Fatal("a short proof was accepted")
	}
}

func TestParse(t *testing.T) {
	v := rfcVerifier(t)
	good := v.Encode()
	if want := "SCRAM-SHA-256$4096:" + rfcSalt + "$"; !strings.HasPrefix(good, want) {
		t.Fatalf("Encode: %q", good)
	}
	for _, tc := range []struct {
		name, text string
		kind       Kind
		err        string // part of the error, "" for none
	}{
		{"plaintext", "pencil", Plaintext, ""},
		{"empty", "", Plaintext, ""},
		{"md5", MD5Hash("app", "pencil"), MD5, ""},
		{"md5 upper-case hex is plaintext, as in PostgreSQL", strings.ToUpper(MD5Hash("app", "pencil")), Plaintext, ""},
		{"md5 prefix, short", "md5abc", Plaintext, ""},
		{"md5 with a non-hex digit", "md5" + strings.Repeat("g", 32), Plaintext, ""},
		{"verifier", good, SCRAM, ""},
		{"verifier of another mechanism", "SCRAM-SHA-1$4096:c2FsdA==$a:b", Plaintext, ""},
		{"no keys part", "SCRAM-SHA-256$4096:" + rfcSalt, Plaintext, `no "$"`},
		{"no salt", "SCRAM-SHA-256$4096$a:b", Plaintext, `no ":" between the iteration`},
		{"one key", strings.Replace(good, ":"+base64.StdEncoding.EncodeToString(v.ServerKey[:]), "", 1), Plaintext, `no ":" between StoredKey`},
		{"zero iterations", strings.Replace(good, "$4096:", "$0:", 1), Plaintext, "iteration count"},
		{"negative iterations", strings.Replace(good, "$4096:", "$-1:", 1), Plaintext, "iteration count"},
		{"huge iterations", strings.Replace(good, "$4096:", "$99999999999:", 1), Plaintext, "iteration count"},
		{"iterations not a number", strings.Replace(good, "$4096:", "$40x6:", 1), Plaintext, "iteration count"},
		{"empty salt", strings.Replace(good, rfcSalt, "", 1), Plaintext, "salt"},
		{"salt not base64", strings.Replace(good, rfcSalt, "!!!!", 1), Plaintext, "salt"},
		{"short StoredKey", strings.Replace(good, "$"+base64.StdEncoding.EncodeToString(v.StoredKey[:]), "$"+base64.StdEncoding.EncodeToString(v.StoredKey[:31]), 1), Plaintext, "StoredKey"},
		{"ServerKey not base64", good[:len(good)-3] + "*==", Plaintext, "ServerKey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(tc.text)
			if tc.err != "" {
				if !errors.Is(err, ErrVerifier) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error about %q", err, tc.err)
				}
				if strings.Contains(err.Error(), tc.text) || strings.Contains(err.Error(), rfcSalt) {
					t.Fatalf("the error quotes the secret: %v", err)
				}
				return
			}
			if err != nil || s.Kind != tc.kind || s.Text != tc.text {
				t.Fatalf("got %v (%d), %v; want %v", s, s.Kind, err, tc.kind)
			}
			if (s.Plaintext() == tc.text) != (tc.kind == Plaintext) && tc.text != "" {
				t.Fatalf("Plaintext() of %v", tc.kind)
			}
			if tc.kind == SCRAM && !s.Verifier.Equal(v) {
				t.Fatal("parsed verifier differs from the encoded one")
			}
		})
	}
}

// TestMD5: the hash answers the challenge exactly as the password does (PostgreSQL's docs:
// "md5" + md5(md5(password + user) + salt)).
func TestMD5(t *testing.T) {
	if h := MD5Hash("app", "pencil"); h != "md506d701b4dd9f7cbb00816251a451b978" { // python3 hashlib
		t.Fatalf("hash %q", h)
	}
	// Computed independently: "md5" + md5(hex(md5("pencil" + "app")) + salt).
	const want = "md54bfca4ca571b8df74c2fc2247888d96f"
	if got := MD5Response(MD5Hash("app", "pencil"), [4]byte{1, 2, 3, 4}); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestNoLeak: a Secret, Verifier or ClientKeys printed with any verb, or logged, shows no byte
// of its content.
func TestNoLeak(t *testing.T) {
	v := rfcVerifier(t)
	s, err := Parse(v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	keys := ClientKeys{Verifier: v, ClientKey: [KeyLen]byte{1, 2, 3}}
	plain, _ := Parse("pencil")
	var b strings.Builder
	log := slog.New(slog.NewJSONHandler(&b, nil))
	for _, x := range []any{s, v, keys, plain, &s, &keys} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
			fmt.Fprintf(&b, verb+"\n", x)
		}
		log.Info("x", "secret", x)
		slog.New(slog.NewTextHandler(&b, nil)).Info("x", "secret", x)
	}
	out := b.String()
	for _, leak := range []string{"pencil", rfcSalt, base64.StdEncoding.EncodeToString(v.StoredKey[:]),
		base64.StdEncoding.EncodeToString(v.ServerKey[:]), fmt.Sprintf("%x", v.StoredKey[:4]), "[1 2 3", "4096"} {
		if strings.Contains(out, leak) {
			t.Fatalf("%q leaked:\n%s", leak, out)
		}
	}
}

// TestKeyClient plays the server's side with the RFC's verifier: a good exchange, then each way
// the server's messages can be wrong.
func TestKeyClient(t *testing.T) {
	v := rfcVerifier(t)
	salt := base64.StdEncoding.EncodeToString(v.Salt)
	keys := ClientKeys{Verifier: v}
	keys.ClientKey, _ = v.RecoverClientKey(rfcClientBare+","+rfcServerFirst+","+rfcFinalNoPf, b64(t, rfcProof))

	c := NewKeyClient(keys)
	first := c.First()
	bare, ok := strings.CutPrefix(first, "n,,")
	if !ok || !strings.HasPrefix(bare, "n=,r=") {
		t.Fatalf("client-first %q", first)
	}
	nonce := strings.TrimPrefix(bare, "n=,r=") + "srv"
	serverFirst := "r=" + nonce + ",s=" + salt + ",i=4096"
	final, err := c.Final(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	withoutProof, proof64, ok := strings.Cut(final, ",p=")
	if !ok || withoutProof != "c=biws,r="+nonce {
		t.Fatalf("client-final %q", final)
	}
	authMessage := bare + "," + serverFirst + "," + withoutProof
	if _, ok := v.RecoverClientKey(authMessage, b64(t, proof64)); !ok {
		t.Fatal("the server side refuses the pass-through proof")
	}
	sig := v.ServerSignature(authMessage)
	if err := c.Verify("v=" + base64.StdEncoding.EncodeToString(sig[:])); err != nil {
		t.Fatal(err)
	}
	sig[0] ^= 1
	if err := c.Verify("v=" + base64.StdEncoding.EncodeToString(sig[:])); !errors.Is(err, ErrServerSignature) {
		t.Fatalf("wrong signature: %v", err)
	}
	if err := c.Verify("e=invalid-proof"); !errors.Is(err, ErrServerMessage) {
		t.Fatalf("e=: %v", err)
	}

	for name, tc := range map[string]struct {
		serverFirst string
		want        error
	}{
		"other salt":        {"r=" + nonce + ",s=c2FsdA==,i=4096", ErrSaltMismatch},
		"other iterations":  {"r=" + nonce + ",s=" + salt + ",i=8192", ErrSaltMismatch},
		"nonce not ours":    {"r=xyz,s=" + salt + ",i=4096", ErrServerMessage},
		"nonce not longer":  {"r=" + strings.TrimSuffix(nonce, "srv") + ",s=" + salt + ",i=4096", ErrServerMessage},
		"missing attribute": {"r=" + nonce + ",s=" + salt, ErrServerMessage},
		"bad salt":          {"r=" + nonce + ",s=***,i=4096", ErrServerMessage},
		"bad iterations":    {"r=" + nonce + ",s=" + salt + ",i=x", ErrServerMessage},
		"extension first":   {"m=x,r=" + nonce + ",s=" + salt + ",i=4096", ErrServerMessage},
	} {
		c := NewKeyClient(keys)
		nonce := strings.TrimPrefix(c.First(), "n,,n=,r=")
		sf := strings.ReplaceAll(tc.serverFirst, strings.TrimPrefix(bare, "n=,r="), nonce)
		if _, err := c.Final(sf); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if err := NewKeyClient(keys).Verify("v=abc"); !errors.Is(err, ErrServerMessage) {
		t.Errorf("Verify before Final: %v", err)
	}
}

// TestPostgresVerifier: a verifier PostgreSQL 15 made (pg_authid.rolpassword of a role with the
// password "scram pencil") parses, and NewVerifier derives the same keys from the password.
func TestPostgresVerifier(t *testing.T) {
	const pg = "SCRAM-SHA-256$4096:MPGmQK2/nOYGGvgMsQoKmg==$DXfipsU0+8uUT48mxK/kEUB63ZuibzgxEW9hDDNu6/w=:lR/scUU8OzBpYthogMMs+eMz81APKKjjct7af4VIW3c="
	v, err := ParseVerifier(pg)
	if err != nil {
		t.Fatal(err)
	}
	if !NewVerifier("scram pencil", v.Salt, v.Iterations).Equal(v) || v.Encode() != pg {
		t.Fatal("NewVerifier does not derive PostgreSQL's keys")
	}
}
