package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"pgtide/internal/classify"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// The kinds Lookup answers (see classify.FuncKind), in the order a name with several overloads
// takes the greatest.
const (
	funcUnknown         = classify.FuncUnknown
	funcRead            = classify.FuncRead
	funcWrite           = classify.FuncWrite
	funcBuiltinVolatile = classify.FuncBuiltinVolatile
)

const (
	// maxFunctionRows bounds one database's catalog: past it the set keeps
	// what fits and is partial. Names are at most 63 bytes (NAMEDATALEN), so
	// this bounds the bytes too: under 10 MiB for the largest set, where a
	// fresh database's (about 3,000 rows) takes under 200 KiB.
	maxFunctionRows = 100_000
	// maxFunctionDatabases bounds the databases with a catalog.
	maxFunctionDatabases = 1000
	// functionQueryTimeout bounds the catalog query, which may return
	// maxFunctionRows rows: longer than a health check may take.
	functionQueryTimeout = 30 * time.Second
)

// functionsQuery lists every (schema, name) with whether any overload is
// volatile, the volatile ones first, so that when the LIMIT cuts, it cuts
// stable and immutable functions, and the one row past maxFunctionRows says
// whether it did (see newFunctionSet).
var functionsQuery = fmt.Sprintf(`SELECT n.nspname, p.proname, bool_or(p.provolatile = 'v')
	FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	GROUP BY n.nspname, p.proname
	ORDER BY 3 DESC
	LIMIT %d`, maxFunctionRows+1)

// FunctionSet is an immutable snapshot of one database's functions, from
// pg_proc: for each schema and name, whether any overload is volatile. It
// answers the read/write classifier's question about a function call. Its
// methods are safe for concurrent use; a nil *FunctionSet knows nothing.
//
// A volatile function in pg_catalog or information_schema is reported as
// funcBuiltinVolatile: the classifier lets through only those it knows to be
// harmless (random, clock_timestamp, pg_sleep, …); the others may act on the
// server that runs them (pg_promote on a replica promotes it,
// pg_terminate_backend, replication slots, pg_reload_conf), so their callers
// go to the writer. A volatile function in any other schema counts as a
// write, since it may run INSERT, UPDATE or DELETE.
type FunctionSet struct {
	bySchema map[string]map[string]classify.FuncKind // schema → name → funcRead, funcWrite or funcBuiltinVolatile
	catalog  map[string]classify.FuncKind            // bySchema["pg_catalog"]
	// user is every name in a user schema (neither pg_catalog,
	// information_schema, pg_toast nor temporary): funcWrite if any of them
	// is volatile, else funcRead.
	user    map[string]classify.FuncKind
	partial bool
	// readsKnown: no volatile function is missing from the set, so a name
	// found only as stable or immutable is a read.
	readsKnown bool
	rows       int
}

// funcRow is one row of functionsQuery.
type funcRow struct {
	schema, name string
	volatile     bool // some overload is
}

// newFunctionSet builds a set of at most limit rows, keeping volatile
// functions first. It is partial when rows has more; the caller must then
// have listed volatile functions first (functionsQuery does) for the first
// row past limit to tell whether a volatile one was left out. rows is
// reordered.
func newFunctionSet(rows []funcRow, limit int) *FunctionSet {
	slices.SortStableFunc(rows, func(a, b funcRow) int {
		switch {
		case a.volatile == b.volatile:
			return 0
		case a.volatile:
			return -1
		}
		return 1
	})
	f := &FunctionSet{bySchema: map[string]map[string]classify.FuncKind{}, user: map[string]classify.FuncKind{}, readsKnown: true}
	if len(rows) > limit {
		f.partial = true
		f.readsKnown = !rows[limit].volatile
		rows = rows[:limit]
	}
	f.rows = len(rows)
	for _, r := range rows {
		if hiddenSchema(r.schema) {
			continue
		}
		builtin := r.schema == "pg_catalog" || r.schema == "information_schema"
		kind := funcRead
		switch {
		case r.volatile && builtin:
			kind = funcBuiltinVolatile
		case r.volatile:
			kind = funcWrite
		}
		names := f.bySchema[r.schema]
		if names == nil {
			names = map[string]classify.FuncKind{}
			f.bySchema[r.schema] = names
		}
		names[r.name] = max(names[r.name], kind)
		if !builtin {
			f.user[r.name] = max(f.user[r.name], kind)
		}
	}
	f.catalog = f.bySchema["pg_catalog"]
	return f
}

