package classify

import "bytes"

// The fast path. Most texts a proxy sees are one short statement of a common shape — pgbench's
// SELECT, an ORM's SELECT with joins, INSERT ... RETURNING, UPDATE, BEGIN, COMMIT, SET, SHOW —
// and the full analysis (lexer, splitter and the route rules, then MaySetSessionState's own
// pass) costs several times what such a statement needs. fastRoute reads those shapes in one
// pass over the bytes and answers both questions; on anything else — a comment (it may be a
// hint), a dollar quote, an escape string, a doubled quote, a function call, a second
// statement, a word it does not know to be harmless in a query, a byte from 0x80 up — it gives
// up, and the full analysis answers. The full analysis stays the one definition of the rules:
// the fast path must agree with it whenever it answers, which FuzzFastPath checks.

// Byte classes of the fast path.
const (
	fcOther uint8 = iota // ends the fast path
	fcBlank
	fcWord  // A-Z a-z _: starts a word
	fcDigit // starts a number
	fcQuote
	fcDQuote
	fcDollar
	fcOpen
	fcClose
	fcSemi
	fcDot
	fcDash  // '-': an operator, or a -- comment
	fcSlash // '/': an operator, or a /* comment
	fcPunct // a one-byte token the rules need not see
)

var fastClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
			t[c] = fcWord
		case '0' <= c && c <= '9':
			t[c] = fcDigit
		}
	}
	for _, c := range []byte(" \t\n\r\f\v") {
		t[c] = fcBlank
	}
	for _, c := range []byte(",=<>+*:[]%^|!~@#?") {
		t[c] = fcPunct
	}
	t['\''], t['"'], t['$'] = fcQuote, fcDQuote, fcDollar
	t['('], t[')'], t[';'], t['.'] = fcOpen, fcClose, fcSemi, fcDot
	t['-'], t['/'] = fcDash, fcSlash
	return t
}()

// wordByte: the bytes of a word the fast path reads (an identifier's, without those from 0x80
// up).
var wordByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '$'
	}
	return t
}()

// queryStop has, by length, bit c&31 set for the first byte c (in either case) of each word that
// ends the fast path inside a query (FOR, INTO, WITH, INSERT, UPDATE, DELETE, MERGE): the route
// rules act on them.
var queryStop = func() (t [7]uint32) {
	for _, w := range []string{"for", "into", "with", "insert", "update", "delete", "merge"} {
		t[len(w)] |= 1 << (w[0] & 31)
	}
	return t
}()

// maxFastDepth is the deepest parenthesis nesting the fast path reads, well within the full
// analysis's maxRouteDepth.
const maxFastDepth = 16

