package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/xdg-go/scram"

	"pgtide/internal/secret"
	"pgtide/internal/wire"
)

// SASL mechanism names (PostgreSQL docs, 53.3 "SASL Authentication").
const (
	mechSCRAM     = "SCRAM-SHA-256"
	mechSCRAMPlus = "SCRAM-SHA-256-PLUS"
)

// scram runs a SCRAM-SHA-256 exchange (RFC 5802, RFC 7677, PostgreSQL's variant: the user name
// in the exchange is ignored), with SCRAM-SHA-256-PLUS offered first when ex is TLS. sec is the
// users file's plaintext password or verifier; an unknown user (known false) runs against
// made-up keys and fails at the end, as in PostgreSQL, so that the exchange reveals nothing. A
// successful login against a verifier leaves its ClientKey for pass-through.
func (a *Authenticator) scram(ex Exchange, user string, sec secret.Secret, known bool) error {
	cb := channelBinding(ex)
	mechs := mechSCRAM + "\x00\x00"
	if cb != nil {
		mechs = mechSCRAMPlus + "\x00" + mechs
	}
	msg := wire.AppendHeader(nil, 'R', 4+len(mechs))
	msg = binary.BigEndian.AppendUint32(msg, 10) // AuthenticationSASL
	msg = append(msg, mechs...)
	if err := ex.Send(msg); err != nil {
		return err
	}
	body, err := receivePassword(ex)
	if err != nil {
		return err
	}
	mech, data, err := parseSASLInitial(body)
	if err != nil {
		return err
	}
	plus := mech == mechSCRAMPlus && cb != nil
	if mech != mechSCRAM && !plus {
		return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
			Message: "client selected an invalid SASL authentication mechanism"}
	}
	clientFirst := string(data)
	bare, err := checkGS2(clientFirst, plus, cb != nil)
	if err != nil {
		return err
	}

	var creds scram.StoredCredentials
	switch {
	case !known:
		creds = a.mockCredentials(user)
	case sec.Kind == secret.SCRAM:
		creds = sec.Verifier.StoredCredentials()
	default:
		creds = a.storedCredentials(user, sec.Text)
	}
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		return err
	}
	conv := srv.NewConversation()
	if cb != nil {
		// The library checks the c= attribute against the gs2 header plus, for "p", this data;
		// checkGS2 has already applied PostgreSQL's rules to the flags.
		conv = srv.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: cb})
	}
	serverFirst, err := conv.Step(clientFirst)
	if err != nil {
		return malformed("")
	}
	if err := a.sendSASL(ex, 11, serverFirst); err != nil { // AuthenticationSASLContinue
		return err
	}
	finalBody, err := receivePassword(ex)
	if err != nil {
		return err
	}
	clientFinal := string(finalBody)
	serverFinal, err := conv.Step(clientFinal)
	if err != nil {
		// PostgreSQL's order and codes (read_client_final_message, then scram_exchange): the
		// binding first, then the nonce, then the proof.
		switch {
		case serverFinal == scram.ErrChannelBindingsDontMatch:
			return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidAuthorization,
				Message: "SCRAM channel binding check failed"}
		case scramAttr(clientFinal, 'r') != scramAttr(serverFirst, 'r'):
			return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
				Message: "invalid SCRAM response", Detail: "Nonce does not match."}
		}
		return failed(user)
	}
	if !conv.Valid() || !known {
		return failed(user)
	}
	if sec.Kind == secret.SCRAM {
		a.learn(user, sec.Verifier, bare+","+serverFirst+","+clientFinal)
	}
	return a.sendSASL(ex, 12, serverFinal) // AuthenticationSASLFinal
}

func (a *Authenticator) sendSASL(ex Exchange, code uint32, data string) error {
	msg := wire.AppendHeader(nil, 'R', 4+len(data))
	msg = binary.BigEndian.AppendUint32(msg, code)
	return ex.Send(append(msg, data...))
}

