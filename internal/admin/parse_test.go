package admin

import (
	"slices"
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