// fastRoute classifies src, if it is one statement of a shape it knows, as ClassifyRoute and
// MaySetSessionState would: ok is true and info and maySet are their answers. Otherwise ok is
// false, and maySet is whether one of MaySetSessionState's words starts before src[stop]
// (stop is where it gave up). It never allocates, and it runs in time linear in len(src): a
// byte is read again only by a look back over the blanks and the word before a token.
//
// The loop keeps little state, so that the compiler keeps it in registers: the statement's first
// word decides what is read of the rest, and the few rules that need the token before one look
// back at the bytes (see lastByte).
func fastRoute(src []byte) (info RouteInfo, maySet bool, stop int, ok bool) {
	i := skipFastBlanks(src, 0)
	if i >= len(src) || src[i] == ';' {
		if trailingSemicolons(src, i) {
			return RouteInfo{Route: RouteWriter, Reason: ReasonUnclassified}, false, len(src), true
		}
		return info, false, i, false
	}
	// The first token: a word, or '(' (a query in parentheses).
	var s stmtStart
	depth := 0
	if src[i] == '(' {
		s = stmtStart{kind: kQuery, known: true}
		depth = 1
		i++
	} else {
		if fastClass[src[i]] != fcWord {
			return info, false, i, false
		}
		j := wordEnd(src, i+1)
		if j < len(src) && (src[j] == '\'' || src[j] == '&') {
			return info, false, i, false // E'...' and the like; U&
		}
		e := lookup(src[i:j])
		if e == nil || !e.start.known {
			s = startOf(src[i:j]) // an unknown statement: the writer
		} else {
			s = e.start
		}
		switch {
		case s.kind == kExplain, s.kind == kCopy, s.kind == kPrepare, s.kind == kBegin,
			s.kind == kQuery && e.info.id() == wWith:
			return fastOther(src, s, i, j)
		case s.kind == kShow:
			// The parameters that take the writer (see showToken) are left to the full analysis.
			if k := skipFastBlanks(src, j); k < len(src) && (src[k] == '"' || showsRole(src[k:wordEnd(src, k)])) {
				return info, false, i, false
			}
		}
		if e != nil {
			maySet = e.trigger
		} else {
			maySet = triggerIn(src, i, j)
		}
		i = j
	}
	query := s.kind == kQuery
	for {
		var why uint8
		if i, why = scanPlain(src, i, query, !maySet); why == plainEnd {
			break
		}
		c := src[i]
		switch cls := fastClass[c]; {
		case why == plainWord:
			j, pair := scanWord(src, i)
			if j < len(src) && (src[j] == '\'' || src[j] == '&') {
				return info, maySet, i, false // E'...', B'...', X'...', N'...'; U&
			}
			// A word the rules act on inside a query: the full analysis decides.
			if n := j - i; query && n < len(queryStop) && queryStop[n]>>(c&31)&1 != 0 {
				switch lookupWord(src[i:j]).id() {
				case wFor, wInto, wWith, wInsert, wUpdate, wDelete, wMerge:
					return info, maySet, i, false
				}
			}
			if pair >= 0 && !maySet {
				maySet = triggerIn(src, pair, j)
			}
			i = j
		case cls == fcQuote:
			if k := lastByte(src, i); k >= 0 && src[k] == '\'' {
				return info, maySet, i, false // a continued literal, or two in a row
			}
			j := i + 1
			for {
				k := bytes.IndexByte(src[j:], '\'')
				if k < 0 {
					return info, maySet, i, false // unterminated
				}
				j += k + 1
				if j >= len(src) || src[j] != '\'' {
					break
				}
				j++ // a doubled quote
			}
			if !maySet {
				maySet = triggerIn(src, i, j)
			}
			i = j
		case cls == fcDQuote:
			k := bytes.IndexByte(src[i+1:], '"')
			if k < 0 {
				return info, maySet, i, false // unterminated
			}
			j := i + 1 + k + 1
			if j < len(src) && src[j] == '"' {
				return info, maySet, i, false // a doubled quote
			}
			if !maySet {
				maySet = triggerIn(src, i, j)
			}
			i = j
		case cls == fcDigit:
			j := digitsEnd(src, i+1)
			if j+1 < len(src) && src[j] == '.' && isDigit(src[j+1]) {
				j = digitsEnd(src, j+2)
			}
			if j < len(src) && (wordByte[src[j]] || src[j] == '.') {
				return info, maySet, i, false // an exponent, '_', a number then a word, ...
			}
			i = j
		case cls == fcDollar:
			j := digitsEnd(src, i+1)
			if j == i+1 || j < len(src) && wordByte[src[j]] {
				return info, maySet, i, false // a dollar quote, or a parameter then a word
			}
			i = j
		case cls == fcOpen:
			if query && !fastParenthesis(src, i) {
				return info, maySet, i, false // a call, or a column list: the full rules decide
			}
			if depth++; depth > maxFastDepth {
				return info, maySet, i, false
			}
			i++
		case cls == fcClose:
			if depth == 0 {
				return info, maySet, i, false
			}
			depth--
			i++
		case cls == fcSemi:
			if depth > 0 || !trailingSemicolons(src, i) {
				return info, maySet, i, false // a second statement
			}
			i = len(src)
		case cls == fcDot:
			if i+1 < len(src) && isDigit(src[i+1]) {
				return info, maySet, i, false // .5: a number
			}
			i++
		case cls == fcDash, cls == fcSlash:
			if i+1 < len(src) && (src[i+1] == '-' && c == '-' || src[i+1] == '*' && c == '/') {
				return info, maySet, i, false // a comment: it may be a hint
			}
			i++
		case cls == fcPunct:
			i++
		default:
			return info, maySet, i, false
		}
	}
	if s.needs {
		return RouteInfo{Route: s.reason.Route(), Reason: s.reason}, maySet, len(src), true
	}
	return RouteInfo{Route: RouteReader, Reason: ReasonReadOnly}, maySet, len(src), true
}

