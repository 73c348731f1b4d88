package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"pgtide/internal/config"
	"pgtide/internal/wire"
)

// selfSigned makes a self-signed certificate for 127.0.0.1 with key, signed with alg.
func selfSigned(t *testing.T, key crypto.Signer, alg x509.SignatureAlgorithm) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(1),
		Subject:            pkix.Name{CommonName: "pgtide test"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		IPAddresses:        []net.IP{net.IPv4(127, 0, 0, 1)},
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

func ecKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestTLSServerEndPoint: the hash follows the certificate's signature algorithm (RFC 5929 §4.1),
// agrees with xdg-go/scram's client-side computation, and is refused for Ed25519.
func TestTLSServerEndPoint(t *testing.T) {
	_, p256 := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	_, p384 := selfSigned(t, ecKey(t, elliptic.P384()), x509.ECDSAWithSHA384)
	_, p521 := selfSigned(t, ecKey(t, elliptic.P521()), x509.ECDSAWithSHA512)
	for _, tc := range []struct {
		cert *x509.Certificate
		want func([]byte) []byte
	}{
		{p256, func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }},
		{p384, func(b []byte) []byte { h := sha512.Sum384(b); return h[:] }},
		{p521, func(b []byte) []byte { h := sha512.Sum512(b); return h[:] }},
	} {
		got, err := TLSServerEndPoint(tc.cert)
		if err != nil || string(got) != string(tc.want(tc.cert.Raw)) {
			t.Fatalf("%v: %x, %v", tc.cert.SignatureAlgorithm, got, err)
		}
		lib, err := scram.NewTLSServerEndpointBinding(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{tc.cert}})
		if err != nil || string(lib.Data) != string(got) {
			t.Fatalf("%v: xdg-go/scram computes %x", tc.cert.SignatureAlgorithm, lib.Data)
		}
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	_, ed := selfSigned(t, edKey, x509.PureEd25519)
	if _, err := TLSServerEndPoint(ed); err == nil {
		t.Fatal("Ed25519: no error")
	}
	// Such a certificate makes Authenticate offer no PLUS.
	if channelBinding(&tlsScripted{cert: ed}) != nil {
		t.Fatal("binding data for an Ed25519 certificate")
	}
}

// servedConn is a connection whose TLS listener says which certificate it presented.
type servedConn struct {
	net.Conn
	cert *x509.Certificate
}

func (c servedConn) ServerCertificate() *x509.Certificate { return c.cert }

func TestServedCertificate(t *testing.T) {
	_, cert := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if ServedCertificate(a) != nil {
		t.Fatal("a plain connection has a certificate")
	}
	if ServedCertificate(servedConn{a, cert}) != cert {
		t.Fatal("the served certificate is not passed on")
	}
}

// tlsExchange is a TLS client connection as Authenticate sees it, for the test server.
type tlsExchange struct {
	conn net.Conn
	r    *wire.Reader
	cert *x509.Certificate // what ServerCertificate says: the served one, or another to test a mismatch
}

func (e *tlsExchange) Send(msg []byte) error { _, err := e.conn.Write(msg); return err }

func (e *tlsExchange) Receive() (byte, []byte, error) {
	typ, _, err := e.r.Next()
	if err != nil {
		return 0, nil, err
	}
	body, err := e.r.Body()
	return typ, body, err
}

func (e *tlsExchange) ServerCertificate() *x509.Certificate { return e.cert }

// serveTLS accepts one client on ln, answers its SSLRequest and TLS handshake with cert, reads its
// startup with pgproto3 and runs Authenticate on it (ServerCertificate returning claimed), then
// greets it or sends the error. The error is delivered on the returned channel.
func serveTLS(t *testing.T, ln net.Listener, cert tls.Certificate, claimed *x509.Certificate, method string) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			nc, err := ln.Accept()
			if err != nil {
				return err
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(30 * time.Second))
			msg, err := pgproto3.NewBackend(nc, nc).ReceiveStartupMessage()
			if err != nil {
				return err
			}
			if _, ok := msg.(*pgproto3.SSLRequest); !ok {
				return fmt.Errorf("got %T, want SSLRequest", msg)
			}
			if _, err := nc.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
			msg, err = pgproto3.NewBackend(tc, tc).ReceiveStartupMessage()
			if err != nil {
				return err
			}
			sm, ok := msg.(*pgproto3.StartupMessage)
			if !ok {
				return fmt.Errorf("got %T, want StartupMessage", msg)
			}
			ex := &tlsExchange{conn: tc, r: wire.NewReader(wire.NewBufReader(tc, 4096), 1<<16), cert: claimed}
			if err := NewAuthenticator().Authenticate(ex, method, sm.Parameters["user"], hashedUsers); err != nil {
				var we *wire.Error
				if errors.As(err, &we) {
					tc.Write(we.Append(nil))
				}
				return err
			}
			out := binary.BigEndian.AppendUint32(wire.AppendHeader(nil, 'R', 4), 0)
			_, err = tc.Write(wire.AppendReadyForQuery(out, 'I'))
			return err
		}()
	}()
	return done
}

