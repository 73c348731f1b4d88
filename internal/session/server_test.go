package session

import (
	"strings"
	"testing"
)

// TestStatementCacheBytes: the statement cache of a server connection keeps to
// max_prepared_statements and to max_prepared_statements_bytes, evicting least recently used
// first; a statement larger than the byte cap is kept alone; evictions past the first become
// orphans, closed later.
func TestStatementCacheBytes(t *testing.T) {
	var st serverState
	key := func(s string) stmtKey { return stmtKey{text: s} }
	a, _ := st.add(key(strings.Repeat("a", 400)), 10, 1000)
	b, _ := st.add(key(strings.Repeat("b", 400)), 10, 1000)
	st.lookup(a.key) // a is now more recently used than b
	c, ev := st.add(key(strings.Repeat("c", 400)), 10, 1000)
	if ev != b || st.textBytes != 800 || st.lookup(b.key) != nil {
		t.Fatalf("evicted %v, %d bytes; want b evicted, 800 bytes", ev, st.textBytes)
	}
	big, ev := st.add(key(strings.Repeat("x", 5000)), 10, 1000)
	if ev == nil || len(st.orphans) != 1 || len(st.statements) != 1 || st.lookup(big.key) != big {
		t.Fatalf("after a statement over the cap: evicted %v, orphans %v, %d statements", ev, st.orphans, len(st.statements))
	}
	if got := []string{ev.name, st.orphans[0]}; !(got[0] == a.name && got[1] == c.name || got[0] == c.name && got[1] == a.name) {
		t.Fatalf("evicted %v, want a and c", got)
	}
	st.forgetAll()
	if st.textBytes != 0 {
		t.Fatalf("%d bytes after forgetAll", st.textBytes)
	}
	// The count cap alone, as before.
	for i := range 5 {
		st.add(key(strings.Repeat("k", i+1)), 3, 0)
	}
	if len(st.statements) != 3 || st.textBytes != 3+4+5 {
		t.Fatalf("%d statements, %d bytes", len(st.statements), st.textBytes)
	}
}