// Why scanPlain stopped.
const (
	plainEnd   uint8 = iota // at the end of the text
	plainOther              // at a byte it leaves to the caller
	plainWord               // at a word the caller must look at (see scanPlain)
)

// scanPlain reads, from src[i], the tokens of a statement that need no rule and no state:
// blanks, words, numbers, parameters, '.' and one-byte operators. It stops at anything else
// (plainOther: the caller reads it, or gives up), and at a word that needs more than its bytes
// read (plainWord): one followed by a quote or '&', inside a query (query) one that may be a
// word the rules act on (see queryStop), and, when pairs is true, one in which a word of
// MaySetSessionState may start (see triggerPairs). It is a leaf without calls, small enough
// that its loop runs in registers: it reads most of a common statement.
func scanPlain(src []byte, i int, query, pairs bool) (int, uint8) {
	sel := uint64(0) // the pair masks, or none
	if pairs {
		sel = 1<<32 - 1
	}
	for i < len(src) {
		c := src[i]
		t := plainBytes[c]
		switch cls := uint8(t >> 40); {
		case cls == fcWord:
			j := i + 1
			for m := t & sel; j < len(src); j++ {
				c1 := src[j]
				t1 := plainBytes[c1]
				if t1&plainWordByte == 0 {
					break
				}
				if m>>(c1&31)&1 != 0 {
					return i, plainWord
				}
				m = t1 & sel
			}
			if j < len(src) && (src[j] == '\'' || src[j] == '&') ||
				query && j-i < len(queryStop) && queryStop[j-i]>>(c&31)&1 != 0 {
				return i, plainWord
			}
			i = j
		case cls == fcBlank, cls == fcPunct:
			i++
		case cls == fcDigit:
			j := digitsEnd(src, i+1)
			if j+1 < len(src) && src[j] == '.' && isDigit(src[j+1]) {
				j = digitsEnd(src, j+2)
			}
			if j < len(src) && (wordByte[src[j]] || src[j] == '.') {
				return i, plainOther // an exponent, '_', a number then a word, ...
			}
			i = j
		case cls == fcDollar:
			j := digitsEnd(src, i+1)
			if j == i+1 || j < len(src) && wordByte[src[j]] {
				return i, plainOther // a dollar quote, or a parameter then a word
			}
			i = j
		case cls == fcDot:
			if i+1 < len(src) && isDigit(src[i+1]) {
				return i, plainOther // .5: a number
			}
			i++
		case cls == fcDash, cls == fcSlash:
			if i+1 < len(src) && (src[i+1] == '-' && c == '-' || src[i+1] == '*' && c == '/') {
				return i, plainOther // a comment
			}
			i++
		default:
			return i, plainOther
		}
	}
	return i, plainEnd
}

// plainBytes is what scanPlain knows of a byte, in one word so that a byte costs one load: bits
// 0-31 its triggerPairs mask, bit 32 (plainWordByte) whether it is a wordByte, bits 40-47 its
// fastClass.
var plainBytes = func() (t [256]uint64) {
	for c := range t {
		t[c] = uint64(triggerPairs[c]) | uint64(fastClass[c])<<40
		if wordByte[c] {
			t[c] |= plainWordByte
		}
	}
	return t
}()

const plainWordByte = 1 << 32

