package auth

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"strings"
	"testing"

	"github.com/xdg-go/scram"

	"pgtide/internal/config"
	"pgtide/internal/secret"
)

// A users file with each form of secret, all of the password "pencil".
var (
	pencilVerifier = secret.NewVerifier("pencil", []byte("0123456789abcdef"), 4096)
	hashedUsers    = config.Users{
		"plain":  {Name: "plain", Password: "pencil"},
		"hashed": {Name: "hashed", Password: secret.MD5Hash("hashed", "pencil")},
		"scram":  {Name: "scram", Password: pencilVerifier.Encode()},
	}
)

// scramClient answers a SCRAM exchange with password through conv, picking mech. It checks that
// the server offered want (the mechanisms list of AuthenticationSASL).
func scramClient(t *testing.T, conv *scram.ClientConversation, mech, want string) func([]byte) (byte, []byte, error) {
	return func(msg []byte) (byte, []byte, error) {
		code, data := authCode(t, msg)
		switch code {
		case 10:
			if string(data) != want {
				t.Fatalf("mechanisms %q, want %q", data, want)
			}
			first, err := conv.Step("")
			if err != nil {
				t.Fatal(err)
			}
			return 'p', saslInitial(mech, first), nil
		case 11:
			final, err := conv.Step(string(data))
			if err != nil {
				t.Fatal(err)
			}
			return 'p', []byte(final), nil
		}
		t.Fatalf("unexpected code %d", code)
		return 0, nil, nil
	}
}

func saslInitial(mech, data string) []byte {
	body := append([]byte(mech+"\x00"), binary.BigEndian.AppendUint32(nil, uint32(len(data)))...)
	return append(body, data...)
}

func newConv(t *testing.T, password string) *scram.ClientConversation {
	t.Helper()
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		t.Fatal(err)
	}
	return c.NewConversation()
}

// md5Client answers an md5 exchange with password.
func md5Client(t *testing.T, user, password string) func([]byte) (byte, []byte, error) {
	return func(msg []byte) (byte, []byte, error) {
		code, salt := authCode(t, msg)
		if code != 5 {
			t.Fatalf("code %d, want 5 (MD5Password)", code)
		}
		return 'p', append([]byte(MD5Response(user, password, [4]byte(salt))), 0), nil
	}
}

// TestHashedSecrets: each stored form against each method, as PostgreSQL decides: md5 takes a
// plaintext password or an md5 hash and turns into SCRAM for a verifier; scram-sha-256 takes a
// plaintext password or a verifier and refuses an md5 hash with 28P01 and a warning in the log.
func TestHashedSecrets(t *testing.T) {
	for _, tc := range []struct {
		method, user, password string
		scram                  bool // the client is asked for SCRAM
		ok                     bool
	}{
		{config.AuthMD5, "plain", "pencil", false, true},
		{config.AuthMD5, "hashed", "pencil", false, true},
		{config.AuthMD5, "hashed", "wrong", false, false},
		{config.AuthMD5, "scram", "pencil", true, true}, // upgraded to SCRAM
		{config.AuthMD5, "scram", "wrong", true, false},
		{config.AuthSCRAM, "plain", "pencil", true, true},
		{config.AuthSCRAM, "scram", "pencil", true, true},
		{config.AuthSCRAM, "scram", "wrong", true, false},
		{config.AuthSCRAM, "hashed", "pencil", true, false}, // an md5 hash cannot serve SCRAM
	} {
		t.Run(tc.method+"/"+tc.user+"/"+tc.password, func(t *testing.T) {
			var logged bytes.Buffer
			a := NewAuthenticator()
			a.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			c := &scriptedClient{reply: md5Client(t, tc.user, tc.password)}
			if tc.scram {
				c.reply = scramClient(t, newConv(t, tc.password), mechSCRAM, mechSCRAM+"\x00\x00")
			}
			err := a.Authenticate(c, tc.method, tc.user, hashedUsers)
			checkResult(t, err, tc.ok, tc.user)
			warned := strings.Contains(logged.String(), "cannot serve SCRAM")
			if want := tc.user == "hashed" && tc.method == config.AuthSCRAM; warned != want {
				t.Fatalf("warning logged: %v, want %v: %s", warned, want, logged.String())
			}
			for _, s := range []string{"pencil", hashedUsers["hashed"].Password, hashedUsers["scram"].Password} {
				if strings.Contains(logged.String(), s) || (err != nil && strings.Contains(err.Error(), s)) {
					t.Fatalf("a secret shows in the log or the error: %s %v", logged.String(), err)
				}
			}
		})
	}
}

// TestPassThroughKeys: a SCRAM login against a verifier leaves keys that log in to a server with
// the same verifier (xdg-go/scram's server plays it), and only for that verifier; a failed login
// and a plaintext entry leave none.
func TestPassThroughKeys(t *testing.T) {
	a := NewAuthenticator()
	if _, ok := a.PassThroughKeys("scram", pencilVerifier); ok {
		t.Fatal("keys before any login")
	}
	login := func(user, password string) error {
		c := &scriptedClient{reply: scramClient(t, newConv(t, password), mechSCRAM, mechSCRAM+"\x00\x00")}
		return a.Authenticate(c, config.AuthSCRAM, user, hashedUsers)
	}
	if err := login("scram", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	if _, ok := a.PassThroughKeys("scram", pencilVerifier); ok {
		t.Fatal("keys after a failed login")
	}
	if err := login("plain", "pencil"); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.PassThroughKeys("plain", pencilVerifier); ok {
		t.Fatal("keys from a plaintext entry")
	}
	if err := login("scram", "pencil"); err != nil {
		t.Fatal(err)
	}
	keys, ok := a.PassThroughKeys("scram", pencilVerifier)
	if !ok {
		t.Fatal("no keys after a good login")
	}
	if _, ok := a.PassThroughKeys("scram", secret.NewVerifier("pencil", []byte("another salt"), 4096)); ok {
		t.Fatal("keys handed out for another verifier")
	}

	// A server holding the verifier accepts an exchange run from the keys alone.
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		return pencilVerifier.StoredCredentials(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sconv := srv.NewConversation()
	kc := secret.NewKeyClient(keys)
	serverFirst, err := sconv.Step(kc.First())
	if err != nil {
		t.Fatal(err)
	}
	final, err := kc.Final(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	serverFinal, err := sconv.Step(final)
	if err != nil || !sconv.Valid() {
		t.Fatalf("the server refused the pass-through proof: %v", err)
	}
	if err := kc.Verify(serverFinal); err != nil {
		t.Fatal(err)
	}
}