// hiddenSchema reports the schemas whose functions no call reaches by an
// unqualified name and no client names: TOAST and other sessions'
// temporary schemas (a session's own is pg_temp, which PostgreSQL never
// searches for functions).
func hiddenSchema(s string) bool {
	return strings.HasPrefix(s, "pg_toast") || strings.HasPrefix(s, "pg_temp_")
}

// Lookup reports what a call of schema.name does: funcWrite, funcRead,
// funcBuiltinVolatile or funcUnknown (no such function, or not known). schema is "" for an unqualified
// call; both are normalised identifiers (unquoted lower-cased, quoted exact)
// and are not retained. Lookup allocates nothing.
//
// A qualified name is volatile (a write, or a volatile built-in) if any
// overload in that schema is, and a read if all are stable or immutable. An
// unqualified name is a write if any user schema has a volatile function of
// that name (the search_path may find it); otherwise what pg_catalog's says;
// otherwise a read if a user schema has one. In a partial set unknown names stay 0, and an unqualified name is 0
// rather than a read when a volatile function may have been left out.
func (f *FunctionSet) Lookup(schema, name []byte) classify.FuncKind {
	if f == nil {
		return funcUnknown
	}
	if len(schema) > 0 {
		return f.bySchema[string(schema)][string(name)]
	}
	k := f.user[string(name)]
	switch {
	case k == funcWrite:
		return k
	case !f.readsKnown:
		return funcUnknown
	}
	if c, ok := f.catalog[string(name)]; ok {
		// pg_catalog comes first on every search_path that does not name it.
		return c
	}
	return k
}

// Partial reports that the database has more functions than a set keeps.
func (f *FunctionSet) Partial() bool { return f != nil && f.partial }

// Len returns how many (schema, name) rows the set was built from.
func (f *FunctionSet) Len() int {
	if f == nil {
		return 0
	}
	return f.rows
}

// parseFunctionRows reads functionsQuery's rows.
func parseFunctionRows(rows [][][]byte) ([]funcRow, error) {
	out := make([]funcRow, len(rows))
	for i, r := range rows {
		if len(r) != 3 || r[0] == nil || r[1] == nil {
			return nil, errors.New("function catalog query: unexpected row")
		}
		out[i] = funcRow{schema: string(r[0]), name: string(r[1]), volatile: string(r[2]) == "t"}
	}
	return out, nil
}

// funcDB is one registered database and its function catalog.
type funcDB struct {
	name string
	set  atomic.Pointer[FunctionSet] // the current snapshot; nil until a load succeeds

	// Owned by the loader goroutine (runFunctions):
	due     time.Time     // next load; zero until the first, which comes before any other
	retry   time.Duration // wait after the last failure; 0 after a success
	failing bool          // in a failure streak: warned already
	partial bool          // the current set is partial: warned already
}

// Functions returns the current function catalog of database, or nil when
// none is loaded yet; callers treat nil as knowing nothing. The set is
// immutable: keep it for as long as a statement needs it. Functions never
// blocks and, for a database seen before, takes no lock and allocates
// nothing.
//
// The first call for a database registers it: Run loads its catalog from
// the writer in the background and refreshes it every
// FunctionRefreshInterval and at RefreshFunctions. At most 1,000 databases
// are registered (one warning past that, and nil for the others), so call it
// only for databases a client has logged in to, not for names a client made
// up.
func (c *Cluster) Functions(database string) *FunctionSet {
	if db := (*c.funcDBs.Load())[database]; db != nil {
		return db.set.Load()
	}
	if database != "" {
		c.registerFunctions(database)
	}
	return nil
}

func (c *Cluster) registerFunctions(database string) {
	if c.funcDBsFull.Load() {
		return
	}
	c.mu.Lock()
	dbs := *c.funcDBs.Load()
	if dbs[database] != nil {
		c.mu.Unlock()
		return // registered in between
	}
	if len(dbs) >= c.funcDBLimit {
		c.mu.Unlock()
		if !c.funcDBsFull.Swap(true) {
			c.log.Warn("function catalogs: too many databases; calls of user functions in others go to the writer",
				"limit", c.funcDBLimit, "database", database)
		}
		return
	}
	// Copied on write: registrations are few and bounded, lookups are per statement.
	next := make(map[string]*funcDB, len(dbs)+1)
	maps.Copy(next, dbs)
	next[database] = &funcDB{name: database}
	c.funcDBs.Store(&next)
	c.mu.Unlock()
	c.wakeFunctions()
}

