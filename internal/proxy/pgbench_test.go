package proxy_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"pgtide/internal/config"
)

// TestPgbench: pgbench -S -c 200 (simple protocol) through pgtide in transaction mode with
// pool_size 10 completes with zero failed transactions.
func TestPgbench(t *testing.T) {
	pgbench, err := lookPath("pgbench")
	if err != nil {
		t.Skip("pgbench not installed")
	}
	p := startProxy(t, func(c *config.Config) {
		c.Cluster.PoolSize = 10
		c.Auth.Method = config.AuthSCRAM
		c.Cluster.QueryWaitTimeout.Duration = 60 * time.Second
	})
	cs := p.connString("app", "appdb")
	run(t, 2*time.Minute, pgbench, "-i", "-q", "-s", "1", cs)
	out := run(t, 3*time.Minute, pgbench, "-n", "-S", "-c", "200", "-j", "2", "-t", "50", cs)
	t.Log(out)
	if strings.Contains(out, "aborted") {
		t.Fatal("pgbench clients aborted")
	}
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] || m[1] != "10000" {
		t.Fatalf("not every transaction was processed: %v", m)
	}
	if !strings.Contains(out, "number of failed transactions: 0 (0.000%)") {
		t.Fatal("pgbench reported failed transactions")
	}
}
