package pool

import (
	"slices"
	"time"
)

// pauses says which databases lend no server connections (the admin console's PAUSE). Guarded by
// Manager.mu.
type pauses struct {
	all bool            // every database, including those first seen later
	dbs map[string]bool // these databases
}

func (ps *pauses) has(db string) bool { return ps.all || len(ps.dbs) > 0 && ps.dbs[db] }

// Pause stops lending server connections of database db ("": of every database, including pools
// created later): Acquire waits (bounded by its wait, query_wait_timeout) and TryAcquire fails
// with ErrWouldWait; idle connections are closed now and connections in use when they are
// released, so ServerCount(db) falls to zero as the transactions (session mode: the clients)
// holding them end. It reports whether db was not paused already (a database paused by name
// may also be paused as part of "").
func (m *Manager) Pause(db string) bool {
	m.mu.Lock()
	changed := false
	if db == "" {
		changed, m.pauses.all = !m.pauses.all, true
	} else {
		if m.pauses.dbs == nil {
			m.pauses.dbs = make(map[string]bool)
		}
		changed, m.pauses.dbs[db] = !m.pauses.dbs[db], true
	}
	toClose := m.dropIdleLocked(func(p *pool) bool { return m.pauses.has(p.key.Database) })
	m.mu.Unlock()
	closeAll(toClose)
	return changed
}

// Resume undoes Pause(db): Resume("") ends a pause of every database, not the pauses of
// databases paused by name. Clients waiting in the pools that may lend again get connections,
// longest waiter first. It reports whether db was paused.
func (m *Manager) Resume(db string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	var was bool
	if db == "" {
		was, m.pauses.all = m.pauses.all, false
	} else {
		was = m.pauses.dbs[db]
		delete(m.pauses.dbs, db)
	}
	for _, n := range m.nodes {
		m.grantSlotsLocked(n)
	}
	return was
}

// Paused reports whether db lends no server connections now (paused by name or as a whole).
func (m *Manager) Paused(db string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pauses.has(db)
}

// Pauses returns whether every database is paused and which databases are paused by name,
// sorted.
func (m *Manager) Pauses() (all bool, dbs []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for db := range m.pauses.dbs {
		dbs = append(dbs, db)
	}
	slices.Sort(dbs)
	return m.pauses.all, dbs
}

// ServerCount returns the server connections of database db's pools ("": of every pool) that are
// open, being opened or parked: what a PAUSE waits to see reach zero.
func (m *Manager) ServerCount(db string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range m.pools {
		if db == "" || p.key.Database == db {
			n += p.total
		}
	}
	return n
}

// Reconnect closes the idle server connections of database db's pools ("": of every pool) now
// and makes the ones in use close when they are released, so that every later transaction of
// db runs on a new connection (the admin console's RECONNECT, after a server's settings
// changed). Nothing running is interrupted.
func (m *Manager) Reconnect(db string) {
	m.mu.Lock()
	toClose := m.dropIdleLocked(func(p *pool) bool {
		if db != "" && p.key.Database != db {
			return false
		}
		p.gen++
		return true
	})
	m.mu.Unlock()
	closeAll(toClose)
}

// CloseNeeded reports whether c, lent by this Manager, will be closed rather than kept when it is
// released (RECONNECT, PAUSE, server_lifetime, a node's role change, a smaller pool_size or
// budget), as PgBouncer's close_needed.
func (m *Manager) CloseNeeded(c *Conn) bool {
	s := m.settings.Load()
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.poolOfLocked(c)
	return p != nil && m.closeOnReleaseLocked(p, c, s, time.Now())
}

// closeIdleLocked uncounts p's idle connections and appends them to toClose, for the caller to
// close once mu is released.
func (m *Manager) closeIdleLocked(p *pool, toClose []*Conn) []*Conn {
	for _, c := range p.idle {
		m.forgetLocked(p, c)
		toClose = append(toClose, c)
	}
	clear(p.idle)
	p.idle = p.idle[:0]
	return toClose
}

// dropIdleLocked uncounts the idle connections of every pool for which match (called under mu)
// returns true, gives the slots freed to waiting pools, and returns the connections for the
// caller to close once mu is released.
func (m *Manager) dropIdleLocked(match func(*pool) bool) []*Conn {
	var toClose []*Conn
	for _, p := range m.pools {
		if match(p) {
			toClose = m.closeIdleLocked(p, toClose)
		}
	}
	for _, n := range m.nodes {
		m.grantSlotsLocked(n)
	}
	return toClose
}
