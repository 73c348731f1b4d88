package admin

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"SHOW POOLS", []string{"SHOW POOLS"}},
		{"SHOW POOLS;", []string{"SHOW POOLS"}},
		{" show pools ; SHOW STATS;;", []string{"show pools", "SHOW STATS"}},
		{"", nil},
		{" ; \n", nil},
		{`PAUSE "a;b"; RESUME "a;b"`, []string{`PAUSE "a;b"`, `RESUME "a;b"`}},
		{`PAUSE 'x;y'`, []string{`PAUSE 'x;y'`}},
		{`PAUSE "un;terminated`, []string{`PAUSE "un;terminated`}},
	} {
		if got := splitStatements(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitStatements(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseStatement(t *testing.T) {
	for _, tc := range []struct {
		in   string
		verb string
		args []string
		err  bool
	}{
		{"SHOW POOLS", "SHOW POOLS", nil, false},
		{"show\tPools", "SHOW POOLS", nil, false},
		{"SHOW", "SHOW", nil, false},
		{"PAUSE", "PAUSE", nil, false},
		{"pause MyDb", "PAUSE", []string{"MyDb"}, false},
		{`PAUSE "my ""odd"" db"`, "PAUSE", []string{`my "odd" db`}, false},
		{"KILL_CLIENT 42 43", "KILL_CLIENT", []string{"42", "43"}, false},
		{`"SHOW" POOLS`, `"SHOW"`, nil, false}, // a quoted word is never a command
		{`SHOW "POOLS"`, "SHOW", []string{"POOLS"}, false},
		{`PAUSE "open`, "", nil, true},
	} {
		st, err := parseStatement(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("parseStatement(%q): error %v", tc.in, err)
			continue
		}
		if err == nil && (st.verb != tc.verb || !slices.Equal(st.args, tc.args)) {
			t.Errorf("parseStatement(%q) = %q %q, want %q %q", tc.in, st.verb, st.args, tc.verb, tc.args)
		}
	}
}

func TestServerVersion(t *testing.T) {
	for in, want := range map[string]string{"v1.2.3": "1.2.3/pgtide", "(devel)": "0.0.0/pgtide", "": "0.0.0/pgtide"} {
		if got := serverVersion(in); got != want {
			t.Errorf("serverVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzConsoleStatement: whatever an admin types, splitting and parsing never panic; every piece
// is trimmed and non-empty, no piece holds a semicolon outside quotes unless its quote is
// unterminated, and a parsed verb is upper case (or a quoted word, which is never a command).
// Seeds: two statements, quoted semicolons, doubled quotes, an unterminated quote, a tab-separated
// SHOW.
func FuzzConsoleStatement(f *testing.F) {
	for _, s := range []string{"SHOW POOLS; show stats;", `PAUSE "a;b""c"; RESUME`, `KILL_CLIENT 'x`, "show\tnodes", `"SHOW" POOLS`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		for _, piece := range splitStatements(q) {
			if piece == "" || strings.TrimSpace(piece) != piece {
				t.Fatalf("piece %q of %q is empty or untrimmed", piece, q)
			}
			st, err := parseStatement(piece)
			if err != nil {
				continue
			}
			if !strings.HasPrefix(st.verb, `"`) && st.verb != strings.ToUpper(st.verb) {
				t.Fatalf("verb %q of %q is not upper case", st.verb, piece)
			}
		}
	})
}
