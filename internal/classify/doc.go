// Package classify owns what pgtide learns from the SQL text a client sends: the text of every
// simple-protocol Query message and every Parse message, as raw bytes without the NUL terminator.
// It answers three questions about a text: what session state it leaves on its server connection
// (AnalyzeSession, after the cheap MaySetSessionState), whether it may run on a replica
// (ClassifyRoute; Classify answers this and MaySetSessionState at once), and whether, run outside a
// transaction block, it is one transaction that commits only at its end (SingleTransaction: the
// session layer may re-run such a text after a failover proved it did not commit).
//
// AnalyzeSession finds the session state a statement leaves behind on its server connection. In
// transaction mode a client's next transaction may run on another server connection, so state
// that cannot be moved pins the client to the connection it has (see Reason). State that pgtide
// can move is reported instead of pinning: search_path as text to replay, DISCARD ALL and
// DEALLOCATE so that pgtide's own record of a connection's prepared statements stays true.
// Parameters that the server reports through ParameterStatus (client_encoding, DateStyle,
// IntervalStyle, TimeZone, standard_conforming_strings, application_name) never pin.
//
// ClassifyRoute decides whether a text may go to a reader or needs the writer, and why (a
// RouteReason, for metrics and logs). It is conservative: a text goes to a reader only when
// every statement in it is provably a read — SELECT, WITH, VALUES, TABLE, SHOW, EXPLAIN without
// ANALYZE, COPY ... TO STDOUT — with nothing inside, at any depth, that writes or needs the
// primary: a data-modifying WITH query, a locking clause, SELECT INTO, or a call of a function
// that is not known to read. Functions are known from a built-in list of pg_catalog functions
// (nextval, set_config, pg_advisory_lock and the like need the writer; count, lower, now and a
// few hundred more only read) and from the caller's Functions, which answers for the
// database's own; a function neither knows goes to the writer. A text that opens a READ ONLY
// transaction goes to a reader; comments /* pgtide:reader */ and /* pgtide:writer */ force the
// route. ParseRouteCommand recognises SET, RESET and SHOW of pgtide's own pgtide.route setting,
// which pgtide answers itself.
//
// The analysis lexes the text the way PostgreSQL's scanner does — string literals of every kind
// (with continuation across newlines), quoted identifiers with or without Unicode escapes,
// dollar quoting, nested block comments — and splits statements on the semicolons the server's
// grammar splits on: not those inside parentheses or inside a BEGIN ATOMIC function body.
// Nothing inside a literal, a quoted identifier or a comment can match a rule. It never allocates and runs in time linear in the length of the text, so it
// can run on every message of the relay. Classify answers the route and MaySetSessionState
// together; for a single statement of a common shape (no comment, no function call, none of the
// words the route rules act on inside a query) a fast path reads the bytes once and answers
// both, and anything else goes to the full analysis, which stays the one definition of the
// rules (FuzzFastPath checks that they agree).
//
// What it cannot see: code that runs out of sight of the text — DO blocks and function bodies in
// string or dollar-quoted literals, functions or views that call pg_advisory_lock, procedures that
// run SET. Those need the server's help (a ParameterStatus, a pg_locks check) or the client's
// discipline. It assumes standard_conforming_strings is on, the default since PostgreSQL 9.1:
// with it off, a backslash in an ordinary '...' literal escapes the quote and the text would be
// split differently.
//
// For the route, the same blind spots mean that a read may do more than the text shows: a view
// that calls nextval or pg_advisory_lock, a function that Functions reports as FuncRead but that
// writes. A write on a reader fails with 25006 (read_only_sql_transaction), which the session
// layer's safety net catches; an advisory lock taken on a reader succeeds and excludes nobody on
// the primary. A /* pgtide:writer */ hint is the remedy for both. The classifier does not resolve
// names against the search_path: an unqualified name is looked up with an empty schema, and
// Functions must answer for every schema the client might reach. Syntax it does not follow errs
// towards the writer: a column list right after a plain table's alias (FROM t x(a, b)) reads as
// a call of x, and text nested deeper than 63 parentheses, an unknown statement, or an EXPLAIN or
// COPY it cannot read goes to the writer.
//
// A statement that PostgreSQL would reject is never a concern for correctness: the server parses
// the whole Query text before running any of it, so text with a syntax error anywhere runs
// nothing. The analysis still gives an answer for such text, conservative where it is unsure.
package classify
