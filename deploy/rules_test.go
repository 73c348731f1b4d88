package deploy_test

import (
	"os/exec"
	"testing"
)

// TestPromtoolCheckRules checks the rules file as Prometheus would load it.
func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "prometheus/pgtide-rules.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestPromtoolTestRules runs the rules' unit tests: each alert fires, and does not at its edges.
func TestPromtoolTestRules(t *testing.T) {
	cmd := exec.Command(promtool(t), "test", "rules", "pgtide-rules.test.yml")
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// promtool returns the path of promtool. Under `make test` it must be there (scripts/
// ensure-postgres.sh installs it), so its absence fails; `go test -short` skips instead.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if testing.Short() {
			t.Skip("promtool not found (Debian package prometheus); skipped under -short")
		}
		t.Fatal("promtool not found: install Debian's prometheus package (make test installs it: scripts/ensure-postgres.sh --promtool)")
	}
	return path
}
