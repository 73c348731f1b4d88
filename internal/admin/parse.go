package admin

import (
	"errors"
	"strings"
)

// splitStatements splits a Query's text at the semicolons outside quotes: psql sends
// "SHOW POOLS; SHOW STATS" as one Query. Statements of nothing but white space are dropped.
func splitStatements(q string) []string {
	var out []string
	var quote byte // the quote character we are inside, or 0
	start := 0
	for i := 0; i <= len(q); i++ {
		if i < len(q) {
			c := q[i]
			switch {
			case quote != 0:
				if c == quote {
					quote = 0 // a doubled quote closes and reopens: same result
				}
				continue
			case c == '"' || c == '\'':
				quote = c
				continue
			case c != ';':
				continue
			}
		}
		if s := strings.TrimSpace(q[start:i]); s != "" {
			out = append(out, s)
		}
		start = i + 1
	}
	return out
}

// statement is one console command as typed.
type statement struct {
	// verb is the command's words in upper case: "SHOW POOLS", "PAUSE", "KILL_CLIENT".
	verb string
	// args are the words after the verb, as typed (case kept, as PgBouncer keeps it); a double
	// quoted word loses its quotes, and "" in it stands for one ".
	args []string
}

var errUnterminated = errors.New("unterminated quoted identifier")

// parseStatement reads a statement of white-space separated words; SHOW takes its second word
// into the verb.
func parseStatement(s string) (statement, error) {
	var words []string
	var quoted []bool
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"':
			var b strings.Builder
			i++
			for {
				j := strings.IndexByte(s[i:], '"')
				if j < 0 {
					return statement{}, errUnterminated
				}
				b.WriteString(s[i : i+j])
				i += j + 1
				if i < len(s) && s[i] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			words, quoted = append(words, b.String()), append(quoted, true)
		default:
			j := strings.IndexAny(s[i:], " \t\n\r\"")
			if j < 0 {
				j = len(s) - i
			}
			words, quoted = append(words, s[i:i+j]), append(quoted, false)
			i += j
		}
	}
	st := statement{}
	verbWords := 1
	if len(words) > 1 && !quoted[0] && strings.EqualFold(words[0], "show") && !quoted[1] {
		verbWords = 2
	}
	for i, w := range words {
		if i < verbWords {
			if quoted[i] {
				return statement{verb: `"` + w + `"`}, nil // never a command
			}
			st.verb = strings.TrimSpace(st.verb + " " + strings.ToUpper(w))
			continue
		}
		st.args = append(st.args, w)
	}
	return st, nil
}
