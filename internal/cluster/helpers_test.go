package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/pgcluster"
)

// shared is a primary with two replicas for the tests that do not change
// roles; started by the first test that needs it, closed by TestMain.
var shared struct {
	once sync.Once
	c    *pgcluster.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		if err := shared.c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the shared cluster:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func sharedCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	shared.once.Do(func() {
		start := time.Now()
		shared.c, shared.err = pgcluster.Start(context.Background(), pgcluster.Options{Replicas: 2})
		t.Logf("shared cluster started in %v", time.Since(start).Round(time.Millisecond))
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c
}

// startPG starts a cluster of the test's own, closed when the test ends.
func startPG(t *testing.T, replicas int) *pgcluster.Cluster {
	t.Helper()
	start := time.Now()
	pc, err := pgcluster.Start(t.Context(), pgcluster.Options{Replicas: replicas, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pc.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("cluster of %d started in %v", replicas+1, time.Since(start).Round(time.Millisecond))
	return pc
}

// checkNoLeaks fails the test if goroutines started during it outlive it.
// Call it first, so its cleanup runs after every other cleanup.
func checkNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if err := noMoreGoroutines(before, 30*time.Second); err != nil {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %v\n%s", err, buf[:runtime.Stack(buf, true)])
		}
	})
}

func noMoreGoroutines(before int, timeout time.Duration) error {
	return poll(timeout, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines, %d before", n, before)
		}
		return nil
	})
}

// errStop, wrapped in an error from a poll function, ends the polling at once.
var errStop = errors.New("giving up")

// poll calls f until it returns nil or timeout passes, and returns its last error.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || errors.Is(err, errStop) || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// waitFor polls f until it returns nil, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	start := time.Now()
	if err := poll(timeout, f); err != nil {
		t.Fatalf("%s: not after %v: %v", what, timeout, err)
	}
	t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
}

// testCluster is a Cluster under test with its log and events recorded.
type testCluster struct {
	*Cluster
	logs     *logRecorder
	mu       sync.Mutex
	events   []Event // state and topology changes
	ceilings []Event // ceiling reads (Event.Ceiling)
}

// runCluster creates a Cluster from cfg (checking as postgres/postgres) and
// runs it until the test ends.
func runCluster(t *testing.T, cfg Config) *testCluster {
	t.Helper()
	if cfg.User == "" {
		cfg.User = "postgres"
	}
	logs := &logRecorder{t: t}
	tc := &testCluster{Cluster: New(cfg, slog.New(logs)), logs: logs}
	tc.Subscribe(func(ev Event) {
		tc.mu.Lock()
		if ev.Ceiling {
			tc.ceilings = append(tc.ceilings, ev) // apart: the tests of state changes count events
		} else {
			tc.events = append(tc.events, ev)
		}
		tc.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return 10s after its context ended")
		}
	})
	return tc
}

func (tc *testCluster) waitChecked(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := tc.WaitChecked(ctx); err != nil {
		t.Fatal(err)
	}
}

// eventsOf returns the events recorded for the node at addr that match f.
func (tc *testCluster) eventsOf(addr string, f func(Event) bool) []Event {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var evs []Event
	for _, ev := range tc.events {
		if ev.Node.Addr() == addr && f(ev) {
			evs = append(evs, ev)
		}
	}
	return evs
}

