package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pgtide/internal/classify"
)

func TestFunctionSetLookup(t *testing.T) {
	f := newFunctionSet([]funcRow{
		{"app", "bump_views", true},
		{"app", "page_views", false},
		{"app", "total", false},
		{"public", "total", true}, // the search_path may reach either: unqualified, a write
		{"app", "MyFunc", true},   // created as "MyFunc"
		{"app", "myfunc", false},  // created unquoted: another function
		{"app", "lower_only", false},
		{"pg_catalog", "now", false},
		{"pg_catalog", "random", true},  // a volatile built-in: the classifier knows it is harmless
		{"pg_catalog", "nextval", true}, // the classifier's own list says it writes
		{"public", "shadow", true},      // also in pg_catalog
		{"pg_catalog", "shadow", false},
		{"information_schema", "_pg_truetypid", false}, // never unqualified
		{"information_schema", "is_volatile", true},
		{"pg_toast", "toasty", true},
		{"pg_temp_3", "temp_fn", true},
		{"pg_toast_temp_3", "temp_toasty", true},
	}, maxFunctionRows)
	for _, tt := range []struct {
		schema, name string
		want         classify.FuncKind
	}{
		{"app", "bump_views", funcWrite},
		{"", "bump_views", funcWrite},
		{"public", "bump_views", funcUnknown},
		{"app", "page_views", funcRead},
		{"", "page_views", funcRead},
		{"app", "total", funcRead},
		{"public", "total", funcWrite},
		{"", "total", funcWrite},
		{"app", "MyFunc", funcWrite},
		{"", "MyFunc", funcWrite},
		{"app", "myfunc", funcRead},
		{"", "myfunc", funcRead},
		{"", "Lower_Only", funcUnknown}, // quoted: must match exactly
		{"APP", "lower_only", funcUnknown},
		{"", "now", funcRead},
		{"pg_catalog", "now", funcRead},
		{"", "random", funcBuiltinVolatile},
		{"pg_catalog", "random", funcBuiltinVolatile},
		{"", "nextval", funcBuiltinVolatile},
		{"", "shadow", funcWrite},
		{"pg_catalog", "shadow", funcRead},
		{"public", "shadow", funcWrite},
		{"information_schema", "_pg_truetypid", funcRead},
		{"", "_pg_truetypid", funcUnknown},
		{"information_schema", "is_volatile", funcBuiltinVolatile},
		{"pg_toast", "toasty", funcUnknown},
		{"", "toasty", funcUnknown},
		{"pg_temp_3", "temp_fn", funcUnknown},
		{"pg_temp", "temp_fn", funcUnknown},
		{"", "temp_fn", funcUnknown},
		{"", "temp_toasty", funcUnknown},
		{"", "no_such", funcUnknown},
		{"app", "no_such", funcUnknown},
		{"no_such", "now", funcUnknown},
		{"", "", funcUnknown},
	} {
		if got := f.Lookup([]byte(tt.schema), []byte(tt.name)); got != tt.want {
			t.Errorf("Lookup(%q, %q) = %d, want %d", tt.schema, tt.name, got, tt.want)
		}
	}
	if f.Partial() || f.Len() != 17 {
		t.Errorf("Partial() = %v, Len() = %d; want false, 17", f.Partial(), f.Len())
	}
	var none *FunctionSet
	if got := none.Lookup(nil, []byte("now")); got != funcUnknown || none.Partial() || none.Len() != 0 {
		t.Errorf("nil set: Lookup = %d, Partial = %v, Len = %d; want 0, false, 0", got, none.Partial(), none.Len())
	}
}

