// Package pgtls owns TLS as PostgreSQL speaks it, on both sides of the proxy.
//
// Towards servers (ServerTLS, from [cluster] server_tls and server_ca_file) pgtide is a client and
// follows libpq's sslmode: it sends an SSLRequest on the fresh connection, and on the server's 'S'
// performs the handshake and the certificate checks the mode asks for; prefer goes on in plain
// text when the server answers 'N', the other modes refuse to. Pooled connections, health checks,
// discovery and cancel requests all go through Negotiate, so they agree.
//
// Towards clients (ClientTLS, from the [tls] section) pgtide is the server: it presents its
// certificate after an SSLRequest or to a client that starts TLS at once (PostgreSQL 17's direct
// TLS, ALPN "postgresql"), and checks client certificates against the CA file. A ClientTLS is
// immutable: a reload or a change of the files makes a new one, which the proxy swaps in
// atomically; connections already encrypted go on with the one they started with. Which
// clients must use TLS, and what a client certificate must say, is the proxy's admission
// decision (package proxy), made with Mode and the Conn's certificates.
//
// The package starts no goroutines.
package pgtls
