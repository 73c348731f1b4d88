package cluster

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// cols makes one result row; "NULL" is a NULL.
func cols(vs ...string) [][]byte {
	r := make([][]byte, len(vs))
	for i, v := range vs {
		if v != "NULL" {
			r[i] = []byte(v)
		}
	}
	return r
}

func TestParseLSN(t *testing.T) {
	for _, tt := range []struct {
		in  []byte
		lsn uint64
		ok  bool
		err bool
	}{
		{[]byte("16/B374D848"), 0x16_B374D848, true, false},
		{[]byte("0/0"), 0, true, false},
		{[]byte("0/3000028"), 0x3000028, true, false},
		{[]byte("FFFFFFFF/FFFFFFFF"), math.MaxUint64, true, false},
		{[]byte("88492069"), 88492069, true, false}, // Aurora's durable_lsn
		{[]byte("18446744073709551615"), math.MaxUint64, true, false},
		{nil, 0, false, false}, // NULL: unknown
		{[]byte(""), 0, false, true},
		{[]byte("/1"), 0, false, true},
		{[]byte("1/"), 0, false, true},
		{[]byte("1/2/3"), 0, false, true},
		{[]byte("100000000/0"), 0, false, true}, // a half over 32 bits
		{[]byte("G/0"), 0, false, true},
		{[]byte("-1"), 0, false, true},
		{[]byte("1.5"), 0, false, true},
		{[]byte("18446744073709551616"), 0, false, true},
	} {
		lsn, ok, err := parseLSN(tt.in)
		if lsn != tt.lsn || ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("parseLSN(%q) = %d, %v, %v; want %d, %v, error %v", tt.in, lsn, ok, err, tt.lsn, tt.ok, tt.err)
		}
	}
}

func TestLSNDistance(t *testing.T) {
	for _, tt := range []struct {
		from, to uint64
		want     int64
	}{
		{100, 40, 60},
		{100, 100, 0},
		{100, 140, 0}, // replayed past the writer's sample
		{math.MaxUint64, 0, math.MaxInt64},
	} {
		if got := lsnDistance(tt.from, tt.to); got != tt.want {
			t.Errorf("lsnDistance(%d, %d) = %d, want %d", tt.from, tt.to, got, tt.want)
		}
	}
}

func TestParsePGHealth(t *testing.T) {
	for _, tt := range []struct {
		rows [][][]byte
		want health
		err  bool
	}{
		{[][][]byte{cols("f", "0/3000060", "0")}, health{lsn: 0x3000060, ownRow: true}, false},
		{[][][]byte{cols("t", "16/B374D848", "0")}, health{inRecovery: true, lsn: 0x16_B374D848, ownRow: true}, false},
		{[][][]byte{cols("t", "0/10", "1.500000")}, health{inRecovery: true, lag: 1500 * time.Millisecond, lsn: 16, ownRow: true}, false},
		{[][][]byte{cols("t", "0/10", "-0.2")}, health{inRecovery: true, lsn: 16, ownRow: true}, false}, // clock skew
		{[][][]byte{cols("t", "0/10", "1e300")}, health{inRecovery: true, lag: maxLagSeconds * time.Second, lsn: 16, ownRow: true}, false},
		{[][][]byte{cols("t", "NULL", "0")}, health{inRecovery: true, ownRow: true}, false}, // no position: unknown
		{[][][]byte{cols("x", "0/0", "0")}, health{}, true},
		{[][][]byte{cols("t", "0/0", "soon")}, health{}, true},
		{[][][]byte{cols("t", "nowhere", "0")}, health{}, true},
		{[][][]byte{cols("t", "0")}, health{}, true},
		{[][][]byte{cols("t", "0/0", "0"), cols("t", "0/0", "0")}, health{}, true},
		{nil, health{}, true},
	} {
		h, err := parsePGHealth(tt.rows)
		if (err != nil) != tt.err || (err == nil && h != tt.want) {
			t.Errorf("parsePGHealth(%q) = %+v, %v; want %+v, error %v", tt.rows, h, err, tt.want, tt.err)
		}
	}
}