// A set bounded at limit rows keeps the volatile functions first; names left
// out are unknown, and unqualified reads are known only when no volatile
// function was left out.
func TestFunctionSetPartial(t *testing.T) {
	lookups := func(f *FunctionSet, names ...string) string {
		var b strings.Builder
		for _, n := range names {
			schema, name, ok := strings.Cut(n, ".")
			if !ok {
				schema, name = "", n
			}
			fmt.Fprintf(&b, "%s=%d ", n, f.Lookup([]byte(schema), []byte(name)))
		}
		return strings.TrimSpace(b.String())
	}
	rows := func() []funcRow {
		return []funcRow{
			{"pg_catalog", "now", false},
			{"app", "stable1", false},
			{"app", "vol1", true},
			{"pg_catalog", "random", true},
			{"app", "stable2", false},
			{"app", "vol2", true},
		}
	}
	names := []string{"now", "stable1", "app.stable1", "stable2", "vol1", "app.vol1", "vol2", "random", "pg_catalog.random"}
	for _, tt := range []struct {
		limit   int
		partial bool
		want    string
	}{
		{6, false, "now=1 stable1=1 app.stable1=1 stable2=1 vol1=2 app.vol1=2 vol2=2 random=3 pg_catalog.random=3"},
		// Every volatile function kept, and the first stable one in the order given.
		{4, true, "now=1 stable1=0 app.stable1=0 stable2=0 vol1=2 app.vol1=2 vol2=2 random=3 pg_catalog.random=3"},
		// Only volatile ones, all of them: the stable ones left out are unknown.
		{3, true, "now=0 stable1=0 app.stable1=0 stable2=0 vol1=2 app.vol1=2 vol2=2 random=3 pg_catalog.random=3"},
		// vol2 left out: random may be a user's volatile random, so unqualified it is unknown.
		{2, true, "now=0 stable1=0 app.stable1=0 stable2=0 vol1=2 app.vol1=2 vol2=0 random=0 pg_catalog.random=3"},
	} {
		f := newFunctionSet(rows(), tt.limit)
		if got := lookups(f, names...); got != tt.want || f.Partial() != tt.partial || f.Len() != min(tt.limit, 6) {
			t.Errorf("limit %d: %s, Partial() = %v, Len() = %d\nwant %s, Partial() = %v, Len() = %d",
				tt.limit, got, f.Partial(), f.Len(), tt.want, tt.partial, min(tt.limit, 6))
		}
	}
}

func TestParseFunctionRows(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	rows, err := parseFunctionRows([][][]byte{
		{b("app"), b("bump"), b("t")},
		{b("pg_catalog"), b("now"), b("f")},
	})
	want := []funcRow{{"app", "bump", true}, {"pg_catalog", "now", false}}
	if err != nil || len(rows) != 2 || rows[0] != want[0] || rows[1] != want[1] {
		t.Errorf("parseFunctionRows = %+v, %v; want %+v", rows, err, want)
	}
	for _, bad := range [][][]byte{
		{b("app"), b("bump")},
		{nil, b("bump"), b("t")},
		{b("app"), nil, b("t")},
	} {
		if _, err := parseFunctionRows([][][]byte{bad}); err == nil {
			t.Errorf("parseFunctionRows(%q): want an error", bad)
		}
	}
}

// Lookup, and Functions for a database seen before, allocate nothing.
func TestFunctionsAllocs(t *testing.T) {
	f := newFunctionSet([]funcRow{{"app", "bump_views", true}, {"pg_catalog", "now", false}}, maxFunctionRows)
	app, bump, now, none := []byte("app"), []byte("bump_views"), []byte("now"), []byte("no_such")
	if n := testing.AllocsPerRun(1000, func() {
		f.Lookup(app, bump)
		f.Lookup(nil, bump)
		f.Lookup(nil, now)
		f.Lookup(app, none)
		f.Lookup(none, now)
	}); n != 0 {
		t.Errorf("Lookup: %v allocations, want 0", n)
	}
	c := New(Config{Hosts: []Host{{Addr: "db:5432"}}}, nil)
	db := strings.Repeat("d", 63) // as long as a name gets: still no allocation
	c.Functions(db)
	if n := testing.AllocsPerRun(1000, func() { c.Functions(db) }); n != 0 {
		t.Errorf("Functions: %v allocations, want 0", n)
	}
}

