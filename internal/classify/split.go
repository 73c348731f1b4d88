package classify

// splitter finds the semicolons that end statements, as the server's grammar does: not those
// inside parentheses, nor those inside the BEGIN ATOMIC ... END body of a CREATE FUNCTION or
// CREATE PROCEDURE. Both AnalyzeSession and ClassifyRoute split with it, so they always agree on
// where a statement ends. The zero value starts a statement.
type splitter struct {
	n          int   // tokens of the statement so far
	depth      int   // parentheses open before the current token
	beginDepth int   // BEGIN ATOMIC ... END, CASE ... END nesting in a function body
	create     uint8 // how much of CREATE [OR REPLACE] has been read
	fnBody     bool  // CREATE [OR REPLACE] FUNCTION|PROCEDURE
	afterBegin bool  // the previous token was BEGIN, at depth 0 of a function statement
}

// ends reports whether t ends the statement; the caller then resets the splitter.
func (s *splitter) ends(t *token) bool {
	return t.kind == tkPunct && t.c == ';' && s.depth == 0 && s.beginDepth == 0
}

// step accounts for t, a token of the statement that does not end it. Callers that look at the
// parenthesis depth of t read depth before calling step.
func (s *splitter) step(src []byte, t *token) {
	idx := s.n
	s.n++
	if t.kind == tkPunct {
		s.afterBegin = false
		switch t.c {
		case '(':
			s.depth++
		case ')':
			if s.depth > 0 {
				s.depth--
			}
		}
		return
	}
	if t.kind != tkIdent {
		s.afterBegin = false
		return
	}
	w := src[t.start:t.end]
	if idx < 4 {
		s.createStep(idx, w)
	}
	if !s.fnBody || s.depth != 0 {
		s.afterBegin = false
		return
	}
	// A SQL-standard function body, BEGIN ATOMIC ... END, holds semicolons that do not end the
	// statement; CASE ... END nests inside it. psql counts every BEGIN, but begin is also a
	// valid name ("CREATE FUNCTION begin() ...; SET ROLE x"), so only BEGIN ATOMIC opens a body
	// here, as in the server's grammar. Both words are reserved inside.
	if s.beginDepth == 0 {
		if s.afterBegin && eqFold(w, "atomic") {
			s.beginDepth = 1
		}
		s.afterBegin = eqFold(w, "begin")
	} else if eqFold(w, "case") {
		s.beginDepth++
	} else if eqFold(w, "end") {
		s.beginDepth--
	}
}

// createStep reads the statement's leading words idx 0..3 for CREATE [OR REPLACE]
// FUNCTION|PROCEDURE.
func (s *splitter) createStep(idx int, w []byte) {
	switch {
	case idx == 0 && eqFold(w, "create"):
		s.create = 1
	case idx == 1 && s.create == 1 && eqFold(w, "or"):
		s.create = 2
	case idx == 2 && s.create == 2 && eqFold(w, "replace"):
		s.create = 3
	case (idx == 1 && s.create == 1 || idx == 3 && s.create == 3) &&
		(eqFold(w, "function") || eqFold(w, "procedure")):
		s.fnBody = true
	}
}
