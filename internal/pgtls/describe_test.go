package pgtls

import (
	"crypto/tls"
	"testing"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		st   tls.ConnectionState
		want string
	}{
		{tls.ConnectionState{}, ""},
		{tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_256_GCM_SHA384,
			CurveID: tls.X25519}, "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519"},
		{tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			CurveID: tls.CurveP256}, "TLSv1.2/TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256/ECDH=prime256v1"},
		{tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, CipherSuite: tls.TLS_CHACHA20_POLY1305_SHA256},
			"TLSv1.3/TLS_CHACHA20_POLY1305_SHA256"},
	} {
		if got := Describe(tc.st); got != tc.want {
			t.Errorf("Describe(%+v) = %q, want %q", tc.st, got, tc.want)
		}
	}
}
