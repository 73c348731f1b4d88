package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// replicaStatus is one row of a stubbed aurora_replica_status(). Values are
// SQL: "NULL", a number.
type replicaStatus struct {
	serverID       string
	writer         bool
	lagMS          string // replica_lag_in_msec
	durableLSN     string
	currentReadLSN string
	updatedAgo     string // interval since last_update_timestamp, e.g. "10 minutes"; "" for now()
}

// replicaStatusStub returns SQL that (re)defines fn, e.g.
// "aurora_replica_status" or "some_schema.aurora_replica_status", on a
// plain PostgreSQL to answer rows in the columns of Aurora's (those pgtide
// reads; the real function has more).
func replicaStatusStub(fn string, rows ...replicaStatus) string {
	var vals []string
	for _, r := range rows {
		session := "'replica-" + r.serverID + "'"
		if r.writer {
			session = "'MASTER_SESSION_ID'"
		}
		updated := "now()"
		if r.updatedAgo != "" {
			updated = "now() - interval '" + r.updatedAgo + "'"
		}
		vals = append(vals, fmt.Sprintf("('%s', %s, %s::numeric, %s::numeric, %s::float8, %s)",
			r.serverID, session, r.durableLSN, r.currentReadLSN, r.lagMS, updated))
	}
	return `CREATE OR REPLACE FUNCTION ` + fn + `()
		RETURNS TABLE(server_id text, session_id text, durable_lsn numeric, current_read_lsn numeric,
			replica_lag_in_msec float8, last_update_timestamp timestamptz)
		LANGUAGE sql AS $$ VALUES ` + strings.Join(vals, ", ") + ` $$`
}

// auroraStub returns SQL that (re)defines aurora_replica_status() with one
// row per port, the first the writer's; stale ports get a
// last_update_timestamp ten minutes old. Readers lag 10ms.
func auroraStub(writer int, replicas []int, stale []int) string {
	rows := []replicaStatus{{serverID: strconv.Itoa(writer), writer: true, lagMS: "NULL", durableLSN: "1000", currentReadLSN: "NULL"}}
	for _, p := range replicas {
		rows = append(rows, replicaStatus{serverID: strconv.Itoa(p), lagMS: "10", durableLSN: "1000", currentReadLSN: "NULL"})
	}
	for _, p := range stale {
		rows = append(rows, replicaStatus{serverID: strconv.Itoa(p), lagMS: "10", durableLSN: "1000", currentReadLSN: "NULL", updatedAgo: "10 minutes"})
	}
	return replicaStatusStub("aurora_replica_status", rows...)
}