func TestParseAuroraHealth(t *testing.T) {
	// Columns: pg_is_in_recovery(), server_id, session_id, replica_lag_in_msec, durable_lsn, current_read_lsn.
	writer := cols("f", "w-1", "MASTER_SESSION_ID", "NULL", "5000", "NULL")
	r1 := cols("t", "r-1", "0b1c-uuid", "12.5", "4000", "3900")
	r2 := cols("t", "r-2", "77aa-uuid", "40", "NULL", "3500") // no durable_lsn: current_read_lsn
	r3 := cols("t", "r-3", "99ff-uuid", "3", "4900", "NULL")
	as := func(rec string, rows ...[][]byte) [][][]byte {
		out := make([][][]byte, len(rows))
		for i, r := range rows {
			out[i] = append([][]byte{[]byte(rec)}, r[1:]...)
		}
		return out
	}
	for _, tt := range []struct {
		name string
		rows [][][]byte
		id   string
		want health
		err  bool
	}{
		{"writer", as("f", r1, writer, r2), "w-1", health{lsn: 5000, writerLSN: 5000, ownRow: true}, false},
		{"writer, own row unknown", as("f", writer, r1), "", health{lsn: 5000, writerLSN: 5000, ownRow: true}, false},
		{"reader", as("t", writer, r1, r2), "r-1",
			health{inRecovery: true, lag: 12500 * time.Microsecond, lsn: 4000, writerLSN: 5000, ownRow: true}, false},
		{"reader, case-insensitive id", as("t", writer, r1, r2), "R-1",
			health{inRecovery: true, lag: 12500 * time.Microsecond, lsn: 4000, writerLSN: 5000, ownRow: true}, false},
		{"reader without durable_lsn", as("t", writer, r1, r2), "r-2",
			health{inRecovery: true, lag: 40 * time.Millisecond, lsn: 3500, writerLSN: 5000, ownRow: true}, false},
		{"reader not listed: the most lagging reader's values", as("t", writer, r1, r2, r3), "r-9",
			health{inRecovery: true, lag: 40 * time.Millisecond, lsn: 3500, writerLSN: 5000}, false},
		{"reader not identified", as("t", r3, writer, r1), "",
			health{inRecovery: true, lag: 12500 * time.Microsecond, lsn: 4000, writerLSN: 5000}, false},
		{"a reader without any position: the worst is unknown", as("t", writer, r1, cols("t", "r-4", "x", "1", "NULL", "NULL")), "",
			health{inRecovery: true, lag: 12500 * time.Microsecond, writerLSN: 5000}, false},
		{"no writer row", as("t", r1), "r-1", health{inRecovery: true, lag: 12500 * time.Microsecond, lsn: 4000, ownRow: true}, false},
		{"no rows at all", [][][]byte{cols("t", "NULL", "NULL", "NULL", "NULL", "NULL")}, "r-1", health{inRecovery: true}, false},
		{"negative lag", as("t", cols("t", "r-1", "x", "-5", "1", "NULL")), "r-1", health{inRecovery: true, lsn: 1, ownRow: true}, false},
		{"text LSNs", as("t", cols("t", "r-1", "x", "0", "1/0", "NULL"), cols("f", "w", "MASTER_SESSION_ID", "NULL", "1/10", "NULL")), "r-1",
			health{inRecovery: true, lsn: 1 << 32, writerLSN: 1<<32 + 16, ownRow: true}, false},
		{"bad lag", as("t", cols("t", "r-1", "x", "soon", "1", "NULL")), "r-1", health{}, true},
		{"bad durable_lsn", as("t", cols("t", "r-1", "x", "1", "x", "NULL")), "r-1", health{}, true},
		{"bad current_read_lsn", as("t", cols("t", "r-1", "x", "1", "NULL", "x")), "r-1", health{}, true},
		{"bad role", as("?", r1), "r-1", health{}, true},
		{"short row", [][][]byte{cols("t", "r-1", "x")}, "r-1", health{}, true},
		{"nothing", nil, "", health{}, true},
	} {
		h, err := parseAuroraHealth(tt.rows, tt.id)
		if (err != nil) != tt.err || (err == nil && h != tt.want) {
			t.Errorf("%s: parseAuroraHealth = %+v, %v; want %+v, error %v", tt.name, h, err, tt.want, tt.err)
		}
	}
}

func TestServerIDFromTemplate(t *testing.T) {
	for _, tt := range []struct{ template, addr, want string }{
		{"{id}.abc.us-east-1.rds.amazonaws.com:5432", "db-2.abc.us-east-1.rds.amazonaws.com:5432", "db-2"},
		{"127.0.0.1:{id}", "127.0.0.1:5433", "5433"},
		{"{id}.abc.us-east-1.rds.amazonaws.com:5432", "db-2.xyz.us-east-1.rds.amazonaws.com:5432", ""},
		{"{id}.abc.us-east-1.rds.amazonaws.com:5432", "db-2.abc.us-east-1.rds.amazonaws.com:6432", ""},
		{"{id}.abc:5432", ".abc:5432", ""}, // empty id
		{"{id}.{id}:5432", "a.a:5432", ""}, // {id} twice: not undone; the instance identifier is asked for
		{"", "db:5432", ""},
		{"db:5432", "db:5432", ""}, // no {id}
	} {
		if got := serverIDFromTemplate(tt.template, tt.addr); got != tt.want {
			t.Errorf("serverIDFromTemplate(%q, %q) = %q, want %q", tt.template, tt.addr, got, tt.want)
		}
	}
}

