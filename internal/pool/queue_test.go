package pool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A wait without a goroutine queues with Acquire's waiters, first come first served; done runs
// once, under the Manager's lock, when a connection is given to it, at its deadline, or when it
// is abandoned; FinishAcquire then hands over the connection or the error, and nothing leaks.
func TestQueueAcquire(t *testing.T) {
	m, k := newTestManager(t) // pool_size 1
	ctx := context.Background()
	var pw PoolWait
	tk, queued, err := m.QueueAcquire(k, time.Minute, &pw, func() { t.Error("done ran for a free pool") })
	if err != nil || queued {
		t.Fatalf("free pool: queued %v, %v", queued, err)
	}
	held, err := m.Take(ctx, tk) // a slot: dialed
	if err != nil || held == nil {
		t.Fatalf("free pool: %v %v", held, err)
	}

	ended := make(chan int, 4)
	// Queued in turn: async 0, a goroutine (1), async 2.
	var pw0, pw2 PoolWait
	if _, q, err := m.QueueAcquire(k, time.Minute, &pw0, func() { ended <- 0 }); !q || err != nil {
		t.Fatalf("full pool: queued %v, %v", q, err)
	}
	got1 := acquireWaiting2(t, m, k, ended)
	if _, q, _ := m.QueueAcquire(k, time.Minute, &pw2, func() { ended <- 2 }); !q {
		t.Fatal("full pool: not queued")
	}
	if s := stats(m, k); s.Waiting != 3 {
		t.Fatalf("waiting %d, want 3", s.Waiting)
	}
	m.Release(held, false)
	if i := <-ended; i != 0 {
		t.Fatalf("the connection went to waiter %d first", i)
	}
	c0, err := m.FinishAcquire(ctx, &pw0)
	if err != nil || c0 != held {
		t.Fatalf("waiter 0 got %v, %v; want the connection given back", c0, err)
	}
	m.Release(c0, false)
	if i := <-ended; i != 1 {
		t.Fatalf("then to waiter %d", i)
	}
	if err := <-got1; err != nil {
		t.Fatal(err)
	}
	if i := <-ended; i != 2 { // the goroutine gave it back at once
		t.Fatalf("then to waiter %d", i)
	}
	c2, err := m.FinishAcquire(ctx, &pw2)
	if err != nil {
		t.Fatal(err)
	}

	// Deadlines: each wait ends once, with the pool's timeout error, the earlier first.
	var long, short PoolWait
	start := time.Now()
	m.QueueAcquire(k, 300*time.Millisecond, &long, func() { ended <- 3 })
	m.QueueAcquire(k, 50*time.Millisecond, &short, func() { ended <- 4 })
	if i := <-ended; i != 4 {
		t.Fatalf("waiter %d timed out first", i)
	}
	if i := <-ended; i != 3 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("waiter %d timed out second, after %v", i, time.Since(start))
	}
	for _, pw := range []*PoolWait{&short, &long} {
		var te *WaitTimeoutError
		if _, err := m.FinishAcquire(ctx, pw); !errors.As(err, &te) || te.Key != k {
			t.Fatalf("timed out: %v", err)
		}
	}

	// Abandoned: ends once, with the error given; abandoning again does nothing.
	var ab PoolWait
	m.QueueAcquire(k, time.Minute, &ab, func() { ended <- 5 })
	m.Abandon(&ab, context.Canceled)
	if i := <-ended; i != 5 {
		t.Fatalf("waiter %d ended", i)
	}
	m.Abandon(&ab, context.Canceled)
	if _, err := m.FinishAcquire(ctx, &ab); err != context.Canceled {
		t.Fatalf("abandoned: %v", err)
	}
	select {
	case i := <-ended:
		t.Fatalf("waiter %d ended again", i)
	case <-time.After(10 * time.Millisecond):
	}
	m.Release(c2, false)
	if s := stats(m, k); s.Waiting != 0 || s.Total != 1 || s.Idle != 1 {
		t.Fatalf("after: %+v", s)
	}
}

// acquireWaiting2 is acquireWaiting for a pool that has waiters already: the goroutine's wait
// is the next one queued; it sends 1 on ended once it has the connection.
func acquireWaiting2(t *testing.T, m *Manager, k Key, ended chan<- int) <-chan error {
	t.Helper()
	before := stats(m, k).Waiting
	got := make(chan error, 1)
	go func() {
		c, err := m.Acquire(context.Background(), k, time.Minute)
		if err == nil {
			ended <- 1
			m.Release(c, false)
		}
		got <- err
	}()
	waitStats(t, m, k, "the goroutine to wait", func(s Stats) bool { return s.Waiting == before+1 })
	return got
}
