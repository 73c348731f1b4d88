package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
	"hash"
	"net"
)

// TLSExchange is an Exchange over a TLS connection. When ServerCertificate returns a certificate
// whose tls-server-end-point binding is defined, Authenticate offers SCRAM-SHA-256-PLUS before
// SCRAM-SHA-256 and checks the client's binding against it.
type TLSExchange interface {
	Exchange
	// ServerCertificate returns the certificate pgtide presented in the connection's TLS
	// handshake (the leaf), or nil when the connection is not TLS.
	ServerCertificate() *x509.Certificate
}

// channelBinding returns the tls-server-end-point data of ex's connection, nil when it is not TLS
// or its certificate defines none (then PLUS is not offered).
func channelBinding(ex Exchange) []byte {
	te, ok := ex.(TLSExchange)
	if !ok {
		return nil
	}
	cert := te.ServerCertificate()
	if cert == nil {
		return nil
	}
	data, err := TLSServerEndPoint(cert)
	if err != nil {
		return nil
	}
	return data
}

// TLSServerEndPoint returns the tls-server-end-point channel-binding data of a server
// certificate (RFC 5929 §4.1): the hash of its DER encoding with the hash function of its
// signature algorithm, SHA-256 where that is MD5 or SHA-1. The result is 32, 48 or 64 bytes. It
// fails for an algorithm with no single hash function (Ed25519), for which the RFC leaves the
// binding undefined.
func TLSServerEndPoint(cert *x509.Certificate) ([]byte, error) {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, fmt.Errorf("tls-server-end-point is undefined for a certificate signed with %v", cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}

// ServedCertificate returns the certificate pgtide presented in conn's TLS handshake, or nil when
// conn is not TLS: the input of SCRAM-SHA-256-PLUS for the session and the admin console. Go's
// *tls.Conn does not tell a server which of its certificates it sent, so the listener's TLS
// connection (a *pgtls.Conn) records it at the handshake; a certificate reload does not change
// it for a connection already made.
func ServedCertificate(conn net.Conn) *x509.Certificate {
	if c, ok := conn.(interface{ ServerCertificate() *x509.Certificate }); ok {
		return c.ServerCertificate()
	}
	return nil
}
