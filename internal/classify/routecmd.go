package classify

// RouteParam is the name of pgtide's own session setting for the route: SET pgtide.route =
// 'writer' | 'reader' | 'auto'. pgtide answers SET, RESET and SHOW of it itself (see
// ParseRouteCommand) and never forwards them.
const RouteParam = "pgtide.route"

// RouteCommandKind is what ParseRouteCommand recognised.
type RouteCommandKind uint8

const (
	RouteCommandNone  RouteCommandKind = iota // not a command of pgtide.route: forward the text
	RouteCommandSet                           // SET [SESSION] pgtide.route ...
	RouteCommandShow                          // SHOW pgtide.route
	RouteCommandReset                         // RESET pgtide.route: a Set to auto, with its own tag
)

// String returns "none", "set", "show" or "reset".
func (k RouteCommandKind) String() string {
	switch k {
	case RouteCommandSet:
		return "set"
	case RouteCommandShow:
		return "show"
	case RouteCommandReset:
		return "reset"
	}
	return "none"
}

// RouteCommandError is a SET of pgtide.route that PostgreSQL would refuse. Message is worded as
// the server words it; send it in an ErrorResponse with SQLState and Hint.
type RouteCommandError struct {
	Message string
	Hint    string
}

func (e *RouteCommandError) Error() string { return e.Message }

// SQLState is the error's code: 22023, invalid_parameter_value, as the server gives for a bad
// value of a parameter.
func (e *RouteCommandError) SQLState() string { return "22023" }

// ParseRouteCommand recognises a text that is exactly one statement, with nothing after it but
// semicolons, whitespace and comments, of:
//
//	SET [SESSION] pgtide.route {TO | =} {'writer' | 'reader' | 'auto' | DEFAULT}
//	RESET pgtide.route
//	SHOW pgtide.route
//
// The name may be written in any case and quoted in parts ("pgtide"."route"); the value may be
// a string literal or a word, in any case, as for the server's enum parameters. auto is true for
// Reset and for a Set to 'auto' or DEFAULT (value is then RouteWriter and means nothing); for any
// other Set value is the route asked for. err is a *RouteCommandError for a Set with any other value, or more
// than one. Anything else, SET LOCAL pgtide.route and syntax the server would reject included,
// is RouteCommandNone: the caller forwards it.
//
// It does not allocate unless it returns an error.
func ParseRouteCommand(sql []byte) (kind RouteCommandKind, value Route, auto bool, err error) {
	// The common case without the lexer: a statement whose first word (after blanks; a
	// comment, a quote or anything else is read by the lexer) is not SET, RESET or SHOW. The
	// word is read as the fast path reads one (wordByte): an identifier the lexer reads may go
	// on with bytes above ASCII, and is then none of the three either.
	i := 0
	for i < len(sql) && (sql[i] == ' ' || sql[i] == '\n' || sql[i] == '\t' || sql[i] == '\r') {
		i++
	}
	if i < len(sql) {
		if c := sql[i] | 0x20; 'a' <= c && c <= 'z' {
			j := i + 1
			for j < len(sql) && wordByte[sql[j]] {
				j++
			}
			if w := sql[i:j]; !eqFold(w, "set") && !eqFold(w, "reset") && !eqFold(w, "show") {
				return RouteCommandNone, RouteWriter, false, nil
			}
		}
	}
	l := lexer{src: sql}
	var t token
	if !l.next(&t) || t.kind != tkIdent {
		return RouteCommandNone, RouteWriter, false, nil
	}
	if w := sql[t.start:t.end]; !eqFold(w, "set") && !eqFold(w, "reset") && !eqFold(w, "show") {
		return RouteCommandNone, RouteWriter, false, nil // the common case: cheap
	}
	c := routeCmd{src: sql}
	c.toks[0] = t
	c.n = 1
	for l.next(&t) && !(t.kind == tkPunct && t.c == ';') {
		if c.n == len(c.toks) {
			return RouteCommandNone, RouteWriter, false, nil // longer than any form
		}
		c.toks[c.n] = t
		c.n++
	}
	for l.next(&t) {
		if t.kind != tkPunct || t.c != ';' {
			return RouteCommandNone, RouteWriter, false, nil // more than one statement
		}
	}
	if c.toks[c.n-1].flags&flagOpen != 0 {
		// An unterminated literal or quoted name: the server rejects the text (and a ';'
		// after it would be part of it).
		return RouteCommandNone, RouteWriter, false, nil
	}
	switch {
	case c.kw(0, "show"):
		if c.param(1) == c.n {
			return RouteCommandShow, RouteWriter, false, nil
		}
	case c.kw(0, "reset"):
		if c.param(1) == c.n {
			return RouteCommandReset, RouteWriter, true, nil
		}
	default:
		return c.set()
	}
	return RouteCommandNone, RouteWriter, false, nil
}

// routeCmdMaxToks bounds the tokens of a command ParseRouteCommand reads: the longest form,
// SET SESSION "pgtide" . "route" TO 'reader', has 7; a few more let a list of values be
// answered as the server answers it.
const routeCmdMaxToks = 16

