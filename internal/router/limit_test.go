package router

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitFor polls until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Clients over the cap get leases in the order they came, one per lease given back.
func TestLeaseLimitFIFO(t *testing.T) {
	var l leaseLimit
	l.max.Store(1)
	if _, err := l.acquire(context.Background(), time.Second, "ep"); err != nil {
		t.Fatal(err)
	}
	const n = 5
	got := make(chan int, n)
	for i := range n {
		go func() {
			if _, err := l.acquire(context.Background(), time.Minute, "ep"); err != nil {
				t.Error(err)
			}
			got <- i
		}()
		waitFor(t, "the waiter to queue", func() bool { return l.waiters.Load() == int64(i+1) })
	}
	for want := range n {
		l.release()
		if i := <-got; i != want {
			t.Fatalf("lease %d went to waiter %d", want, i)
		}
		select {
		case i := <-got:
			t.Fatalf("one release let two waiters through (%d too)", i)
		case <-time.After(10 * time.Millisecond):
		}
	}
	l.release()
	if l.held.Load() != 0 || l.waiters.Load() != 0 || len(l.queue) != 0 {
		t.Fatalf("after: held %d, waiters %d, queue %d", l.held.Load(), l.waiters.Load(), len(l.queue))
	}
}

// A waiter that times out or is cancelled leaves the queue; a lease never goes astray.
func TestLeaseLimitGiveUp(t *testing.T) {
	var l leaseLimit
	l.max.Store(1)
	l.acquire(context.Background(), time.Second, "ep")
	_, err := l.acquire(context.Background(), 20*time.Millisecond, "ep")
	var we *EndpointWaitError
	if !errors.As(err, &we) || we.PoolSize != 1 {
		t.Fatalf("timed out: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := l.acquire(ctx, time.Minute, "ep"); done <- err }()
	waitFor(t, "the waiter to queue", func() bool { return l.waiters.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if l.waiters.Load() != 0 || len(l.queue) != 0 {
		t.Fatalf("a waiter that gave up is still queued")
	}
	// Many waiters giving up while leases are given back: every lease ends up held by a
	// waiter that got it, or free.
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		go func() {
			if _, err := l.acquire(ctx, time.Minute, "ep"); err == nil {
				l.release()
			}
			cancel()
		}()
	}
	l.release()
	waitFor(t, "every waiter to finish", func() bool { return l.waiters.Load() == 0 && l.held.Load() == 0 })
	if _, err := l.acquire(context.Background(), time.Second, "ep"); err != nil {
		t.Fatalf("the lease went astray: %v", err)
	}
}
