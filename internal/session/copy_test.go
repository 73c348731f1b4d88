package session

import "testing"

// TestReqLog: the ring keeps order across wrap-around and growth, pops through the oldest
// request, and removes a run from the middle.
func TestReqLog(t *testing.T) {
	var l reqLog
	str := func() string {
		b := make([]byte, l.len())
		for i := range b {
			b[i] = l.at(i)
		}
		return string(b)
	}
	for i := 0; i < 40; i++ { // wrap around many times at the first size
		l.push(logQuery)
		l.popRequest()
	}
	for _, k := range "cESSScSQ" {
		l.push(byte(k))
	}
	l.push(logExecute)
	l.pushBeforeLast(logParse) // sent before the Execute
	if got := str(); got != "cESSScSQpE" {
		t.Fatalf("log %q", got)
	}
	l.remove(2, 3) // the three Syncs after the Execute
	if got := str(); got != "cEcSQpE" {
		t.Fatalf("after remove: %q", got)
	}
	l.popRequest()
	if got := str(); got != "QpE" {
		t.Fatalf("after pop: %q", got)
	}
	for i := 0; i < 100; i++ {
		l.push(logSync)
	}
	l.popRequest()
	if l.len() != 102 || l.at(0) != logParse || l.at(1) != logExecute || l.at(101) != logSync {
		t.Fatalf("after growth: len %d", l.len())
	}
}

// TestReqLogBinds: a Bind's statement stays with its entry when a Parse is logged before it, when
// entries before it are removed, and when the ring wraps and grows.
func TestReqLogBinds(t *testing.T) {
	var l reqLog
	a, b, c := &clientStmt{key: "a"}, &clientStmt{key: "b"}, &clientStmt{key: "c"}
	for i := 0; i < 10; i++ { // move head off 0
		l.push(logQuery)
		l.popRequest()
	}
	l.push(logExtended)
	l.setBind(0, a)
	l.push(logExtended)
	l.setBind(1, b)
	l.pushBeforeLast(logParse) // a Parse pgtide sends before b's Bind
	l.push(logSync)
	l.push(logSync)
	l.push(logExtended)
	l.setBind(5, c)
	l.remove(3, 2) // the Syncs
	for i := 0; i < 40; i++ {
		l.push(logSync)
	}
	want := []struct {
		k   byte
		def *clientStmt
	}{{logBind, a}, {logParse, nil}, {logBind, b}, {logBind, c}, {logSync, nil}}
	for i, w := range want {
		if k := l.at(i); k != w.k || k == logBind && l.stmt(i) != w.def {
			t.Fatalf("entry %d: %c %v; want %c %v", i, k, l.stmt(i), w.k, w.def)
		}
	}
	l.popRequest() // through the first Sync
	if l.len() != 39 {
		t.Fatalf("len %d after pop", l.len())
	}
}
