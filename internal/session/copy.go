package session

// COPY and the count of ReadyForQuery messages still to come.
//
// Every Query, FunctionCall and Sync normally gets one ReadyForQuery, and attach counts them in
// pending. COPY FROM STDIN breaks that rule (PostgreSQL's protocol-flow "COPY Operations", and
// CopyGetData in copyfromparse.c / postgres.c's error recovery):
//
//   - During copy-in the server reads the client's messages itself: it ignores Flush and Sync
//     (libpq sends a Sync right after every Execute, without knowing the command is a COPY), and
//     any other message than CopyData, CopyDone or CopyFail fails the COPY.
//   - CopyDone ends the COPY with CommandComplete. Started by a simple Query, ReadyForQuery
//     follows at once; started by Execute, the server is back in the extended protocol and the
//     client's next Sync (sent after CopyDone) gets the ReadyForQuery.
//   - An error (CopyFail, bad data, a failed constraint) ends copy-in with ErrorResponse. Started
//     by a simple Query, ReadyForQuery follows at once; started by Execute, the server skips
//     every message until a Sync, which gets the ReadyForQuery. CopyData, CopyDone and CopyFail
//     that arrive after the COPY ended are ignored.
//   - COPY TO STDOUT (CopyOutResponse) needs nothing from the client: the usual count holds.
//
// The session learns that a request started copy-in only when the CopyInResponse arrives, and a
// client may have pipelined Syncs, CopyData and CopyDone behind the request by then. So attach
// logs, in order, the client messages that matter (reqLog), and at the CopyInResponse the Syncs
// logged between the request that started the COPY and the CopyDone or CopyFail that ends it are
// taken back out of the count; while the session knows the client is still inside such a COPY
// (copySeg), its Syncs and Flushes are not counted at all.
//
// One case cannot be told apart from outside the server: if a COPY started by Execute fails
// before the server has read a Sync that the client sent inside the COPY, that Sync ends the
// error's skip and gets a ReadyForQuery of its own; read before the failure, it was ignored. The
// session assumes the common case (the Sync was read: errors come from data the server read after
// it) and, because a ReadyForQuery may still be on its way, closes that server connection instead
// of giving it to another client (copyUnsure).

// onCopyInLocked accounts for a CopyInResponse: the server is in copy-in for the oldest
// unanswered request, and ignores the Syncs the client sent inside the COPY. It returns how the
// COPY was started: logQuery or logExecute. Requires mu.
func (s *Session) onCopyInLocked() byte {
	l := &s.reqs
	s.compactLocked() // what is left of an earlier COPY, and the messages answered before this one
	i := 0
	started := logExecute
	if i < l.len() {
		switch l.at(i) {
		case logQuery:
			started = logQuery
			i++
		case logExecute:
			i++
		}
	}
	// The request that started the COPY is answered by ReadyForQuery number first (counting from
	// 0 in this attachment, as reqDone); the Syncs from there until the COPY's end are not.
	first := s.reqDone
	if started == logQuery {
		first++ // the Query itself is answered
	}
	n := 0
	for i+n < l.len() && l.at(i+n) == logSync {
		n++
	}
	inside := i+n == l.len() // no CopyDone yet: the client is still inside the COPY
	if n > 0 {
		l.remove(i, n)
		s.pending -= n
		s.reqSent -= n
		s.copySyncs += n
		// Statement expectations count the batch they are in by Syncs sent: those sent after an
		// ignored Sync are in an earlier batch than they were counted in.
		s.renumberLocked(first, n)
	}
	if started == logExecute {
		// The Execute's batch stays open until a Sync the server does not ignore.
		open := true
		for j := i; j < l.len(); j++ {
			if l.at(j) == logSync {
				open = s.open
				break
			}
		}
		s.open = open
	}
	s.copySeg = inside
	return started
}

// onCopyFailedLocked accounts for an ErrorResponse that ended a copy-in: the server now skips to
// the next Sync (COPY started by Execute) or has answered (simple Query), so the client's Syncs
// count again. Requires mu.
func (s *Session) onCopyFailedLocked() {
	s.copySeg = false
	if s.copySyncs > 0 {
		s.copyUnsure = true // see the comment at the top of this file
	}
	s.copySyncs = 0
}
