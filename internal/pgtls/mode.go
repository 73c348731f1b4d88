package pgtls

// Mode is a TLS mode, named as libpq's sslmode values are. client_tls takes Disable, Allow,
// Require, VerifyCA and VerifyFull; server_tls takes Disable, Prefer, Require, VerifyCA and
// VerifyFull.
type Mode string

// The modes.
const (
	// Disable: no TLS. Towards clients, an SSLRequest is answered 'N'.
	Disable Mode = "disable"
	// Allow (client_tls): TLS for clients that ask for it, plain text for the others.
	Allow Mode = "allow"
	// Prefer (server_tls): TLS when the server accepts it, plain text when it answers 'N'.
	Prefer Mode = "prefer"
	// Require: TLS or no connection. Towards servers, the certificate is checked against
	// server_ca_file only if one is set (as libpq with a root certificate file).
	Require Mode = "require"
	// VerifyCA: Require, and the peer's certificate must chain to the CA file.
	VerifyCA Mode = "verify-ca"
	// VerifyFull: VerifyCA, and the certificate must name the peer: the host pgtide connects to
	// (server_tls), or the user the client logs in as in its common name (client_tls, as
	// PostgreSQL's clientcert=verify-full).
	VerifyFull Mode = "verify-full"
)

// ClientModes are the values client_tls takes; ServerModes those server_tls takes.
var (
	ClientModes = []Mode{Disable, Allow, Require, VerifyCA, VerifyFull}
	ServerModes = []Mode{Disable, Prefer, Require, VerifyCA, VerifyFull}
)

// Required reports whether m refuses a connection without TLS.
func (m Mode) Required() bool { return m == Require || m == VerifyCA || m == VerifyFull }

// Verifies reports whether m needs the peer's certificate checked against a CA file.
func (m Mode) Verifies() bool { return m == VerifyCA || m == VerifyFull }
