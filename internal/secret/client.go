package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors of a KeyClient exchange. ErrSaltMismatch is the one operators meet: the server's role
// has another verifier than the users file's.
var (
	// ErrSaltMismatch: the server's salt or iteration count differs from the verifier the keys
	// were checked against, so the server holds another verifier (the role's password was set
	// again on the server, or the users file has another role's or another server's verifier)
	// and no proof made from the keys can satisfy it.
	ErrSaltMismatch = errors.New("the server's SCRAM salt or iteration count for the role differs from the users file's verifier")
	// ErrServerSignature: the server's final message does not prove it holds the verifier.
	ErrServerSignature = errors.New("the server's SCRAM signature does not match the users file's verifier")
	// ErrServerMessage: the server sent a SCRAM message that does not parse, or an error ("e=").
	ErrServerMessage = errors.New("malformed or failed SCRAM message from the server")
)

// KeyClient is the client side of one SCRAM-SHA-256 exchange (RFC 5802 §5, PostgreSQL's variant:
// no channel binding, empty user name) run from ClientKeys instead of a password. Call First,
// then Final with the server's first message, then Verify with its final message. A KeyClient
// serves one exchange and one goroutine.
type KeyClient struct {
	keys        ClientKeys
	bare        string // client-first-message-bare
	authMessage string // set by Final
}

// clientNonceLen is the raw length of the client nonce, as libpq's SCRAM_RAW_NONCE_LEN.
const clientNonceLen = 18

// NewKeyClient starts an exchange for keys with a fresh random nonce.
func NewKeyClient(keys ClientKeys) *KeyClient {
	var n [clientNonceLen]byte
	rand.Read(n[:])
	return &KeyClient{keys: keys, bare: "n=,r=" + base64.StdEncoding.EncodeToString(n[:])}
}

// First returns the client-first-message: gs2 header "n,," (no channel binding) and the bare
// part with an empty user name, which PostgreSQL ignores in favour of the startup's.
func (c *KeyClient) First() string { return "n,," + c.bare }

// Final reads the server-first-message ("r=<nonce>,s=<salt>,i=<iterations>") and returns the
// client-final-message with the proof. It returns ErrSaltMismatch when the server's salt or
// iteration count are not the verifier's (no proof could succeed; the caller should not send one),
// and an error wrapping ErrServerMessage when the message is malformed or the server's nonce does
// not extend the client's.
func (c *KeyClient) Final(serverFirst string) (string, error) {
	fields := strings.Split(serverFirst, ",")
	if len(fields) < 3 {
		return "", fmt.Errorf("%w: server-first-message has %d attributes, want 3", ErrServerMessage, len(fields))
	}
	nonce, ok1 := strings.CutPrefix(fields[0], "r=")
	salt64, ok2 := strings.CutPrefix(fields[1], "s=")
	iters, ok3 := strings.CutPrefix(fields[2], "i=")
	if !ok1 || !ok2 || !ok3 {
		return "", fmt.Errorf("%w: server-first-message lacks r=, s= or i=", ErrServerMessage)
	}
	if clientNonce := c.bare[len("n=,r="):]; !strings.HasPrefix(nonce, clientNonce) || len(nonce) == len(clientNonce) {
		return "", fmt.Errorf("%w: the server's nonce does not extend the client's", ErrServerMessage)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return "", fmt.Errorf("%w: the salt is not base64", ErrServerMessage)
	}
	n, err := strconv.Atoi(iters)
	if err != nil {
		return "", fmt.Errorf("%w: the iteration count is not a number", ErrServerMessage)
	}
	if n != c.keys.Verifier.Iterations || !hmac.Equal(salt, c.keys.Verifier.Salt) {
		return "", ErrSaltMismatch
	}
	withoutProof := "c=biws,r=" + nonce // biws is base64("n,,")
	c.authMessage = c.bare + "," + serverFirst + "," + withoutProof
	proof := c.keys.Proof(c.authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof[:]), nil
}

// Verify checks the server-final-message ("v=<ServerSignature>"): nil when the server proved it
// holds the verifier, ErrServerSignature when its signature is another, an error wrapping
// ErrServerMessage for "e=" or a malformed message.
func (c *KeyClient) Verify(serverFinal string) error {
	if c.authMessage == "" {
		return fmt.Errorf("%w: server-final-message before server-first-message", ErrServerMessage)
	}
	attr, _, _ := strings.Cut(serverFinal, ",")
	if e, ok := strings.CutPrefix(attr, "e="); ok {
		return fmt.Errorf("%w: the server says %q", ErrServerMessage, e)
	}
	v64, ok := strings.CutPrefix(attr, "v=")
	if !ok {
		return fmt.Errorf("%w: server-final-message has no v=", ErrServerMessage)
	}
	got, err := base64.StdEncoding.DecodeString(v64)
	if err != nil {
		return fmt.Errorf("%w: the server signature is not base64", ErrServerMessage)
	}
	want := c.keys.Verifier.ServerSignature(c.authMessage)
	if !hmac.Equal(got, want[:]) {
		return ErrServerSignature
	}
	return nil
}
