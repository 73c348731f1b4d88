package router

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"pgtide/internal/evloop"
)

// leaseLimit caps the server connections one endpoint's clients hold or wait for at once (its
// pool_size), over every node and pool: the pools stay per (node, database, user), shared by the
// endpoints that use a node, and this cap sits in front of them. A client takes its slot before
// it waits for a pool, so that it never holds a server connection idle while it waits for the
// cap (taking the connection first would); a client waiting for a full pool shared with other
// endpoints keeps its slot meanwhile. A lease within the cap is one compare-and-swap; clients
// over it queue, first come first served, and each lease given back goes to the first of them
// (one wake-up per lease, whatever the queue's length), up to query_wait_timeout. A client waits
// either on a goroutine (acquire) or, on an event loop, with no goroutine at all (enqueue): the
// two queue together.
type leaseLimit struct {
	max     atomic.Int64 // 0: no cap (held is counted all the same)
	held    atomic.Int64
	waiters atomic.Int64 // len(queue), read without mu by release
	mu      sync.Mutex
	queue   []*limitWaiter // guarded by mu
	// One timer ends the waits without a goroutine at their deadlines: armed for the earliest
	// (timerAt; zero when not armed). Guarded by mu.
	timer   *time.Timer
	timerAt time.Time
}

// limitWaiter is one client waiting for a lease. Guarded by the limit's mu but for ch and, once
// the wait ended, the fields enqueue's caller reads.
type limitWaiter struct {
	// A wait on a goroutine (acquire): ch gets one token when the lease is granted.
	ch      chan struct{}
	granted bool

	// A wait without a goroutine (enqueue): done runs when it ends, under the limit's mu.
	done     func()
	endpoint string // for the timeout's error
	queued   bool
	deadline time.Time
	start    time.Time
	err      error // how it ended: nil when granted
}

var (
	limitWaiters = sync.Pool{New: func() any { return &limitWaiter{ch: make(chan struct{}, 1)} }}
	asyncWaiters = sync.Pool{New: func() any { return new(limitWaiter) }}
)

// setMax sets the cap (0: none), granting leases to waiters if it rose.
func (l *leaseLimit) setMax(n int64) {
	if prev := l.max.Swap(n); prev != 0 && (n == 0 || n > prev) {
		l.grantWaiting()
	}
}

// tryAcquire takes a lease if the cap allows it now.
func (l *leaseLimit) tryAcquire() bool {
	for {
		max, h := l.max.Load(), l.held.Load()
		if max != 0 && h >= max {
			return false
		}
		if l.held.CompareAndSwap(h, h+1) {
			return true
		}
	}
}

// acquire takes a lease, waiting up to timeout for one to be given back. It returns how long it
// waited (0, reading no clock, when a lease was free), and an *EndpointWaitError or ctx's
// error when it took none.
func (l *leaseLimit) acquire(ctx context.Context, timeout time.Duration, name string) (time.Duration, error) {
	if l.tryAcquire() {
		return 0, nil
	}
	start := time.Now()
	w := limitWaiters.Get().(*limitWaiter)
	// Counted as a waiter before the last try, under mu: a release either comes before the try,
	// which then finds the lease, or sees the waiter and grants it one once it is queued.
	l.mu.Lock()
	l.waiters.Add(1)
	if l.tryAcquire() {
		l.waiters.Add(-1)
		l.mu.Unlock()
		limitWaiters.Put(w)
		return time.Since(start), nil
	}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	evloop.BeforeBlock() // a loop must not wait (see package evloop)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case <-w.ch:
		w.granted = false // dequeued by grantWaiting: w is ours alone again
		limitWaiters.Put(w)
		return time.Since(start), nil
	case <-timer.C:
		err = &EndpointWaitError{Endpoint: name, PoolSize: int(l.max.Load()), Waited: time.Since(start).Round(time.Millisecond)}
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	granted := w.granted
	if !granted {
		for i, q := range l.queue {
			if q == w {
				l.queue = append(l.queue[:i], l.queue[i+1:]...)
				l.waiters.Add(-1)
				break
			}
		}
	}
	l.mu.Unlock()
	if granted {
		<-w.ch // granted as it gave up: pass the lease on
		w.granted = false
		l.release()
	}
	limitWaiters.Put(w)
	return time.Since(start), err
}

