package proxy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/config"
)

// TestIdleServerWatched: a client that holds its server connection while it sends nothing
// (session mode; a transaction-mode client pinned by LISTEN, or inside a transaction) gets what
// the server sends unasked at once, as from a direct connection, while it waits for its next
// request on the event loops: notifications (outside a transaction, where the server sends
// them), each after requests, then the server's FATAL when it ends the session. The proxy serves
// others meanwhile. Each notification is forwarded by a relay goroutine, which ends once it has:
// the client has no goroutine again.
func TestIdleServerWatched(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mode string
		pin  string // what makes a transaction-mode client keep its server
	}{
		{"session", config.PoolModeSession, ""},
		{"transaction, pinned by LISTEN", config.PoolModeTransaction, ""},
		{"transaction, inside a transaction", config.PoolModeTransaction, "BEGIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = tc.mode; c.Cluster.PoolSize = 4 })
			a := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			other := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			listen := tc.pin == ""
			if listen {
				mustExec(t, a, "LISTEN watched")
			} else {
				mustExec(t, a, tc.pin)
			}
			notify := func(payload string) {
				t.Helper()
				if _, err := other.Exec(ctx, "SELECT pg_notify('watched', $1)", payload); err != nil {
					t.Fatal(err)
				}
			}
			wait := func(want string) {
				t.Helper()
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				n, err := a.WaitForNotification(wctx)
				if err != nil || n.Payload != want {
					t.Fatalf("waiting for %q: %v, %v", want, n, err)
				}
			}
			for _, payload := range []string{"one", "two", "three"} {
				if !listen {
					break
				}
				notify(payload)
				wait(payload)
				// The relay that forwarded it ends: the client is back on the loops, its
				// server watched, with no goroutine (and the next notification comes).
				waitRelaying(t, p, 0)
				var one int
				if err := a.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
					t.Fatalf("query after the notification %q: %v", payload, err)
				}
			}

			var pid int
			if err := a.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			mustExec(t, direct(t, "postgres"), "SELECT pg_terminate_backend("+itoa(pid)+")")
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			_, err := a.WaitForNotification(wctx)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "57P01" {
				t.Fatalf("idle client whose server was terminated: %v, want the server's FATAL 57P01", err)
			}
			var one int
			if err := other.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("another client after that: %v", err)
			}
			// The terminated backend's connection was closed with the client's session, not
			// given back to the pool as a whole one (which its reset query would then find dead).
			a.Close(ctx)
			waitCount(t, "clients", p.ClientCount, 1)
			if l := p.logged("server reset query failed"); len(l) > 0 {
				t.Fatalf("the terminated backend's connection went back to the pool: %s", l[0])
			}
		})
	}
}

// waitRelaying waits until want of p's sessions have a relay goroutine reading their server.
func waitRelaying(t *testing.T, p *testProxy, want int) {
	t.Helper()
	waitCount(t, "sessions with a relay goroutine", p.Relaying, want)
}
