package secret

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseVerifier feeds arbitrary text to Parse. It must never panic; an error must wrap
// ErrVerifier and quote none of the input past the mechanism name; a verifier it accepts must
// encode to text that parses to the same verifier. Seeds: below, the verifier of RFC 7677's
// example (password "pencil"); in testdata/fuzz/FuzzParseVerifier, named for what they are, one
// PostgreSQL 15 made, the largest iteration count, and near misses (missing parts, bad padding,
// padding bits set, a sign, a space, a third key).
var verifierFaults = map[string]bool{
	`there is no "$" between the iterations:salt and StoredKey:ServerKey parts`: true,
	`there is no ":" between the iteration count and the salt`:                  true,
	`there is no ":" between StoredKey and ServerKey`:                           true,
	"the iteration count is not an integer from 1 to 2147483647":                true,
	"the salt is not base64 of at least one byte":                               true,
	"StoredKey is not base64 of 32 bytes":                                       true,
	"ServerKey is not base64 of 32 bytes":                                       true,
}

func FuzzParseVerifier(f *testing.F) {
	f.Add("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrVerifier) {
				t.Fatalf("error does not wrap ErrVerifier: %v", err)
			}
			// Every error is one of a fixed set of sentences, so it cannot quote the input.
			if reason, _ := strings.CutPrefix(err.Error(), ErrVerifier.Error()+": "); !verifierFaults[reason] {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if s.Kind != SCRAM {
			if strings.HasPrefix(text, verifierPrefix) {
				t.Fatalf("%q taken for %v", text, s.Kind)
			}
			return
		}
		again, err := ParseVerifier(s.Verifier.Encode())
		if err != nil || !again.Equal(s.Verifier) {
			t.Fatalf("round trip of %q: %v", text, err)
		}
	})
}