func TestAuroraDiscovery(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	primary := pg[0]
	t.Cleanup(func() { execSQL(t, primary, "DROP FUNCTION IF EXISTS aurora_replica_status()") })
	node0, node1, node2 := pg[0].Addr(), pg[1].Addr(), pg[2].Addr()
	port0, port1, port2 := pg[0].Port(), pg[1].Port(), pg[2].Port()

	// node2's row is stale: not a node.
	execSQL(t, primary, auroraStub(port0, []int{port1}, []int{port2}))
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: node0}}, // the seed
		HealthCheckInterval: 100 * time.Millisecond,
		Discovery:           "aurora",
		AuroraTemplate:      "127.0.0.1:{id}",
		DiscoveryInterval:   100 * time.Millisecond,
	})
	tc.waitChecked(t)
	sameNodes := func(want ...string) func() error {
		return func() error {
			got := tc.addrs()
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				return fmt.Errorf("nodes %v, want %v", got, want)
			}
			return nil
		}
	}
	waitFor(t, 15*time.Second, "discovered primary and node1", func() error {
		if err := sameNodes(node0, node1)(); err != nil {
			return err
		}
		if err := tc.writerIs(node0); err != nil {
			return err
		}
		if err := tc.nodeIs(node1, true, RoleReader); err != nil {
			return err
		}
		// With aurora discovery the health check reads aurora_replica_status(): node1's
		// row, found through the template.
		if n := tc.node(node1); n.Lag() != 10*time.Millisecond || n.LagBytes() != 0 || n.ReplayLSN() != 1000 {
			return fmt.Errorf("node1 lag %v, %d bytes, replayed %d; want 10ms, 0, 1000", n.Lag(), n.LagBytes(), n.ReplayLSN())
		}
		return nil
	})
	if evs := tc.eventsOf(node1, func(ev Event) bool { return ev.Added }); len(evs) != 1 {
		t.Errorf("node1 Added events: %+v, want 1", evs)
	}
	// The instance ids endpoints' nodes filters match: the server_ids the template gives.
	for addr, port := range map[string]int{node0: port0, node1: port1} {
		if id := tc.node(addr).InstanceID(); id != strconv.Itoa(port) {
			t.Errorf("%s: InstanceID %q, want %d", addr, id, port)
		}
	}

	// node2 fresh: added.
	execSQL(t, primary, auroraStub(port0, []int{port1, port2}, nil))
	waitFor(t, 15*time.Second, "node2 added and up", func() error {
		if err := sameNodes(node0, node1, node2)(); err != nil {
			return err
		}
		return tc.nodeIs(node2, true, RoleReader)
	})
	if evs := tc.eventsOf(node2, func(ev Event) bool { return ev.Added }); len(evs) != 1 {
		t.Errorf("node2 Added events: %+v, want 1", evs)
	}

	// node1 gone: removed.
	n1 := tc.node(node1)
	execSQL(t, primary, auroraStub(port0, []int{port2}, nil))
	waitFor(t, 15*time.Second, "node1 removed", func() error {
		if evs := tc.eventsOf(node1, func(ev Event) bool { return ev.Removed }); len(evs) != 1 || evs[0].Node != n1 {
			return fmt.Errorf("node1 Removed events: %+v, want 1", evs)
		}
		return sameNodes(node0, node2)()
	})
	if !n1.Removed() {
		t.Error("node1 not Removed() after leaving the topology")
	}
	for _, r := range tc.Readers() {
		if r == n1 {
			t.Error("removed node1 still among Readers()")
		}
	}

	// Discovery fails (not Aurora any more): the nodes stay, one warning per streak.
	execSQL(t, primary, "DROP FUNCTION aurora_replica_status()")
	waitFor(t, 15*time.Second, "three failed rounds", func() error {
		if n := tc.logs.count(slog.LevelDebug, "topology discovery failed again"); n < 3 {
			return fmt.Errorf("%d failed rounds after the first", n)
		}
		return nil
	})
	if err := sameNodes(node0, node2)(); err != nil {
		t.Error(err)
	}
	if n := tc.logs.count(slog.LevelWarn, "topology discovery failed"); n != 1 {
		t.Errorf("discovery failure warned %d times, want 1", n)
	}
	execSQL(t, primary, auroraStub(port0, []int{port1, port2}, nil))
	waitFor(t, 15*time.Second, "node1 back", sameNodes(node0, node1, node2))
	if n1b := tc.node(node1); n1b == n1 || n1b.Removed() {
		t.Error("node1 came back as its old, removed Node")
	}
	if n := tc.logs.count(slog.LevelInfo, "topology discovery works again"); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}
}

// fakeResolver answers LookupHost from a map the test changes.
type fakeResolver struct {
	mu    sync.Mutex
	addrs map[string][]string
	err   error
	calls int
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return nil, r.err
	}
	return append([]string(nil), r.addrs[host]...), nil
}

func (r *fakeResolver) set(host string, err error, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = map[string][]string{host: addrs}
	r.err = err
}

