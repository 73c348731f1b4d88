package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// fakeDialer is the pool's dialer for the lease tests: "refused:*" addresses refuse, "denied:*"
// ones answer the login with a 28P01, "standby:*" ones log the client in reporting
// in_hot_standby = on, any other logs the client in and drops what it sends.
type fakeDialer struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	dialed map[string]int
}

func (d *fakeDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed[addr]++
	d.mu.Unlock()
	if strings.HasPrefix(addr, "refused:") {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	client, server := net.Pipe()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer server.Close()
		var n [4]byte
		if _, err := io.ReadFull(server, n[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, server, int64(binary.BigEndian.Uint32(n[:])-4)); err != nil {
			return
		}
		var msg []byte
		if strings.HasPrefix(addr, "denied:") {
			msg = (&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidPassword,
				Message: `password authentication failed for user "u"`}).Append(nil)
		} else {
			msg = wire.AppendMessage(nil, 'R', []byte{0, 0, 0, 0})
			if strings.HasPrefix(addr, "standby:") {
				msg = wire.AppendParameterStatus(msg, "in_hot_standby", "on")
			}
			msg = wire.AppendBackendKeyData(msg, 7, 42)
			msg = wire.AppendReadyForQuery(msg, 'I')
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
		io.Copy(io.Discard, server)
	}()
	return client, nil
}

// leaseRouter returns a router over the given nodes whose pools dial through a fakeDialer.
func leaseRouter(t *testing.T, writer *cluster.Node, readers ...*cluster.Node) (*Router, *fakeDialer) {
	cfg := config.Defaults()
	cfg.Cluster.FailoverTimeout.Duration = time.Second
	r := testRouter(cfg, writer, readers...)
	r.cluster = cluster.New(cluster.Config{}, nil) // for Backoff's waits: no checks run, nothing changes
	d := &fakeDialer{dialed: map[string]int{}}
	m := pool.NewManager(pool.Settings{PoolSize: 2, MaxServerConnections: 10, ServerLifetime: time.Hour,
		ServerIdleTimeout: time.Hour, ServerConnectTimeout: 5 * time.Second, MaxMessageSize: 1 << 20})
	m.DialFunc = d.dial
	t.Cleanup(func() {
		m.Close()
		d.wg.Wait()
	})
	r.pools = m
	return r, d
}

// TestLeaseSkipsAnUnreachableReader: a reader that refuses connections is suspected and another
// reader serves the read at once, without waiting for the health checks.
func TestLeaseSkipsAnUnreachableReader(t *testing.T) {
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	dead := cluster.NewNodeForTest("refused:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader})
	live := cluster.NewNodeForTest("live:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader})
	r, d := leaseRouter(t, w, dead, live)
	r.state(dead).load.Store(-1) // the least loaded: picked first
	ep := epFor(r.config(), Auto)
	c, n, err := r.Lease(context.Background(), ep, Auto, pool.Key{Database: "db", User: "u"}, Intent{Route: classify.RouteReader})
	if err != nil {
		t.Fatal(err)
	}
	if n != live || c.Key().Node != "live:1" {
		t.Fatalf("leased on %s (%s), want live:1", n, c.Key().Node)
	}
	if d.dialed["refused:1"] != 1 {
		t.Fatalf("dialed the dead reader %d times, want 1", d.dialed["refused:1"])
	}
	if r.Outstanding(dead) != -1 || r.Outstanding(live) != 1 {
		t.Fatalf("outstanding: dead %d, live %d; want the failed pick undone", r.Outstanding(dead), r.Outstanding(live))
	}
	r.Release(ep, c, n, false)
	if r.Outstanding(live) != 0 {
		t.Fatalf("outstanding on live after Release: %d", r.Outstanding(live))
	}
}

// TestLeaseServerRefusal: a server's refusal of the login is the client's answer at once, with the
// server's SQLSTATE, and no retry.
func TestLeaseServerRefusal(t *testing.T) {
	w := cluster.NewNodeForTest("denied:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, d := leaseRouter(t, w)
	_, _, err := r.Lease(context.Background(), epFor(r.config(), Writer), Writer, pool.Key{Database: "db", User: "u"}, Intent{})
	var le *LeaseError
	if !errors.As(err, &le) {
		t.Fatalf("Lease: %v, want a *LeaseError", err)
	}
	// The server refused pgtide, not the client (who authenticated with pgtide): 08004, naming
	// the server and the user, not 28P01, which reads as the client's own wrong password.
	we := le.ClientError(wire.SeverityFatal)
	if we.Code != wire.CodeServerRejected || we.Severity != wire.SeverityFatal ||
		!strings.Contains(we.Message, `server denied:1 refused pgtide's login as user "u"`) {
		t.Fatalf("ClientError = %+v, want FATAL 08004 naming the server and user", we)
	}
	if d.dialed["denied:1"] != 1 {
		t.Fatalf("dialed %d times, want 1", d.dialed["denied:1"])
	}
}

// TestLeaseServerRefusalIAM: when the server refuses the login of an iam user, the log and the
// client's hint point at the RDS IAM checklist, not at a users-file password never sent.
func TestLeaseServerRefusalIAM(t *testing.T) {
	w := cluster.NewNodeForTest("denied:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, _ := leaseRouter(t, w)
	cfg := r.config()
	cfg.Users = config.Users{"u": {Name: "u", IAM: true}, "pw": {Name: "pw", Password: "secret"}}
	var log bytes.Buffer
	r.logger = slog.New(slog.NewTextHandler(&log, nil))
	for _, tc := range []struct {
		user, want, not string
	}{
		{"u", "rds_iam", "users file"},
		{"pw", "users file", "rds_iam"},
	} {
		log.Reset()
		_, _, err := r.Lease(context.Background(), epFor(r.config(), Writer), Writer, pool.Key{Database: "db", User: tc.user}, Intent{})
		var le *LeaseError
		if !errors.As(err, &le) {
			t.Fatalf("Lease: %v, want a *LeaseError", err)
		}
		we := le.ClientError(wire.SeverityFatal)
		if we.Code != wire.CodeServerRejected || !strings.Contains(we.Hint, tc.want) || strings.Contains(we.Hint, tc.not) {
			t.Errorf("user %s: ClientError = %+v, want a hint with %q and without %q", tc.user, we, tc.want, tc.not)
		}
		if line := log.String(); !strings.Contains(line, "refused pgtide's login") || !strings.Contains(line, tc.want) || strings.Contains(line, tc.not) {
			t.Errorf("user %s: logged %q, want %q and not %q", tc.user, line, tc.want, tc.not)
		}
	}
}

func TestLeaseErrorClientError(t *testing.T) {
	for _, tc := range []struct {
		err      error
		code     string
		severity string
	}{
		{&wire.Error{Severity: wire.SeverityError, Code: wire.CodeCannotConnectNow, Message: "no writer"}, wire.CodeCannotConnectNow, wire.SeverityError},
		{&pool.ServerError{Code: "3D000", Message: `database "x" does not exist`}, "3D000", wire.SeverityError},
		{&pool.WaitTimeoutError{}, wire.CodeTooManyConnections, wire.SeverityError},
		{pool.ErrClosed, wire.CodeAdminShutdown, wire.SeverityFatal},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, wire.CodeUnableToConnect, wire.SeverityError},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5432}, Err: syscall.EHOSTUNREACH},
			wire.CodeUnableToConnect, wire.SeverityError},
		{context.DeadlineExceeded, wire.CodeUnableToConnect, wire.SeverityError},
		{io.ErrUnexpectedEOF, wire.CodeUnableToConnect, wire.SeverityError},
		{context.Canceled, wire.CodeQueryCanceled, wire.SeverityError},
		{&pool.ServerError{Code: "28000", Message: `role "u" is not permitted to log in`}, "28000", wire.SeverityError},
		{&pool.ServerError{Code: "28P01", Message: `password authentication failed for user "u"`}, wire.CodeServerRejected, wire.SeverityError},
	} {
		we := (&LeaseError{Node: "10.1.2.3:5432", User: "u", Err: tc.err}).ClientError(wire.SeverityError)
		if we.Code != tc.code || we.Severity != tc.severity {
			t.Errorf("%v: %s %s, want %s %s", tc.err, we.Severity, we.Code, tc.severity, tc.code)
		}
		// Network failures and timeouts carry no addresses and no Go error text to clients.
		if tc.code == wire.CodeUnableToConnect && (strings.Contains(we.Message, "10.1.2.3") || strings.Contains(we.Message, "dial")) {
			t.Errorf("%v: the client's message %q shows internals", tc.err, we.Message)
		}
	}
}

// TestLeaseStandbyWriter: a node the health checks still take for the writer but whose new
// connection reports in_hot_standby = on (an old primary restarted as a standby after a
// failover) gets no writer work: the lease waits for the topology, up to failover_timeout, and
// then says there is no writer; its connections are closed, none kept. Reads may use it.
func TestLeaseStandbyWriter(t *testing.T) {
	w := cluster.NewNodeForTest("standby:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, d := leaseRouter(t, w)
	start := time.Now()
	_, _, err := r.Lease(context.Background(), epFor(r.config(), Writer), Writer, pool.Key{Database: "db", User: "u"}, Intent{})
	var le *LeaseError
	if !errors.As(err, &le) || !errors.Is(err, errStandby) {
		t.Fatalf("Lease: %v, want errStandby", err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("gave up after %v, before failover_timeout (1s)", waited)
	}
	if we := le.ClientError(wire.SeverityError); we.Code != wire.CodeCannotConnectNow {
		t.Fatalf("ClientError = %+v, want 57P03", we)
	}
	if n := r.pools.NodeTotal("standby:1"); n != 0 {
		t.Fatalf("%d connections to the standby kept", n)
	}
	if d.dialed["standby:1"] < 2 {
		t.Fatalf("dialed %d times: the lease did not wait and ask again", d.dialed["standby:1"])
	}
	// Reader work may run there.
	rd := cluster.NewNodeForTest("standby:2", cluster.NodeStateForTest{Up: true, Role: cluster.RoleReader})
	r2, _ := leaseRouter(t, w, rd)
	ep := epFor(r2.config(), Reader)
	c, n, err := r2.Lease(context.Background(), ep, Reader, pool.Key{Database: "db", User: "u"}, Intent{})
	if err != nil {
		t.Fatal(err)
	}
	r2.Release(ep, c, n, false)
}

// TestEndpointLeasesCountHeld: a client that passed its endpoint's pool_size and waits for a full
// pool holds no server connection and is not counted as holding one; it is once it has one, and
// not after Release.
func TestEndpointLeasesCountHeld(t *testing.T) {
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, _ := leaseRouter(t, w) // the pool holds 2
	r.config().Cluster.QueryWaitTimeout.Duration = time.Minute
	ep := tableEP(r.config(), config.Endpoint{Name: "e", Listen: "127.0.0.1:0", Route: "writer", PoolSize: 5})
	key := pool.Key{Database: "db", User: "u"}
	ctx := context.Background()
	var conns []*pool.Conn
	for range 2 {
		c, _, err := r.Lease(ctx, ep, Writer, key, Intent{})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	type lease struct {
		c   *pool.Conn
		err error
	}
	third := make(chan lease, 1)
	go func() {
		c, _, err := r.Lease(ctx, ep, Writer, key, Intent{})
		third <- lease{c, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ep.limit.held.Load() != 3 { // the third has its slot and waits for the pool
		if time.Now().After(deadline) {
			t.Fatalf("the third lease never took its slot: %d", ep.limit.held.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if held, waiting := ep.Leases(); held != 2 || waiting != 0 {
		t.Fatalf("with a client waiting for the pool: Leases() = %d, %d; want 2 held, 0 waiting for pool_size", held, waiting)
	}
	r.Release(ep, conns[0], w, false)
	l := <-third
	if l.err != nil {
		t.Fatal(l.err)
	}
	if held, _ := ep.Leases(); held != 2 {
		t.Fatalf("after the third got one: held %d, want 2", held)
	}
	r.Release(ep, conns[1], w, false)
	r.Release(ep, l.c, w, false)
	if held, _ := ep.Leases(); held != 0 || ep.limit.held.Load() != 0 {
		t.Fatalf("after every Release: held %d (slots %d)", held, ep.limit.held.Load())
	}
}

// cancelAfterCheck is a client's context cancelled right after StartLease's check under the
// wait's lock: first is run at that check (another client gives its lease back then, so the
// endpoint's queue grants one at once), and every later check finds the cancel.
type cancelAfterCheck struct {
	context.Context
	calls int
	first func()
}

func (c *cancelAfterCheck) Err() error {
	c.calls++
	if c.calls == 1 {
		c.first()
		return nil
	}
	return context.Canceled
}

// A lease StartLease takes without waiting and the client then cancels is given back: the
// endpoint's pool_size slot is not lost.
func TestStartLeaseCancelledKeepsNoSlot(t *testing.T) {
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, _ := leaseRouter(t, w)
	cfg := r.config()
	cfg.Cluster.QueryWaitTimeout.Duration = 300 * time.Millisecond
	ep := tableEP(cfg, config.Endpoint{Name: "small", Listen: "127.0.0.1:0", Route: config.RouteWriter, PoolSize: 1})
	key := pool.Key{Database: "db", User: "u"}
	c, n, err := r.Lease(context.Background(), ep, Writer, key, Intent{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := &cancelAfterCheck{Context: context.Background(), first: func() { r.Release(ep, c, n, false) }}
	var lw LeaseWait
	_, _, err, queued := r.StartLease(ctx, ep, Writer, key, Intent{}, &lw, func() { t.Error("done ran: nothing was queued") })
	if queued || !errors.Is(err, context.Canceled) {
		t.Fatalf("StartLease: queued %v, %v; want the cancel", queued, err)
	}
	if held, _ := ep.Leases(); held != 0 || ep.limit.held.Load() != 0 {
		t.Fatalf("the cancelled lease keeps the endpoint's slot: %d held, %d counted", held, ep.limit.held.Load())
	}
	c, n, err = r.Lease(context.Background(), ep, Writer, key, Intent{})
	if err != nil {
		t.Fatalf("the next lease: %v", err)
	}
	r.Release(ep, c, n, false)
}

// A client that waited for its endpoint's pool_size and then for the pool, until
// query_wait_timeout, is told how long it waited in all, on a goroutine (Lease) as on the loops
// (StartLease, ResumeLease).
func TestLeaseTimeoutCountsBothWaits(t *testing.T) {
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, _ := leaseRouter(t, w) // pools of 2
	cfg := r.config()
	cfg.Cluster.QueryWaitTimeout.Duration = time.Second
	capped := tableEP(cfg, config.Endpoint{Name: "capped", Listen: "127.0.0.1:0", Route: config.RouteWriter, PoolSize: 1})
	free := epFor(cfg, Writer)
	key := pool.Key{Database: "db", User: "u"}
	for range 2 { // the pool's two connections, held through the other endpoint
		c, n, err := r.Lease(context.Background(), free, Writer, key, Intent{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Release(free, c, n, false) })
	}
	for _, loops := range []bool{false, true} {
		if !capped.limit.tryAcquire() { // capped's one slot, given back after 100 ms
			t.Fatal("capped's slot is taken")
		}
		time.AfterFunc(100*time.Millisecond, capped.limit.release)
		var err error
		if loops {
			var lw LeaseWait
			ended := make(chan struct{}, 1)
			done := func() { ended <- struct{}{} }
			var queued bool
			_, _, err, queued = r.StartLease(context.Background(), capped, Writer, key, Intent{}, &lw, done)
			for queued {
				<-ended
				_, _, err, queued = r.ResumeLease(context.Background(), &lw, Writer, key, Intent{}, done)
			}
			if err == nil {
				t.Fatal("on the loops: leased")
			}
		} else {
			_, _, err = r.Lease(context.Background(), capped, Writer, key, Intent{})
		}
		var te *pool.WaitTimeoutError
		if !errors.As(err, &te) || te.Waited < 950*time.Millisecond {
			t.Errorf("loops %v: %v; want a pool timeout after about 1s in all", loops, err)
		}
	}
}
