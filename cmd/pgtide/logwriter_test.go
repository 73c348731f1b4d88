package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate is a writer that blocks until opened, as a pipe nobody reads does.
type gate struct {
	open chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

// TestLogWriter: writes return at once while the output is stuck; what fits the queue comes out
// in order once it moves, with a count of what did not fit; Close writes what is queued.
func TestLogWriter(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	w := newLogWriter(g, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			fmt.Fprintf(w, "line %02d\n", i) // 8 bytes each
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writes wait for the stuck output")
	}
	close(g.open)
	w.Close()
	out := g.buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// The writer may hold one batch taken from the queue while the queue fills again: at most
	// twice the 100-byte queue (12 lines of 8 bytes each time) comes out, the rest is dropped.
	var kept []string
	dropped := 0
	for _, l := range lines {
		var n int
		if _, err := fmt.Sscanf(l, "pgtide: %d log lines dropped", &n); err == nil {
			dropped += n
			continue
		}
		kept = append(kept, l)
	}
	if len(kept) < 12 || len(kept) > 24 || kept[0] != "line 00" {
		t.Fatalf("kept %d lines: %q", len(kept), out)
	}
	for i := 1; i < len(kept); i++ {
		if kept[i] <= kept[i-1] {
			t.Fatalf("out of order: %q", out)
		}
	}
	if dropped != 50-len(kept) {
		t.Fatalf("%d lines reported dropped, %d missing: %q", dropped, 50-len(kept), out)
	}
	fmt.Fprintf(w, "after close\n")
	if !strings.HasSuffix(g.buf.String(), "after close\n") {
		t.Fatal("a write after Close was lost")
	}
}
