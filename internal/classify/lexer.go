package classify

import "bytes"

// The lexer follows PostgreSQL's scanner (src/backend/parser/scan.l) closely enough to find the
// same token boundaries: that is what keeps keywords inside literals, quoted identifiers and
// comments from matching. It does not decode or validate tokens; the parser-level code decodes
// the few it needs. Malformed text (an unterminated literal, say) still lexes, to the end of the
// input, because the server rejects such text as a whole anyway.

type tokKind uint8

const (
	tkIdent     tokKind = iota + 1 // unquoted identifier or keyword
	tkQIdent                       // "quoted identifier"
	tkUIdent                       // U&"quoted identifier" [UESCAPE 'c']
	tkString                       // '...' or N'...': standard string, no backslash escapes
	tkEString                      // E'...': backslash escapes
	tkBitString                    // B'...' or X'...'
	tkUString                      // U&'...'
	tkDollar                       // $tag$...$tag$
	tkNumber                       // numeric literal
	tkParam                        // $1
	tkPunct                        // any other single byte, in token.c
)

// Token flags.
const (
	flagCont uint8 = 1 << iota // a string literal continued across a newline: 'a'<newline>'b'
	flagOpen                   // unterminated: runs to the end of the input
)

// token is one lexical token of src: src[start:end]. For quoted kinds, src[body0:body1] is the
// text between the delimiters (from the first segment's opening to the last segment's closing
// quote for a continued string).
type token struct {
	kind  tokKind
	c     byte // tkPunct: the byte; tkUIdent: the UESCAPE character, 0 for the default '\'
	flags uint8
	start int
	end   int
	body0 int
	body1 int
}

type lexer struct {
	src []byte
	pos int
}

// next reads the next token into t, skipping whitespace and comments; false at the end.
func (l *lexer) next(t *token) bool {
	src := l.src
	i := skipSpace(src, l.pos)
	l.pos = i
	if i >= len(src) {
		return false
	}
	*t = token{start: i}
	c := src[i]
	switch {
	case isIdentStart(c):
		if i+1 < len(src) {
			n := src[i+1]
			switch c {
			case 'e', 'E':
				if n == '\'' {
					scanQuoted(src, t, tkEString, i+1, true)
					l.pos = t.end
					return true
				}
			case 'b', 'B', 'x', 'X':
				if n == '\'' {
					scanQuoted(src, t, tkBitString, i+1, false)
					l.pos = t.end
					return true
				}
			case 'n', 'N':
				if n == '\'' {
					scanQuoted(src, t, tkString, i+1, false)
					l.pos = t.end
					return true
				}
			case 'u', 'U':
				if n == '&' && i+2 < len(src) {
					switch src[i+2] {
					case '\'':
						scanQuoted(src, t, tkUString, i+2, false)
						l.pos = t.end
						return true
					case '"':
						scanQuotedIdent(src, t, tkUIdent, i+2)
						uescape(src, t)
						l.pos = t.end
						return true
					}
				}
			}
		}
		j := i + 1
		for j < len(src) && isIdentCont(src[j]) {
			j++
		}
		t.kind, t.end = tkIdent, j
	case c == '"':
		scanQuotedIdent(src, t, tkQIdent, i)
	case c == '\'':
		scanQuoted(src, t, tkString, i, false)
	case c == '$':
		scanDollar(src, t, i)
	case isDigit(c) || c == '.' && i+1 < len(src) && isDigit(src[i+1]):
		t.kind, t.end = tkNumber, scanNumber(src, i)
	default:
		t.kind, t.c, t.end = tkPunct, c, i+1
	}
	l.pos = t.end
	return true
}

// skipSpace returns the index of the first byte at or after i that is neither whitespace nor
// inside a comment.
func skipSpace(src []byte, i int) int { return skipComments(src, i, nil) }

// skipComments is skipSpace that also hands each comment it skips, delimiters included (up to
// the newline for a -- comment), to seen, if seen is not nil.
func skipComments(src []byte, i int, seen func(comment []byte)) int {
	for {
		i = skipBlanks(src, i)
		if i+1 >= len(src) || src[i] != '-' && src[i] != '/' {
			return i
		}
		end := commentEnd(src, i)
		if end < 0 {
			return i
		}
		if seen != nil {
			seen(src[i:end])
		}
		i = end
	}
}

