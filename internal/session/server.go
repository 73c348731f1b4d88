package session

import (
	"strconv"
	"sync/atomic"
	"unique"

	"pgtide/internal/pool"
)

// serverState is what sessions know about one server connection's session: the settings and
// prepared statements pgtide created on it. It lives with the connection
// (pool.Conn.SessionState) for the connection's life, so the next client given the connection
// finds them; like the connection's Reader and Writer it belongs to whoever holds the
// connection, under that session's mu.
type serverState struct {
	// extra holds settings the server does not report that pgtide SET on the connection
	// (search_path, startup options), by lower-case name, as SQL text; absent means the
	// server's default. Change it only through setExtra, replaceExtra and clearExtra.
	extra map[string]string
	// settings identifies the client settings that Params and extra were last found to match
	// (see Session.settingsLocked), so a client with the same settings needs no comparison. It
	// holds only while Params is as it was then (settingsAt) and extra has not changed.
	settings   unique.Handle[string]
	settingsAt uint64 // pool.Conn.ParamsVersion when settings was recorded
	// statements are the prepared statements pgtide created on the connection, by what they
	// mean, so clients preparing the same statement share one.
	statements map[stmtKey]*statement
	textBytes  int // the statements' texts, for max_prepared_statements_bytes
	// orphans are server-side names pgtide no longer tracks that may still exist on the server
	// (a Close of them was skipped after an error, or the server reported them stale). They are
	// closed with the holder's next statement work; closing a name that does not exist is not
	// an error, so an orphan is never harmful, only wasted server memory until then.
	orphans []string
	// unnamedKey is the key of the unnamed statement the server holds, "" when none or
	// unknown. Any simple Query destroys it: it holds only while pool.Conn.Execs is unnamedAt,
	// and whoever writes a Query clears it.
	unnamedKey string
	unnamedAt  uint64
	clock      uint64 // counts statement uses, for eviction
	// dealloc is the statement the SQL DEALLOCATEs of protocol-level statements' texts drop on
	// this connection instead of the client's (see "SQL DEALLOCATE" in prepared.go); nil until
	// one is needed, and after a DEALLOCATE ALL or DISCARD ALL, when the next gets a new name.
	dealloc *throwaway
}

// throwaway is an empty statement pgtide creates for an SQL DEALLOCATE to drop in place of the
// client's statement, which the client's other names with the same text share (see "SQL
// DEALLOCATE" in prepared.go). Its Parse cannot fail, whatever became of the client's text.
type throwaway struct {
	name string
	held bool // the server holds it, as of the messages sent so far (undone if skipped)
}

// throwawayKey is the Parse body of a throwaway after its name: the empty query, no parameters.
const throwawayKey = "\x00\x00\x00"

func newThrowaway() *throwaway { return &throwaway{name: newStatementName()} }

// unnamedUnknown is serverState.unnamedKey when the server may hold an unnamed statement pgtide
// cannot name (a Parse of it failed or was skipped): never a real key, which is at least a NUL
// and two bytes of parameter count long, so the next Bind or Describe of the unnamed statement
// re-creates (or closes) it.
const unnamedUnknown = "\xff"

// stmtKey says what a prepared statement means. text is the Parse body after the statement
// name (query text, then parameter types); context identifies the settings under which it was
// parsed that change what the text means (search_path, DateStyle and the like; see
// Session.stmtContextLocked): a statement parsed under other settings may resolve other objects.
type stmtKey struct {
	context unique.Handle[string]
	text    string
}

// statement is a prepared statement pgtide created on a server connection.
type statement struct {
	name  string  // the server-side name, unique in the process
	key   stmtKey // what it means
	ready bool    // the server confirmed the Parse (ParseComplete)
	used  uint64  // serverState.clock at last use, for eviction
}

var statementSeq atomic.Uint64

// newStatementName returns a server-side statement name unique in the process.
func newStatementName() string { return "pgtide_" + strconv.FormatUint(statementSeq.Add(1), 10) }

// stateOf returns what sessions know of c's server session, empty for a connection no session
// has held yet (or whose session the pool reset). The caller must hold c.
func stateOf(c *pool.Conn) *serverState {
	st, _ := c.SessionState.(*serverState)
	if st == nil {
		st = new(serverState)
		c.SessionState = st
	}
	return st
}

// matches reports whether c's settings were last found to match the client settings want.
func (st *serverState) matches(c *pool.Conn, want unique.Handle[string]) bool {
	return st.settings == want && st.settingsAt == c.ParamsVersion()
}

// matched records that c's settings match want.
func (st *serverState) matched(c *pool.Conn, want unique.Handle[string]) {
	st.settings, st.settingsAt = want, c.ParamsVersion()
}