// routeCmd is one statement's tokens for ParseRouteCommand: toks[:n].
type routeCmd struct {
	src  []byte
	toks [routeCmdMaxToks]token
	n    int
}

func (c *routeCmd) kw(i int, w string) bool {
	return i < c.n && c.toks[i].kind == tkIdent && eqFold(c.src[c.toks[i].start:c.toks[i].end], w)
}

func (c *routeCmd) punct(i int, p byte) bool {
	return i < c.n && c.toks[i].kind == tkPunct && c.toks[i].c == p
}

// param returns the index of the token after the name pgtide.route starting at token i, or -1
// if no such name starts there. Parameter names compare without regard to case, even quoted.
func (c *routeCmd) param(i int) int {
	var buf [len(RouteParam)]byte
	name, next, ok := dottedName(c.src, c.toks[:c.n], i, buf[:])
	if !ok || string(name) != RouteParam {
		return -1
	}
	return next
}

// set reads SET [SESSION] pgtide.route {TO | =} value[, ...].
func (c *routeCmd) set() (RouteCommandKind, Route, bool, error) {
	none := func() (RouteCommandKind, Route, bool, error) { return RouteCommandNone, RouteWriter, false, nil }
	i := 1
	if c.kw(1, "session") && !c.punct(2, '.') && !c.kw(2, "to") && !c.punct(2, '=') {
		i = 2 // SET SESSION pgtide.route, not a parameter named session.x
	}
	i = c.param(i)
	if i < 0 || !c.kw(i, "to") && !c.punct(i, '=') {
		return none()
	}
	vals := c.toks[i+1 : c.n]
	if len(vals) == 1 && c.kw(i+1, "default") {
		return RouteCommandSet, RouteWriter, true, nil
	}
	// value [, value ...]: the server parses the list before it looks at the parameter.
	for j := range vals {
		if j%2 == 1 && !(vals[j].kind == tkPunct && vals[j].c == ',') ||
			j%2 == 0 && !c.value(&vals[j]) {
			return none()
		}
	}
	if len(vals) == 0 || len(vals)%2 == 0 {
		return none()
	}
	if len(vals) > 1 {
		return RouteCommandSet, RouteWriter, false, &RouteCommandError{
			Message: "SET " + RouteParam + " takes only one argument"}
	}
	var buf [len("writer")]byte
	v, fits := c.text(&vals[0], buf[:])
	switch {
	case fits && eqFold(v, "writer"):
		return RouteCommandSet, RouteWriter, false, nil
	case fits && eqFold(v, "reader"):
		return RouteCommandSet, RouteReader, false, nil
	case fits && eqFold(v, "auto"):
		return RouteCommandSet, RouteWriter, true, nil
	}
	long := make([]byte, vals[0].end-vals[0].start)
	v, _ = c.text(&vals[0], long)
	return RouteCommandSet, RouteWriter, false, &RouteCommandError{
		Message: `invalid value for parameter "` + RouteParam + `": "` + string(v) + `"`,
		Hint:    "Available values: writer, reader, auto.",
	}
}

// value reports whether t is a token the server takes as a SET value: a string, a word (not a
// reserved one, but ON, TRUE and FALSE), a quoted identifier or a number. A signed number (two
// tokens) is not read: it is no valid route either, and the server says so itself.
func (c *routeCmd) value(t *token) bool {
	switch t.kind {
	case tkString, tkEString, tkDollar, tkUString, tkQIdent, tkUIdent, tkNumber:
		return true
	case tkIdent:
		w := c.src[t.start:t.end]
		return lookupWord(w)&wiReserved == 0 || eqFold(w, "on") || eqFold(w, "true") || eqFold(w, "false")
	}
	return false
}

// text writes the value of the SET value token t into buf, as the server reads it: a word
// lower-cased, a literal's body with doubled quotes and \\ and \' escapes undone (other escapes
// are kept as written). fits is false if buf was too small.
func (c *routeCmd) text(t *token, buf []byte) (v []byte, fits bool) {
	src := c.src
	switch t.kind {
	case tkIdent, tkQIdent, tkUIdent:
		w := identWriter{buf: buf}
		w.ident(src, t, false)
		return w.bytes(), !w.overflow && !w.bad
	case tkDollar:
		n := copy(buf, src[t.body0:t.body1])
		return buf[:n], n == t.body1-t.body0
	case tkNumber:
		n := copy(buf, src[t.start:t.end])
		return buf[:n], n == t.end-t.start
	}
	n := 0
	put := func(b byte) {
		if n < len(buf) {
			buf[n] = b
		}
		n++
	}
	for i := t.body0; i < t.body1; i++ {
		b := src[i]
		switch {
		case b == '\\' && t.kind == tkEString && i+1 < t.body1:
			i++
			b = src[i]
		case b == '\'' && i+1 < t.body1 && src[i+1] == '\'':
			i++
		case b == '\'':
			// The end of a segment of a continued literal: the next starts at its quote.
			if next := quoteContinue(src, i+1); next >= 0 {
				i = next
			}
			continue
		}
		put(b)
	}
	return buf[:min(n, len(buf))], n <= len(buf)
}