// skipBlanks returns the index of the first byte at or after i that is not whitespace.
func skipBlanks(src []byte, i int) int {
	for i < len(src) {
		switch src[i] {
		case ' ', '\t', '\n', '\r', '\f', '\v':
			i++
		default:
			return i
		}
	}
	return i
}

// commentEnd returns the index just past the comment that starts at i (up to the newline for a
// -- comment), or -1 if no comment starts there.
func commentEnd(src []byte, i int) int {
	if i+1 >= len(src) {
		return -1
	}
	switch {
	case src[i] == '-' && src[i+1] == '-':
		return lineEnd(src, i+2)
	case src[i] == '/' && src[i+1] == '*':
		return blockCommentEnd(src, i+2)
	}
	return -1
}

// lineEnd returns the index of the first newline at or after i, or len(src).
func lineEnd(src []byte, i int) int {
	for i < len(src) && src[i] != '\n' && src[i] != '\r' {
		i++
	}
	return i
}

// blockCommentEnd returns the index just past the "*/" that closes a block comment whose body
// starts at i; block comments nest. An unterminated comment runs to the end.
func blockCommentEnd(src []byte, i int) int {
	depth := 1
	for i+1 < len(src) {
		switch {
		case src[i] == '/' && src[i+1] == '*':
			depth++
			i += 2
		case src[i] == '*' && src[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(src)
}

// scanQuoted lexes a single-quoted literal whose opening quote is at q. backslash says whether a
// backslash escapes the next byte (E'...'). Quotes double to escape themselves, and a literal
// continues after whitespace that holds a newline, as in SQL; the continued segments keep the
// first segment's escape rules.
func scanQuoted(src []byte, t *token, kind tokKind, q int, backslash bool) {
	t.kind = kind
	t.body0 = q + 1
	i := q + 1
	for {
		for {
			if i >= len(src) {
				t.flags |= flagOpen
				t.body1, t.end = len(src), len(src)
				return
			}
			if !backslash {
				j := bytes.IndexByte(src[i:], '\'')
				if j < 0 {
					i = len(src)
					continue
				}
				i += j
			}
			c := src[i]
			if c == '\'' {
				if i+1 < len(src) && src[i+1] == '\'' {
					i += 2
					continue
				}
				break
			}
			if c == '\\' && backslash {
				i += 2
				continue
			}
			i++
		}
		t.body1, t.end = i, i+1
		next := quoteContinue(src, i+1)
		if next < 0 {
			return
		}
		t.flags |= flagCont
		i = next + 1
	}
}

// quoteContinue reports where a string literal that ended just before i continues: the index of
// the next opening quote if only whitespace holding at least one newline, and -- comments, come
// between; -1 otherwise.
func quoteContinue(src []byte, i int) int {
	newline := false
	for i < len(src) {
		switch src[i] {
		case '\n', '\r':
			newline = true
			i++
		case ' ', '\t', '\f', '\v':
			i++
		case '-':
			if i+1 < len(src) && src[i+1] == '-' {
				i = lineEnd(src, i+2)
				continue
			}
			return -1
		case '\'':
			if newline {
				return i
			}
			return -1
		default:
			return -1
		}
	}
	return -1
}

// scanQuotedIdent lexes a double-quoted identifier whose opening quote is at q.
func scanQuotedIdent(src []byte, t *token, kind tokKind, q int) {
	t.kind = kind
	t.body0 = q + 1
	i := q + 1
	for {
		j := bytes.IndexByte(src[i:], '"')
		if j < 0 {
			t.flags |= flagOpen
			t.body1, t.end = len(src), len(src)
			return
		}
		i += j
		if i+1 < len(src) && src[i+1] == '"' {
			i += 2
			continue
		}
		t.body1, t.end = i, i+1
		return
	}
}

// uescape extends a U&"..." token over a following UESCAPE 'c' clause, recording c. The parser
// looks for the clause past whitespace and comments; a malformed clause is left alone, since the
// server rejects it.
func uescape(src []byte, t *token) {
	if t.flags&flagOpen != 0 {
		return
	}
	i := skipSpace(src, t.end)
	const kw = "uescape"
	if i+len(kw) > len(src) || !eqFold(src[i:i+len(kw)], kw) ||
		i+len(kw) < len(src) && isIdentCont(src[i+len(kw)]) {
		return
	}
	i = skipSpace(src, i+len(kw))
	if i+2 < len(src) && src[i] == '\'' && src[i+1] != '\'' && src[i+2] == '\'' {
		t.c = src[i+1]
		t.end = i + 3
	}
}

// scanDollar lexes what starts with '$' at i: a parameter ($1), a dollar-quoted string, or a
// lone '$'.
func scanDollar(src []byte, t *token, i int) {
	j := i + 1
	if j < len(src) && isDigit(src[j]) {
		for j < len(src) && isDigit(src[j]) {
			j++
		}
		t.kind, t.end = tkParam, j
		return
	}
	if j < len(src) && isDolqStart(src[j]) {
		j++
		for j < len(src) && isDolqCont(src[j]) {
			j++
		}
	}
	if j >= len(src) || src[j] != '$' {
		// "$foo" without a closing '$': PostgreSQL returns the '$' alone and goes on.
		t.kind, t.c, t.end = tkPunct, '$', i+1
		return
	}
	tag := src[i+1 : j]
	t.kind = tkDollar
	t.body0 = j + 1
	end := dollarClose(src, j+1, tag)
	if end < 0 {
		t.flags |= flagOpen
		t.body1, t.end = len(src), len(src)
		return
	}
	t.body1, t.end = end-len(tag)-2, end
}

// dollarClose returns the index just past the first $tag$ at or after i, or -1. Like the server,
// it reads each $...$ candidate once and puts back only its closing '$', which keeps the search
// linear whatever the tag (bytes.Index could degrade on adversarial input).
func dollarClose(src []byte, i int, tag []byte) int {
	for i < len(src) {
		j := bytes.IndexByte(src[i:], '$')
		if j < 0 {
			return -1
		}
		p := i + j
		k := p + 1
		if k < len(src) && isDolqStart(src[k]) {
			k++
			for k < len(src) && isDolqCont(src[k]) {
				k++
			}
		}
		if k < len(src) && src[k] == '$' {
			if bytes.Equal(src[p+1:k], tag) {
				return k + 1
			}
		}
		i = k
	}
	return -1
}

// scanNumber returns the end of the numeric literal at i. Letters right after a number start a
// new token, as they did before PostgreSQL 15 ("1from t"); later versions reject the text.
func scanNumber(src []byte, i int) int {
	j := i
	for j < len(src) && (isDigit(src[j]) || src[j] == '_') {
		j++
	}
	if j < len(src) && src[j] == '.' && !(j+1 < len(src) && src[j+1] == '.') {
		j++
		for j < len(src) && (isDigit(src[j]) || src[j] == '_') {
			j++
		}
	}
	if j < len(src) && (src[j] == 'e' || src[j] == 'E') {
		k := j + 1
		if k < len(src) && (src[k] == '+' || src[k] == '-') {
			k++
		}
		if k < len(src) && isDigit(src[k]) {
			j = k
			for j < len(src) && (isDigit(src[j]) || src[j] == '_') {
				j++
			}
		}
	}
	return j
}

// Character classes, as in scan.l: ident_start [A-Za-z\200-\377_], ident_cont adds [0-9$],
// dolq_cont adds [0-9] only.
const (
	ccIdentStart uint8 = 1 << iota
	ccDigit
	ccDollar
)

var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_', c >= 0x80:
			t[c] = ccIdentStart
		case '0' <= c && c <= '9':
			t[c] = ccDigit
		case c == '$':
			t[c] = ccDollar
		}
	}
	return t
}()

func isDigit(c byte) bool { return charClass[c]&ccDigit != 0 }

func isIdentStart(c byte) bool { return charClass[c]&ccIdentStart != 0 }

func isIdentCont(c byte) bool { return charClass[c] != 0 }

func isDolqStart(c byte) bool { return isIdentStart(c) }

func isDolqCont(c byte) bool { return charClass[c]&(ccIdentStart|ccDigit) != 0 }

// eqFold reports whether b equals the lower-case ASCII word s, ignoring ASCII case in b.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
