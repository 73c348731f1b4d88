// Package classify owns what pgtide learns from the SQL text a client sends: the text of every
// simple-protocol Query message and every Parse message, as raw bytes without the NUL terminator.
//
// AnalyzeSession finds the session state a statement leaves behind on its server connection. In
// transaction mode a client's next transaction may run on another server connection, so state
// that cannot be moved pins the client to the connection it has (see Reason). State that pgtide
// can move is reported instead of pinning: search_path as text to replay, DISCARD ALL and
// DEALLOCATE so that pgtide's own record of a connection's prepared statements stays true.
// Parameters that the server reports through ParameterStatus (client_encoding, DateStyle,
// IntervalStyle, TimeZone, standard_conforming_strings, application_name) never pin.
//
// The analysis lexes the text the way PostgreSQL's scanner does — string literals of every kind
// (with continuation across newlines), quoted identifiers with or without Unicode escapes,
// dollar quoting, nested block comments — and splits statements on the semicolons the server's
// grammar splits on: not those inside parentheses or inside a BEGIN ATOMIC function body.
// Nothing inside a literal, a quoted identifier or a comment can match a rule. It never allocates and runs in time linear in the length of the text, so it
// can run on every message of the relay.
//
// What it cannot see: code that runs out of sight of the text — DO blocks and function bodies in
// string or dollar-quoted literals, functions or views that call pg_advisory_lock, procedures that
// run SET. Those need the server's help (a ParameterStatus, a pg_locks check) or the client's
// discipline. It assumes standard_conforming_strings is on, the default since PostgreSQL 9.1:
// with it off, a backslash in an ordinary '...' literal escapes the quote and the text would be
// split differently.
//
// A statement that PostgreSQL would reject is never a concern for correctness: the server parses
// the whole Query text before running any of it, so text with a syntax error anywhere runs
// nothing. The analysis still gives an answer for such text, conservative where it is unsure.
//
// The read/write classifier that routes a transaction to a primary or a replica will live here
// too, sharing the lexer.
package classify
