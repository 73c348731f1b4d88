package pool

import (
	"testing"
	"time"
)

func TestWaitHistogram(t *testing.T) {
	var c Counters
	for _, d := range []time.Duration{0, 0, 300 * time.Microsecond, 2 * time.Millisecond, time.Second, time.Minute} {
		c.observeWait(d)
	}
	h := c.Waits()
	if h.Count != 6 {
		t.Fatalf("count %d", h.Count)
	}
	if want := 300*time.Microsecond + 2*time.Millisecond + time.Second + time.Minute; h.Sum != want {
		t.Fatalf("sum %v, want %v", h.Sum, want)
	}
	// Cumulative: ≤0.5ms holds the two zero waits and 300µs; ≤5ms adds 2ms; ≤1s adds 1s; the
	// minute is only in the count (the implicit +Inf bucket).
	want := map[float64]uint64{0.0005: 3, 0.001: 3, 0.005: 4, 0.5: 4, 1: 5, 30: 5}
	for i, b := range WaitBuckets {
		if w, ok := want[b]; ok && h.Buckets[i] != w {
			t.Errorf("bucket ≤%gs = %d, want %d", b, h.Buckets[i], w)
		}
	}
	if n := testing.AllocsPerRun(100, func() { c.observeWait(3 * time.Millisecond) }); n != 0 {
		t.Fatalf("observeWait allocates %v times", n)
	}
}
