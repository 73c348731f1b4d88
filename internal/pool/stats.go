package pool

import (
	"sync/atomic"
	"time"
)

// WaitBuckets are the upper bounds of the buckets of Counters' histogram of waits for a server
// connection, in seconds (Prometheus' convention: each bucket counts waits ≤ its bound; one more,
// implicit, counts everything). The first bucket holds the waits that found a connection at once.
var WaitBuckets = [...]float64{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30}

// Counters are one pool's cumulative counts since it was created, for metrics and SHOW STATS.
// Sessions add to them through Conn.Counters; every field is updated atomically, so reading them
// never blocks the data path (a snapshot may be a few increments apart between fields).
type Counters struct {
	// Queries counts requests answered (ReadyForQuery), Transactions those that left the
	// server idle (autocommit statements count as transactions too, as in PgBouncer).
	Queries      atomic.Int64
	Transactions atomic.Int64
	// ServerErrors counts ErrorResponses the servers of this pool sent to clients.
	ServerErrors atomic.Int64
	// QueryNanos is the time the pool's servers were busy with clients' requests: from a
	// request's first message to its ReadyForQuery (pipelined requests counted once), in ns.
	QueryNanos atomic.Int64
	// BytesSent and BytesReceived count the bytes pgtide sent to and read from the pool's
	// servers, added as each connection is given back.
	BytesSent     atomic.Int64
	BytesReceived atomic.Int64

	waits     [len(WaitBuckets) + 1]atomic.Int64 // not cumulative: waits[i] counts bucket i only
	waitCount atomic.Int64
	waitNanos atomic.Int64
}

// observeWait records one acquisition that waited d (0: none). Allocation-free.
func (c *Counters) observeWait(d time.Duration) {
	i := 0
	if d > 0 {
		s := d.Seconds()
		for i < len(WaitBuckets) && s > WaitBuckets[i] {
			i++
		}
		c.waitNanos.Add(int64(d))
	}
	c.waits[i].Add(1)
	c.waitCount.Add(1)
}

// WaitHistogram is a snapshot of a pool's waits for a server connection.
type WaitHistogram struct {
	// Buckets[i] counts the waits ≤ WaitBuckets[i] (cumulative, as Prometheus expects).
	Buckets [len(WaitBuckets)]uint64
	Count   uint64
	Sum     time.Duration
}

// Waits returns a snapshot of the waits for a server connection recorded so far.
func (c *Counters) Waits() WaitHistogram {
	var h WaitHistogram
	var cum uint64
	for i := range WaitBuckets {
		cum += uint64(c.waits[i].Load())
		h.Buckets[i] = cum
	}
	h.Count = cum + uint64(c.waits[len(WaitBuckets)].Load())
	h.Sum = time.Duration(c.waitNanos.Load())
	return h
}

// Counters returns the counters of the pool c belongs to; they live as long as the Manager.
func (c *Conn) Counters() *Counters { return c.counters }

// ServerInfo describes one idle server connection (connections in use are described by their
// holders, which know their clients).
type ServerInfo struct {
	Key       Key
	PID       uint32    // the server process
	LocalAddr string    // pgtide's end of the connection
	Connected time.Time // when it was opened
	LastUsed  time.Time // when it was last given back
	TLS       string    // how it is encrypted, "" in plain text (see Conn.TLS)
}

// IdleServers returns a snapshot of every idle server connection.
func (m *Manager) IdleServers() []ServerInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ServerInfo
	for _, p := range m.pools {
		for _, c := range p.idle {
			out = append(out, ServerInfo{Key: p.key, PID: c.PID, LocalAddr: c.netConn.LocalAddr().String(),
				Connected: c.created, LastUsed: c.lastUsed, TLS: c.tlsInfo})
		}
	}
	return out
}

// TLS says how c is encrypted, as PgBouncer's tls column ("TLSv1.3/TLS_AES_256_GCM_SHA384/…",
// see pgtls.Describe), or "" in plain text.
func (c *Conn) TLS() string { return c.tlsInfo }

// Created returns when c was opened.
func (c *Conn) Created() time.Time { return c.created }
