package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// idleResult is a proxy's memory with n clients logged in and idle.
type idleResult struct {
	clients      int
	before, with int64 // VmRSS in bytes, before connecting and with all connected
}

func (r idleResult) kibPerClient() float64 {
	return float64(r.with-r.before) / 1024 / float64(r.clients)
}

const (
	idleDialers = 16 // connections opened in parallel
	// RSS is read once all have been idle this long: steady state, after pgtide trims or parks
	// its idle clients (a second) and has the memory they left returned to the OS.
	idleSettle = 5 * time.Second
)

// measureIdle logs n clients in to the proxy t, runs SELECT 1 on each so
// every one has been through a transaction, holds them idle for idleSettle,
// reads the proxy's RSS, then closes them.
func measureIdle(ctx context.Context, t *target, n int) (idleResult, error) {
	// One client first, so the pool's first server connection is not
	// counted as client memory.
	if err := pingOnce(ctx, t.connString()); err != nil {
		return idleResult{}, fmt.Errorf("%s: %w", t.name, err)
	}
	pid := t.proc.pid()
	before, err := rssBytes(pid)
	if err != nil {
		return idleResult{}, err
	}

	conns := make([]*pgconn.PgConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards errs
		errs []error
	)
	next := make(chan int)
	for range idleDialers {
		wg.Go(func() {
			for i := range next {
				c, err := pgconn.Connect(ctx, t.connString())
				if err == nil {
					conns[i] = c
					_, err = c.Exec(ctx, "SELECT 1").ReadAll()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return idleResult{}, fmt.Errorf("%s: %d of %d idle clients failed, the first: %w", t.name, len(errs), n, errs[0])
	}

	select {
	case <-ctx.Done():
		return idleResult{}, ctx.Err()
	case <-time.After(idleSettle):
	}
	with, err := rssBytes(pid)
	if err != nil {
		return idleResult{}, err
	}
	return idleResult{clients: n, before: before, with: with}, nil
}