// TestChannelBindingPgconn runs pgx's pgconn, a real client, against Authenticate over TLS:
// channel_binding=require negotiates SCRAM-SHA-256-PLUS, for a plaintext entry and a verifier,
// and with either method; a binding that does not match the certificate the client saw is
// refused as PostgreSQL refuses it; channel_binding=disable still logs in with SCRAM-SHA-256;
// without PLUS offered, a TLS client's "y" is accepted.
func TestChannelBindingPgconn(t *testing.T) {
	cert, leaf := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	_, other := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	for _, tc := range []struct {
		name, method, user, binding string
		claimed                     *x509.Certificate
		want                        string // "" for success, else part of the client's error
	}{
		{"require/verifier", config.AuthSCRAM, "scram", "require", leaf, ""},
		{"require/plaintext", config.AuthSCRAM, "plain", "require", leaf, ""},
		{"require/md5 method upgraded", config.AuthMD5, "scram", "require", leaf, ""},
		{"prefer", config.AuthSCRAM, "scram", "prefer", leaf, ""},
		{"disable", config.AuthSCRAM, "scram", "disable", leaf, ""},
		{"not offered, client says y", config.AuthSCRAM, "scram", "prefer", nil, ""},
		{"not offered, client requires", config.AuthSCRAM, "scram", "require", nil, "channel binding required"},
		{"wrong binding data", config.AuthSCRAM, "scram", "require", other, "SCRAM channel binding check failed (SQLSTATE 28000)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := serveTLS(t, ln, cert, tc.claimed, tc.method)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cs := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=pencil dbname=db sslmode=require channel_binding=%s",
				ln.Addr().(*net.TCPAddr).Port, tc.user, tc.binding)
			conn, err := pgconn.Connect(ctx, cs)
			if err == nil {
				conn.Close(ctx)
			}
			serverErr := <-done
			if tc.want == "" {
				if err != nil || serverErr != nil {
					t.Fatalf("client: %v; server: %v", err, serverErr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("client: %v, want %q (server: %v)", err, tc.want, serverErr)
			}
		})
	}
}

// tlsScripted is a scripted client on a TLS connection.
type tlsScripted struct {
	scriptedClient
	cert *x509.Certificate
}

func (c *tlsScripted) ServerCertificate() *x509.Certificate { return c.cert }

