package pgtls

import (
	"crypto/tls"
	"strconv"
)

// Describe says how a TLS connection is encrypted, in PgBouncer's words (the tls column of its
// SHOW CLIENTS and SHOW SERVERS, from libusual's tls_get_connection_info): the protocol version,
// the cipher suite and the key exchange group, as "TLSv1.3/TLS_AES_128_GCM_SHA256/ECDH=X25519".
// The cipher suite carries Go's (IANA) name, which for TLS 1.3 is OpenSSL's too. It is "" before
// the handshake completed.
func Describe(st tls.ConnectionState) string {
	if !st.HandshakeComplete {
		return ""
	}
	s := versionName(st.Version) + "/" + tls.CipherSuiteName(st.CipherSuite)
	if st.CurveID != 0 {
		s += "/ECDH=" + curveName(st.CurveID)
	}
	return s
}

// versionName is OpenSSL's name of a TLS version (SSL_get_version).
func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16) // below pgtide's minimum: not negotiated
}

// curveName is OpenSSL's short name of a key exchange group (OBJ_nid2sn), Go's for the others.
func curveName(c tls.CurveID) string {
	switch c {
	case tls.CurveP256:
		return "prime256v1"
	case tls.CurveP384:
		return "secp384r1"
	case tls.CurveP521:
		return "secp521r1"
	}
	return c.String() // X25519, X25519MLKEM768
}
