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
// over it wait, as for a full pool, up to query_wait_timeout.
type leaseLimit struct {
	max     atomic.Int64 // 0: no cap (held is counted all the same)
	held    atomic.Int64
	waiters atomic.Int64
	mu      sync.Mutex
	// wake is closed, and cleared, when a lease is given back (or the cap raised) while
	// clients wait; guarded by mu.
	wake chan struct{}
}

// setMax sets the cap (0: none), waking the waiters if it rose.
func (l *leaseLimit) setMax(n int64) {
	if prev := l.max.Swap(n); prev != 0 && (n == 0 || n > prev) {
		l.wakeAll()
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
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	// Counted as a waiter before each try, so a release either sees it and wakes it, or comes
	// before the try, which then finds the lease.
	l.waiters.Add(1)
	defer l.waiters.Add(-1)
	for {
		l.mu.Lock()
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.mu.Unlock()
		if l.tryAcquire() {
			return time.Since(start), nil
		}
		evloop.BeforeBlock() // a loop must not wait (see package evloop)
		select {
		case <-wake:
		case <-timer.C:
			return time.Since(start), &EndpointWaitError{Endpoint: name, PoolSize: int(l.max.Load()),
				Waited: time.Since(start).Round(time.Millisecond)}
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		}
	}
}

// release gives a lease back.
func (l *leaseLimit) release() {
	l.held.Add(-1)
	if l.waiters.Load() > 0 {
		l.wakeAll()
	}
}

func (l *leaseLimit) wakeAll() {
	l.mu.Lock()
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
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
