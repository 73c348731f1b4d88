package pool

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"pgtide/internal/secret"
)

// clientKeys derives the pass-through keys of password for v (RFC 5802 §3: ClientKey =
// HMAC(Hi(password, salt, i), "Client Key")), as a client's login would prove them.
func clientKeys(t *testing.T, password string, v secret.Verifier) secret.ClientKeys {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, password, v.Salt, v.Iterations, secret.KeyLen)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, salted)
	m.Write([]byte("Client Key"))
	k := secret.ClientKeys{Verifier: v}
	copy(k.ClientKey[:], m.Sum(nil))
	if sha256.Sum256(k.ClientKey[:]) != v.StoredKey {
		t.Fatal("H(ClientKey) != StoredKey")
	}
	return k
}

// scriptedServer plays PostgreSQL's side of a login on the far end of a pipe: after the startup it
// runs auth, which returns the error to send the client (nil: log it in).
type scriptedServer func(be *pgproto3.Backend) *pgproto3.ErrorResponse

// dialScripted dials through a pipe to srv and returns Dial's result and what srv saw go wrong.
func dialScripted(t *testing.T, s *PassThrough, srv scriptedServer) (*Conn, error) {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		server.SetDeadline(time.Now().Add(10 * time.Second))
		be := pgproto3.NewBackend(server, server)
		if _, err := be.ReceiveStartupMessage(); err != nil {
			return
		}
		if e := srv(be); e != nil {
			be.Send(e)
			be.Flush()
			return
		}
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
	}()
	c, err := Dial(context.Background(), Key{Node: "pipe", Database: "db", User: "u"}, DialOptions{
		ConnectTimeout: 10 * time.Second,
		MaxMessageSize: 1 << 20,
		Dial:           func(context.Context, string, string) (net.Conn, error) { return client, nil },
		PassThrough:    s,
	})
	if c != nil {
		c.netConn.Close()
	}
	client.Close()
	<-done
	return c, err
}

var refused = &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "u"`}

// scramServer checks a SCRAM exchange against v, as PostgreSQL with the role's verifier v would.
// tamper, if set, changes the server-final-message.
func scramServer(t *testing.T, v secret.Verifier, tamper func(string) string) scriptedServer {
	return func(be *pgproto3.Backend) *pgproto3.ErrorResponse {
		srv, _ := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return v.StoredCredentials(), nil })
		conv := srv.NewConversation()
		be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
		be.Flush()
		be.SetAuthType(pgproto3.AuthTypeSASL)
		msg, err := be.Receive()
		if err != nil {
			return nil // the client hung up: nothing to answer
		}
		init, ok := msg.(*pgproto3.SASLInitialResponse)
		if !ok || init.AuthMechanism != "SCRAM-SHA-256" {
			t.Errorf("got %#v", msg)
			return refused
		}
		first, err := conv.Step(string(init.Data))
		if err != nil {
			t.Errorf("client-first: %v", err)
			return refused
		}
		be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(first)})
		be.Flush()
		be.SetAuthType(pgproto3.AuthTypeSASLContinue)
		if msg, err = be.Receive(); err != nil {
			return nil
		}
		final, err := conv.Step(string(msg.(*pgproto3.SASLResponse).Data))
		if err != nil || !conv.Valid() {
			return refused
		}
		if tamper != nil {
			final = tamper(final)
		}
		be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
		return nil
	}
}

// md5Server checks an md5 exchange against the role's hash, as PostgreSQL would.
func md5Server(hash string) scriptedServer {
	return func(be *pgproto3.Backend) *pgproto3.ErrorResponse {
		salt := [4]byte{9, 8, 7, 6}
		be.Send(&pgproto3.AuthenticationMD5Password{Salt: salt})
		be.Flush()
		be.SetAuthType(pgproto3.AuthTypeMD5Password)
		msg, err := be.Receive()
		if err != nil {
			return nil
		}
		if msg.(*pgproto3.PasswordMessage).Password != secret.MD5Response(hash, salt) {
			return refused
		}
		return nil
	}
}

func cleartextServer(be *pgproto3.Backend) *pgproto3.ErrorResponse {
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	be.Flush()
	be.Receive()
	return refused
}

// TestPassThrough: pgtide logs in to a server from the users file's md5 hash or from the keys a
// client's SCRAM login proved, and every way it cannot is a SecretError that says why, without a
// secret in it.
func TestPassThrough(t *testing.T) {
	v := secret.NewVerifier("pencil", []byte("0123456789abcdef"), 4096)
	keys := clientKeys(t, "pencil", v)
	resalted := secret.NewVerifier("pencil", []byte("another salt"), 4096)
	samesaltOtherPassword := secret.NewVerifier("crayon", v.Salt, 4096)
	hash := secret.MD5Hash("u", "pencil")
	scramSecret := &PassThrough{Kind: secret.SCRAM, Keys: keys, HaveKeys: true}
	md5Secret := &PassThrough{Kind: secret.MD5, MD5: hash}
	for _, tc := range []struct {
		name    string
		secret  *PassThrough
		server  scriptedServer
		reason  string // part of the SecretError's reason; "" for success
		refused bool   // the SecretError carries the server's 28P01
	}{
		{"scram", scramSecret, scramServer(t, v, nil), "", false},
		{"md5", md5Secret, md5Server(hash), "", false},
		{"scram, another salt on the server", scramSecret, scramServer(t, resalted, nil), "salt or iteration count", false},
		{"scram, same salt, another password", scramSecret, scramServer(t, samesaltOtherPassword, nil), "refused the proof", true},
		{"scram, no client yet", &PassThrough{Kind: secret.SCRAM}, scramServer(t, v, nil), "no client of this user has logged in", false},
		{"scram, server signature forged", scramSecret, scramServer(t, v, func(s string) string { return "v=" + strings.Repeat("A", 43) + "=" }), "signature", false},
		{"md5 hash, scram server", md5Secret, scramServer(t, v, nil), "md5 hash cannot answer", false},
		{"verifier, md5 server", scramSecret, md5Server(hash), "SCRAM verifier cannot answer", false},
		{"cleartext server", scramSecret, cleartextServer, "plaintext password", false},
		{"md5, wrong hash on the server", md5Secret, md5Server(secret.MD5Hash("u", "crayon")), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialScripted(t, tc.secret, tc.server)
			if tc.name == "md5, wrong hash on the server" {
				// The hash is sent, as the password would be; the server's refusal is its own.
				var se *ServerError
				if !errors.As(err, &se) || se.Code != "28P01" {
					t.Fatalf("got %v", err)
				}
				return
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var sec *SecretError
			if !errors.As(err, &sec) || !strings.Contains(sec.Reason, tc.reason) || sec.User != "u" {
				t.Fatalf("got %v, want a SecretError about %q", err, tc.reason)
			}
			var se *ServerError
			if errors.As(err, &se) != tc.refused {
				t.Fatalf("carries the server's refusal: %v, want %v", se, tc.refused)
			}
			for _, s := range []string{"pencil", hash, v.Encode()[20:40]} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("the error shows a secret: %v", err)
				}
			}
		})
	}
}
