package admin

import (
	"crypto/x509"

	"pgtide/internal/auth"
)

// ServerCertificate makes the console's exchange an auth.TLSExchange: over TLS, SCRAM-SHA-256-PLUS
// is offered with the certificate pgtide presented (see auth.ServedCertificate for what the TLS
// listener must provide).
func (e consoleExchange) ServerCertificate() *x509.Certificate {
	return auth.ServedCertificate(e.c.conn)
}
