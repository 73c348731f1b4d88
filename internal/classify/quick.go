package classify

// MaySetSessionState reports whether AnalyzeSession could find anything in sql that pgtide acts
// on: a pin, a search_path change, a reset, DISCARD ALL, DEALLOCATE or EXECUTE. When it returns
// false, AnalyzeSession would report Pin None, no SearchPath change, and no DiscardAll,
// DeallocateAll, Deallocate, Refs or resets (it
// says nothing about Statements and TxControl). It is a byte scan for the words every such rule
// needs, much cheaper than the analysis, so the common statement (a SELECT, INSERT or DELETE
// without any of these words) skips it.
//
// A rule added to AnalyzeSession needs one of these words, or a new one here; the fuzz target
// checks that nothing slips through. It is conservative: the words may appear anywhere (inside literals, comments or longer names,
// as in OFFSET or "dataset"), and a Unicode-escaped identifier (U&"...") can spell any word, so it
// counts too. It never allocates.
func MaySetSessionState(sql []byte) bool { return triggerIn(sql, 0, len(sql)) }

// triggerIn reports whether one of MaySetSessionState's words starts at an index in [from, to)
// of sql (it may end past to). Each index costs a table lookup on its byte and the next: a word
// is compared only where they, and the byte after them, can start one.
func triggerIn(sql []byte, from, to int) bool {
	to = min(to, len(sql)-1) // every word has two bytes or more
	for k := max(from, 0); k < to; k++ {
		c0, c1 := sql[k], sql[k+1]
		if triggerPairs[c0]>>(c1&31)&1 == 0 ||
			k+2 < len(sql) && triggerThirds[c0&31][c1&31]>>(sql[k+2]&31)&1 == 0 {
			continue
		}
		if triggerAt(sql[k:]) {
			return true
		}
	}
	return false
}

// triggerAt reports whether one of MaySetSessionState's words starts b.
func triggerAt(b []byte) bool {
	for _, w := range triggerWords[b[0]|0x20] { // ASCII lower case for letters
		if hasFold(b, w) {
			return true
		}
	}
	return false
}

// triggerWords are the words MaySetSessionState looks for, lower case, by their first byte.
var triggerWords = [256][]string{
	's': {"set"}, // SET, RESET, set_config
	'p': {"prepare"},
	'd': {"deallocate", "discard"},
	'l': {"listen", "load"},
	'h': {"hold"},     // DECLARE ... WITH HOLD
	't': {"temp"},     // TEMP, TEMPORARY, pg_temp
	'a': {"advisory"}, // pg_advisory_lock and friends
	'u': {"u&"},       // U&"..." can spell any name
	'e': {"execute"},
}

// triggerThirds has, for the first two bytes of each word of triggerWords (c&31 of each, which
// folds ASCII case and aliases other bytes: a filter, not a test), bit c&31 set for its third
// byte c, and every bit for u&, which has none.
var triggerThirds = func() (t [32][32]uint32) {
	for _, ws := range triggerWords {
		for _, w := range ws {
			if len(w) < 3 {
				t[w[0]&31][w[1]&31] = ^uint32(0)
				continue
			}
			t[w[0]&31][w[1]&31] |= 1 << (w[2] & 31)
		}
	}
	return t
}()

// triggerPairs has, for each byte that may start a word of triggerWords (in either case), bit
// c&31 set for each byte c that may follow it there (in either case: &31 folds ASCII letters).
var triggerPairs = func() (t [256]uint32) {
	for _, ws := range triggerWords {
		for _, w := range ws {
			bit := uint32(1) << (w[1] & 31)
			t[w[0]] |= bit
			t[w[0]&^0x20] |= bit // upper case; w[0] is a letter
		}
	}
	return t
}()

// hasFold reports whether b starts with the lower-case ASCII word w, ignoring ASCII case in b.
func hasFold(b []byte, w string) bool {
	return len(b) >= len(w) && eqFold(b[:len(w)], w)
}