// Functions never blocks, not even without Run, and registers at most
// funcDBLimit databases, warning once past it.
func TestFunctionsRegistration(t *testing.T) {
	logs := &logRecorder{t: t}
	c := New(Config{Hosts: []Host{{Addr: "db:5432"}}}, slog.New(logs))
	c.funcDBLimit = 2
	for _, db := range []string{"a", "b", "a", "c", "d", "c", "", "b"} {
		if f := c.Functions(db); f != nil {
			t.Errorf("Functions(%q) = %v before any load, want nil", db, f)
		}
	}
	dbs := *c.funcDBs.Load()
	if len(dbs) != 2 || dbs["a"] == nil || dbs["b"] == nil {
		t.Errorf("registered %v, want a and b", dbs)
	}
	if n := logs.count(slog.LevelWarn, "function catalogs: too many databases"); n != 1 {
		t.Errorf("%d warnings about too many databases, want 1", n)
	}
}

// The catalogs of a real database: loaded in the background after the first
// call, judged right, refreshed on demand; a database the health-check user
// may not connect to has no catalog and one warning.
func TestFunctionsCatalog(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	primary := pc.Primary()
	db := fmt.Sprintf("fncat_%d", time.Now().UnixNano())
	denied := db + "_denied"
	const user, password = "pgtide_fnmon", "fn-s3cret"
	execSQL(t, primary,
		`DO $$ BEGIN CREATE ROLE `+user+` LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		"CREATE DATABASE "+db,
		"CREATE DATABASE "+denied,
		"REVOKE CONNECT ON DATABASE "+denied+" FROM PUBLIC")
	t.Cleanup(func() {
		execSQL(t, primary,
			"DROP DATABASE IF EXISTS "+db+" WITH (FORCE)",
			"DROP DATABASE IF EXISTS "+denied+" WITH (FORCE)",
			"DROP ROLE IF EXISTS "+user)
	})
	execSQLIn(t, primary, db,
		"CREATE SCHEMA app",
		"CREATE TABLE app.pages (id int PRIMARY KEY, views int NOT NULL DEFAULT 0)",
		`CREATE FUNCTION app.bump_views(id int) RETURNS int LANGUAGE sql VOLATILE
			AS 'UPDATE app.pages SET views = views + 1 WHERE id = $1 RETURNING views'`,
		`CREATE FUNCTION app.page_views(id int) RETURNS int LANGUAGE sql STABLE
			AS 'SELECT views FROM app.pages WHERE id = $1'`,
		`CREATE FUNCTION app."MyFunc"() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'`)

	var hosts []Host
	for _, n := range pc.Nodes() {
		hosts = append(hosts, Host{Addr: n.Addr()})
	}
	tc := runCluster(t, Config{
		Hosts:               hosts,
		HealthCheckInterval: 100 * time.Millisecond,
		User:                user,
		Password:            password,
	}) // FunctionRefreshInterval at its default, a minute: only RefreshFunctions reloads sooner
	tc.waitChecked(t)
	if f := tc.Functions(db); f != nil {
		t.Fatalf("Functions(%s) = %v at the first call, want nil (loaded in the background)", db, f)
	}
	waitFor(t, 15*time.Second, "catalog loaded", func() error {
		if tc.Functions(db) == nil {
			return fmt.Errorf("Functions(%s) = nil", db)
		}
		return nil
	})
	check := func(f *FunctionSet, schema, name string, want classify.FuncKind) {
		t.Helper()
		if got := f.Lookup([]byte(schema), []byte(name)); got != want {
			t.Errorf("Lookup(%q, %q) = %d, want %d", schema, name, got, want)
		}
	}
	f := tc.Functions(db)
	check(f, "app", "bump_views", funcWrite)
	check(f, "", "bump_views", funcWrite)
	check(f, "app", "page_views", funcRead)
	check(f, "", "page_views", funcRead)
	check(f, "app", "MyFunc", funcRead)
	check(f, "", "MyFunc", funcRead)
	check(f, "", "myfunc", funcUnknown)
	check(f, "", "now", funcRead)
	check(f, "pg_catalog", "now", funcRead)
	check(f, "", "random", funcBuiltinVolatile)
	check(f, "pg_catalog", "pg_promote", funcBuiltinVolatile)
	check(f, "", "add_page", funcUnknown)
	if f.Partial() || f.Len() < 1000 {
		t.Errorf("Partial() = %v, Len() = %d; want a whole catalog of a few thousand", f.Partial(), f.Len())
	}

	execSQLIn(t, primary, db, `CREATE FUNCTION app.add_page(id int) RETURNS void LANGUAGE sql VOLATILE
		AS 'INSERT INTO app.pages (id) VALUES ($1)'`)
	tc.RefreshFunctions()
	waitFor(t, 15*time.Second, "new function seen after RefreshFunctions", func() error {
		f := tc.Functions(db)
		if k := f.Lookup(nil, []byte("add_page")); k != funcWrite {
			return fmt.Errorf("Lookup(add_page) = %d", k)
		}
		if k := f.Lookup([]byte("app"), []byte("add_page")); k != funcWrite {
			return fmt.Errorf("Lookup(app.add_page) = %d", k)
		}
		return nil
	})

	// No CONNECT privilege: no catalog, one warning however often it fails.
	tc.Functions(denied)
	warnings := func() int {
		return tc.logs.countWith("function catalog load failed; keeping the previous one", "database", denied, time.Time{})
	}
	failures := func() int {
		return warnings() + tc.logs.countWith("function catalog load failed again", "database", denied, time.Time{})
	}
	for want := 1; want <= 3; want++ {
		tc.RefreshFunctions() // a failed load is retried after a second; this is sooner
		waitFor(t, 15*time.Second, fmt.Sprintf("%d failed loads of %s", want, denied), func() error {
			if n := failures(); n < want {
				return fmt.Errorf("%d failed loads", n)
			}
			return nil
		})
	}
	if f := tc.Functions(denied); f != nil {
		t.Errorf("Functions(%s) = %v, want nil", denied, f)
	}
	if n := warnings(); n != 1 {
		t.Errorf("%d warnings for %s, want 1", n, denied)
	}
	if tc.Functions(db) == nil {
		t.Errorf("Functions(%s) = nil after another database's failures", db)
	}
	tc.logs.mu.Lock()
	defer tc.logs.mu.Unlock()
	for _, r := range tc.logs.recs {
		r.Attrs(func(a slog.Attr) bool {
			if strings.Contains(a.Value.String(), password) {
				t.Errorf("the password in a log record: %s %s=%s", r.Message, a.Key, a.Value)
			}
			return true
		})
	}
}

// A load in progress ends with Run: Run returns at once (runCluster's
// cleanup allows 10s), not after the load's minute-long timeout, and leaves
// no goroutine behind.
func TestFunctionsLoadStopsWithRun(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	hang := newHangingListener(t) // closed after Run has returned: it cannot end the load
	var d net.Dialer
	var dialed atomic.Bool // only the first dial is the health check's; every later one hangs
	tc := runCluster(t, Config{
		Hosts:               []Host{{Addr: pc.Primary().Addr()}},
		HealthCheckInterval: 100 * time.Millisecond,
		HealthCheckTimeout:  time.Minute,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dialed.CompareAndSwap(false, true) {
				return d.DialContext(ctx, network, addr)
			}
			return d.DialContext(ctx, network, hang.addr())
		},
	})
	tc.waitChecked(t)
	if err := tc.writerIs(pc.Primary().Addr()); err != nil {
		t.Fatal(err)
	}
	tc.Functions("postgres")
	waitFor(t, 15*time.Second, "the load connecting to a server that never answers", func() error {
		hang.mu.Lock()
		defer hang.mu.Unlock()
		if len(hang.conns) == 0 {
			return errors.New("no connection yet")
		}
		return nil
	})
}
