package proxy

import (
	"context"
	"math"
	"time"

	"pgtide/internal/pool"
)

// poolTotals is one pool's cumulative counters at one moment.
type poolTotals struct {
	xacts, queries, received, sent, queryNanos, waits, waitNanos int64
}

func totalsOf(c *pool.Counters) poolTotals {
	w := c.Waits()
	return poolTotals{xacts: c.Transactions.Load(), queries: c.Queries.Load(), received: c.BytesReceived.Load(),
		sent: c.BytesSent.Load(), queryNanos: c.QueryNanos.Load(), waits: int64(w.Count), waitNanos: int64(w.Sum)}
}

// logStats logs, every stats_period, one line per pool that had work in the period, as
// PgBouncer's stats lines: transactions and queries per second, bytes per second to and from
// the servers, and the average query time and wait for a server connection. It runs until ctx
// is done; a reload's stats_period applies from the next line.
func (s *Server) logStats(ctx context.Context) {
	prev := map[pool.Key]poolTotals{}
	last := time.Now()
	for {
		period := s.cfg.Load().Proxy.StatsPeriod.Duration
		if period <= 0 {
			period = time.Minute // off: look again at this pace in case a reload turns it on
		}
		t := time.NewTimer(period)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		now := time.Now()
		secs := now.Sub(last).Seconds()
		last = now
		on := s.cfg.Load().Proxy.StatsPeriod.Duration > 0
		for _, st := range s.pools.Stats() {
			cur := totalsOf(st.Counters)
			was, seen := prev[st.Key]
			prev[st.Key] = cur
			if !on || !seen && cur.queries == 0 || seen && cur == was {
				continue
			}
			queries, waits := cur.queries-was.queries, cur.waits-was.waits
			s.logger.Info("stats", "pool", st.Key.String(),
				"xacts_per_s", perSecond(cur.xacts-was.xacts, secs), "queries_per_s", perSecond(queries, secs),
				"received_bytes_per_s", perSecond(cur.received-was.received, secs),
				"sent_bytes_per_s", perSecond(cur.sent-was.sent, secs),
				"avg_query_us", (cur.queryNanos-was.queryNanos)/max(queries, 1)/1000,
				"avg_wait_us", (cur.waitNanos-was.waitNanos)/max(waits, 1)/1000)
		}
	}
}

// perSecond is n per second over secs, to two decimals: one query a minute is 0.02, not 0.
func perSecond(n int64, secs float64) float64 { return math.Round(float64(n)/secs*100) / 100 }
