package pool

import (
	"testing"
	"time"
)

// TestConnectLimiter: a burst of a tenth of the rate goes at once, then one dial per interval,
// each wait at most 20% longer than the schedule; an idle limiter refills.
func TestConnectLimiter(t *testing.T) {
	var l connectLimiter
	now := time.Unix(1000, 0)
	const rate = 100 // 10ms apart, bursts of 10
	interval := 10 * time.Millisecond
	for i := 0; i < 10; i++ {
		if d := l.reserve(now, rate); d != 0 {
			t.Fatalf("dial %d of the burst waits %s", i, d)
		}
	}
	for i := 1; i <= 50; i++ {
		d := l.reserve(now, rate)
		want := time.Duration(i) * interval
		if d < want || d > want+want/5+1 {
			t.Fatalf("dial %d after the burst waits %s, want %s..%s", i, d, want, want+want/5)
		}
	}
	// 60 dials booked in the same instant: at most rate per second, plus the burst.
	later := now.Add(2 * time.Second)
	for i := 0; i < 10; i++ {
		if d := l.reserve(later, rate); d != 0 {
			t.Fatalf("after a rest, dial %d waits %s", i, d)
		}
	}
	if d := l.reserve(time.Unix(0, 0), 0); d != 0 {
		t.Fatal("rate 0 must not limit")
	}
}
