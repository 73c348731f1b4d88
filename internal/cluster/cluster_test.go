package cluster

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRoleString(t *testing.T) {
	for r, want := range map[Role]string{RoleUnknown: "unknown", RoleWriter: "writer", RoleReader: "reader", Role(7): "unknown"} {
		if got := r.String(); got != want {
			t.Errorf("Role(%d).String() = %q, want %q", r, got, want)
		}
	}
}

func TestNodeState(t *testing.T) {
	for _, tt := range []struct {
		up   bool
		role Role
	}{{false, RoleUnknown}, {true, RoleWriter}, {false, RoleWriter}, {true, RoleReader}, {false, RoleReader}} {
		s := stateChecked.withRole(RoleReader).withUp(!tt.up) // start from something else
		s = s.withUp(tt.up).withRole(tt.role)
		if s.up() != tt.up || s.role() != tt.role || !s.checked() {
			t.Errorf("withUp(%v).withRole(%v): up=%v role=%v checked=%v", tt.up, tt.role, s.up(), s.role(), s.checked())
		}
	}
}

func TestValidate(t *testing.T) {
	ok := []Host{{Addr: "db1:5432"}, {Addr: "[::1]:5432", Weight: 2}}
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{"static", Config{Hosts: ok}, ""},
		{"no hosts", Config{}, "no hosts"},
		{"no port", Config{Hosts: []Host{{Addr: "db1"}}}, "hosts[0]"},
		{"empty host", Config{Hosts: []Host{{Addr: ":5432"}}}, "hosts[0]"},
		{"negative weight", Config{Hosts: []Host{{Addr: "db1:5432", Weight: -1}}}, "weight"},
		{"negative interval", Config{Hosts: ok, HealthCheckInterval: -time.Second}, "health check interval"},
		{"negative failures", Config{Hosts: ok, HealthCheckFailures: -1}, "failures"},
		{"negative function refresh", Config{Hosts: ok, FunctionRefreshInterval: -time.Minute}, "function refresh interval"},
		{"aurora", Config{Hosts: ok, Discovery: "aurora", AuroraTemplate: "{id}.x.rds.amazonaws.com:5432"}, ""},
		{"aurora without template id", Config{Hosts: ok, Discovery: "aurora", AuroraTemplate: "x:5432"}, "{id}"},
		{"aurora template without port", Config{Hosts: ok, Discovery: "aurora", AuroraTemplate: "{id}.x"}, "aurora template"},
		{"aurora without seeds", Config{Discovery: "aurora", AuroraTemplate: "{id}:5432"}, "at least one host"},
		{"dns", Config{Discovery: "dns", DNSName: "db.internal:5432"}, ""},
		{"dns without port", Config{Discovery: "dns", DNSName: "db.internal"}, "dns discovery name"},
		{"unknown discovery", Config{Hosts: ok, Discovery: "consul"}, "unknown discovery"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Password = "s3cret"
			err := tt.cfg.Validate()
			switch {
			case err != nil && strings.Contains(err.Error(), "s3cret"):
				t.Errorf("Validate() shows the password: %v", err)
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestAuroraRows(t *testing.T) {
	d := &discoverer{c: New(Config{AuroraTemplate: "{id}.abc.rds.amazonaws.com:5432"}, nil)}
	row := func(id, session, age string) [][]byte {
		r := [][]byte{[]byte(id), []byte(session), []byte("10")}
		if age == "" {
			return append(r, nil) // NULL
		}
		return append(r, []byte(age))
	}
	addrs, err := d.auroraRows([][][]byte{
		row("b", "abc", "1.5"),
		row("w", "MASTER_SESSION_ID", "900"), // the writer is kept however old its row
		row("stale", "def", "300.5"),         // older than 5 minutes
		row("a", "ghi", ""),                  // no timestamp: kept
		row("b", "abc", "2"),                 // repeated
	})
	want := "a.abc.rds.amazonaws.com:5432 b.abc.rds.amazonaws.com:5432 w.abc.rds.amazonaws.com:5432"
	if got := strings.Join(addrs, " "); err != nil || got != want {
		t.Errorf("auroraRows = %q, %v; want %q", got, err, want)
	}
	if _, err := d.auroraRows([][][]byte{row("old", "x", "301")}); err == nil {
		t.Error("only stale rows: want an error (keep the current nodes)")
	}
	if _, err := d.auroraRows(nil); err == nil {
		t.Error("no rows: want an error")
	}
	if _, err := d.auroraRows([][][]byte{row("a", "x", "later")}); err == nil {
		t.Error("bad age: want an error")
	}
}

func TestJitter(t *testing.T) {
	const d = time.Second
	for range 1000 {
		if j := jitter(d); j < d*9/10 || j > d*11/10 {
			t.Fatalf("jitter(%v) = %v, want within ±10%%", d, j)
		}
	}
}

// setState, driven directly: events only for real changes, counters, the
// split brain logged once per occurrence, Writer's answer.
func TestStateChanges(t *testing.T) {
	logs := &logRecorder{t: t}
	c := New(Config{Hosts: []Host{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}}}, slog.New(logs))
	var evs []Event
	c.Subscribe(func(ev Event) { evs = append(evs, ev) })
	nodes := c.Nodes()
	a, b, cc := nodes[0], nodes[1], nodes[2]
	set := func(n *Node, up bool, role Role) {
		t.Helper()
		prev := n.loadState()
		c.setState(n, prev, prev.withUp(up).withRole(role)|stateChecked, errors.New("no answer"))
	}
	writer := func(want *Node) {
		t.Helper()
		if w, ok := c.Writer(); w != want || ok != (want != nil) {
			t.Errorf("Writer() = %v, %v; want %v", w, ok, want)
		}
	}

	writer(nil)
	changed := c.Changed()
	set(a, true, RoleWriter)
	select {
	case <-changed:
	default:
		t.Error("Changed() did not fire")
	}
	set(b, true, RoleReader)
	set(cc, false, RoleUnknown) // first check failed: no event
	if len(evs) != 2 {
		t.Fatalf("events %+v, want 2", evs)
	}
	if !cc.loadState().checked() || cc.Up() {
		t.Error("c not marked checked, or up")
	}
	writer(a)
	set(a, true, RoleWriter) // no change
	if len(evs) != 2 {
		t.Errorf("an unchanged state emitted an event")
	}

	set(b, true, RoleWriter) // split brain
	writer(nil)
	set(cc, true, RoleWriter) // three writers: the same split brain
	set(cc, false, RoleWriter)
	writer(nil)
	set(a, false, RoleWriter) // over
	writer(b)
	if n := logs.count(slog.LevelError, "split brain: 2 nodes claim to be writer"); n != 1 {
		t.Errorf("split brain start logged %d times", n)
	}
	if n := logs.count(slog.LevelError, "split brain over"); n != 1 {
		t.Errorf("split brain end logged %d times", n)
	}
	set(a, true, RoleReader)
	if got := c.Readers(); len(got) != 1 || got[0] != a {
		t.Errorf("Readers() = %v, want [a]", got)
	}
	downs, ups, roleChanges, splits := c.Counters()
	if downs != 2 || ups != 4 || roleChanges != 2 || splits != 1 {
		t.Errorf("Counters() = %d, %d, %d, %d; want 2 downs, 4 ups, 2 role changes, 1 split brain", downs, ups, roleChanges, splits)
	}
	last := evs[len(evs)-1]
	if last.Node != a || !last.Up || last.Role != RoleReader || last.PrevUp || last.PrevRole != RoleWriter {
		t.Errorf("last event %+v", last)
	}
	if n := logs.count(slog.LevelWarn, "node down"); n != 2 {
		t.Errorf("%d 'node down' lines, want 2", n)
	}

	// A removed node's checker may finish one more check: no event for it.
	c.SetHosts([]Host{{Addr: "a:1"}, {Addr: "c:1"}})
	n := len(evs)
	set(b, false, RoleWriter)
	if len(evs) != n {
		t.Errorf("event for a removed node: %+v", evs[n:])
	}
}
