package pool

import (
	"math/rand/v2"
	"time"
)

// connectLimiter spaces out new connections to one node: at most rate per second, with bursts of
// a tenth of rate (at least one), each wait stretched by up to 20% at random so that clients
// queued behind a failover do not reconnect in lockstep. Guarded by Manager.mu.
type connectLimiter struct {
	next time.Time // when the bucket is next empty-handed: reservations queue up behind it
}

// reserve books a dial and returns how long to wait before making it.
func (l *connectLimiter) reserve(now time.Time, rate int) time.Duration {
	if rate <= 0 {
		return 0
	}
	interval := time.Second / time.Duration(rate)
	burst := time.Duration(max(1, rate/10)) * interval
	// The bucket refills one token per interval and holds up to burst's worth.
	if earliest := now.Add(-burst); l.next.Before(earliest) {
		l.next = earliest
	}
	l.next = l.next.Add(interval)
	wait := l.next.Sub(now)
	if wait <= 0 {
		return 0
	}
	return wait + time.Duration(rand.Int64N(int64(wait)/5+1))
}
