package pool

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestPause: a paused database lends nothing (waiters queue, TryAcquire fails), its idle
// connections close at once and the ones in use when released, even with a waiter; other
// databases go on; Resume gives the waiter a connection.
func TestPause(t *testing.T) {
	m, k := newTestManager(t)
	other := Key{Node: k.Node, Database: "other", User: k.User}
	ctx := context.Background()
	held := mustAcquire(t, m, k)
	if !m.Pause(k.Database) || m.Pause(k.Database) {
		t.Fatal("Pause should report a change only the first time")
	}
	if !m.Paused(k.Database) || m.Paused(other.Database) {
		t.Fatal("Paused: wrong databases")
	}
	if _, err := m.TryAcquire(ctx, k); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("TryAcquire while paused: %v, want ErrWouldWait", err)
	}
	var wt *WaitTimeoutError
	if _, err := m.Acquire(ctx, k, 20*time.Millisecond); !errors.As(err, &wt) || !wt.Paused || !strings.Contains(err.Error(), `database "db" is paused`) {
		t.Fatalf("Acquire while paused: %v, want a wait timeout naming the PAUSE", err)
	}
	m.Release(mustAcquire(t, m, other), false) // another database is not paused

	got := make(chan *Conn, 1)
	go func() {
		c, err := m.Acquire(ctx, k, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	for deadline := time.Now().Add(10 * time.Second); stats(m, k).Waiting == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the Acquire did not queue")
		}
	}
	if !m.CloseNeeded(held) {
		t.Error("a connection of a paused database should be closed when released")
	}
	m.Release(held, false) // closed, not handed to the waiter
	if n := m.ServerCount(k.Database); n != 0 {
		t.Fatalf("ServerCount after the release: %d, want 0", n)
	}
	if n := m.ServerCount(""); n != 1 {
		t.Fatalf("ServerCount of every pool: %d, want 1 (other's idle connection)", n)
	}
	if all, dbs := m.Pauses(); all || len(dbs) != 1 || dbs[0] != k.Database {
		t.Fatalf("Pauses: %v %v", all, dbs)
	}
	if !m.Resume(k.Database) || m.Resume(k.Database) {
		t.Fatal("Resume should report a change only the first time")
	}
	select {
	case c := <-got:
		if c != nil {
			m.Release(c, false)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter got no connection after Resume")
	}
}

// TestPauseAll: Pause("") pauses every database, also pools first used afterwards, and closes
// idle connections; Resume("") leaves databases paused by name paused.
func TestPauseAll(t *testing.T) {
	m, k := newTestManager(t)
	ctx := context.Background()
	m.Release(mustAcquire(t, m, k), false)
	m.Pause("db2")
	m.Pause("")
	wantStats(t, m, k, "paused", 0, 0, 0)
	if _, err := m.TryAcquire(ctx, Key{Node: k.Node, Database: "new", User: "u"}); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("a new database while all are paused: %v, want ErrWouldWait", err)
	}
	m.Resume("")
	if m.Paused(k.Database) || !m.Paused("db2") {
		t.Fatal("Resume(\"\") should end the pause of all, not db2's own")
	}
}

// TestReconnect: idle connections of the database close now, lent ones when released; other
// databases keep theirs.
func TestReconnect(t *testing.T) {
	m, k := newTestManager(t)
	other := Key{Node: k.Node, Database: "other", User: k.User}
	held := mustAcquire(t, m, k)
	m.Release(mustAcquire(t, m, other), false)
	m.Reconnect(k.Database)
	if !m.CloseNeeded(held) {
		t.Error("CloseNeeded after Reconnect: false")
	}
	m.Release(held, false)
	wantStats(t, m, k, "reconnected", 0, 0, 0)
	wantStats(t, m, other, "other database", 1, 1, 0)
	c := mustAcquire(t, m, k)
	if m.CloseNeeded(c) || c == held {
		t.Error("a connection dialed after Reconnect should be new and kept")
	}
	m.Release(c, false)
	wantStats(t, m, k, "new connection released", 1, 1, 0)
}

func mustAcquire(t *testing.T, m *Manager, k Key) *Conn {
	t.Helper()
	c, err := m.Acquire(context.Background(), k, time.Second)
	if err != nil {
		t.Fatalf("Acquire %s: %v", k, err)
	}
	return c
}