func TestHostLabel(t *testing.T) {
	for addr, want := range map[string]string{
		"db-2.abc.us-east-1.rds.amazonaws.com:5432": "db-2",
		"replica:5432":   "replica",
		"10.0.0.1:5432":  "",
		"[::1]:5432":     "",
		"no port at all": "",
	} {
		if got := hostLabel(addr); got != want {
			t.Errorf("hostLabel(%q) = %q, want %q", addr, got, want)
		}
	}
}

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// WriterLSNAfter driven directly: samples taken as a writer's checks would
// (each stamped with the injected clock when the check starts), roles set
// as the checkers would set them.
func TestWriterLSNAfter(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := New(Config{Hosts: []Host{{Addr: "a:1"}, {Addr: "b:1"}}, Now: clock.Now}, nil)
	nodes := c.Nodes()
	a, b := nodes[0], nodes[1]
	set := func(n *Node, up bool, role Role) {
		prev := n.loadState()
		c.setState(n, prev, prev.withUp(up).withRole(role)|stateChecked, errors.New("no answer"))
	}
	t0 := clock.Now()
	// check is a health check of n that starts now, finds lsn and takes a second.
	check := func(n *Node, lsn uint64) {
		c.recordWriterLSN(n, c.config().Now(), lsn)
		clock.advance(time.Second)
	}
	type query struct {
		after time.Duration // t = t0 + after
		lsn   uint64
		ok    bool
	}
	steps := []struct {
		name    string
		do      func()
		queries []query
	}{
		{"no writer, no samples", func() {}, []query{{-time.Hour, 0, false}, {0, 0, false}}},
		{"samples of a node not (yet) the writer", func() { check(a, 100) }, []query{{-time.Hour, 0, false}}},
		{"a is writer", func() {
			set(a, true, RoleWriter)
			set(b, true, RoleReader)
			check(a, 200) // started at t0+1s
			check(a, 200) // +2s: an idle writer
			check(a, 350) // +3s
		}, []query{
			{-time.Hour, 100, true},              // before every sample: the oldest
			{0, 200, true},                       // the sample at t0 started at t0, not after it
			{500 * time.Millisecond, 200, true},  // the check that started at +1s
			{1500 * time.Millisecond, 200, true}, // +2s
			{2500 * time.Millisecond, 350, true}, // +3s
			{3 * time.Second, 0, false},          // no check has started after it yet
			{time.Hour, 0, false},
		}},
		{"a ring of 16", func() {
			for i := range 20 {
				check(a, 400+uint64(i)) // at +4s .. +23s; those at +4s .. +7s fall out
			}
		}, []query{
			{0, 404, true},                       // the oldest kept: later than needed, still safe
			{7500 * time.Millisecond, 404, true}, // the check at +8s
			{22500 * time.Millisecond, 419, true},
			{23 * time.Second, 0, false},
		}},
		{"split brain: no answer", func() { set(b, true, RoleWriter) }, []query{{0, 0, false}}},
		{"a down, b the writer: a's samples are gone", func() { set(a, false, RoleWriter) }, []query{{0, 0, false}}},
		{"b samples", func() { check(b, 1000) }, []query{{0, 1000, true}, {23500 * time.Millisecond, 1000, true}, {24 * time.Second, 0, false}}},
		{"b a reader: no writer", func() { set(b, true, RoleReader) }, []query{{0, 0, false}}},
		{"a back as writer: starts afresh", func() {
			set(a, true, RoleWriter)
			check(a, 2000) // at +25s
		}, []query{{0, 2000, true}, {25 * time.Second, 0, false}}},
	}
	for _, st := range steps {
		st.do()
		for _, q := range st.queries {
			lsn, ok := c.WriterLSNAfter(t0.Add(q.after))
			if lsn != q.lsn || ok != q.ok {
				t.Errorf("%s: WriterLSNAfter(t0%+v) = %d, %v; want %d, %v", st.name, q.after, lsn, ok, q.lsn, q.ok)
			}
		}
	}
}

func TestWriterLSNAfterAllocs(t *testing.T) {
	c := New(Config{Hosts: []Host{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}}}, nil)
	a := c.Nodes()[0]
	prev := a.loadState()
	c.setState(a, prev, prev.withUp(true).withRole(RoleWriter)|stateChecked, nil)
	start := time.Now()
	for i := range writerSamples {
		c.recordWriterLSN(a, start.Add(time.Duration(i)*time.Second), uint64(i))
	}
	at := start.Add(5500 * time.Millisecond)
	if allocs := testing.AllocsPerRun(1000, func() {
		if lsn, ok := c.WriterLSNAfter(at); !ok || lsn != 6 {
			t.Fatalf("WriterLSNAfter = %d, %v", lsn, ok)
		}
	}); allocs != 0 {
		t.Errorf("WriterLSNAfter allocates %v times per call", allocs)
	}
}

