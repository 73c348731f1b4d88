package session

import (
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