// release gives a lease back: to the first waiter, if any.
func (l *leaseLimit) release() {
	l.held.Add(-1)
	if l.waiters.Load() > 0 {
		l.grantWaiting()
	}
}

// grantWaiting gives the leases the cap allows now to the waiters, first come first served.
func (l *leaseLimit) grantWaiting() {
	l.mu.Lock()
	for len(l.queue) > 0 && l.tryAcquire() {
		w := l.queue[0]
		copy(l.queue, l.queue[1:])
		l.queue[len(l.queue)-1] = nil
		l.queue = l.queue[:len(l.queue)-1]
		l.waiters.Add(-1)
		w.granted = true
		if w.done != nil {
			w.queued = false
			w.done()
		} else {
			w.ch <- struct{}{}
		}
	}
	l.mu.Unlock()
}

// enqueue is acquire for a caller that must not block. It reports true if it took a lease now.
// Otherwise it queues w, and w.done (set by the caller) runs exactly once, under mu, when the
// wait ends: a lease granted (w.err nil), timeout passed (an *EndpointWaitError) or abandon.
func (l *leaseLimit) enqueue(w *limitWaiter, timeout time.Duration) bool {
	if l.tryAcquire() {
		return true
	}
	w.start = time.Now()
	w.deadline = w.start.Add(timeout)
	w.granted, w.err = false, nil
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiters.Add(1) // before the last try, as in acquire
	if l.tryAcquire() {
		l.waiters.Add(-1)
		return true
	}
	w.queued = true
	l.queue = append(l.queue, w)
	if l.timerAt.IsZero() || w.deadline.Before(l.timerAt) {
		l.armLocked(w.deadline)
	}
	return false
}

// armLocked sets the timer to run expire at t. Requires mu.
func (l *leaseLimit) armLocked(t time.Time) {
	l.timerAt = t
	if l.timer == nil {
		l.timer = time.AfterFunc(time.Until(t), l.expire)
	} else {
		l.timer.Reset(time.Until(t))
	}
}

// expire ends the waits without a goroutine whose deadline passed, and arms the timer for the
// next deadline. It runs at the earliest deadline armed; when that waiter has had its lease
// already it finds nothing to end, and the timer runs again at the next deadline: about once per
// query_wait_timeout while the queue is never empty.
func (l *leaseLimit) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.timerAt = time.Time{}
	var next time.Time
	kept := l.queue[:0]
	for _, w := range l.queue {
		if w.done != nil {
			if !now.Before(w.deadline) {
				l.waiters.Add(-1)
				w.queued = false
				w.err = &EndpointWaitError{Endpoint: w.endpoint, PoolSize: int(l.max.Load()), Waited: now.Sub(w.start).Round(time.Millisecond)}
				w.done()
				continue
			}
			if next.IsZero() || w.deadline.Before(next) {
				next = w.deadline
			}
		}
		kept = append(kept, w)
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	if !next.IsZero() {
		l.armLocked(next)
	}
}

// abandon ends w's wait if it is still queued, with err; w.done runs before it returns.
func (l *leaseLimit) abandon(w *limitWaiter, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !w.queued {
		return // it ended already
	}
	for i, q := range l.queue {
		if q == w {
			n := len(l.queue)
			copy(l.queue[i:], l.queue[i+1:])
			l.queue[n-1] = nil
			l.queue = l.queue[:n-1]
			break
		}
	}
	l.waiters.Add(-1)
	w.queued = false
	w.err = err
	w.done()
}

// EndpointWaitError: no server connection within query_wait_timeout because the endpoint's
// clients held its pool_size of them. Clients get it as a full pool's error (53300).
type EndpointWaitError struct {
	Endpoint string
	PoolSize int
	Waited   time.Duration
}

func (e *EndpointWaitError) Error() string {
	return fmt.Sprintf("no server connection became free within %s (endpoint %q is at its pool_size, %d)", e.Waited, e.Endpoint, e.PoolSize)
}