// Readers of WriterLSNAfter while the writer's checker samples: run with -race.
func TestWriterLSNAfterConcurrent(t *testing.T) {
	c := New(Config{Hosts: []Host{{Addr: "a:1"}}}, nil)
	a := c.Nodes()[0]
	prev := a.loadState()
	c.setState(a, prev, prev.withUp(true).withRole(RoleWriter)|stateChecked, nil)
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var last uint64
			for range 2000 {
				// The oldest kept sample only moves forward.
				lsn, ok := c.WriterLSNAfter(start)
				if ok && lsn < last {
					t.Errorf("WriterLSNAfter went back from %d to %d", last, lsn)
					return
				}
				last = max(last, lsn)
			}
		})
	}
	for i := range 2000 {
		c.recordWriterLSN(a, start.Add(time.Duration(i)*time.Millisecond), uint64(i))
	}
	wg.Wait()
}

func TestLagBytes(t *testing.T) {
	c := New(Config{Hosts: []Host{{Addr: "a:1"}, {Addr: "b:1"}}}, nil)
	a := c.Nodes()[0]
	if got := c.lagBytes(health{inRecovery: true, lsn: 10}); got != -1 {
		t.Errorf("no writer sample: %d, want -1", got)
	}
	if got := c.lagBytes(health{inRecovery: true, lsn: 10, writerLSN: 25}); got != 15 {
		t.Errorf("Aurora, writer position in the answer: %d, want 15", got)
	}
	prev := a.loadState()
	c.setState(a, prev, prev.withUp(true).withRole(RoleWriter)|stateChecked, nil)
	c.recordWriterLSN(a, time.Now(), 100)
	c.recordWriterLSN(a, time.Now(), 130) // the most recent counts
	for _, tt := range []struct {
		h    health
		want int64
	}{
		{health{inRecovery: true, lsn: 100}, 30},
		{health{inRecovery: true, lsn: 130}, 0},
		{health{inRecovery: true, lsn: 150}, 0}, // replayed past the sample
		{health{inRecovery: true}, -1},          // replay position unknown
		{health{inRecovery: true, lsn: 100, writerLSN: 105}, 5},
	} {
		if got := c.lagBytes(tt.h); got != tt.want {
			t.Errorf("lagBytes(%+v) = %d, want %d", tt.h, got, tt.want)
		}
	}
}

// replayLag driven directly: a writer idle at position 100 for a minute (samples each second),
// then writing; a replica stuck at 100 lags by the time since the writer moved past it, not by
// the idle minute, and the figure is exact; one behind every sample gets a lower bound.
func TestReplayLag(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := New(Config{Hosts: []Host{{Addr: "w:1"}, {Addr: "r:1"}}, Now: clock.Now}, nil)
	w := c.Nodes()[0]
	prev := w.loadState()
	c.setState(w, prev, prev.withUp(true).withRole(RoleWriter)|stateChecked, nil)
	check := func(lsn uint64) {
		c.recordWriterLSN(w, clock.Now(), lsn)
		clock.advance(time.Second)
	}
	var ref lagRef
	lag := func(replay uint64) (time.Duration, bool) { return c.replayLag(clock.Now(), replay, &ref) }
	if l, exact := lag(100); l != 0 || exact {
		t.Errorf("no samples: %v, %v; want 0, not exact", l, exact)
	}
	for range 60 {
		check(100) // idle
	}
	if l, exact := lag(100); l != 0 || !exact {
		t.Errorf("caught up after the idle minute: %v, %v; want 0, exact", l, exact)
	}
	wrote := clock.Now()
	for i := range 8 {
		check(200 + uint64(i)) // writes, each check taking a second
	}
	l, exact := lag(100)
	if want := clock.Now().Sub(wrote); l != want || !exact {
		t.Errorf("stuck at the idle position: %v, %v; want %v (since the writes began), exact", l, exact, want)
	}
	for range 30 {
		check(300) // past the ring's reach: the remembered sample keeps the whole lag
	}
	if l, exact := lag(100); l != clock.Now().Sub(wrote) || !exact {
		t.Errorf("stuck past the samples' reach: %v, %v", l, exact)
	}
	if l, exact := lag(300); l != 0 || !exact {
		t.Errorf("caught up: %v, %v", l, exact)
	}
	ref = lagRef{}
	if l, exact := lag(150); l != 16*time.Second || exact {
		t.Errorf("behind every sample, nothing remembered: %v, %v; want the oldest sample's age, not exact", l, exact)
	}
}
