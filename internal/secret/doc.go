// Package secret owns the forms a password may take in the users file — plaintext, PostgreSQL's
// md5 hash and PostgreSQL's SCRAM-SHA-256 verifier, exactly as pg_authid.rolpassword holds them —
// and the arithmetic that works from a stored form without the plaintext: checking a SCRAM client
// proof and recovering the client's ClientKey from it, and answering a server's md5 or SCRAM
// challenge from a hash or from such keys (pass-through, as PgBouncer does since 1.14).
//
// Every value here that holds secret bytes (Secret, Verifier, ClientKeys) prints and logs as a
// description of its kind, never as its content: a %v, %+v, %#v or a slog attribute of one is
// safe. Their exported fields are not: never log them.
//
// The formulas are those of RFC 5802 §3 (SCRAM) with SHA-256 (RFC 7677), and of PostgreSQL's
// documentation (53.2.1 "SCRAM-SHA-256 Authentication", 53.7 "AuthenticationMD5Password" in
// "Message Formats", and pg_authid's rolpassword).
package secret
