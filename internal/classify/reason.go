package classify

// Reason is why a statement ties a client to its server connection.
type Reason uint8

const (
	// None: nothing in the text pins.
	None Reason = iota
	// SessionSet: SET (session-level) or set_config(..., false) of a parameter pgtide does not
	// track; Session.PinParam names it.
	SessionSet
	// Prepare: SQL-level PREPARE name AS ... (PREPARE TRANSACTION is transaction control).
	Prepare
	// AdvisoryLock: a call of a session-level advisory lock function: pg_advisory_lock,
	// pg_advisory_lock_shared, pg_try_advisory_lock, pg_try_advisory_lock_shared. The _xact_
	// variants are released at transaction end and do not pin.
	AdvisoryLock
	// TempObject: CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY TABLE/VIEW/SEQUENCE, anything created in
	// pg_temp, SELECT ... INTO TEMP|TEMPORARY.
	TempObject
	// Listen: LISTEN channel.
	Listen
	// HoldCursor: DECLARE ... CURSOR WITH HOLD, which outlives its transaction.
	HoldCursor
	// Role: SET ROLE, SET SESSION AUTHORIZATION, or setting the role or session_authorization
	// parameters. Going back (RESET ROLE, SET ROLE NONE, SET SESSION AUTHORIZATION DEFAULT) does
	// not pin.
	Role
	// SessionCharacteristics: SET SESSION CHARACTERISTICS AS TRANSACTION ...
	SessionCharacteristics
	// Load: LOAD 'library'.
	Load
)

// String returns a snake_case label used in logs and metrics: "none", "session_set", "prepare",
// "advisory_lock", "temp_object", "listen", "hold_cursor", "role", "session_characteristics",
// "load"; "unknown" for a value outside that list.
func (r Reason) String() string {
	switch r {
	case None:
		return "none"
	case SessionSet:
		return "session_set"
	case Prepare:
		return "prepare"
	case AdvisoryLock:
		return "advisory_lock"
	case TempObject:
		return "temp_object"
	case Listen:
		return "listen"
	case HoldCursor:
		return "hold_cursor"
	case Role:
		return "role"
	case SessionCharacteristics:
		return "session_characteristics"
	case Load:
		return "load"
	}
	return "unknown"
}