func (r *fakeResolver) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// The local nodes share 127.0.0.1 and differ by port, which DNS cannot say;
// so the resolver hands out made-up addresses and the dialer maps them to
// the local nodes.
func TestDNSDiscovery(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	route := map[string]string{
		"10.0.0.1:5432": pg[0].Addr(),
		"10.0.0.2:5432": pg[1].Addr(),
		"10.0.0.3:5432": pg[2].Addr(),
	}
	var dialer net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if real, ok := route[addr]; ok {
			addr = real
		}
		return dialer.DialContext(ctx, network, addr)
	}
	res := &fakeResolver{}
	res.set("db.test", nil, "10.0.0.2", "10.0.0.1")
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: "10.0.0.3:5432", Weight: 4}}, // the first nodes, until DNS answers
		HealthCheckInterval: 100 * time.Millisecond,
		Discovery:           "dns",
		DNSName:             "db.test:5432",
		DiscoveryInterval:   100 * time.Millisecond,
		Dial:                dial,
		Resolver:            res,
	})
	hasNodes := func(want ...string) func() error {
		return func() error {
			if got := tc.addrs(); !slices.Equal(got, want) {
				return fmt.Errorf("nodes %v, want %v", got, want)
			}
			return nil
		}
	}
	// WaitChecked covers the first discovery and the nodes it found.
	tc.waitChecked(t)
	if err := hasNodes("10.0.0.1:5432", "10.0.0.2:5432")(); err != nil {
		t.Fatal(err)
	}
	for _, n := range tc.Nodes() {
		if n.LastCheck().IsZero() {
			t.Errorf("%s not checked after WaitChecked", n)
		}
	}
	if len(tc.eventsOf("10.0.0.3:5432", func(ev Event) bool { return ev.Removed })) != 1 {
		t.Error("initial node 10.0.0.3 not removed by the first discovery")
	}
	waitFor(t, 15*time.Second, "nodes from DNS, up", func() error {
		if err := hasNodes("10.0.0.1:5432", "10.0.0.2:5432")(); err != nil {
			return err
		}
		if err := tc.writerIs("10.0.0.1:5432"); err != nil {
			return err
		}
		return tc.nodeIs("10.0.0.2:5432", true, RoleReader)
	})

	n2 := tc.node("10.0.0.2:5432")
	res.set("db.test", nil, "10.0.0.3", "10.0.0.1")
	waitFor(t, 15*time.Second, "10.0.0.2 replaced by 10.0.0.3", func() error {
		if err := hasNodes("10.0.0.1:5432", "10.0.0.3:5432")(); err != nil {
			return err
		}
		return tc.nodeIs("10.0.0.3:5432", true, RoleReader)
	})
	if !n2.Removed() || len(tc.eventsOf("10.0.0.2:5432", func(ev Event) bool { return ev.Removed })) != 1 {
		t.Error("10.0.0.2: not removed, or not exactly one Removed event")
	}
	if len(tc.eventsOf("10.0.0.3:5432", func(ev Event) bool { return ev.Added })) != 1 {
		t.Error("10.0.0.3: not exactly one Added event (after its removal at the first discovery)")
	}
	if w := tc.node("10.0.0.3:5432").Weight(); w != 4 {
		t.Errorf("10.0.0.3 weight %d, want the configured 4", w)
	}

	// Failed and empty answers keep the nodes; one warning for the streak.
	for _, fail := range []func(){
		func() { res.set("db.test", errors.New("SERVFAIL")) },
		func() { res.set("db.test", nil) },
	} {
		fail()
		calls := res.callCount()
		waitFor(t, 15*time.Second, "three failed lookups", func() error {
			if n := res.callCount() - calls; n < 3 {
				return fmt.Errorf("%d lookups", n)
			}
			return nil
		})
		if err := hasNodes("10.0.0.1:5432", "10.0.0.3:5432")(); err != nil {
			t.Error(err)
		}
	}
	if n := tc.logs.count(slog.LevelWarn, "topology discovery failed"); n != 1 {
		t.Errorf("discovery failure warned %d times, want 1", n)
	}
	res.set("db.test", nil, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	waitFor(t, 15*time.Second, "all three", hasNodes("10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"))
}

