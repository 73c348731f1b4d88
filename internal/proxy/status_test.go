package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/admin"
	"pgtide/internal/config"
	"pgtide/internal/headless"
	"pgtide/internal/router"
)

// status fetches /status.json and decodes it strictly: a field the documented struct lacks fails.
func (p *testProxy) status(t *testing.T) *admin.Status {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr().String() + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/status.json: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var st admin.Status
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("/status.json: %v", err)
	}
	return &st
}

func nodeStatus(st *admin.Status, addr string) *admin.NodeStatus {
	for i := range st.Nodes {
		if st.Nodes[i].Addr == addr {
			return &st.Nodes[i]
		}
	}
	return nil
}

// holdTransactions opens n clients on ep, each inside a transaction that holds a server
// connection until the test ends.
func holdTransactions(t *testing.T, ctx context.Context, p *testProxy, ep router.Route, n int) {
	t.Helper()
	for range n {
		conn, err := pgx.Connect(ctx, p.endpointConnString(ep))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT txid_current()"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatusJSON: /status.json has the documented shape (no field outside admin.Status) and
// figures that follow what happens: roles, ceilings and budgets, server connections held by open
// transactions, routing decisions, pools, clients by endpoint and state, the first checks in the
// history.
func TestStatusJSON(t *testing.T) {
	c := sharedRoutingCluster(t)
	p := routingProxy(t, c, func(cfg *config.Config) {
		cfg.Admin.Listen = "127.0.0.1:0"
		cfg.Cluster.MaxServerConnections = 30
	})
	waitReaders(t, p, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.endpointConnString(router.Auto))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const n = 10
	// The reads first: after a write, read-your-writes sends this client's reads to the writer.
	for _, q := range []string{"SELECT 1", "SELECT txid_current()"} {
		for range n {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	holdTransactions(t, ctx, p, router.Writer, 2)

	writer := c.Primary().Addr()
	var st *admin.Status
	waitFor(t, time.Minute, "ceilings and the held transactions in /status.json", func() bool {
		st = p.status(t)
		for _, n := range st.Nodes {
			if n.MaxConnections == 0 {
				return false
			}
		}
		w := nodeStatus(st, writer)
		return w != nil && w.Active == 2 && st.Clients["writer"].Active == 2
	})
	if !st.WriterKnown || st.Writer != writer || st.Version != "(devel)" || len(st.Nodes) != 3 {
		t.Errorf("writer %q (known %v), version %q, %d nodes", st.Writer, st.WriterKnown, st.Version, len(st.Nodes))
	}
	if age := time.Since(st.Time); age < -time.Second || age > 10*time.Second {
		t.Errorf("time %s is %s old", st.Time, age)
	}
	for _, ns := range st.Nodes {
		want := "reader"
		if ns.Addr == writer {
			want = "writer"
		}
		// budget: min(floor((300 − 3) × 0.7), max_server_connections)
		if ns.Role != want || !ns.Up || ns.MaxConnections != 300 || ns.Reserved != 3 || ns.Budget != 30 ||
			ns.Backends < 1 || ns.LastCheck == nil || ns.Weight != 1 {
			t.Errorf("node %+v, want role %s, up, max_connections 300, reserved 3, budget 30", ns, want)
		}
		if ns.LastCheck != nil && (ns.LastCheck.After(st.Time) || st.Time.Sub(*ns.LastCheck) > 10*time.Second) {
			t.Errorf("node %s last checked at %s, status at %s", ns.Addr, ns.LastCheck, st.Time)
		}
	}
	var picked int64
	for _, r := range c.Replicas() {
		picked += nodeStatus(st, r.Addr()).Picked
	}
	if picked < n {
		t.Errorf("readers picked %d times, want ≥ %d", picked, n)
	}
	if st.Routing.Reader < n || st.Routing.Writer < n || len(st.Routing.ByReason) == 0 {
		t.Errorf("routing %+v, want ≥ %d each way", st.Routing, n)
	}
	found := false
	for _, pl := range st.Pools {
		if pl.Node == writer && pl.Database == "appdb" && pl.User == "app" {
			found = true
			if pl.Active != 2 || pl.Transactions < n || pl.Queries < n {
				t.Errorf("writer's appdb pool %+v", pl)
			}
		}
	}
	if !found {
		t.Errorf("no pool (%s, appdb, app) in %+v", writer, st.Pools)
	}
	if ca := st.Clients["auto"]; ca.Idle != 1 || ca.Active != 0 {
		t.Errorf("auto endpoint clients %+v, want 1 idle", ca)
	}
	if len(st.Clients) != 3 {
		t.Errorf("clients by endpoint %v", st.Clients)
	}
	firstChecks := map[string]bool{}
	for _, ch := range st.Changes {
		if ch.Up && !ch.PrevUp && ch.PrevRole == "unknown" {
			firstChecks[ch.Node] = true
		}
	}
	if len(firstChecks) != 3 || st.Failovers != 0 {
		t.Errorf("changes %+v, failovers %d: want the three nodes' first checks", st.Changes, st.Failovers)
	}

	// The JSON's own names, as the README documents them.
	code, body := httpGet(t, "http://"+p.AdminAddr().String()+"/status.json")
	var raw map[string]any
	if err := json.Unmarshal([]byte(body), &raw); code != 200 || err != nil {
		t.Fatalf("/status.json: %d %v", code, err)
	}
	for _, k := range []string{"time", "version", "writer", "writer_known", "waiting_for_writer", "nodes", "pools", "clients", "endpoints", "routing", "failovers", "changes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/status.json lacks %q", k)
		}
	}
	node := raw["nodes"].([]any)[0].(map[string]any)
	for _, k := range []string{"addr", "role", "up", "lag_seconds", "lag_bytes", "lagging", "active", "idle", "waiting", "budget", "max_connections", "reserved", "backends", "outstanding", "picked", "last_check"} {
		if _, ok := node[k]; !ok {
			t.Errorf("a node in /status.json lacks %q", k)
		}
	}
}

// statusPage is the status page as headless Chromium shows it after its first fetches.
type statusPage struct {
	*headless.DOM
}

// node returns the card of the node at addr.
func (d statusPage) node(addr string) (headless.Element, error) {
	return d.One("class", "node", "data-node", addr)
}

// bar checks the bar kind of the node at addr: its data attributes have the values of want
// (name, value pairs) and its text shows "value / of", of being the attribute named by of.
func (d statusPage) bar(addr, kind, of string, want ...string) error {
	e, err := d.One("data-bar", kind, "data-node", addr)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(want); i += 2 {
		if e.Attrs[want[i]] != want[i+1] {
			return fmt.Errorf("%s bar of %s: %s=%q, want %q", kind, addr, want[i], e.Attrs[want[i]], want[i+1])
		}
	}
	if label := e.Attrs["data-value"] + " / " + e.Attrs[of]; !strings.Contains(d.Text(e), label) {
		return fmt.Errorf("%s bar of %s shows %q, want %q", kind, addr, d.Text(e), label)
	}
	return nil
}

// waitPage loads url in headless Chromium until check passes on what the page shows, for up to
// two minutes; each load is a fresh browser that runs the page for 3 s of virtual time.
func waitPage(t *testing.T, chromium, url, what string, check func(statusPage) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last error
	var doc string
	for ctx.Err() == nil {
		var err error
		doc, err = headless.DumpDOM(ctx, chromium, t.TempDir(), url, 3*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				t.Fatal(err)
			}
			break
		}
		if last = check(statusPage{headless.Parse(doc)}); last == nil {
			return
		}
	}
	t.Fatalf("the status page never showed %s: %v\nlast DOM:\n%s", what, last, doc)
}

// TestStatusPage drives the status page in headless Chromium (Debian's chromium package) against
// a primary and a replica: both nodes appear with their roles and connection bars (three
// transactions held open on the writer show as "3 / 25"), and after the primary stops and the
// replica is promoted, the page shows the new writer, the old one down and the failover.
func TestStatusPage(t *testing.T) {
	chromium := headless.Require(t)
	c := startCluster(t, 1)
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Admin.Listen = "127.0.0.1:0"
		cfg.Cluster.MaxServerConnections = 25
		cfg.Cluster.PoolSize = 25
	})
	waitReaders(t, p, 1)
	primary, replica := c.Primary().Addr(), c.Replicas()[0].Addr()
	url := "http://" + p.AdminAddr().String() + "/"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	holdTransactions(t, ctx, p, router.Writer, 3)

	waitPage(t, chromium, url, "both nodes, their roles and bars", func(d statusPage) error {
		var errs []error
		for addr, role := range map[string]string{primary: "writer", replica: "reader"} {
			e, err := d.node(addr)
			if err == nil && (e.Attrs["data-role"] != role || e.Attrs["data-up"] != "true") {
				err = fmt.Errorf("node %s: %v, want role %s, up", addr, e.Attrs, role)
			}
			errs = append(errs, err)
		}
		errs = append(errs,
			d.bar(primary, "servers", "data-budget", "data-active", "3", "data-budget", "25", "data-max", "400"),
			d.bar(primary, "backends", "data-max", "data-max", "400", "data-warn", "320"),
			d.bar(replica, "servers", "data-budget", "data-budget", "25", "data-max", "400"))
		if e, err := d.One("id", "writer"); err != nil || e.Attrs["data-writer"] != primary {
			errs = append(errs, fmt.Errorf("writer %v %v, want %s", e.Attrs, err, primary))
		}
		if e, err := d.One("id", "conn-state"); err != nil || e.Attrs["data-state"] != "live" {
			errs = append(errs, fmt.Errorf("conn-state %v %v, want live", e.Attrs, err))
		}
		if e, err := d.One("data-bar", "backends", "data-node", primary); err == nil {
			if v, _ := strconv.Atoi(e.Attrs["data-value"]); v < 3 {
				errs = append(errs, fmt.Errorf("primary's backends %d, want ≥ 3 (the held transactions)", v))
			}
		}
		return errors.Join(errs...)
	})

	// The failover: the open transactions end with the primary, the replica takes over.
	if err := c.Primary().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Replicas()[0].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pgtide to see the promoted replica as the writer", func() bool {
		w, ok := p.Cluster().Writer()
		return ok && w.Addr() == replica
	})
	waitPage(t, chromium, url, "the new writer and the failover", func(d statusPage) error {
		var errs []error
		if e, err := d.node(replica); err != nil || e.Attrs["data-role"] != "writer" {
			errs = append(errs, fmt.Errorf("promoted node %v %v, want role writer", e.Attrs, err))
		}
		if e, err := d.node(primary); err != nil || e.Attrs["data-up"] != "false" {
			errs = append(errs, fmt.Errorf("stopped primary %v %v, want down", e.Attrs, err))
		}
		if e, err := d.One("id", "writer"); err != nil || e.Attrs["data-writer"] != replica {
			errs = append(errs, fmt.Errorf("writer %v %v, want %s", e.Attrs, err, replica))
		}
		if e, err := d.One("class", "change", "data-kind", "failover", "data-node", replica); err != nil {
			errs = append(errs, err)
		} else if !strings.Contains(d.Text(e), "reader → writer") || e.Attrs["data-time"] == "" {
			errs = append(errs, fmt.Errorf("failover row %q %v", d.Text(e), e.Attrs))
		}
		if _, err := d.One("class", "change", "data-kind", "down", "data-node", primary); err != nil {
			errs = append(errs, err)
		}
		if _, err := d.One("id", "sum-failovers", "data-value", "1"); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// TestStatusPageScreenshot makes docs/status-page.png, the README's picture of the status page:
// a primary and two replicas after a failover (the primary stopped, a replica promoted, the other
// two following it), under pgbench's read-only load and a write load through the auto endpoint.
// It runs only when asked:
//
//	PGTIDE_STATUS_SCREENSHOT=$PWD/docs/status-page.png go test -run TestStatusPageScreenshot ./internal/proxy
func TestStatusPageScreenshot(t *testing.T) {
	png := os.Getenv("PGTIDE_STATUS_SCREENSHOT")
	if png == "" {
		t.Skip("PGTIDE_STATUS_SCREENSHOT is not set")
	}
	chromium := headless.Require(t)
	pgbench, err := lookPath("pgbench")
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, 2)
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Admin.Listen = "127.0.0.1:0"
		cfg.Cluster.PoolSize = 20 // as pgtide local has it
		cfg.Proxy.MaxReplicaLag.Duration = 10 * time.Second
	})
	waitReaders(t, p, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	primary, next, other := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	if err := primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := next.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the promoted replica as the writer", func() bool {
		w, ok := p.Cluster().Writer()
		return ok && w.Addr() == next.Addr()
	})
	if err := primary.Follow(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := other.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Follow(ctx, next); err != nil {
		t.Fatal(err)
	}
	waitReaders(t, p, 2)

	cs := func(ep router.Route) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=appdb password='app secret' sslmode=disable",
			p.EndpointAddr(ep).(*net.TCPAddr).Port)
	}
	run(t, 2*time.Minute, pgbench, "-i", "-q", "-s", "10", cs(router.Writer))
	var load sync.WaitGroup
	for _, args := range [][]string{
		{"-n", "-S", "-c", "50", "-j", "2", "-T", "20", cs(router.Auto)},
		{"-n", "-N", "-c", "10", "-j", "1", "-T", "20", cs(router.Auto)},
	} {
		load.Add(1)
		go func() {
			defer load.Done()
			out, err := exec.CommandContext(ctx, pgbench, args...).CombinedOutput()
			if err != nil {
				t.Errorf("pgbench %v: %v\n%s", args, err, out)
			}
		}()
	}
	before := p.Router().Picked(p.nodeAt(t, other.Port()))
	waitFor(t, time.Minute, "the read load on the readers", func() bool {
		return p.Router().Picked(p.nodeAt(t, other.Port())) > before+1000
	})
	if err := headless.Screenshot(ctx, chromium, t.TempDir(), "http://"+p.AdminAddr().String()+"/", png, 1280, 900, 6*time.Second); err != nil {
		t.Fatal(err)
	}
	load.Wait()
	fi, err := os.Stat(png)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 300<<10 {
		t.Errorf("%s has %d bytes: keep it under 300 KiB", png, fi.Size())
	}
}
