package session

import "sync/atomic"

// ErrorCounter counts the ErrorResponses sent to clients by SQLSTATE class (the code's first two
// characters, 0-9 and A-Z as PostgreSQL's appendix A lists them): the server's, relayed, and
// pgtide's own. Counting is one atomic increment; the zero value is ready.
type ErrorCounter struct {
	n [36 * 36]atomic.Int64 // by class: first character × 36 + second
	// unclassified counts errors without a well-formed SQLSTATE.
	unclassified atomic.Int64
}

func classDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return -1
}

// countError records one error with SQLSTATE code (string or []byte).
func countError[T string | []byte](c *ErrorCounter, code T) {
	if c == nil {
		return
	}
	if len(code) == 5 {
		if a, b := classDigit(code[0]), classDigit(code[1]); a >= 0 && b >= 0 {
			c.n[a*36+b].Add(1)
			return
		}
	}
	c.unclassified.Add(1)
}

// Each calls fn for every class counted so far, in order, and for "" (errors with no valid
// SQLSTATE) if there were any.
func (c *ErrorCounter) Each(fn func(class string, n int64)) {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for i := range c.n {
		if v := c.n[i].Load(); v > 0 {
			fn(string([]byte{digits[i/36], digits[i%36]}), v)
		}
	}
	if v := c.unclassified.Load(); v > 0 {
		fn("", v)
	}
}

// Count records one error with SQLSTATE code sent to a client outside a session.
func (c *ErrorCounter) Count(code string) { countError(c, code) }