func TestSetHosts(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	node0, node1 := pg[0].Addr(), pg[1].Addr()
	const interval = 500 * time.Millisecond // long enough that "checked at once" shows
	var mu sync.Mutex
	firstDial := map[string]time.Time{} // when each node's checker first dialed it
	var d net.Dialer
	tc := runCluster(t, Config{Hosts: []Host{{Addr: node0}}, HealthCheckInterval: interval,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			if _, ok := firstDial[addr]; !ok {
				firstDial[addr] = time.Now()
			}
			mu.Unlock()
			return d.DialContext(ctx, network, addr)
		}})
	tc.waitChecked(t)
	if err := tc.writerIs(node0); err != nil {
		t.Fatal(err)
	}
	n0 := tc.node(node0)

	added := time.Now()
	tc.SetHosts([]Host{{Addr: node0, Weight: 5}, {Addr: node1, Weight: 3}})
	if got := tc.addrs(); !slices.Equal(got, []string{node0, node1}) {
		t.Fatalf("nodes %v after SetHosts", got)
	}
	waitFor(t, 30*time.Second, "node1 up as reader", func() error { return tc.nodeIs(node1, true, RoleReader) })
	t.Logf("added node up %v after SetHosts (interval %v)", time.Since(added).Round(time.Millisecond), interval)
	// Checked at once: its checker dialed it before a first period could have passed. (When it
	// came up also counts the server's answer, which a busy machine can delay past a period.)
	mu.Lock()
	first, ok := firstDial[node1]
	mu.Unlock()
	if dialed := first.Sub(added); !ok || dialed >= interval {
		t.Errorf("node1 first dialed %v after SetHosts (dialed: %v), not at once (interval %v)", dialed, ok, interval)
	}
	if w0, w1 := n0.Weight(), tc.node(node1).Weight(); w0 != 5 || w1 != 3 {
		t.Errorf("weights %d, %d; want 5, 3", w0, w1)
	}
	if evs := tc.eventsOf(node1, func(Event) bool { return true }); len(evs) != 2 || !evs[0].Added || !evs[1].Up {
		t.Errorf("node1 events %+v, want Added then up", evs)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := tc.WaitChecked(ctx); err != nil {
		t.Error(err)
	}

	tc.SetHosts([]Host{{Addr: node1}})
	if got := tc.addrs(); !slices.Equal(got, []string{node1}) {
		t.Fatalf("nodes %v after removing node0", got)
	}
	if !n0.Removed() || !n0.Up() || n0.Role() != RoleWriter {
		t.Errorf("node0: removed %v up %v role %v; want removed with its last state", n0.Removed(), n0.Up(), n0.Role())
	}
	evs := tc.eventsOf(node0, func(ev Event) bool { return ev.Removed })
	if len(evs) != 1 || evs[0].Node != n0 || !evs[0].Up || evs[0].Role != RoleWriter {
		t.Errorf("node0 Removed events %+v, want one", evs)
	}
	if w, ok := tc.Writer(); ok {
		t.Errorf("Writer() = %v after the writer was removed", w)
	}
	if err := tc.nodeIs(node1, true, RoleReader); err != nil || tc.node(node1).Weight() != 1 {
		t.Errorf("kept node lost its state or kept its weight: %v, weight %d", err, tc.node(node1).Weight())
	}
	// The removed node's checker stops: while node1 is checked again, a full
	// period, node0's last check stays where it is.
	checkedAfter := func(at time.Time) func() error {
		return func() error {
			if last := tc.node(node1).LastCheck(); !last.After(at) {
				return fmt.Errorf("node1 last checked at %v", last)
			}
			return nil
		}
	}
	waitFor(t, 30*time.Second, "node1 checked after the removal", checkedAfter(time.Now()))
	last := n0.LastCheck()
	waitFor(t, 30*time.Second, "node1 checked again", checkedAfter(tc.node(node1).LastCheck()))
	if !n0.LastCheck().Equal(last) {
		t.Error("removed node still checked")
	}
}

func TestSetHostsBeforeRun(t *testing.T) {
	c := New(Config{Hosts: []Host{{Addr: "127.0.0.1:1"}}}, nil)
	var evs []Event
	c.Subscribe(func(ev Event) { evs = append(evs, ev) })
	changed := c.Changed()
	c.SetHosts([]Host{{Addr: "127.0.0.1:2"}, {Addr: "127.0.0.1:2", Weight: 9}})
	select {
	case <-changed:
	default:
		t.Error("Changed() did not fire")
	}
	if len(evs) != 2 || !evs[0].Removed || evs[0].Node.Addr() != "127.0.0.1:1" || !evs[1].Added || evs[1].Node.Addr() != "127.0.0.1:2" {
		t.Errorf("events %+v", evs)
	}
	if n := c.Nodes(); len(n) != 1 || n[0].Weight() != 1 || n[0].Up() || n[0].Role() != RoleUnknown {
		t.Errorf("nodes %v: want one, weight 1 (first listing wins), down, unknown", n)
	}
}
