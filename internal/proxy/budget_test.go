package proxy_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
)

// startBudgetNode starts a lone PostgreSQL node with max_connections = maxConnections, the role
// app (scram-sha-256) and its database appdb; it stops when the test's cleanups run, after those
// registered later (the proxies in front of it).
func startBudgetNode(t *testing.T, ctx context.Context, maxConnections int) *pgcluster.Cluster {
	t.Helper()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		ExtraConf: []string{fmt.Sprintf("max_connections = %d", maxConnections)},
		HBA:       []string{"host all app 127.0.0.1/32 scram-sha-256"},
		InitSQL:   []string{"CREATE ROLE app LOGIN PASSWORD 'app secret'", "CREATE DATABASE appdb OWNER app"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// storm runs n clients on each of connStrings, each running SELECT pg_sleep(0.01) as long as
// more(how many it has run) says, and returns the first error.
func storm(ctx context.Context, connStrings []string, n int, more func(done int) bool) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(connStrings)*n)
	for ci, cs := range connStrings {
		for i := range n {
			wg.Go(func() {
				conn, err := pgx.Connect(ctx, cs)
				if err != nil {
					errs <- fmt.Errorf("endpoint %d, client %d: %w", ci, i, err)
					return
				}
				defer conn.Close(context.Background())
				for done := 0; more(done); done++ {
					if _, err := conn.Exec(ctx, "SELECT pg_sleep(0.01)"); err != nil {
						errs <- fmt.Errorf("endpoint %d, client %d, query %d: %w", ci, i, done+1, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// budgetProxy is pgtide in front of a budget node, with limits of its own far above the node's
// budget (pool_size and max_server_connections 100), so the budget is what caps it.
func budgetProxy(t *testing.T, c *pgcluster.Cluster) *testProxy {
	return clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.ReaderListen = ""
		cfg.Cluster.PoolSize = 100
		cfg.Cluster.MaxServerConnections = 100
		cfg.Cluster.ServerConnectRate = 1000
		cfg.Cluster.QueryWaitTimeout.Duration = 2 * time.Minute
	})
}

// TestNodeBudgetFromCeiling: the budget comes from the node's own max_connections. With
// max_connections = 40 (3 reserved for superusers) and safety_factor 0.7, pgtide holds at most
// floor((40 − 3) × 0.7) = 25 server connections there under a storm of 300 clients, although
// pool_size and max_server_connections would allow 100; every client's queries succeed.
func TestNodeBudgetFromCeiling(t *testing.T) {
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startBudgetNode(t, ctx, 40)
	p := budgetProxy(t, c)
	addr := c.Primary().Addr()
	waitFor(t, 30*time.Second, "the node's budget", func() bool { return p.Pools().NodeCap(addr) == 25 })

	mon, err := pgx.Connect(ctx, c.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close(context.Background())
	peak := watchPeak(mon, "app", func() int64 { return int64(p.Pools().NodeTotal(addr)) })
	err = storm(ctx, []string{p.connString("app", "appdb")}, 300, func(done int) bool { return done < 3 })
	most := peak()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("most server connections seen: %d", most)
	if most > 25 {
		t.Fatalf("%d server connections on a node whose budget is 25", most)
	}
	if most < 10 {
		t.Fatalf("only %d server connections under a 300-client storm: the budget was not used", most)
	}
}

// TestBudgetShrinks: a node's budget shrinks live without interrupting a transaction. First by
// reload (safety_factor 0.7 → 0.35 on max_connections = 40: budget 25 → 12) while 20 clients
// hold open transactions: every one commits, and the connections over the new budget close as
// they come back. Then by the node's own ceiling: max_connections lowered to 30 and the node
// restarted, the budget follows (floor(27 × 0.7) = 18) and a storm of clients afterwards stays
// within it, every query succeeding.
func TestBudgetShrinks(t *testing.T) {
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startBudgetNode(t, ctx, 40)
	p := budgetProxy(t, c)
	node := c.Primary()
	addr := node.Addr()
	waitFor(t, 30*time.Second, "the node's budget", func() bool { return p.Pools().NodeCap(addr) == 25 })

	var holders []*pgx.Conn
	for range 20 {
		conn, err := pgx.Connect(ctx, p.connString("app", "appdb"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT txid_current()"); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, conn)
	}
	if n := p.Pools().NodeTotal(addr); n < 20 {
		t.Fatalf("%d server connections for 20 open transactions", n)
	}
	next := *p.Config()
	next.Cluster.SafetyFactor = 0.35
	p.Reload(&next)
	if got := p.Pools().NodeCap(addr); got != 12 {
		t.Fatalf("budget after the reload: %d, want floor(37 × 0.35) = 12", got)
	}
	for i, conn := range holders {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("client %d, inside its transaction after the shrink: %v", i, err)
		}
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			t.Fatalf("client %d's COMMIT: %v", i, err)
		}
	}
	waitFor(t, 30*time.Second, "the connections over budget to close", func() bool { return p.Pools().NodeTotal(addr) <= 12 })

	// A new value: Reload keeps the pointer it was given, which the proxy's goroutines read.
	back := *p.Config()
	back.Cluster.SafetyFactor = 0.7
	p.Reload(&back)
	mon, err := pgx.Connect(ctx, node.ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mon.Exec(ctx, "ALTER SYSTEM SET max_connections = 30"); err != nil {
		t.Fatal(err)
	}
	mon.Close(ctx)
	if err := node.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the budget from the new ceiling", func() bool { return p.Pools().NodeCap(addr) == 18 })

	mon, err = pgx.Connect(ctx, node.ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close(context.Background())
	peak := watchPeak(mon, "app", func() int64 { return int64(p.Pools().NodeTotal(addr)) })
	if err := storm(ctx, []string{p.connString("app", "appdb")}, 100, func(done int) bool { return done < 3 }); err != nil {
		t.Fatal(err)
	}
	most := peak()
	t.Logf("most server connections after the restart: %d", most)
	if most > 18 {
		t.Fatalf("%d server connections on a node whose budget is 18", most)
	}
}
