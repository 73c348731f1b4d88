package session

import "testing"

// TestExpectRing: FIFO order across wrap-around and growth, and pop drops references.
func TestExpectRing(t *testing.T) {
	var r expectRing
	next, want := 0, 0
	// Push and pop in uneven steps so the front wraps around at every size.
	for round := 0; round < 200; round++ {
		for i := 0; i < round%7+1; i++ {
			r.push(expectation{batch: next, name: "x"})
			next++
		}
		k := min(r.len(), round%5+1)
		for i := 0; i < k; i++ {
			if got := r.at(i).batch; got != want+i {
				t.Fatalf("round %d: at(%d) = %d, want %d", round, i, got, want+i)
			}
		}
		r.pop(k)
		want += k
	}
	if r.len() != next-want {
		t.Fatalf("len %d, want %d", r.len(), next-want)
	}
	r.reset()
	if r.len() != 0 {
		t.Fatalf("len %d after reset", r.len())
	}
	for _, e := range r.buf {
		if e.name != "" {
			t.Fatal("a popped expectation keeps its references")
		}
	}
}