// TestGS2Flags: PostgreSQL's rules for the gs2 header against what was offered and selected,
// with a scripted client sending a fixed client-first-message.
func TestGS2Flags(t *testing.T) {
	_, leaf := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	const nonce = ",n=,r=abcdefghijklmnop"
	for _, tc := range []struct {
		name  string
		tls   bool
		mech  string
		first string
		code  string // the SQLSTATE of the refusal, "" when the exchange must go on
		msg   string
	}{
		{"n without TLS", false, mechSCRAM, "n," + nonce, "", ""},
		{"y without TLS", false, mechSCRAM, "y," + nonce, "", ""},
		{"n over TLS", true, mechSCRAM, "n," + nonce, "", ""},
		{"p with PLUS", true, mechSCRAMPlus, "p=tls-server-end-point," + nonce, "", ""},
		{"y over TLS: downgrade", true, mechSCRAM, "y," + nonce, "28000", "SCRAM channel binding negotiation error"},
		{"PLUS without TLS", false, mechSCRAMPlus, "p=tls-server-end-point," + nonce, "08P01", "client selected an invalid SASL authentication mechanism"},
		{"p without PLUS", true, mechSCRAM, "p=tls-server-end-point," + nonce, "08P01", "malformed SCRAM message"},
		{"PLUS with n", true, mechSCRAMPlus, "n," + nonce, "08P01", "malformed SCRAM message"},
		{"PLUS with y", true, mechSCRAMPlus, "y," + nonce, "08P01", "malformed SCRAM message"},
		{"other binding type", true, mechSCRAMPlus, "p=tls-unique," + nonce, "08P01", `unsupported SCRAM channel-binding type "tls-unique"`},
		{"unknown flag", true, mechSCRAM, "x," + nonce, "08P01", "malformed SCRAM message"},
		{"no gs2 header", true, mechSCRAM, "n", "08P01", "malformed SCRAM message"},
		{"authzid", false, mechSCRAM, "n,a=admin" + nonce, "0A000", "client uses authorization identity, but it is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &tlsScripted{}
			if tc.tls {
				c.cert = leaf
			}
			offered := mechSCRAM + "\x00\x00"
			if tc.tls {
				offered = mechSCRAMPlus + "\x00" + offered
			}
			var continued bool
			c.reply = func(msg []byte) (byte, []byte, error) {
				code, data := authCode(t, msg)
				switch code {
				case 10:
					if string(data) != offered {
						t.Fatalf("offered %q, want %q", data, offered)
					}
					return 'p', saslInitial(tc.mech, tc.first), nil
				case 11:
					continued = true
					return 0, nil, errors.New("stop here")
				}
				t.Fatalf("code %d", code)
				return 0, nil, nil
			}
			var ex Exchange = c
			if !tc.tls {
				ex = &c.scriptedClient // not a TLSExchange at all
			}
			err := NewAuthenticator().Authenticate(ex, config.AuthSCRAM, "scram", hashedUsers)
			if tc.code == "" {
				if !continued {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != tc.code || we.Message != tc.msg {
				t.Fatalf("got %v (%+v), want %s %q", err, we, tc.code, tc.msg)
			}
		})
	}
}

// TestWrongBindingData: a client that selects PLUS with binding data of another certificate is
// refused with PostgreSQL's error, even with the right password.
func TestWrongBindingData(t *testing.T) {
	_, leaf := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	_, other := selfSigned(t, ecKey(t, elliptic.P256()), x509.ECDSAWithSHA256)
	for _, cert := range []*x509.Certificate{leaf, other} {
		data, _ := TLSServerEndPoint(cert)
		client, _ := scram.SHA256.NewClient("", "pencil", "")
		conv := client.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: data})
		c := &tlsScripted{cert: leaf}
		c.reply = scramClient(t, conv, mechSCRAMPlus, mechSCRAMPlus+"\x00"+mechSCRAM+"\x00\x00")
		err := NewAuthenticator().Authenticate(c, config.AuthSCRAM, "scram", hashedUsers)
		if cert == leaf {
			if err != nil {
				t.Fatalf("right binding: %v", err)
			}
			continue
		}
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeInvalidAuthorization || we.Message != "SCRAM channel binding check failed" {
			t.Fatalf("wrong binding: %v", err)
		}
	}
}

// TestWrongNonce: a client-final-message whose nonce is not the server-first-message's is refused
// as PostgreSQL refuses it (08P01 invalid SCRAM response), not as a wrong password, even with
// the right password's proof.
func TestWrongNonce(t *testing.T) {
	client, _ := scram.SHA256.NewClient("", "pencil", "")
	conv := client.NewConversation()
	c := &tlsScripted{}
	script := scramClient(t, conv, mechSCRAM, mechSCRAM+"\x00\x00")
	c.reply = func(msg []byte) (byte, []byte, error) {
		typ, data, err := script(msg)
		if code, _ := authCode(t, msg); code == 11 {
			// The nonce's last character changed: the proof still matches the password.
			final := string(data)
			i := strings.Index(final, ",p=")
			if final[i-1] == 'A' {
				final = final[:i-1] + "B" + final[i:]
			} else {
				final = final[:i-1] + "A" + final[i:]
			}
			data = []byte(final)
		}
		return typ, data, err
	}
	err := NewAuthenticator().Authenticate(&c.scriptedClient, config.AuthSCRAM, "scram", hashedUsers)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeProtocolViolation || we.Message != "invalid SCRAM response" || we.Detail != "Nonce does not match." {
		t.Fatalf("wrong nonce: %v (%+v)", err, we)
	}
}
