package proxy_test

import (
	"time"

	"context"
	"fmt"
	"github.com/jackc/pgx/v5/pgproto3"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/config"
)

// benchConn connects as app to appdb directly ("direct") or through a transaction-mode pgtide
// with two server connections ("pgtide"), for the benchmark's lifetime.
func benchConn(b *testing.B, target string) *pgconn.PgConn {
	cs := cluster.Primary().ConnString("app", "appdb") + " password='app secret'"
	if target == "pgtide" {
		p := startProxyB(b, func(c *config.Config) { c.Cluster.PoolSize = 2 })
		cs = p.connString("app", "appdb")
	}
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, cs)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(ctx) })
	return c
}

// BenchmarkRoundTrip measures one simple-protocol transaction (SELECT 1) through pgtide in
// transaction mode, and directly against PostgreSQL for comparison. allocs/op counts the whole
// process (client, proxy and all), so pgtide's own allocations per transaction are the difference
// between the two.
func BenchmarkRoundTrip(b *testing.B) {
	if cluster == nil {
		b.Skip("no test cluster")
	}
	for _, target := range []string{"direct", "pgtide"} {
		b.Run(target, func(b *testing.B) {
			ctx := context.Background()
			c := benchConn(b, target)
			if _, err := c.Prepare(ctx, "bench_stmt", "SELECT 1", nil); err != nil {
				b.Fatal(err)
			}
			protocols := []struct {
				name string
				run  func() error
			}{
				{"simple", func() error { _, err := c.Exec(ctx, "SELECT 1").ReadAll(); return err }},
				{"extended", func() error { _, err := c.ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Close(); return err }},
				{"prepared", func() error { _, err := c.ExecPrepared(ctx, "bench_stmt", nil, nil, nil).Close(); return err }},
			}
			for _, proto := range protocols {
				b.Run(proto.name, func(b *testing.B) {
					for i := 0; i < 3; i++ { // warm up the server connections' statement caches
						if err := proto.run(); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := proto.run(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkBatch measures one pipeline of n unnamed-statement queries (Parse, Bind, Describe,
// Execute each) and a single Sync, as pgx's batches send them, through pgtide and directly. The
// ns/query metric must not grow with n: pgtide's work per message is O(1) (a quadratic queue
// once made a 100,000-query batch 20× slower than direct).
func BenchmarkBatch(b *testing.B) {
	if cluster == nil {
		b.Skip("no test cluster")
	}
	for _, target := range []string{"direct", "pgtide"} {
		b.Run(target, func(b *testing.B) {
			ctx := context.Background()
			c := benchConn(b, target)
			for _, n := range []int{1000, 10000, 100000} {
				batch := &pgconn.Batch{}
				for i := 0; i < n; i++ {
					batch.ExecParams("SELECT $1::text", [][]byte{[]byte(strconv.Itoa(i))}, nil, nil, nil)
				}
				b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						res, err := c.ExecBatch(ctx, batch).ReadAll()
						if err != nil || len(res) != n {
							b.Fatalf("%d results, %v", len(res), err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/query")
				})
			}
		})
	}
}

// BenchmarkConnect measures a connection per transaction (pgbench -C): a login with trust, one
// simple-protocol SELECT 1 and Terminate, through a transaction-mode pgtide and directly. As in
// BenchmarkRoundTrip, allocs/op counts the whole process: pgtide's own per connection are the
// difference between the two.
func BenchmarkConnect(b *testing.B) {
	if cluster == nil {
		b.Skip("no test cluster")
	}
	for _, target := range []string{"direct", "pgtide"} {
		b.Run(target, func(b *testing.B) {
			cs := cluster.Primary().ConnString("app", "appdb") + " password='app secret'"
			if target == "pgtide" {
				p := startProxyB(b, func(c *config.Config) {
					c.Cluster.PoolSize = 2
					c.Auth.Method = config.AuthTrust
				})
				cs = p.connString("app", "appdb")
			}
			cfg, err := pgconn.ParseConfig(cs + " sslmode=disable")
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			run := func() error {
				c, err := pgconn.ConnectConfig(ctx, cfg)
				if err != nil {
					return err
				}
				if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
					return err
				}
				return c.Close(ctx)
			}
			for range 3 {
				if err := run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPipelineStatements measures a pipeline of 100 requests in one write, each preparing
// a named statement, running it and closing it (Parse, Bind, Execute, Close, Sync), as clients
// that prepare per query pipeline them, through a transaction-mode pgtide and directly: per
// request. A request waits for the one before only when it uses a statement that one changed
// (see the session's settle.go); these do not.
func BenchmarkPipelineStatements(b *testing.B) {
	if cluster == nil {
		b.Skip("no test cluster")
	}
	for _, target := range []string{"direct", "pgtide"} {
		b.Run(target, func(b *testing.B) {
			addr := cluster.Primary().Addr()
			if target == "pgtide" {
				addr = startProxyB(b, func(c *config.Config) {
					c.Cluster.PoolSize = 2
					c.Auth.Method = config.AuthTrust
				}).Addr().String()
			}
			c, err := dialFuzzClient(addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.conn.Close()
			const n = 100
			var batch []byte
			for i := range n {
				name := "q" + strconv.Itoa(i)
				for _, m := range []pgproto3.FrontendMessage{
					&pgproto3.Parse{Name: name, Query: "SELECT " + strconv.Itoa(i)},
					&pgproto3.Bind{PreparedStatement: name},
					&pgproto3.Execute{},
					&pgproto3.Close{ObjectType: 'S', Name: name},
					&pgproto3.Sync{},
				} {
					if batch, err = m.Encode(batch); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			for range b.N {
				c.conn.SetDeadline(time.Now().Add(time.Minute))
				if _, err := c.conn.Write(batch); err != nil {
					b.Fatal(err)
				}
				for range n {
					if err := c.readReady(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/request")
		})
	}
}
