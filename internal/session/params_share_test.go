package session

import (
	"maps"
	"pgtide/internal/wire"
	"reflect"
	"runtime"
	"testing"
	"unique"
)

// TestShareParams: parked sessions with the same parameters share one map; a change gives the
// changing session its own copy; the shared map goes when no session holds it.
func TestShareParams(t *testing.T) {
	params := func() map[string]string {
		return map[string]string{"DateStyle": "ISO, MDY", "server_version": "15.18", "TimeZone": "UTC"}
	}
	a, b, c := &Session{params: params()}, &Session{params: params()}, &Session{params: params()}
	c.params["TimeZone"] = "Europe/Paris"
	for _, s := range []*Session{a, b, c} {
		s.shareParamsLocked()
	}
	same := func(x, y *Session) bool {
		return reflect.ValueOf(x.params).UnsafePointer() == reflect.ValueOf(y.params).UnsafePointer()
	}
	if !same(a, b) || same(a, c) {
		t.Fatalf("shared: a and b %v (want true), a and c %v (want false)", same(a, b), same(a, c))
	}
	b.recordParameterStatusLocked([]byte("DateStyle\x00SQL, DMY\x00"))
	if same(a, b) || a.params["DateStyle"] != "ISO, MDY" || b.params["DateStyle"] != "SQL, DMY" {
		t.Fatalf("after b's change: a %v, b %v", a.params, b.params)
	}
	b.shareParamsLocked() // b's own settings, shared with nobody yet
	if b.paramsShared == nil || same(a, b) {
		t.Fatal("b not shared again, or shared with a")
	}

	key := unique.Make(paramsText(params()))
	if _, ok := paramSets.Load(key); !ok {
		t.Fatal("no entry for a's parameters")
	}
	a, b, c = nil, nil, nil
	for range 100 {
		runtime.GC()
		if _, ok := paramSets.Load(key); !ok {
			return
		}
	}
	t.Fatal("the shared map outlived its sessions")
}

// TestGreeting: clients of one pool with the same startup parameters get one greeting, whose map
// they share; other startup parameters, or another pool's server parameters, get another; a
// client's change to its parameters leaves the shared map as it was.
func TestGreeting(t *testing.T) {
	server := map[string]string{"server_version": "15.18", "TimeZone": "UTC", "DateStyle": "ISO, MDY"}
	app := map[string]string{"application_name": "pgbench"}
	g := greetingFor(server, app, true, true)
	if again := greetingFor(server, map[string]string{"application_name": "pgbench"}, true, true); again != g {
		t.Fatal("the same startup parameters got another greeting")
	}
	want := ""
	for _, kv := range [][2]string{{"DateStyle", "ISO, MDY"}, {"TimeZone", "UTC"}, {"application_name", "pgbench"}, {"server_version", "15.18"}} {
		want += string(wire.AppendParameterStatus(nil, kv[0], kv[1]))
	}
	if string(g.msg) != want || len(g.params.m) != 4 || g.params.m["application_name"] != "pgbench" {
		t.Fatalf("greeting %q, params %v", g.msg, g.params.m)
	}
	for _, other := range []*greeting{
		greetingFor(server, nil, true, true),
		greetingFor(server, map[string]string{"application_name": "psql"}, true, true),
		greetingFor(maps.Clone(server), app, true, true),
		greetingFor(server, app, false, true),
		greetingFor(server, app, true, false),
	} {
		if other == g {
			t.Fatal("other parameters got the same greeting")
		}
	}

	// A replica's in_hot_standby: kept for the reader endpoint, off for the others.
	standby := map[string]string{"in_hot_standby": "on"}
	if g := greetingFor(standby, nil, true, true); g.params.m["in_hot_standby"] != "off" {
		t.Fatalf("writable endpoint greeted with in_hot_standby %q", g.params.m["in_hot_standby"])
	}
	if g := greetingFor(standby, nil, true, false); g.params.m["in_hot_standby"] != "on" {
		t.Fatalf("reader endpoint greeted with in_hot_standby %q", g.params.m["in_hot_standby"])
	}

	s := &Session{params: g.params.m, paramsShared: g.params}
	s.recordParameterStatusLocked([]byte("TimeZone\x00Europe/Paris\x00"))
	if g.params.m["TimeZone"] != "UTC" || s.params["TimeZone"] != "Europe/Paris" {
		t.Fatalf("after a change: shared %v, session %v", g.params.m, s.params)
	}
}

func wireParameterStatus(name, value string) []byte {
	return wire.AppendParameterStatus(nil, name, value)
}
