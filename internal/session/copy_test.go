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
