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
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Proxy.ReaderListen = ""
		cfg.Cluster.PoolSize = 100
		cfg.Cluster.MaxServerConnections = 100
		cfg.Cluster.ServerConnectRate = 1000
		cfg.Cluster.QueryWaitTimeout.Duration = 2 * time.Minute
	})
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
