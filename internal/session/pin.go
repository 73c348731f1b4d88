package session

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"pgtide/internal/classify"
	"pgtide/internal/config"
)

// Pinning: session state transaction pooling cannot carry from one server connection to the
// next (a SET of an untracked parameter, SQL PREPARE, session advisory locks, temporary objects,
// LISTEN, WITH HOLD cursors, role changes) ties the client to its server connection until it
// disconnects, or, with pin_policy = "error", is refused.

// extraChange is a session setting a Query will change if it succeeds: applied to the client's
// expected settings at the Query's ReadyForQuery, dropped on error.
type extraChange struct {
	name  string
	value string // SQL text; "" resets to the default
}

// checkPins looks at the SQL of a Query (simple) or Parse and decides: track, pin or refuse.
// may is classify.MaySetSessionState(sql), which the caller has (see textInfo). A refusal is
// left in s.pinErr for the caller to turn into a failing statement. It returns the analysis,
// valid until the next call, or nil when the text holds nothing the analysis finds (may false).
func (s *Session) checkPins(sql []byte, simple, may bool) (*classify.Session, error) {
	if !may {
		return nil, nil // the common statement: nothing to pin or track
	}
	a := s.analysisScratch()
	classify.AnalyzeSession(sql, a)
	reason := a.Pin
	param := string(a.PinParam)
	s.mu.Lock()
	// One namespace for SQL and protocol-level statements, as on PostgreSQL. Only a lone PREPARE
	// can be refused as a whole: in a longer string the statements before it must run (and a
	// DEALLOCATE among them may free the name), so the server decides there.
	for _, r := range a.Refs {
		if r.Kind == classify.RefPrepare && a.Statements == 1 && r.Name != nil && s.stmts[string(r.Name)] != nil {
			s.pinErr = &refusal{code: "42P05", message: fmt.Sprintf("prepared statement %q already exists", r.Name)}
			s.mu.Unlock()
			return a, nil
		}
	}
	idle := s.txStatus == 'I' && !s.open && s.pending-len(s.hidden) <= 1 // this request only
	// pgtide follows search_path and the resets of what it SETs for the client from the SQL
	// (the server reports neither): only for a lone statement outside a transaction, where
	// success means it took effect. Anything else pins.
	lone := simple && a.Statements == 1 && idle
	if reason == classify.None && a.SearchPath.Set && !a.SearchPath.Reset {
		if lone {
			s.pendingExtra = &extraChange{name: "search_path", value: string(a.SearchPath.Value)}
		} else {
			reason, param = classify.SessionSet, "search_path"
		}
	}
	if reason == classify.None && s.resetsTrackedLocked(a) {
		if lone && !a.ResetsOverflow {
			s.pendingReset = newResetChange(a)
		} else {
			reason, param = classify.SessionSet, "reset"
		}
	}
	s.mu.Unlock()
	if reason != classify.None && strings.EqualFold(param, classify.RouteParam) || resetsRouteParam(a) {
		// pgtide's own setting reached the server: it would take no effect there (and pin).
		s.pinErr = &refusal{code: "0A000", message: "pgtide: SET and RESET of pgtide.route are answered by pgtide only " +
			"as a statement of their own in a simple-protocol Query (psql; pgx: QueryExecModeSimpleProtocol)"}
		return a, nil
	}
	if reason == classify.None || s.pinned {
		return a, nil
	}
	if s.env.Config().Proxy.PinPolicy == config.PinPolicyError {
		s.pinErr = pinRefusal(reason, param)
		s.env.Pins.Refused(reason)
		return a, nil
	}
	s.mu.Lock()
	s.pinned = true
	s.mu.Unlock()
	s.env.Pins.Pinned(reason)
	s.log().Info("client pinned to its server connection until it disconnects",
		"reason", reason.String(), "param", param)
	return a, nil
}

// resetsRouteParam reports whether a's statements RESET pgtide.route.
func resetsRouteParam(a *classify.Session) bool {
	for _, n := range a.Resets {
		if string(n) == classify.RouteParam {
			return true
		}
	}
	return false
}

// refusal is a statement pgtide refuses: the server is sent one that fails with this error
// instead (see refusalQuery).
type refusal struct {
	code    string // SQLSTATE
	message string
}

// pinRefusal refuses a statement under pin_policy = "error".
func pinRefusal(reason classify.Reason, param string) *refusal {
	what := reason.String()
	if param != "" {
		what += " (" + param + ")"
	}
	return &refusal{code: "0A000", message: fmt.Sprintf("pgtide: this statement creates session state that transaction pooling cannot keep: %s; "+
		"use a session-mode pool, SET LOCAL inside a transaction, or pin_policy = \"pin\"", what)}
}

// refusalQuery is SQL that fails on the server with the refusal's error, so the error reaches
// the client at the right point of its request and the server's transaction state follows, as
// if the statement itself had failed.
func refusalQuery(r *refusal) string {
	tag := "$pgtide$"
	for i := 0; strings.Contains(r.message, tag); i++ {
		tag = "$pgtide" + strconv.Itoa(i) + "$"
	}
	return "DO " + tag + "BEGIN RAISE EXCEPTION USING ERRCODE = '" + r.code + "', MESSAGE = " +
		quoteLiteral(r.message) + "; END" + tag
}

// refusalKey is a Parse body (after the name) for refusalQuery.
func refusalKey(r *refusal) string {
	return refusalQuery(r) + "\x00\x00\x00"
}

// NumPinReasons bounds the classify.Reason values PinCounter counts (pin and refusal reasons).
const NumPinReasons = 16

// PinCounter counts pinned clients and refused statements by reason. Safe for concurrent use.
type PinCounter struct {
	pinned, refused [NumPinReasons]atomic.Int64
}

// Pinned counts a client pinned for r.
func (c *PinCounter) Pinned(r classify.Reason) {
	if int(r) < NumPinReasons {
		c.pinned[r].Add(1)
	}
}

// Refused counts a statement refused for r.
func (c *PinCounter) Refused(r classify.Reason) {
	if int(r) < NumPinReasons {
		c.refused[r].Add(1)
	}
}

// Counts returns the pinned and refused counts of reason r.
func (c *PinCounter) Counts(r classify.Reason) (pinned, refused int64) {
	if int(r) >= NumPinReasons {
		return 0, 0
	}
	return c.pinned[r].Load(), c.refused[r].Load()
}
