package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgcluster"
)

// fault is one thing the suite does to the cluster or the proxy. Run measures from a healthy
// period before inject to a healthy period after it; prepare and undo run outside that window.
type fault struct {
	key  string // for Options.Faults
	name string // what pgtide gets
	// bouncer says what PgBouncer gets instead; "" when the fault does not apply to it.
	bouncer string
	// expected are the error classes a client may see without pgtide being at fault; anything
	// else (and any lost write) fails the short test.
	expected []string
	prepare  func(ctx context.Context, e *env) error
	inject   func(ctx context.Context, e *env) error
	undo     func(ctx context.Context, e *env) error
}

// faults is the schedule, in the order Run injects them.
var faults = []fault{
	{
		key: "stop-promote", name: "primary stop (fast) + promote a replica",
		bouncer:  "primary stop (fast), then started again (no failover)",
		expected: []string{"08", "57", classNet},
		inject:   func(ctx context.Context, e *env) error { return e.failover(ctx, false) },
	},
	{
		key: "crash-promote", name: "primary crash (immediate) + promote a replica",
		bouncer:  "primary crash (immediate), then started again (no failover)",
		expected: []string{"08", "57", classNet},
		prepare:  func(ctx context.Context, e *env) error { return e.syncToNextPrimary(ctx) },
		inject:   func(ctx context.Context, e *env) error { return e.failover(ctx, true) },
	},
	{
		key: "replica-kill", name: "a replica killed (immediate), started again",
		expected: []string{"08", "57", classNet},
		inject: func(ctx context.Context, e *env) error {
			reps := e.replicas()
			return e.downAndBack(ctx, reps[len(reps)-1:], true)
		},
	},
	{
		key: "replicas-down", name: "all replicas stopped (fast), started again",
		expected: []string{"08", "57", classNet},
		inject:   func(ctx context.Context, e *env) error { return e.downAndBack(ctx, e.replicas(), false) },
	},
	{
		key: "blackhole", name: "a node that accepts TCP and never answers, added and removed by reload",
		inject: func(ctx context.Context, e *env) error { return e.blackhole(ctx) },
	},
	{
		key: "max-connections", name: "primary restarted with max_connections = 20 (from 200)",
		bouncer:  "primary restarted with max_connections = 20 (from 200)",
		expected: []string{"08", "57", classNet},
		inject:   func(ctx context.Context, e *env) error { return e.setMaxConnections(ctx, "20") },
		undo:     func(ctx context.Context, e *env) error { return e.setMaxConnections(ctx, "") },
	},
	{
		key: "sighup", name: "SIGHUP: pool_size 20 → 10",
		bouncer: "SIGHUP: default_pool_size 20 → 10",
		inject:  func(ctx context.Context, e *env) error { return e.setPoolSize(ctx, e.opts.PoolSize/2) },
		undo:    func(ctx context.Context, e *env) error { return e.setPoolSize(ctx, e.opts.PoolSize) },
	},
	{
		key: "sigterm", name: "pgtide SIGTERM, then started again",
		bouncer:  "PgBouncer SIGINT (its safe shutdown), then started again",
		expected: []string{"08", "57", classNet},
		inject:   func(ctx context.Context, e *env) error { return e.restartProxy(ctx) },
	},
	{
		key: "slow-client", name: "3 clients stop reading a large result (one per endpoint)",
		bouncer: "3 clients stop reading a large result",
		inject:  func(ctx context.Context, e *env) error { return e.slowClients(ctx) },
	},
	{
		key: "storm", name: "1,000 clients connect at once (auto endpoint)",
		bouncer: "1,000 clients connect at once",
		inject:  func(ctx context.Context, e *env) error { return e.storm(ctx) },
	},
}

// env is what faults act on. It belongs to Run's goroutine.
type env struct {
	opts    Options
	cluster *pgcluster.Cluster
	proxy   proxy
	rec     *recorder
	bouncer bool
	primary *pgcluster.Node   // the current primary; failover changes it
	names   map[string]string // node address → its name ("node0", ...)
	notes   []string          // what the current fault measured besides the window's figures
	// extraNodes names the addresses the current fault gave the proxy that are not cluster
	// nodes (the blackhole).
	extraNodes map[string]string
}

func (e *env) notef(format string, args ...any) {
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
}

