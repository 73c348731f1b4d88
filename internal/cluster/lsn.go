package cluster

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// parseLSN parses a WAL position as a health query returns it: PostgreSQL's
// pg_lsn text, two hexadecimal halves "16/B374D848", or a plain decimal
// number, which is how Aurora's aurora_replica_status() reports durable_lsn
// and current_read_lsn (e.g. 88492069). NULL (nil) is unknown: 0, false.
func parseLSN(b []byte) (lsn uint64, ok bool, err error) {
	if b == nil {
		return 0, false, nil
	}
	for i, c := range b {
		if c != '/' {
			continue
		}
		hi, err1 := strconv.ParseUint(string(b[:i]), 16, 32)
		lo, err2 := strconv.ParseUint(string(b[i+1:]), 16, 32)
		if err := errors.Join(err1, err2); err != nil || i == 0 || i == len(b)-1 {
			return 0, false, fmt.Errorf("LSN %q: want X/Y in hexadecimal", b)
		}
		return hi<<32 | lo, true, nil
	}
	lsn, err = strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("LSN %q: want X/Y in hexadecimal or a decimal number", b)
	}
	return lsn, true, nil
}

// lsnDistance returns how far behind to is from, in bytes: 0 when to has
// reached from, capped at MaxInt64.
func lsnDistance(from, to uint64) int64 {
	if to >= from {
		return 0
	}
	return int64(min(from-to, math.MaxInt64))
}

// writerSamples is how many of the writer's recent WAL positions are kept:
// at the default interval, four seconds of them.
const writerSamples = 16

type lsnSample struct {
	started time.Time // when the writer's health check that took it started
	ended   time.Time // when it ended: the writer had lsn by then
	lsn     uint64
}

// writerLSNs is one writer's most recent WAL positions, a ring in the order
// its checks started. A published value is never modified: the writer's
// checker publishes a copy with each new sample, so readers need no lock.
type writerLSNs struct {
	node    *Node
	samples [writerSamples]lsnSample
	head, n int // oldest sample at samples[head]; n held
}

func (r *writerLSNs) at(i int) lsnSample { return r.samples[(r.head+i)%writerSamples] }

func (r *writerLSNs) newest() lsnSample { return r.at(r.n - 1) }

// recordWriterLSN adds a sample taken by writer n's health check, which
// started at started. A sample from another node than the ring's starts a
// new ring: positions of two servers are not comparable. Called by n's
// checker only.
func (c *Cluster) recordWriterLSN(n *Node, started time.Time, lsn uint64) {
	for {
		old := c.writerLSNs.Load()
		next := &writerLSNs{node: n}
		if old != nil && old.node == n {
			*next = *old
		}
		s := lsnSample{started: started, ended: c.config().Now(), lsn: lsn}
		if next.n < writerSamples {
			next.samples[(next.head+next.n)%writerSamples] = s
			next.n++
		} else {
			next.samples[next.head] = s
			next.head = (next.head + 1) % writerSamples
		}
		if c.writerLSNs.CompareAndSwap(old, next) {
			return
		}
	}
}

// forgetWriterLSNs drops n's samples, if the ring is n's: n is no longer an
// up writer. Its positions would say nothing about the next writer's, and a
// server that comes back may have lost WAL (restored from a backup).
func (c *Cluster) forgetWriterLSNs(n *Node) {
	if old := c.writerLSNs.Load(); old != nil && old.node == n {
		c.writerLSNs.CompareAndSwap(old, nil)
	}
}

// currentWriterLSNs returns the samples if they are the current writer's.
func (c *Cluster) currentWriterLSNs() *writerLSNs {
	r := c.writerLSNs.Load()
	if r == nil {
		return nil
	}
	if w, ok := c.Writer(); !ok || w != r.node {
		return nil
	}
	return r
}

// WriterLSNAfter returns the current writer's WAL position as sampled by the
// earliest of its health checks that started after t; ok is false when no
// such sample exists yet (none has started since t, no writer, a split
// brain, or a new writer since t whose samples were all taken before t).
//
// It is for reading your writes: a client whose last write committed at t
// may read from a replica once that replica's ReplayLSN() is at least
// WriterLSNAfter(t). The reasoning: a commit that returned before t has its
// commit record in the writer's WAL, written and flushed (Aurora: durable)
// before t; a health check that started after t asked for the writer's WAL
// position after that, so it got a position at or past the commit's. A
// replica that has replayed up to that position sees the commit. Samples
// are kept for the last 16 checks only: for a t older than all of them the
// oldest kept sample is returned, later than needed but still safe.
//
// With synchronous_commit = off a commit returns before its WAL is written,
// so a sample taken within wal_writer_delay of it may fall short of it: the
// guarantee holds for synchronous commits only.
//
// It takes no locks, allocates nothing and is safe for concurrent use.
func (c *Cluster) WriterLSNAfter(t time.Time) (lsn uint64, ok bool) {
	r := c.currentWriterLSNs()
	if r == nil {
		return 0, false
	}
	for i := range r.n {
		if s := r.at(i); s.started.After(t) {
			return s.lsn, true
		}
	}
	return 0, false
}

// replayLag returns how far behind the writer a replica whose check started at started had
// replayed (up to replay): how long ago the writer was at that position, as monitoring on
// PostgreSQL measures replay lag on the primary (pg_stat_replication.replay_lag), here from the
// writer's samples, which say when it had which position (flushed, so sendable). The oldest
// sample past replay taken before the replica's check started is WAL the replica lacked from
// that sample's end on; the figure is started minus that end. It catches what the replica's own
// figure cannot: a replica that receives nothing (a stalled or cut-off walreceiver, one still
// following a dead primary after a failover) has replayed all it received and would report no
// lag. And it is not the time since the last replayed commit, which after a quiet period on the
// writer is the quiet period plus the real delay. ref is the caller's memory of the sample it
// measured from last time, kept while the replica has not replayed past it, so a replica stuck
// for longer than the samples reach shows its whole lag.
//
// exact reports whether the samples settle it: the replica has replayed all the writer had
// flushed (0), or a sample at or before replay precedes the one past it, so the writer passed
// replay within the samples' reach. Otherwise (no samples, or every sample already past replay:
// pgtide started, or a new writer appeared, while the replica was behind) the figure is a lower
// bound, and the caller takes the larger of it and the replica's own.
func (c *Cluster) replayLag(started time.Time, replay uint64, ref *lagRef) (lag time.Duration, exact bool) {
	if replay == 0 {
		*ref = lagRef{}
		return 0, false
	}
	if ref.lsn != 0 && replay < ref.lsn {
		return max(0, started.Sub(ref.ended)), ref.exact
	}
	*ref = lagRef{}
	r := c.currentWriterLSNs()
	if r == nil {
		return 0, false
	}
	for i := range r.n {
		s := r.at(i)
		if s.ended.After(started) {
			return 0, i > 0
		}
		if s.lsn > replay {
			*ref = lagRef{lsnSample: s, exact: i > 0}
			return max(0, started.Sub(s.ended)), ref.exact
		}
	}
	return 0, true
}

// lagRef is the writer's sample a replica's lag is measured from (see replayLag).
type lagRef struct {
	lsnSample
	exact bool // a sample at or before the replica's position preceded it
}