// RefreshFunctions asks Run to reload every registered database's function
// catalog now, as after a configuration reload or a deployment that created
// functions. It does not wait for the loads.
func (c *Cluster) RefreshFunctions() {
	c.funcRefreshes.Add(1)
	c.wakeFunctions()
}

func (c *Cluster) wakeFunctions() {
	select {
	case c.funcWake <- struct{}{}:
	default: // already awake or woken
	}
}

// runFunctions loads the registered databases' catalogs, one at a time, each
// when it is due: a new database at once, the others every
// FunctionRefreshInterval (±10%), sooner after a failure or a
// RefreshFunctions, until ctx ends.
func (c *Cluster) runFunctions(ctx context.Context) {
	var refreshes uint64
	t := time.NewTimer(c.config().FunctionRefreshInterval)
	defer t.Stop()
	for ctx.Err() == nil {
		if r := c.funcRefreshes.Load(); r != refreshes {
			refreshes = r
			now := time.Now()
			for _, db := range *c.funcDBs.Load() {
				if db.due.After(now) {
					db.due = now
				}
			}
		}
		db, wait := c.nextFunctionLoad(time.Now())
		if db != nil {
			c.loadFunctions(ctx, db)
			continue
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-c.funcWake:
		}
	}
}

// nextFunctionLoad returns the database to load now (a new one first, then
// the longest due), or else how long until one is due.
func (c *Cluster) nextFunctionLoad(now time.Time) (*funcDB, time.Duration) {
	var next *funcDB
	for _, db := range *c.funcDBs.Load() {
		if next == nil || db.due.Before(next.due) {
			next = db
		}
	}
	switch {
	case next == nil:
		return nil, c.config().FunctionRefreshInterval // woken by the first registration
	case next.due.After(now):
		return nil, next.due.Sub(now)
	}
	return next, 0
}

// loadFunctions loads db's catalog and schedules its next load. A failure
// keeps the current set, warns once per failure streak and is retried after
// 1s, 2s, 4s… up to FunctionRefreshInterval.
func (c *Cluster) loadFunctions(ctx context.Context, db *funcDB) {
	set, err := c.fetchFunctions(ctx, db.name)
	if ctx.Err() != nil {
		return // stopping: a load cut short says nothing
	}
	now := time.Now()
	interval := c.config().FunctionRefreshInterval
	if err != nil {
		db.retry = min(max(2*db.retry, time.Second), interval)
		db.due = now.Add(db.retry)
		if !db.failing {
			db.failing = true
			c.log.Warn("function catalog load failed; keeping the previous one",
				"database", db.name, "has_catalog", db.set.Load() != nil, "err", err)
		} else {
			c.log.Debug("function catalog load failed again", "database", db.name, "err", err)
		}
		return
	}
	db.retry = 0
	db.due = now.Add(jitter(interval))
	if db.failing {
		db.failing = false
		c.log.Info("function catalog loads again", "database", db.name)
	}
	if set.partial && !db.partial {
		c.log.Warn("function catalog partial: too many functions; calls of those left out go to the writer",
			"database", db.name, "kept", set.rows)
	}
	db.partial = set.partial
	db.set.Store(set)
	c.log.Debug("function catalog loaded", "database", db.name, "functions", set.rows)
}

var errNoWriter = errors.New("no writer (none up, or more than one claims to be)")

// fetchFunctions reads database's catalog on the writer, on a connection of
// its own, closed before it returns.
func (c *Cluster) fetchFunctions(ctx context.Context, database string) (*FunctionSet, error) {
	w, ok := c.Writer()
	if !ok {
		return nil, errNoWriter
	}
	cctx, cancel := context.WithTimeout(ctx, c.config().HealthCheckTimeout)
	conn, err := c.connectDB(cctx, w.addr, database)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("writer %s: %w", w.addr, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.config().HealthCheckTimeout)
		conn.close(ctx)
		cancel()
	}()
	qctx, cancel := context.WithTimeout(ctx, functionQueryTimeout)
	defer cancel()
	rows, err := conn.query(qctx, functionsQuery)
	if err != nil {
		return nil, fmt.Errorf("writer %s: %w", w.addr, err)
	}
	fr, err := parseFunctionRows(rows)
	if err != nil {
		return nil, err
	}
	return newFunctionSet(fr, maxFunctionRows), nil
}
