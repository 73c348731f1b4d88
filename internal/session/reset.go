package session

import (
	"maps"
	"strings"

	"pgtide/internal/classify"
	"pgtide/internal/pool"
)

// Resets: on PostgreSQL, the parameters a client gives at startup (application_name, options=-c
// name=value, …) become its session's defaults, the values RESET ALL, RESET name, SET name TO
// DEFAULT and DISCARD ALL return to. A pooled server connection's defaults are pgtide's own login
// values, so after a client's reset pgtide sends the client's startup values again, in a hidden
// request right after the client's (a restore, see hidden.go), on the same server connection in
// the same transaction state: if the reset is rolled back, so is the restore. Its ParameterStatus
// messages reach the client, whose view of its settings ends where PostgreSQL's would.
//
// The settings pgtide itself SETs on server connections for the client (Session.extra) must stay
// known: a reset of one of them is followed like a SET of search_path (a lone statement outside a
// transaction, applied when it succeeds) or else pins the client.

// resetChange is what a client's reset does to Session.extra if it succeeds.
type resetChange struct {
	all   bool
	names []string // lower-case
}

func newResetChange(a *classify.Session) *resetChange {
	r := &resetChange{all: a.ResetAll}
	for _, n := range a.Resets {
		r.names = append(r.names, string(n))
	}
	return r
}

// resetsTrackedLocked reports whether the resets in a touch a setting pgtide SETs on server
// connections for the client (see Session.extra). Requires mu.
func (s *Session) resetsTrackedLocked(a *classify.Session) bool {
	if a.ResetsOverflow {
		return true
	}
	if a.ResetAll {
		return len(s.extra) > 0 || len(s.startupExtra) > 0
	}
	for _, n := range a.Resets {
		if _, ok := s.extra[string(n)]; ok {
			return true
		}
		if _, ok := s.startupExtra[string(n)]; ok {
			return true
		}
	}
	return false
}

// applyResetLocked records a successful reset in the client's settings and srv's: the
// startup value where there is one (the restore that follows sets it), else the default.
// Requires mu.
func (s *Session) applyResetLocked(srv *pool.Conn, r *resetChange) {
	s.settingsChangedLocked()
	if r.all {
		s.extra = maps.Clone(s.startupExtra)
		stateOf(srv).replaceExtra(s.startupExtra)
		return
	}
	for _, name := range r.names {
		v, ok := s.startupExtra[name]
		if ok {
			s.setExtraLocked(name, v)
		} else {
			delete(s.extra, name)
		}
		stateOf(srv).setExtra(name, v)
	}
}

// restoreSQL returns the SETs that give back the client's startup values of the parameters the
// resets in a returned to the server connection's defaults, or nil when the client gave no
// startup value for any of them. Runs on the client loop; startupParams and startupExtra are
// read-only after login.
func (s *Session) restoreSQL(a *classify.Session) []byte {
	all := a.ResetAll || a.ResetsOverflow
	if !all && len(a.Resets) == 0 || len(s.startupParams)+len(s.startupExtra) == 0 {
		return nil
	}
	var sql []byte
	for _, name := range reportedParams {
		if v, ok := s.startupParams[name]; ok && (all || resetsName(a, name)) {
			sql = appendSet(sql, name, quoteLiteral(v))
		}
	}
	for name, v := range s.startupExtra {
		if all || resetsName(a, name) {
			sql = appendSet(sql, name, v)
		}
	}
	return sql
}

// resetsName reports whether a resets the parameter name (compared without regard to ASCII
// case, as parameter names are).
func resetsName(a *classify.Session, name string) bool {
	for _, n := range a.Resets {
		if strings.EqualFold(string(n), name) {
			return true
		}
	}
	return false
}

// A setting's value in Session.extra (and serverState.extra) is SQL text, as the client wrote it in
// SET name TO <value>, or a startupValue: the raw string from the startup packet, which must be
// applied as the server applies startup values, by set_config: a list such as search_path
// 's1,public' is then two schemas, where SET search_path TO 's1,public' would be one schema
// named "s1,public".
const startupMark = "\x01" // no SQL value text starts with it

// startupValue returns the Session.extra form of raw, a value from the startup packet.
func startupValue(raw string) string { return startupMark + raw }

// appendSet appends the statement that sets name to value (see startupMark), ending in ';'.
func appendSet(dst []byte, name, value string) []byte {
	if raw, ok := strings.CutPrefix(value, startupMark); ok {
		dst = append(dst, "SELECT pg_catalog.set_config("...)
		dst = append(dst, quoteLiteral(name)...)
		dst = append(dst, ", "...)
		dst = append(dst, quoteLiteral(raw)...)
		return append(dst, ", false);"...)
	}
	dst = append(dst, "SET "...)
	dst = append(dst, quoteIdent(name)...)
	dst = append(dst, " TO "...)
	dst = append(dst, value...)
	return append(dst, ';')
}
