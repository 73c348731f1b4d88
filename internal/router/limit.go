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
// (one wake-up per lease, whatever the queue's length), up to query_wait_timeout.
type leaseLimit struct {
	max     atomic.Int64 // 0: no cap (held is counted all the same)
	held    atomic.Int64
	waiters atomic.Int64 // len(queue), read without mu by release
	mu      sync.Mutex
	queue   []*limitWaiter // guarded by mu
}

// limitWaiter is one client waiting for a lease. granted is guarded by the limit's mu; ch gets
// one token when it is granted.
type limitWaiter struct {
	ch      chan struct{}
	granted bool
}

var limitWaiters = sync.Pool{New: func() any { return &limitWaiter{ch: make(chan struct{}, 1)} }}

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
		w.ch <- struct{}{}
	}
	l.mu.Unlock()
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
