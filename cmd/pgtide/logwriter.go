package main

import (
	"fmt"
	"io"
	"sync"
)

// logWriter writes the log to out on a goroutine of its own, so that a slow or stopped
// destination (a pipe nobody reads, a journald that lags) never holds up whoever logs: the event
// loops log what clients cause (a refused or failed login), and a loop that waited for its log
// line would stall every client it serves. Lines are queued, up to maxQueued bytes (and as many
// being written); past that they are dropped and counted, and a line saying how many goes out
// once the output moves again.
type logWriter struct {
	out       io.Writer
	maxQueued int

	mu      sync.Mutex
	more    *sync.Cond // signalled when lines are queued or the writer closes
	queued  [][]byte   // guarded by mu
	size    int        // bytes in queued; guarded by mu
	dropped int        // lines dropped since the last report; guarded by mu
	closed  bool       // guarded by mu
	done    chan struct{}
}

// newLogWriter starts a logWriter to out. Close it to write what is queued and stop.
func newLogWriter(out io.Writer, maxQueued int) *logWriter {
	w := &logWriter{out: out, maxQueued: maxQueued, done: make(chan struct{})}
	w.more = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write queues a copy of p (a log record: slog's handlers write one per call) and returns at
// once. After Close it writes p directly.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return w.out.Write(p)
	}
	if w.size+len(p) > w.maxQueued {
		w.dropped++
	} else {
		w.queued = append(w.queued, append([]byte(nil), p...))
		w.size += len(p)
		w.more.Signal()
	}
	w.mu.Unlock()
	return len(p), nil
}

func (w *logWriter) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queued) == 0 && w.dropped == 0 && !w.closed {
			w.more.Wait()
		}
		lines, dropped, closed := w.queued, w.dropped, w.closed
		w.queued, w.size, w.dropped = nil, 0, 0
		w.mu.Unlock()
		if dropped > 0 {
			fmt.Fprintf(w.out, "pgtide: %d log lines dropped: the log output did not keep up\n", dropped)
		}
		for _, l := range lines {
			w.out.Write(l)
		}
		if closed {
			return
		}
	}
}

// Close writes what is queued and stops the writer; later writes go straight to out.
func (w *logWriter) Close() {
	w.mu.Lock()
	w.closed = true
	w.more.Signal()
	w.mu.Unlock()
	<-w.done
}
