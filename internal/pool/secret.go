package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// ServerSecret is what pgtide presents when it logs in to a server as a user.
type ServerSecret struct {
	// Password answers the server's cleartext, md5 or SCRAM request; "" when pgtide has none
	// (the server must then trust the user).
	Password string
	// RequireTLS says Password may be sent only over an encrypted connection: it is a bearer
	// secret (an RDS IAM auth token, package rdsiam). See DialOptions.RequireTLS.
	RequireTLS bool
	// PassThrough answers the server when Password is "" and the users file holds an md5 hash
	// or a SCRAM verifier for the user (passthrough.go); nil otherwise.
	PassThrough *PassThrough
}

// SecretFunc returns the secret for logging user in to node ("host:port"). A Manager calls it
// once per dial, before dialing, bounded by ctx (at most server_connect_timeout); it may block
// (an RDS IAM token being made) and must be safe for concurrent use. Its error fails the dial as
// a *CredentialError. The returned Password is used for that one login and not kept.
type SecretFunc func(ctx context.Context, node, user string) (ServerSecret, error)

// ErrTLSRequired is why a dial refused to log in: the user's secret may go only over TLS
// (DialOptions.RequireTLS) and the server connection is not encrypted.
var ErrTLSRequired = errors.New("the server connection is not encrypted (server_tls), and this user's secret, an RDS IAM auth token, is sent only over TLS")

// CredentialError is a dial that failed before pgtide presented a secret to the server: the
// SecretFunc failed (no RDS IAM auth token could be made), or the secret may go only over TLS
// and the connection is not encrypted (ErrTLSRequired). No secret was sent. Neither a server's
// refusal nor a network failure: trying again does not help until the configuration or the
// environment (AWS credentials) changes. Its text never holds a secret.
type CredentialError struct {
	User string
	Err  error
}

func (e *CredentialError) Error() string {
	return fmt.Sprintf("pgtide cannot log in as user %q: %v", e.User, e.Err)
}

func (e *CredentialError) Unwrap() error { return e.Err }

// isTLS reports whether nc encrypts what is written to it.
func isTLS(nc net.Conn) bool {
	_, ok := nc.(*tls.Conn)
	return ok
}