// setExtra records that the holder SET name to value (SQL text) on the connection; "" means
// the holder RESET it.
func (st *serverState) setExtra(name, value string) {
	st.settings = unique.Handle[string]{}
	if value == "" {
		delete(st.extra, name)
		return
	}
	if st.extra == nil {
		st.extra = make(map[string]string)
	}
	st.extra[name] = value
}

// replaceExtra records that the holder made the connection's extra settings exactly m.
func (st *serverState) replaceExtra(m map[string]string) {
	st.settings = unique.Handle[string]{}
	if st.extra == nil {
		st.extra = make(map[string]string, len(m))
	}
	clear(st.extra)
	for k, v := range m {
		st.extra[k] = v
	}
}

// clearExtra records that every extra setting is back to the server's default (DISCARD ALL).
func (st *serverState) clearExtra() {
	st.settings = unique.Handle[string]{}
	clear(st.extra)
}

// unnamed returns the key of the unnamed statement c's server holds, "" when none or unknown.
func (st *serverState) unnamed(c *pool.Conn) string {
	if st.unnamedAt != c.Execs() {
		return ""
	}
	return st.unnamedKey
}

// setUnnamed records that c's server holds key as its unnamed statement ("" for none).
func (st *serverState) setUnnamed(c *pool.Conn, key string) {
	st.unnamedKey, st.unnamedAt = key, c.Execs()
}

// lookup returns the statement prepared (or being prepared) under key, marking it used.
func (st *serverState) lookup(key stmtKey) *statement {
	x := st.statements[key]
	if x != nil {
		st.clock++
		x.used = st.clock
	}
	return x
}

// add records a new statement for key under a fresh server-side name, replacing any statement
// recorded for key (which the caller must Close on the server). If that makes more than max
// statements, or more than maxBytes of statement text (0: no cap), it also returns the least
// recently used one, which the caller must Close too; both are already forgotten here. When the
// byte cap needs more than one eviction (a large statement), the others become orphans, closed
// with the next statement work. The new statement itself is never evicted. Eviction scans the
// cache: O(max), once per statement evicted.
func (st *serverState) add(key stmtKey, max, maxBytes int) (x, evicted *statement) {
	if st.statements == nil {
		st.statements = make(map[stmtKey]*statement)
	}
	st.clock++
	x = &statement{name: newStatementName(), key: key, used: st.clock}
	if old := st.statements[key]; old != nil {
		st.textBytes -= len(old.key.text)
	}
	st.statements[key] = x
	st.textBytes += len(key.text)
	for len(st.statements) > 1 && (max > 0 && len(st.statements) > max || maxBytes > 0 && st.textBytes > maxBytes) {
		var lru *statement
		for _, y := range st.statements {
			if y != x && (lru == nil || y.used < lru.used) {
				lru = y
			}
		}
		st.forget(lru)
		if evicted == nil {
			evicted = lru
		} else {
			st.orphans = append(st.orphans, lru.name)
		}
	}
	return x, evicted
}

// forget drops x from the cache (its Parse failed or never ran, or it was closed).
func (st *serverState) forget(x *statement) {
	if st.statements[x.key] == x {
		delete(st.statements, x.key)
		st.textBytes -= len(x.key.text)
	}
}

// forgetAll empties the cache and the orphans: the server dropped every named statement
// (DEALLOCATE ALL, DISCARD ALL). The unnamed statement is not named: it survives.
func (st *serverState) forgetAll() {
	clear(st.statements)
	st.textBytes = 0
	st.orphans = st.orphans[:0]
}

// deallocStmt returns the connection's statement for SQL DEALLOCATEs of protocol-level
// statements (see serverState.dealloc).
func (st *serverState) deallocStmt() *throwaway {
	if st.dealloc == nil {
		st.dealloc = newThrowaway()
	}
	return st.dealloc
}

// dropDealloc gives up the connection's statement for SQL DEALLOCATEs: the next one gets a new
// name. One the server may still hold is closed with the next statement work (an orphan).
func (st *serverState) dropDealloc() {
	if st.dealloc != nil && st.dealloc.held {
		st.orphans = append(st.orphans, st.dealloc.name)
	}
	st.dealloc = nil
}

// orphanAll empties the cache, keeping the names as orphans to close: the server said one of
// them no longer means what a fresh Parse of its text would (a schema change), or does not
// exist, so none is trusted.
func (st *serverState) orphanAll() {
	for _, x := range st.statements {
		st.orphans = append(st.orphans, x.name)
	}
	clear(st.statements)
	st.textBytes = 0
}
