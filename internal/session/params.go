package session

import (
	"maps"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"unique"
	"weak"

	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// reportedParams are the parameters the server reports with ParameterStatus whenever they change,
// under their canonical names. pgtide follows a client's values of these from the messages its
// server sends, and re-establishes them when the client moves to another server connection.
var reportedParams = []string{
	"application_name", "client_encoding", "DateStyle", "IntervalStyle",
	"standard_conforming_strings", "TimeZone",
}

// canonicalReported returns the canonical name of a reported parameter (names are
// case-insensitive), or "".
func canonicalReported(name string) string {
	for _, p := range reportedParams {
		if strings.EqualFold(p, name) {
			return p
		}
	}
	return ""
}

// fixedStartupParams are startup parameters that are not session settings.
var fixedStartupParams = map[string]bool{"user": true, "database": true, "replication": true, "options": true}

// setExtraLocked sets one of the other settings in s.extra, which is nil while there are
// none. Requires mu.
func (s *Session) setExtraLocked(name, value string) {
	if s.extra == nil {
		s.extra = make(map[string]string)
	}
	s.extra[name] = value
}

// startupParams splits a client's startup parameters into reported ones (the values it wants,
// by canonical name) and others, which pgtide sets on the server connection (by lower-case name,
// as startupValue). "options" is read for -c name=value settings, as PostgreSQL does. A map
// with nothing in it is nil.
func startupParams(st *wire.Startup) (reported, extra map[string]string) {
	set := func(name, value string) {
		if c := canonicalReported(name); c != "" {
			if reported == nil {
				reported = make(map[string]string)
			}
			reported[c] = value
		} else {
			if extra == nil {
				extra = make(map[string]string)
			}
			extra[strings.ToLower(name)] = startupValue(value)
		}
	}
	for _, p := range st.Params {
		if p.Name == "options" {
			for name, value := range parseOptions(p.Value) {
				set(name, value)
			}
			continue
		}
		if !fixedStartupParams[p.Name] {
			set(p.Name, p.Value)
		}
	}
	return reported, extra
}

// parseOptions reads the -c name=value and --name=value settings of a startup "options" value
// (backslash escapes a space, as in PostgreSQL). Other switches are ignored.
func parseOptions(s string) map[string]string {
	var args []string
	var cur strings.Builder
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == ' ' || r == '\t':
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	out := make(map[string]string)
	for i := 0; i < len(args); i++ {
		a := args[i]
		var kv string
		switch {
		case a == "-c" && i+1 < len(args):
			i++
			kv = args[i]
		case strings.HasPrefix(a, "-c"):
			kv = a[2:]
		case strings.HasPrefix(a, "--"):
			kv = a[2:]
		default:
			continue
		}
		if name, value, ok := strings.Cut(kv, "="); ok {
			out[strings.ReplaceAll(name, "-", "_")] = value
		}
	}
	return out
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// quoteIdent quotes s as an SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// appendParamSync appends the SET and RESET statements that make srv's session settings match
// what the client expects, and returns whether there were any.
func appendParamSync(dst []byte, srv *pool.Conn, reported, extra map[string]string) []byte {
	for _, name := range reportedParams {
		want, ok := reported[name]
		if !ok || srv.Params[name] == want {
			continue
		}
		dst = appendSet(dst, name, quoteLiteral(want))
	}
	for name, want := range extra {
		if stateOf(srv).extra[name] == want {
			continue
		}
		dst = appendSet(dst, name, want)
	}
	for name := range stateOf(srv).extra {
		if _, ok := extra[name]; !ok {
			dst = append(dst, "RESET "...)
			dst = append(dst, quoteIdent(name)...)
			dst = append(dst, ';')
		}
	}
	return dst
}

// settingsLocked returns the handle that identifies the client's settings (params and extra),
// computing it after a change. Clients with the same settings share one handle, and a server
// connection found to match it remembers it (serverState.settings), so the common attach — a
// client with the settings the connection already has — compares nothing. Requires mu.
func (s *Session) settingsLocked() unique.Handle[string] {
	if s.settings == (unique.Handle[string]{}) {
		s.computeSettingsLocked()
	}
	return s.settings
}

// stmtContextLocked returns the handle that identifies the client's settings that may change
// what a statement's text means: all of them but application_name. Server statements are
// shared only between clients with the same context (stmtKey). Requires mu.
func (s *Session) stmtContextLocked() unique.Handle[string] {
	if s.stmtContext == (unique.Handle[string]{}) {
		s.computeSettingsLocked()
	}
	return s.stmtContext
}

// settingsChangedLocked records that params or extra changed. Requires mu.
func (s *Session) settingsChangedLocked() {
	s.settings, s.stmtContext = unique.Handle[string]{}, unique.Handle[string]{}
}

func (s *Session) computeSettingsLocked() {
	// Unambiguous without escaping: names and values hold no NUL.
	var b []byte
	for _, name := range reportedParams {
		if name == "application_name" {
			continue
		}
		if v, ok := s.params[name]; ok {
			b = append(append(append(b, '1'), v...), 0)
		} else {
			b = append(b, '0', 0)
		}
	}
	names := make([]string, 0, len(s.extra))
	for name := range s.extra {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b = append(append(append(append(b, name...), 0), s.extra[name]...), 0)
	}
	s.stmtContext = unique.Make(string(b))
	v, ok := s.extra["default_transaction_isolation"]
	s.offReplicas = s.params["standard_conforming_strings"] == "off" || ok && containsFold(v, "serializable")
	if v, ok := s.params["application_name"]; ok {
		b = append(append(append(b, '1'), v...), 0)
	}
	s.settings = unique.Make(string(b))
}

// Idle clients with the same parameters share one params map, read-only while shared: ten
// thousand idle clients hold one map between them, not one each. A session takes the shared
// map when it is trimmed or parked (shareParamsLocked; see park.go), and makes its own copy
// before it changes it (ownParamsLocked). The table holds each shared map weakly: it goes when
// no session has it.

// paramSet is a shared params map.
type paramSet struct{ m map[string]string }

// paramSets maps the canonical text of a params map (paramsText) to its shared paramSet, as a
// weak.Pointer[paramSet].
var paramSets sync.Map

// paramsText is the canonical text of params: names and values in name order, NUL-terminated
// (neither holds a NUL).
func paramsText(params map[string]string) string {
	if len(params) == 0 {
		return ""
	}
	var names []string
	if len(params) <= 8 { // a client's startup parameters: sorted in place, on the stack
		var a [8]string
		names = a[:0]
		for n := range params {
			names = append(names, n)
		}
		slices.Sort(names)
	} else {
		names = slices.Sorted(maps.Keys(params))
	}
	var b []byte
	for _, n := range names {
		b = append(append(append(append(b, n...), 0), params[n]...), 0)
	}
	return string(b)
}

// shareParamsLocked replaces the session's params map with the shared one of the same content,
// making it the shared one if there is none. Requires mu.
func (s *Session) shareParamsLocked() {
	if s.paramsShared != nil {
		return
	}
	key := unique.Make(paramsText(s.params))
	for {
		if v, ok := paramSets.Load(key); ok {
			if ps := v.(weak.Pointer[paramSet]).Value(); ps != nil {
				s.params, s.paramsShared = ps.m, ps
				return
			}
			paramSets.CompareAndDelete(key, v) // its last holder has gone; replace it
		}
		ps := &paramSet{m: s.params}
		wp := weak.Make(ps)
		if _, loaded := paramSets.LoadOrStore(key, wp); loaded {
			continue
		}
		runtime.AddCleanup(ps, func(k unique.Handle[string]) { paramSets.CompareAndDelete(k, wp) }, key)
		s.paramsShared = ps
		return
	}
}

// startupValues is what servers made of the reported settings clients gave at startup: for
// "name\x00value", the value a server reported after a SET of it, in its own form ('utc' is
// 'UTC', 'sql,dmy' is 'SQL, DMY'). A value found here was taken once, and needs no trial at the
// next login (see loginShared).
var startupValues struct {
	sync.Mutex
	m map[string]string
}

// maxStartupValues bounds startupValues; past it, the table starts again. maxStartupValueLen
// bounds a value kept in it.
const (
	maxStartupValues   = 4096
	maxStartupValueLen = 256
)

// startupKey is startupValues' key for the client's setting name=v: per node and database,
// whose encoding and version decide what a value becomes. A DateStyle also depends on the
// default it is applied to (a partial 'ISO' keeps the default's order: 'ISO, DMY' on a server
// whose default is 'SQL, DMY'), so the server's default is part of its key.
func (s *Session) startupKey(name, v string, server map[string]string) string {
	k := s.key.Node + "\x00" + s.key.Database + "\x00" + name + "\x00" + v
	if name == "DateStyle" {
		k += "\x00" + server[name]
	}
	return k
}

// startupToTry returns the client's reported startup settings that a login must try on a server
// (see loginShared): those that differ from server's (the server's params) and that no server
// was seen to take. The others it gives the client in the server's form. application_name is
// never tried: no value of it fails, and a client with one of its own logs in without a server
// connection (while its database is paused, say), as before.
func (s *Session) startupToTry(server map[string]string) map[string]string {
	var try map[string]string
	s.mu.Lock()
	defer s.mu.Unlock()
	startupValues.Lock()
	defer startupValues.Unlock()
	for name, v := range s.params {
		if server[name] == v || name == "application_name" {
			continue
		}
		if took, ok := startupValues.m[s.startupKey(name, v, server)]; ok {
			s.params[name] = took
			s.settingsChangedLocked()
			continue
		}
		if try == nil {
			try = make(map[string]string)
		}
		try[name] = v
	}
	return try
}

// tookStartup records what c, which took the client's reported startup settings tried (see
// tryStartup), made of them, and gives the client those values, as the server reports them.
// server is the pool's params, as for startupToTry.
func (s *Session) tookStartup(c *pool.Conn, tried, server map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	startupValues.Lock()
	defer startupValues.Unlock()
	for name, v := range tried {
		took, ok := c.Params[name]
		if !ok {
			continue
		}
		// The client gets the full form ('ISO, MDY' for 'ISO'), which is what a server
		// connection is SET to before each of its transactions: a partial value would take the
		// rest from the DateStyle the connection had, another client's.
		s.params[name] = took
		s.settingsChangedLocked()
		if len(v) > maxStartupValueLen {
			continue
		}
		if startupValues.m == nil || len(startupValues.m) >= maxStartupValues {
			startupValues.m = make(map[string]string)
		}
		startupValues.m[s.startupKey(name, v, server)] = took
	}
}

// A login greets the client with the server's parameters merged with the ones it asked for at
// startup, in name order. Clients of one pool that ask for the same ones (every client of an
// application, as a rule) get the same greeting: it is made once and kept (greetingFor), with
// the merged params map, which those sessions share from the start (read-only, as after a trim).

// greeting is the merged params of a pool's server and a client's startup, and their
// ParameterStatus messages in name order.
type greeting struct {
	server map[string]string // the pool's server params it was made from: kept alive, so its address is not reused
	params *paramSet
	msg    []byte
}

// greetingKey identifies a greeting: the server params map (by address: a pool's is made once
// and never changed) and the canonical text of the client's startup params (paramsText).
type greetingKey struct {
	server   uintptr
	client   string
	writable bool
}

// maxGreetings bounds the greetings kept. Past it the table starts again: pools come and go
// with nodes and users, and each keeps its server params alive while it has a greeting here.
const maxGreetings = 1024

var greetings struct {
	sync.Mutex
	m map[greetingKey]*greeting
}

// greetingFor returns the greeting of a client with startup params client (nil: none) to a
// server that reported server. With shared, server is a pool's (read-only, never changed) and the
// greeting is kept for the next client; else it is made for this client only. writable: the
// client's endpoint takes writes (the writer, the auto endpoint), so it is greeted with
// in_hot_standby = off even when a replica checked its login: libpq (target_session_attrs =
// read-write or primary, on PostgreSQL 14 and later) reads the session's role from it, and would
// refuse the endpoint.
func greetingFor(server, client map[string]string, shared, writable bool) *greeting {
	if !shared {
		return newGreeting(server, client, writable)
	}
	k := greetingKey{server: reflect.ValueOf(server).Pointer(), client: paramsText(client), writable: writable}
	greetings.Lock()
	defer greetings.Unlock()
	if g := greetings.m[k]; g != nil {
		return g
	}
	g := newGreeting(server, client, writable)
	if len(greetings.m) >= maxGreetings || greetings.m == nil {
		greetings.m = make(map[greetingKey]*greeting)
	}
	greetings.m[k] = g
	return g
}

func newGreeting(server, client map[string]string, writable bool) *greeting {
	merged := make(map[string]string, len(server)+len(client))
	maps.Copy(merged, server)
	maps.Copy(merged, client)
	if _, ok := merged["in_hot_standby"]; ok && writable {
		merged["in_hot_standby"] = "off"
	}
	var msg []byte
	for _, n := range slices.Sorted(maps.Keys(merged)) {
		msg = wire.AppendParameterStatus(msg, n, merged[n])
	}
	return &greeting{server: server, params: &paramSet{m: merged}, msg: msg}
}

// ownParamsLocked gives the session its own params map before it changes it. Requires mu.
func (s *Session) ownParamsLocked() {
	if s.paramsShared != nil {
		s.params, s.paramsShared = maps.Clone(s.params), nil
	} else if s.params == nil {
		s.params = make(map[string]string)
	}
}

// paramSync returns the statements that give srv the client's settings (see appendParamSync),
// none when srv already has them. It records the settings as srv's as soon as they are sent.
// Requires mu.
func (s *Session) paramSync(srv *pool.Conn) []byte {
	want := s.settingsLocked()
	ss := stateOf(srv)
	if ss.matches(srv, want) {
		return nil
	}
	sql := appendParamSync(s.scratch[:0], srv, s.params, s.extra)
	if len(sql) == 0 {
		ss.matched(srv, want)
		return nil
	}
	// Reported parameters are recorded from the server's ParameterStatus answers.
	ss.replaceExtra(s.extra)
	return sql
}
