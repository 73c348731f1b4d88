package pool

import (
	"context"
	"sync"
	"time"

	"pgtide/internal/evloop"
)

// Waits without a goroutine. A session served by event loops (package evloop) must not block
// on a loop's goroutine: when its pool has nothing to lend, QueueAcquire queues it with
// Acquire's waiters, first come first served, and a function it gives runs when a connection
// (or a slot to dial into) is given to it; FinishAcquire then takes it up, on the loop.

// PoolWait is one wait for a server connection that holds no goroutine (see QueueAcquire). A
// client keeps one, for one wait at a time; the zero value is ready for use. Its caller
// serializes QueueAcquire, Abandon and FinishAcquire on it.
type PoolWait struct {
	w *waiter // while a wait is on
}

var asyncWaiters = sync.Pool{New: func() any { return new(waiter) }}

// QueueAcquire is the first half of Acquire for a caller that must not block: it neither waits
// for a connection nor dials one (its caller may hold a lock; at most it closes a connection past
// its lifetime, a write bounded by a second). When k's pool has a connection to lend, or may open
// one, it takes it and returns it in tk, which the caller must then pass to Take (once it has let
// go of its lock); when Acquire would wait, it queues pw instead
// and reports queued: done then runs exactly once when the wait ends (a connection or a slot
// given to pw, wait passed, or Abandon), on the goroutine that ended it and under the Manager's
// lock, so it must only hand the work on (evloop's Post); FinishAcquire is that work.
func (m *Manager) QueueAcquire(k Key, wait time.Duration, pw *PoolWait, done func()) (tk Taken, queued bool, err error) {
	start := time.Now()
	c, slot, qw, err := m.tryAcquire(k, start, true, &asyncWait{pw: pw, wait: wait, done: done})
	if qw != nil {
		return Taken{}, true, nil
	}
	return Taken{c: c, slot: slot, k: k, wait: wait, start: start}, false, err
}

// asyncWait is a QueueAcquire's wait, made a waiter only if it is queued (queueLocked).
type asyncWait struct {
	pw   *PoolWait
	wait time.Duration
	done func()
}

// waiter returns a pooled waiter for a, queued on k's pool from now, and gives it to a.pw.
// Requires Manager.mu: done cannot run before the caller lets go of it.
func (a *asyncWait) waiter(k Key, now time.Time) *waiter {
	w := asyncWaiters.Get().(*waiter)
	*w = waiter{since: now, deadline: now.Add(a.wait), done: a.done, key: k, wait: a.wait}
	a.pw.w = w
	return w
}

// Taken is what QueueAcquire took without waiting: an idle connection, not checked yet, or a
// slot to dial into. Take finishes it.
type Taken struct {
	c     *Conn
	slot  bool
	k     Key
	wait  time.Duration
	start time.Time
}

// Take finishes what QueueAcquire took, as Acquire does: it checks the connection (replaced,
// with Acquire, if it failed its check), or dials into the slot (handing the caller's loop off
// first: see evloop.BeforeBlock).
func (m *Manager) Take(ctx context.Context, tk Taken) (*Conn, error) {
	return m.acquired(ctx, tk.k, tk.wait, tk.start, tk.c, tk.slot, false)
}

// acquired finishes an acquisition that got c, or a slot to dial into (dialing within what is
// left of wait from start), as Acquire does: a connection that fails its check is replaced by
// asking again, with Acquire. waited: c came after a wait (else its wait is counted as none,
// reading no clock).
func (m *Manager) acquired(ctx context.Context, k Key, wait time.Duration, start time.Time, c *Conn, slot, waited bool) (*Conn, error) {
	if slot {
		evloop.BeforeBlock() // dialing: not on a loop
		dctx, cancel := context.WithDeadline(ctx, start.Add(wait))
		c, err := m.dialSlot(dctx, k)
		cancel()
		if err != nil {
			return nil, err
		}
		c.counters.observeWait(time.Since(start))
		return c, nil
	}
	if !m.check(c, start) {
		return m.Acquire(ctx, k, max(wait-time.Since(start), time.Millisecond))
	}
	if waited {
		c.counters.observeWait(time.Since(start))
	} else {
		c.counters.observeWait(0)
	}
	return c, nil
}

// FinishAcquire takes up pw's wait once it ended (QueueAcquire's done ran): the connection given
// to it, checked, or one dialed into the slot given to it; or the wait's error, a
// *WaitTimeoutError or Abandon's. pw is ready for another wait after.
func (m *Manager) FinishAcquire(ctx context.Context, pw *PoolWait) (*Conn, error) {
	w := pw.w
	*pw = PoolWait{}
	k, wait, g, err, start := w.key, w.wait, w.g, w.err, w.since
	*w = waiter{}
	asyncWaiters.Put(w)
	if err != nil {
		return nil, err
	}
	return m.acquired(ctx, k, wait, start, g.conn, g.conn == nil, true)
}

// Abandon ends pw's wait with err if it is still queued (done runs before Abandon returns, and
// FinishAcquire returns err). It does nothing when no wait is queued.
func (m *Manager) Abandon(pw *PoolWait, err error) {
	if pw.w == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := pw.w
	if !w.queued {
		return // it ended already
	}
	if p := m.pools[w.key]; p != nil {
		p.removeWaiter(w)
	}
	w.queued, w.err = false, err
	w.done()
}

// removeWaiter takes w out of p's queue. Requires mu.
func (p *pool) removeWaiter(w *waiter) {
	for i, x := range p.waiters {
		if x == w {
			n := len(p.waiters)
			copy(p.waiters[i:], p.waiters[i+1:])
			p.waiters[n-1] = nil
			p.waiters = p.waiters[:n-1]
			return
		}
	}
}

// queueAsyncLocked marks w, about to be queued on p, and arms p's timer for its deadline if it
// is the earliest. Requires mu.
func (m *Manager) queueAsyncLocked(p *pool, w *waiter) {
	w.queued = true
	if p.timerAt.IsZero() || w.deadline.Before(p.timerAt) {
		m.armLocked(p, w.deadline)
	}
}

// armLocked sets p's timer to end its waits without a goroutine at t. Requires mu.
func (m *Manager) armLocked(p *pool, t time.Time) {
	p.timerAt = t
	if p.timer == nil {
		p.timer = time.AfterFunc(time.Until(t), func() { m.expire(p) })
	} else {
		p.timer.Reset(time.Until(t))
	}
}

// expire ends p's waits without a goroutine whose deadline passed, with a *WaitTimeoutError, and
// arms the timer for the next deadline. When the waiter it was armed for got a connection
// already it finds nothing to end, and the timer runs again at the next deadline: about once
// per query_wait_timeout while the queue is never empty.
func (m *Manager) expire(p *pool) {
	s := m.settings.Load()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	p.timerAt = time.Time{}
	var next time.Time
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if w.done != nil {
			if !now.Before(w.deadline) {
				w.queued = false
				w.err = &WaitTimeoutError{Key: p.key, Waited: now.Sub(w.since).Round(time.Millisecond), Limit: limitLocked(p, s),
					Paused: m.pauses.has(p.key.Database)}
				w.done()
				continue
			}
			if next.IsZero() || w.deadline.Before(next) {
				next = w.deadline
			}
		}
		kept = append(kept, w)
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
	if !next.IsZero() {
		m.armLocked(p, next)
	}
}