// fastOther is fastRoute for the statements that start with the word src[i:j] other than
// queries and statements whose first word decides: BEGIN and START (READ ONLY, READ WRITE, the
// last wins; ISOLATION LEVEL SERIALIZABLE), and none other for now.
func fastOther(src []byte, s stmtStart, i, j int) (info RouteInfo, maySet bool, stop int, ok bool) {
	if s.kind != kBegin {
		return info, false, i, false
	}
	if k := bytes.IndexByte(src[j:], ';'); k >= 0 && !trailingSemicolons(src, j+k) {
		return info, false, i, false // BEGIN; ...: more statements, the full analysis reads them
	}
	maySet = triggerIn(src, i, j)
	var mode txMode
	serial := false
	prev := wNone // the previous token's word, not the first
	for i = skipFastBlanks(src, j); i < len(src); i = skipFastBlanks(src, i) {
		c := src[i]
		switch {
		case fastClass[c] == fcWord:
			j := wordEnd(src, i+1)
			if j < len(src) && src[j] == '\'' {
				return info, maySet, i, false
			}
			w := lookupWord(src[i:j]).id()
			switch {
			case prev == wRead && w == wOnly:
				mode = modeReadOnly
			case prev == wRead && w == wWrite:
				mode = modeReadWrite
			case prev == wLevel && w == wSerializable:
				serial = true
			}
			if !maySet {
				maySet = triggerIn(src, i, j)
			}
			prev, i = w, j
		case c == ',':
			prev = wNone
			i++
		case c == ';' && trailingSemicolons(src, i):
			i = len(src)
		default:
			return info, maySet, i, false
		}
	}
	if mode == modeReadOnly && !serial {
		return RouteInfo{Route: RouteReader, Reason: ReasonReadOnlyTransaction, Begin: true, ReadOnly: true}, maySet, len(src), true
	}
	return RouteInfo{Route: RouteWriter, Reason: ReasonTransaction, Begin: true}, maySet, len(src), true
}

// lastByte returns the index of the last byte before i that is not a blank, -1 if none. The
// fast path looks back instead of keeping the previous token: what it has read has no comments.
func lastByte(src []byte, i int) int {
	i--
	for i >= 0 && fastClass[src[i]] == fcBlank {
		i--
	}
	return i
}

// fastParenthesis reports whether the '(' at src[i], inside a query, is one the route rules
// need not judge: not after a name (the call of a function, or a column list), unless the name
// is an unqualified keyword that the grammar never takes as a call (see wiConstruct).
func fastParenthesis(src []byte, i int) bool {
	end := lastByte(src, i) + 1
	if end == 0 {
		return true
	}
	switch c := src[end-1]; {
	case c == '"':
		return false // a quoted name
	case !wordByte[c]:
		return true
	}
	start := end - 1
	for start > 0 && wordByte[src[start-1]] {
		start--
	}
	// A number or a parameter reads as a name here: that only gives up more often.
	if k := lastByte(src, start); k >= 0 && src[k] == '.' {
		return false // qualified
	}
	return lookupWord(src[start:end])&wiConstruct != 0
}

// skipFastBlanks returns the index of the first byte at or after i that is not a blank.
func skipFastBlanks(src []byte, i int) int {
	for i < len(src) && fastClass[src[i]] == fcBlank {
		i++
	}
	return i
}

// wordEnd returns the index of the first byte at or after i that is not a word's.
func wordEnd(src []byte, i int) int {
	for i < len(src) && wordByte[src[i]] {
		i++
	}
	return i
}

// scanWord returns the end of the word that starts at src[i], and the index in it of the first
// pair of bytes that may start one of MaySetSessionState's words (see triggerPairs; -1 for
// none), where triggerIn looks: the word test and the pair test share one loop, small enough
// to be inlined. A word followed by '&' (U&) is the caller's to refuse.
func scanWord(src []byte, i int) (end, pair int) {
	pair = -1
	c0 := src[i]
	j := i + 1
	for ; j < len(src); j++ {
		c1 := src[j]
		if !wordByte[c1] {
			break
		}
		if triggerPairs[c0]>>(c1&31)&1 != 0 && pair < 0 {
			pair = j - 1
		}
		c0 = c1
	}
	return j, pair
}

// trailingSemicolons reports whether src[i:] holds only semicolons and blanks.
func trailingSemicolons(src []byte, i int) bool {
	for ; i < len(src); i++ {
		if c := src[i]; c != ';' && fastClass[c] != fcBlank {
			return false
		}
	}
	return true
}

// digitsEnd returns the index of the first byte at or after i that is not an ASCII digit.
func digitsEnd(src []byte, i int) int {
	for i < len(src) && isDigit(src[i]) {
		i++
	}
	return i
}
