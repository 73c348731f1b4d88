package chaos

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// opKind says what an operation was: gaps are measured per kind.
type opKind int

const (
	opWrite opKind = iota
	opRead
	numKinds
)

// Error classes that are not SQLSTATEs.
const (
	// classNet is an error without an ErrorResponse: a refused or reset connection, an EOF.
	classNet = "net"
	// classHang is an operation that did not end within Options.OpTimeout.
	classHang = "hang"
)

// errorCode returns the SQLSTATE of err, classNet when the client got no ErrorResponse, or
// classHang when the operation ran out of time.
func errorCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return classHang
	}
	return classNet
}

// errorClass returns the SQLSTATE class (its first two characters) of a code from errorCode.
func errorClass(code string) string {
	if code == classNet || code == classHang || len(code) < 2 {
		return code
	}
	return code[:2]
}

// recorder collects what the load clients see into the current window. Every method is safe
// for concurrent use; outside a window (between faults) successes and errors are dropped, but
// acknowledged ids are always kept for the final check.
type recorder struct {
	mu      sync.Mutex // guards the fields below
	w       *window    // nil between windows
	acked   []int64    // every acknowledged id of the run, in no order
	clients []int      // every load client, so a window counts one that never succeeds
	// lastOK and lastErr are the latest success of each kind and the latest error, in or
	// out of a window: what healthy reads.
	lastOK  [numKinds]time.Time
	lastErr time.Time
}

// window is what the clients saw from begin to end. Owned by recorder, under its mutex.
type window struct {
	start time.Time

	ops     [numKinds]int
	lastOK  [numKinds]time.Time // last success of any client of the kind
	maxGap  [numKinds]time.Duration
	clients map[int]time.Time // every client → its last success (or the window's start)
	stall   time.Duration     // longest time one client went without a success

	codes   map[string]int            // SQLSTATE (or classNet, classHang) → count
	samples map[string]string         // SQLSTATE → the first message seen
	who     map[string]map[string]int // SQLSTATE → who saw it (a load client's role, "storm") → count

	mark      string // the moment "back after" is measured from, "" for none
	markAt    time.Time
	backAfter [numKinds]time.Duration // first success of the kind after markAt; -1 until then

	acked   []int64 // ids acknowledged in the window
	errored []int64 // ids whose INSERT got an error: committed or not, the client cannot know
}

// begin opens a window at now.
func (r *recorder) begin() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	w := &window{start: now, clients: map[int]time.Time{}, codes: map[string]int{}, samples: map[string]string{},
		who: map[string]map[string]int{}}
	for k := range numKinds {
		w.lastOK[k] = now
		w.backAfter[k] = -1
	}
	for _, c := range r.clients {
		w.clients[c] = now
	}
	r.w = w
}

// register makes client known before its first operation.
func (r *recorder) register(client int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clients = append(r.clients, client)
}

// healthy reports whether writes and reads have both succeeded within the last `recent` and no
// client has seen an error for quiet.
func (r *recorder) healthy(recent, quiet time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for _, t := range r.lastOK {
		if now.Sub(t) > recent {
			return false
		}
	}
	return now.Sub(r.lastErr) >= quiet
}

// end closes the window and returns it: a gap or stall still open at the end counts.
func (r *recorder) end() *window {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.w
	r.w = nil
	if w == nil {
		return nil
	}
	now := time.Now()
	for k := range numKinds {
		w.maxGap[k] = max(w.maxGap[k], now.Sub(w.lastOK[k]))
	}
	for _, last := range w.clients {
		w.stall = max(w.stall, now.Sub(last))
	}
	return w
}

// markNow notes that the fault's action (a promotion, a restart) has just returned.
func (r *recorder) markNow(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		r.w.mark, r.w.markAt = what, time.Now()
	}
}

// success records an operation of client that succeeded just now.
func (r *recorder) success(k opKind, client int) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOK[k] = now
	w := r.w
	if w == nil {
		return
	}
	w.ops[k]++
	w.maxGap[k] = max(w.maxGap[k], now.Sub(w.lastOK[k]))
	w.lastOK[k] = now
	w.stall = max(w.stall, now.Sub(w.clients[client]))
	w.clients[client] = now
	if w.mark != "" && w.backAfter[k] < 0 {
		w.backAfter[k] = now.Sub(w.markAt)
	}
}

// failure records an error a client saw; who says which kind of client it was.
func (r *recorder) failure(who string, err error) {
	code := errorCode(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = time.Now()
	w := r.w
	if w == nil {
		return
	}
	w.codes[code]++
	if _, ok := w.samples[code]; !ok {
		w.samples[code] = oneLine(err.Error())
		w.who[code] = map[string]int{}
	}
	w.who[code][who]++
}

// ack records ids a client saw committed.
func (r *recorder) ack(ids ...int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acked = append(r.acked, ids...)
	if r.w != nil {
		r.w.acked = append(r.w.acked, ids...)
	}
}

// unsure records ids whose INSERT or COMMIT failed: they may or may not have committed.
func (r *recorder) unsure(ids ...int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		r.w.errored = append(r.w.errored, ids...)
	}
}

// allAcked returns a copy of every id acknowledged so far.
func (r *recorder) allAcked() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.acked...)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}
