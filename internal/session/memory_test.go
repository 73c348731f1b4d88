package session

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestMessageMemory(t *testing.T) {
	m := NewMessageMemory(100)
	ctx := context.Background()
	if err := m.Take(ctx, 60); err != nil {
		t.Fatal(err)
	}
	// 60 + 50 > 100: waits, and gives up with its context.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := m.Take(short, 50); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take over capacity: %v", err)
	}
	// A waiter gets its memory when the holder gives it back.
	got := make(chan error, 1)
	go func() { got <- m.Take(ctx, 50) }()
	select {
	case err := <-got:
		t.Fatalf("Take returned %v while the memory was held", err)
	case <-time.After(20 * time.Millisecond):
	}
	m.Give(60)
	if err := <-got; err != nil || m.Used() != 50 {
		t.Fatalf("Take after Give: %v, used %d", err, m.Used())
	}
	m.Give(50)
	// Larger than the whole capacity: taken when nothing else is held, never deadlocked.
	if err := m.Take(ctx, 500); err != nil || m.Used() != 500 {
		t.Fatalf("oversized Take: %v, used %d", err, m.Used())
	}
	m.Give(500)
	// A larger capacity (reload) lets a waiter in.
	if err := m.Take(ctx, 100); err != nil {
		t.Fatal(err)
	}
	go func() { got <- m.Take(ctx, 10) }()
	m.SetCapacity(200)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