// replicas returns the running nodes other than the primary, in creation order.
func (e *env) replicas() []*pgcluster.Node {
	var out []*pgcluster.Node
	for _, n := range e.cluster.Nodes() {
		if n != e.primary && n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// parallel runs f for each node at once and joins their errors.
func parallel(nodes []*pgcluster.Node, f func(n *pgcluster.Node) error) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// failover stops (or, with crash, kills) the primary and promotes the first replica; the
// other replica and then the old primary follow it. PgBouncer knows one server, so there the
// primary only starts again.
func (e *env) failover(ctx context.Context, crash bool) error {
	old := e.primary
	down := old.Stop
	if crash {
		down = old.Kill
	}
	if err := down(ctx); err != nil {
		return err
	}
	if e.bouncer {
		if err := old.Start(ctx); err != nil {
			return err
		}
		e.rec.markNow("primary started again")
		return nil
	}
	reps := e.replicas()
	next := reps[0]
	if err := next.Promote(ctx); err != nil {
		return err
	}
	e.primary = next
	e.rec.markNow("promotion returned")
	return parallel(append(reps[1:], old), func(n *pgcluster.Node) error {
		if err := n.Stop(ctx); err != nil {
			return err
		}
		return n.Follow(ctx, next)
	})
}

// syncToNextPrimary makes the replica failover will promote synchronous, so that a crash
// loses no acknowledged commit to asynchronous replication and a missing write is the
// proxy's doing. The promoted node does not inherit the setting.
func (e *env) syncToNextPrimary(ctx context.Context) error {
	if e.bouncer {
		return nil
	}
	next := e.replicas()[0]
	if err := e.exec(ctx, e.primary, fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%s'", next.Name()),
		"SELECT pg_reload_conf()"); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, next.Name()+" synchronous", func(ctx context.Context) error {
		var state string
		err := e.queryRow(ctx, e.primary, `SELECT sync_state FROM pg_stat_replication WHERE application_name = $1`,
			[]any{next.Name()}, &state)
		if err == nil && state != "sync" {
			err = fmt.Errorf("sync_state %q", state)
		}
		return err
	})
}

// downAndBack stops (or kills) nodes for Options.Hold and starts them again.
func (e *env) downAndBack(ctx context.Context, nodes []*pgcluster.Node, kill bool) error {
	err := parallel(nodes, func(n *pgcluster.Node) error {
		if kill {
			return n.Kill(ctx)
		}
		return n.Stop(ctx)
	})
	if err != nil {
		return err
	}
	if err := pause(ctx, e.opts.Hold); err != nil {
		return err
	}
	if err := parallel(nodes, func(n *pgcluster.Node) error { return n.Start(ctx) }); err != nil {
		return err
	}
	e.rec.markNow("started again")
	return nil
}

// blackhole adds to pgtide's hosts, by reload, a listener that accepts connections and never
// reads or writes, keeps it for Options.Hold and removes it again.
func (e *env) blackhole(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		held  []net.Conn
		count int
	)
	wg.Add(1)
	go func() { // owned by this call: ends when ln closes
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			count++
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	e.extraNodes = map[string]string{addr: "blackhole"}

	s := e.proxy.settings()
	with := s
	with.Hosts = append(append([]string(nil), s.Hosts...), addr)
	if err := e.proxy.reload(ctx, with); err != nil {
		return err
	}
	if err := pause(ctx, e.opts.Hold); err != nil {
		return err
	}
	if err := e.proxy.reload(ctx, s); err != nil {
		return err
	}
	mu.Lock()
	e.notef("the blackhole accepted %d connections in %v", count, e.opts.Hold)
	mu.Unlock()
	return nil
}

// setMaxConnections sets (or, with "", resets) the primary's max_connections by ALTER SYSTEM
// and restarts it.
func (e *env) setMaxConnections(ctx context.Context, value string) error {
	stmt := "ALTER SYSTEM RESET max_connections"
	if value != "" {
		stmt = "ALTER SYSTEM SET max_connections = " + value
	}
	if err := e.exec(ctx, e.primary, stmt); err != nil {
		return err
	}
	if err := e.primary.Restart(ctx); err != nil {
		return err
	}
	e.rec.markNow("restart returned")
	return nil
}

func (e *env) setPoolSize(ctx context.Context, n int) error {
	s := e.proxy.settings()
	s.PoolSize = n
	return e.proxy.reload(ctx, s)
}

// restartProxy stops the proxy gracefully and starts it again at once.
func (e *env) restartProxy(ctx context.Context) error {
	t0 := time.Now()
	if err := e.proxy.stop(); err != nil {
		return err
	}
	e.notef("%s exited %d ms after the signal", e.proxy.name(), time.Since(t0).Milliseconds())
	if err := e.proxy.start(ctx); err != nil {
		return err
	}
	e.rec.markNow("serving again")
	return nil
}

// slowMarker is in the slow clients' query text, to find their server backends.
const slowMarker = "chaos_slow_client"

// slowClients has a client on each endpoint send a query with a result far larger than the
// socket buffers and never read it; they stay until the proxy disconnects them (pgtide:
// client_write_timeout) or Options.Hold after that timeout, then close.
func (e *env) slowClients(ctx context.Context) error {
	var conns []*pgconn.PgConn
	defer func() {
		for _, c := range conns {
			c.Conn().Close() // a polite Close would wait to send Terminate
		}
	}()
	sql := fmt.Sprintf("SELECT generate_series(1, 100000000) AS g, repeat('x', 1000) AS pad /* %s */", slowMarker)
	for _, ep := range []endpoint{endpointAuto, endpointWriter, endpointReader} {
		c, err := pgconn.Connect(ctx, clientConnString(e.proxy.addr(ep), "chaos-slow"))
		if err != nil {
			return fmt.Errorf("slow client: %w", err)
		}
		conns = append(conns, c)
		_ = c.Exec(context.Background(), sql) // sent; its results are never read
	}
	if err := waitFor(ctx, 10*time.Second, "slow queries running", func(ctx context.Context) error {
		n, err := e.slowBackends(ctx)
		if err == nil && n < len(conns) {
			err = fmt.Errorf("%d of %d slow queries seen in pg_stat_activity", n, len(conns))
		}
		return err
	}); err != nil {
		return err
	}
	t0 := time.Now()
	held := len(conns)
	err := waitFor(ctx, e.opts.ClientWriteTimeout+e.opts.Hold, "slow clients' server connections released", func(ctx context.Context) error {
		n, err := e.slowBackends(ctx)
		if err != nil {
			return err
		}
		if held = n; n > 0 {
			return fmt.Errorf("%d still running", n)
		}
		return nil
	})
	if err != nil {
		e.notef("%d of the slow clients' server connections were still held %.1f s after they stopped reading, when the clients disconnected",
			held, time.Since(t0).Seconds())
	} else {
		e.notef("the slow clients' server connections were released %.1f s after they stopped reading", time.Since(t0).Seconds())
	}
	return nil
}

// slowBackends counts the backends running a slow client's query on every node.
func (e *env) slowBackends(ctx context.Context) (int, error) {
	total := 0
	for _, n := range e.cluster.Nodes() {
		var k int
		err := e.queryRow(ctx, n, `SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE $1`,
			[]any{"%" + slowMarker + "%"}, &k)
		if err != nil {
			return 0, err
		}
		total += k
	}
	return total, nil
}

// storm connects Options.StormClients clients at once to the auto endpoint; each runs SELECT 1
// and stays connected until every one has answered or failed.
func (e *env) storm(ctx context.Context) error {
	n := e.opts.StormClients
	var (
		wg, done sync.WaitGroup
		mu       sync.Mutex
		ok       int
		slowest  time.Duration
	)
	gate, release := make(chan struct{}), make(chan struct{})
	done.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(ctx, e.opts.OpTimeout)
			defer cancel()
			c, err := pgconn.Connect(cctx, clientConnString(e.proxy.addr(endpointAuto), "chaos-storm"))
			if err == nil {
				defer c.Close(context.Background())
				_, err = c.Exec(cctx, "SELECT 1").ReadAll()
			}
			mu.Lock()
			if err == nil {
				ok++
				slowest = max(slowest, time.Since(t0))
			}
			mu.Unlock()
			if err != nil {
				e.rec.failure("storm", err)
			}
			done.Done()
			<-release
		}()
	}
	close(gate)
	done.Wait()
	close(release)
	wg.Wait()
	e.notef("%d of %d storm clients connected and answered; the slowest took %d ms", ok, n, slowest.Milliseconds())
	return nil
}

func (e *env) exec(ctx context.Context, n *pgcluster.Node, stmts ...string) error {
	c, err := pgx.Connect(ctx, directConnString(n.Addr()))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", n.Name(), strings.Fields(s)[0], err)
		}
	}
	return nil
}

func (e *env) queryRow(ctx context.Context, n *pgcluster.Node, sql string, args []any, dest ...any) error {
	c, err := pgx.Connect(ctx, directConnString(n.Addr()))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.QueryRow(ctx, sql, args...).Scan(dest...)
}

// pause waits d, or less if ctx ends. The schedule's healthy periods and holds are fixed
// lengths of time, not waits for a condition.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
