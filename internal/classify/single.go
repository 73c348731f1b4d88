package classify

// SingleTransaction reports whether sql (a Query message's text or a Parse's query text, without
// the NUL), run outside a transaction block, runs as one transaction that commits only once its
// last statement is done: every statement is a query or a data-modifying statement (SELECT,
// INSERT, UPDATE, DELETE, MERGE, WITH, VALUES, TABLE, or a parenthesised query). That leaves out
// transaction control (a COMMIT between two statements commits the first), CALL and DO (a
// procedure may COMMIT midway), and every utility command, some of which commit on their own
// (VACUUM, CREATE INDEX CONCURRENTLY, CREATE DATABASE, ALTER SYSTEM). It is false for a text
// without statements, and for one longer than MaxRouteLen.
//
// The session layer re-runs such a text after a failover only when PostgreSQL's reply proves
// that transaction did not commit (see package session). Functions the statements call cannot
// commit, but they may act outside the transaction (dblink, sequences); that is not seen here.
// It never allocates and runs in time linear in len(sql).
func SingleTransaction(sql []byte) bool {
	if len(sql) > MaxRouteLen {
		return false
	}
	var sp splitter
	l := lexer{src: sql}
	var t token
	stmts, first := 0, true
	for l.next(&t) {
		if sp.ends(&t) {
			sp, first = splitter{}, true
			continue
		}
		if first {
			if !startsQuery(sql, &t) {
				return false
			}
			stmts++
			first = false
		}
		sp.step(sql, &t)
	}
	return stmts > 0
}

// startsQuery reports whether t, a statement's first token, starts a query or a data-modifying
// statement.
func startsQuery(src []byte, t *token) bool {
	if t.kind == tkPunct {
		return t.c == '('
	}
	if t.kind != tkIdent {
		return false
	}
	w := src[t.start:t.end]
	for _, k := range [...]string{"select", "insert", "update", "delete", "merge", "with", "values", "table"} {
		if eqFold(w, k) {
			return true
		}
	}
	return false
}
