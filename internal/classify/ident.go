package classify

import "unicode/utf8"

// maxIdentLen is the longest identifier PostgreSQL keeps (NAMEDATALEN-1); the scanner truncates
// longer ones, quoted or not, so DEALLOCATE of a long name drops the truncated name.
const maxIdentLen = 63

// identWriter writes identifier text into a fixed buffer, never growing it. Each part (a dotted
// name has several) keeps at most maxIdentLen bytes, cut at a UTF-8 character boundary like the
// server's truncate_identifier.
type identWriter struct {
	buf      []byte // fixed storage; len(buf) is the capacity
	n        int    // bytes written
	part     int    // where the current part starts
	overflow bool   // buf was too small
	bad      bool   // an invalid Unicode escape: the server would reject the identifier
}

func (w *identWriter) startPart() { w.part = w.n }

func (w *identWriter) put(c byte) {
	if w.n-w.part > maxIdentLen {
		return // already enough to truncate at maxIdentLen
	}
	if w.n >= len(w.buf) {
		w.overflow = true
		return
	}
	w.buf[w.n] = c
	w.n++
}

func (w *identWriter) endPart() {
	if w.overflow || w.n-w.part <= maxIdentLen {
		return
	}
	cut := w.part + maxIdentLen
	for cut > w.part && w.buf[cut]&0xC0 == 0x80 {
		cut--
	}
	w.n = cut
}

func (w *identWriter) bytes() []byte { return w.buf[:w.n] }

// ident writes the identifier text of t (tkIdent, tkQIdent or tkUIdent) as one part. Unquoted
// identifiers are lower-cased as the server does; fold lower-cases quoted ones too (parameter
// names, which the server compares case-insensitively).
func (w *identWriter) ident(src []byte, t *token, fold bool) {
	w.startPart()
	switch t.kind {
	case tkIdent:
		for _, c := range src[t.start:t.end] {
			w.put(lower(c))
		}
	case tkQIdent:
		body := src[t.body0:t.body1]
		for i := 0; i < len(body); i++ {
			c := body[i]
			if c == '"' && i+1 < len(body) && body[i+1] == '"' {
				i++
			}
			if fold {
				c = lower(c)
			}
			w.put(c)
		}
	case tkUIdent:
		w.unicodeBody(src[t.body0:t.body1], t.c, fold)
	default:
		w.bad = true
	}
	w.endPart()
}

// unicodeBody decodes the body of U&"..." with escape character esc (0 means '\'): esc esc is
// esc itself, esc XXXX and esc +XXXXXX are code points in hex, UTF-16 surrogate pairs combine.
func (w *identWriter) unicodeBody(body []byte, esc byte, fold bool) {
	if esc == 0 {
		esc = '\\'
	}
	if isHex(esc) || esc == '+' || esc == '\'' || esc == '"' || isSpace(esc) {
		w.bad = true
		return
	}
	var high rune // pending first half of a surrogate pair
	for i := 0; i < len(body); {
		c := body[i]
		if c != esc {
			if high != 0 {
				w.bad = true
				return
			}
			if c == '"' && i+1 < len(body) && body[i+1] == '"' {
				i++
			}
			if fold {
				c = lower(c)
			}
			w.put(c)
			i++
			continue
		}
		var r rune
		switch {
		case i+1 < len(body) && body[i+1] == esc:
			if high != 0 {
				w.bad = true
				return
			}
			w.put(esc)
			i += 2
			continue
		case i+4 < len(body) && isHex(body[i+1]) && isHex(body[i+2]) && isHex(body[i+3]) && isHex(body[i+4]):
			r = hexRune(body[i+1 : i+5])
			i += 5
		case i+7 < len(body) && body[i+1] == '+' && isHex(body[i+2]) && isHex(body[i+3]) &&
			isHex(body[i+4]) && isHex(body[i+5]) && isHex(body[i+6]) && isHex(body[i+7]):
			r = hexRune(body[i+2 : i+8])
			i += 8
		default:
			w.bad = true
			return
		}
		switch {
		case high != 0:
			if r < 0xDC00 || r > 0xDFFF {
				w.bad = true
				return
			}
			r = (high-0xD800)<<10 + (r - 0xDC00) + 0x10000
			high = 0
		case 0xD800 <= r && r <= 0xDBFF:
			high = r
			continue
		case 0xDC00 <= r && r <= 0xDFFF:
			w.bad = true
			return
		}
		if r <= 0 || r > utf8.MaxRune {
			w.bad = true
			return
		}
		var enc [utf8.UTFMax]byte
		n := utf8.EncodeRune(enc[:], r)
		for _, b := range enc[:n] {
			if fold {
				b = lower(b)
			}
			w.put(b)
		}
	}
	if high != 0 {
		w.bad = true
	}
}

func hexRune(h []byte) rune {
	var r rune
	for _, c := range h {
		switch {
		case c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a':
			r = r<<4 | rune(c-'a'+10)
		default:
			r = r<<4 | rune(c-'A'+10)
		}
	}
	return r
}

func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// dottedName reads a possibly dotted name of parameter (a.b, "A".b) from toks[i:] and returns
// it lower-cased in buf (parts joined by '.'), and the index of the token after it. ok is false
// if no name starts at i. name is nil (with ok true) when the name does not fit buf or cannot be
// decoded.
func dottedName(src []byte, toks []token, i int, buf []byte) (name []byte, next int, ok bool) {
	w := identWriter{buf: buf}
	for {
		if i >= len(toks) || !isIdentKind(toks[i].kind) {
			if w.n == 0 {
				return nil, i, false
			}
			break // "SET a. = 1": the server rejects it
		}
		w.ident(src, &toks[i], true)
		i++
		if i >= len(toks) || toks[i].kind != tkPunct || toks[i].c != '.' {
			break
		}
		w.startPart()
		w.put('.')
		i++
	}
	if w.overflow || w.bad {
		return nil, i, true
	}
	return w.bytes(), i, true
}

// quotedName returns the identifier text of a quoted identifier token for comparison with a
// function or schema name, decoding into buf; nil if it does not fit or is invalid. Unquoted
// identifiers are compared with eqFold instead.
func quotedName(src []byte, t *token, buf []byte) []byte {
	if t.kind == tkQIdent {
		body := src[t.body0:t.body1]
		if len(body) <= len(buf) && !containsByte(body, '"') {
			return body // the common case: nothing to decode
		}
	}
	w := identWriter{buf: buf}
	w.ident(src, t, false)
	if w.overflow || w.bad {
		return nil
	}
	return w.bytes()
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}
