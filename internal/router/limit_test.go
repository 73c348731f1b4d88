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

// Waits without a goroutine (enqueue) queue with acquire's, first come first served; their done
// runs once, when a lease is granted, their deadline passes (one timer for all) or they are
// abandoned; no lease goes astray.
func TestLeaseLimitEnqueue(t *testing.T) {
	var l leaseLimit
	l.max.Store(1)
	if !l.enqueue(&limitWaiter{}, time.Second) {
		t.Fatal("a free lease not taken at once")
	}
	ended := make(chan int, 10)
	waiter := func(i int) *limitWaiter {
		w := &limitWaiter{endpoint: "ep"}
		w.done = func() { ended <- i }
		return w
	}
	// Queued in turn: async 0, a goroutine (1), async 2.
	w0 := waiter(0)
	if l.enqueue(w0, time.Minute) {
		t.Fatal("enqueue over the cap took a lease")
	}
	go func() {
		if _, err := l.acquire(context.Background(), time.Minute, "ep"); err != nil {
			t.Error(err)
		}
		ended <- 1
	}()
	waitFor(t, "the goroutine to queue", func() bool { return l.waiters.Load() == 2 })
	w2 := waiter(2)
	if l.enqueue(w2, time.Minute) {
		t.Fatal("enqueue over the cap took a lease")
	}
	for want := range 3 {
		l.release()
		if i := <-ended; i != want {
			t.Fatalf("lease %d went to waiter %d", want, i)
		}
	}
	if !w0.granted || w0.err != nil || !w2.granted || w2.err != nil {
		t.Fatalf("granted waits: %v %v, %v %v", w0.granted, w0.err, w2.granted, w2.err)
	}

	// Deadlines: the later one ends after the earlier, each once, with the endpoint's error.
	short, long := waiter(3), waiter(4)
	start := time.Now()
	l.enqueue(long, 300*time.Millisecond)
	l.enqueue(short, 50*time.Millisecond) // arms the timer earlier
	if i := <-ended; i != 3 {
		t.Fatalf("waiter %d ended first", i)
	}
	if i := <-ended; i != 4 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("waiter %d ended second, after %v", i, time.Since(start))
	}
	var we *EndpointWaitError
	if !errors.As(long.err, &we) || we.Endpoint != "ep" || we.PoolSize != 1 || we.Waited < 300*time.Millisecond || long.granted {
		t.Fatalf("timed out: %v (granted %v)", long.err, long.granted)
	}

	// Abandoned: ends once, with the error given; a second abandon does nothing.
	w5 := waiter(5)
	l.enqueue(w5, time.Minute)
	l.abandon(w5, context.Canceled)
	l.abandon(w5, context.Canceled)
	if i := <-ended; i != 5 || w5.err != context.Canceled || w5.granted {
		t.Fatalf("abandoned: waiter %d, %v", i, w5.err)
	}
	select {
	case i := <-ended:
		t.Fatalf("waiter %d ended again", i)
	case <-time.After(10 * time.Millisecond):
	}
	l.release() // the last lease, held since waiter 2
	if l.held.Load() != 0 || l.waiters.Load() != 0 || len(l.queue) != 0 {
		t.Fatalf("after: held %d, waiters %d, queue %d", l.held.Load(), l.waiters.Load(), len(l.queue))
	}
}
