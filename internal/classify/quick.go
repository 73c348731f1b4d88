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
func MaySetSessionState(sql []byte) bool {
	for i, c := range sql {
		for _, w := range triggerWords[c|0x20] { // ASCII lower case for letters
			if hasFold(sql[i:], w) {
				return true
			}
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

// hasFold reports whether b starts with the lower-case ASCII word w, ignoring ASCII case in b.
func hasFold(b []byte, w string) bool {
	return len(b) >= len(w) && eqFold(b[:len(w)], w)
}
