package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestPlanCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"plan", "--instance-class", "db.r6g.large,db.r6g.2xlarge", "--app-instances", "10", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var plans []struct {
		Instance       string   `json:"instance"`
		MaxConnections int      `json:"max_connections"`
		Capped         bool     `json:"capped"`
		Budget         int      `json:"budget"`
		WriterPool     int      `json:"writer_pool_per_app"`
		ReaderPool     int      `json:"reader_pool_per_app"`
		Problems       []string `json:"problems"`
	}
	if err := json.Unmarshal(out.Bytes(), &plans); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(plans) != 2 || plans[0].Instance != "db.r6g.large" || plans[0].MaxConnections < 1627 || plans[0].MaxConnections > 1693 ||
		!plans[1].Capped || plans[1].MaxConnections != 5000 {
		t.Fatalf("plans: %+v", plans)
	}
	if p := plans[0]; (p.WriterPool+p.ReaderPool)*10+3 >= int(float64(p.MaxConnections)*0.7) || len(p.Problems) != 0 {
		t.Fatalf("db.r6g.large for 10 apps: %+v breaks the inequality", p)
	}

	// A setup that cannot fit says so, with what would fix it, and exits 1.
	out.Reset()
	if code := run([]string{"plan", "--instance-class", "db.t4g.medium", "--app-instances", "500"}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "larger instance class") {
		t.Fatalf("500 apps on a db.t4g.medium: exit %d\n%s", code, out.String())
	}
	// Serverless v2 by its maximum ACU, and a custom memory size.
	for _, args := range [][]string{{"--serverless-max-acu", "2"}, {"--memory-gib", "4"}} {
		out.Reset()
		if code := run(append([]string{"plan"}, args...), &out, &errb); code != 0 || !strings.Contains(out.String(), " 414 ") {
			t.Fatalf("%v: exit %d\n%s", args, code, out.String())
		}
	}
	// Bad input: an unknown class, a bad factor, both sizes at once.
	for _, args := range [][]string{
		{"--instance-class", "db.m5.large"},
		{"--safety-factor", "1.5"},
		{"--memory-gib", "4", "--serverless-max-acu", "2"},
		{"--app-instances", "0"},
	} {
		errb.Reset()
		if code := run(append([]string{"plan"}, args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), "pgtide plan:") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
		}
	}
	out.Reset()
	if code := run([]string{"plan", "--instance-class", "list"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "db.r8g.48xlarge") {
		t.Fatalf("list: exit %d\n%s", code, out.String())
	}
}

// TestPlanInputs: bad inputs are refused with exit 2 and a message naming the flag; a setup that
// cannot fit exits 1, as a table or as JSON.
func TestPlanInputs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--memory-gib", "0"}, 2, "--memory-gib must be more than 0"},
		{[]string{"--memory-gib", "NaN"}, 2, "--memory-gib must be more than 0"},
		{[]string{"--memory-gib", "1e300"}, 2, "at most 24576"},
		{[]string{"--serverless-max-acu", "0"}, 2, "--serverless-max-acu must be between 1 and 256"},
		{[]string{"--serverless-max-acu", "300"}, 2, "--serverless-max-acu must be between 1 and 256"},
		{[]string{"--safety-factor", "NaN"}, 2, "--safety-factor must be more than 0"},
		{[]string{"--memory-gib", "4", "--instance-class", "db.r6g.large"}, 2, "give one of --instance-class"},
		{[]string{"--app-instances", "500", "--instance-class", "db.t4g.medium", "--json"}, 1, `"problems"`},
		{[]string{"--app-instances", "500", "--instance-class", "db.t4g.medium"}, 1, "cannot each have"},
		{[]string{"--memory-gib", "0.01"}, 1, "allows no server connection at all"},
		{[]string{"--serverless-max-acu", "16", "--app-instances", "4", "--json"}, 0, `"max_connections"`},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"plan"}, tc.args...), &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("%v: exit %d, want %d and %q:\n%s%s", tc.args, code, tc.code, tc.want, out.String(), errb.String())
		}
		if strings.Contains(out.String(), "fewer pgtide instances") && !strings.Contains(strings.Join(tc.args, " "), "proxy-instances") {
			t.Errorf("%v: advises fewer pgtide instances with one", tc.args)
		}
	}
}