func (tc *testCluster) node(addr string) *Node {
	for _, n := range tc.Nodes() {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// nodeIs reports whether the node at addr is in the topology with the given state.
func (tc *testCluster) nodeIs(addr string, up bool, role Role) error {
	n := tc.node(addr)
	if n == nil {
		return fmt.Errorf("%s not in the topology %v", addr, tc.Nodes())
	}
	if n.Up() != up || n.Role() != role {
		return fmt.Errorf("%s: up=%v role=%v, want up=%v role=%v", addr, n.Up(), n.Role(), up, role)
	}
	return nil
}

func (tc *testCluster) addrs() []string {
	var as []string
	for _, n := range tc.Nodes() {
		as = append(as, n.Addr())
	}
	return as
}

func (tc *testCluster) writerIs(addr string) error {
	w, ok := tc.Writer()
	if !ok || w.Addr() != addr {
		return fmt.Errorf("Writer() = %v, %v; want %s", w, ok, addr)
	}
	return nil
}

// logRecorder is a slog.Handler that keeps every record and passes Info and
// above on to the test log.
type logRecorder struct {
	t    *testing.T
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	if r.Level >= slog.LevelInfo {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		h.t.Log(b.String())
	}
	return nil
}

// count returns how many records at level have a message starting with prefix.
func (h *logRecorder) count(level slog.Level, prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == level && strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

// onNode runs f on a connection to n as postgres, within ten seconds; also
// from cleanups, so not with t.Context().
func onNode(t *testing.T, n *pgcluster.Node, f func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	onNodeIn(t, n, "postgres", f)
}

// onNodeIn is onNode in database db.
func onNodeIn(t *testing.T, n *pgcluster.Node, db string, f func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.ConnString("postgres", db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	f(ctx, conn)
}

// execSQL runs stmts on n as postgres.
func execSQL(t *testing.T, n *pgcluster.Node, stmts ...string) {
	t.Helper()
	execSQLIn(t, n, "postgres", stmts...)
}

// execSQLIn is execSQL in database db.
func execSQLIn(t *testing.T, n *pgcluster.Node, db string, stmts ...string) {
	t.Helper()
	onNodeIn(t, n, db, func(ctx context.Context, conn *pgx.Conn) {
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	})
}

// hangingListener accepts TCP connections and never answers on them.
type hangingListener struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newHangingListener(t *testing.T) *hangingListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hangingListener{ln: ln}
	h.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			h.wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

func (h *hangingListener) addr() string { return h.ln.Addr().String() }

// freezingProxy forwards TCP connections to a server until frozen; frozen,
// it swallows everything in both directions and answers no one, as a hung
// server or a black-holed network would.
type freezingProxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *freezingProxy) addr() string { return p.ln.Addr().String() }

func (p *freezingProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *freezingProxy) serve(client net.Conn) {
	p.track(client)
	defer client.Close()
	if p.frozen.Load() {
		io.Copy(io.Discard, client)
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.track(server)
	defer server.Close()
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(server, client); server.Close() })
	p.pipe(client, server)
	client.Close()
	wg.Wait()
}

func (p *freezingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// failedChecks returns how many health checks of addr failed, without a change of state, after
// since (the checker logs those at debug level).
func (h *logRecorder) failedChecks(addr string, since time.Time) int {
	return h.countWith("health check failed", "addr", addr, since)
}

// countWith returns how many records logged after since have message msg and
// the attribute key=value.
func (h *logRecorder) countWith(msg, key, value string, since time.Time) int {
	return h.countOf(key, value, func(r slog.Record) bool { return r.Message == msg && r.Time.After(since) })
}

// countAddr returns how many records at level have the message msg and the attribute addr.
func (h *logRecorder) countAddr(level slog.Level, msg, addr string) int {
	return h.countOf("addr", addr, func(r slog.Record) bool { return r.Level == level && r.Message == msg })
}

// countOf returns how many records with the attribute key=value match f.
func (h *logRecorder) countOf(key, value string, f func(slog.Record) bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if !f(r) {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key && a.Value.String() == value {
				n++
			}
			return true
		})
	}
	return n
}

// queryCounter is a Config.Dial that counts the simple-protocol queries (health checks) sent to
// each address.
type queryCounter struct {
	d    net.Dialer
	sent sync.Map // addr → *atomic.Int64
}

func (q *queryCounter) count(addr string) *atomic.Int64 {
	v, _ := q.sent.LoadOrStore(addr, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func (q *queryCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := q.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, queries: q.count(addr)}, nil
}

type countingConn struct {
	net.Conn
	queries *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	if len(b) > 0 && b[0] == 'Q' { // pgconn writes each query in one Write
		c.queries.Add(1)
	}
	return c.Conn.Write(b)
}

// queryValue runs sql on n as postgres and returns its one value as text.
func queryValue(t *testing.T, n *pgcluster.Node, sql string) string {
	t.Helper()
	var v string
	onNode(t, n, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	})
	return v
}

// lsnOf parses a pg_lsn's text.
func lsnOf(t *testing.T, s string) uint64 {
	t.Helper()
	lsn, ok, err := parseLSN([]byte(s))
	if err != nil || !ok {
		t.Fatalf("LSN %q: %v", s, err)
	}
	return lsn
}

// syncReplicas waits until every replica of pc has replayed the primary's
// WAL as it is now, e.g. the objects a test just created there.
func syncReplicas(t *testing.T, pc *pgcluster.Cluster) {
	t.Helper()
	target := lsnOf(t, queryValue(t, pc.Primary(), "SELECT pg_current_wal_lsn()::text"))
	for _, r := range pc.Replicas() {
		waitFor(t, 30*time.Second, r.Name()+" replayed the primary's WAL", func() error {
			if got := lsnOf(t, queryValue(t, r, "SELECT pg_last_wal_replay_lsn()::text")); got < target {
				return fmt.Errorf("replayed %X, want %X", got, target)
			}
			return nil
		})
	}
}

// hostsOf returns the nodes as hosts of a Config.
func hostsOf(nodes []*pgcluster.Node) []Host {
	hosts := make([]Host, len(nodes))
	for i, n := range nodes {
		hosts[i] = Host{Addr: n.Addr()}
	}
	return hosts
}