// learn keeps the ClientKey of a successful SCRAM exchange against v for pass-through. transcript
// is client-first-message-bare "," server-first-message "," client-final-message, from which the
// proof and the AuthMessage (RFC 5802 §3) come.
func (a *Authenticator) learn(user string, v secret.Verifier, transcript string) {
	i := strings.LastIndex(transcript, ",p=")
	if i < 0 {
		return
	}
	proof, err := base64.StdEncoding.DecodeString(transcript[i+len(",p="):])
	if err != nil {
		return
	}
	key, ok := v.RecoverClientKey(transcript[:i], proof)
	if !ok {
		return // cannot happen after the library accepted the proof
	}
	a.mu.Lock()
	a.keys[user] = secret.ClientKeys{Verifier: v, ClientKey: key}
	a.mu.Unlock()
}

// checkGS2 applies PostgreSQL's rules (read_client_first_message in auth-scram.c) to the gs2
// header of a client-first-message (RFC 5802 §7: gs2-cbind-flag "," [authzid] ","), and returns
// the client-first-message-bare after it. plus: the client selected SCRAM-SHA-256-PLUS; offered:
// pgtide advertised it. The flag must say "p=tls-server-end-point" exactly when plus, and a client
// that says "y" (it supports channel binding but believes the server does not) while PLUS was
// offered is refused as a downgrade (RFC 5802 §6).
func checkGS2(clientFirst string, plus, offered bool) (bare string, err error) {
	flag, rest, ok1 := strings.Cut(clientFirst, ",")
	authzid, bare, ok2 := strings.Cut(rest, ",")
	if !ok1 || !ok2 {
		return "", malformed("")
	}
	switch {
	case flag == "n" || flag == "y":
		if plus {
			return "", malformed("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.")
		}
		if flag == "y" && offered {
			return "", &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidAuthorization,
				Message: "SCRAM channel binding negotiation error",
				Detail:  "The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding."}
		}
	case strings.HasPrefix(flag, "p="):
		if !plus {
			return "", malformed("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
		}
		if t := flag[len("p="):]; t != string(scram.ChannelBindingTLSServerEndpoint) {
			return "", &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
				Message: fmt.Sprintf("unsupported SCRAM channel-binding type %q", printable(t))}
		}
	default:
		return "", malformed(fmt.Sprintf("Unexpected channel-binding flag %q.", printable(flag)))
	}
	if authzid != "" {
		return "", &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeFeatureNotSupported,
			Message: "client uses authorization identity, but it is not supported"}
	}
	return bare, nil
}

// scramAttr returns the value of attribute name in a SCRAM message (RFC 5802 §5: "name=value"
// separated by commas), "" when it is absent.
func scramAttr(msg string, name byte) string {
	for attr := range strings.SplitSeq(msg, ",") {
		if len(attr) >= 2 && attr[0] == name && attr[1] == '=' {
			return attr[2:]
		}
	}
	return ""
}

func malformed(detail string) *wire.Error {
	return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
		Message: "malformed SCRAM message", Detail: detail}
}

// printable bounds client text echoed in an error: at most 32 bytes.
func printable(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// storedCredentials derives (once, then from the cache) the SCRAM keys of a plaintext password,
// with a random salt and PostgreSQL's default iteration count.
func (a *Authenticator) storedCredentials(user, password string) scram.StoredCredentials {
	k := credKey{user, password}
	a.mu.Lock()
	c, ok := a.creds[k]
	a.mu.Unlock()
	if ok {
		return c
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	c = secret.NewVerifier(password, salt, scramIterations).StoredCredentials()
	a.mu.Lock()
	a.creds[k] = c
	a.mu.Unlock()
	return c
}

// mockCredentials are made-up keys for a user who has none (unknown, or an md5 hash), as
// PostgreSQL's mock authentication: the salt depends only on the user name and a per-process key,
// so repeated attempts see the same salt, as for a real user, and nothing matches the keys.
func (a *Authenticator) mockCredentials(user string) scram.StoredCredentials {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, a.mockKey[:])
		m.Write([]byte(label + "\x00" + user))
		return m.Sum(nil)
	}
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(derive("salt")[:16]), Iters: scramIterations},
		StoredKey:  derive("stored"),
		ServerKey:  derive("server"),
	}
}
