package pool

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// logRecorder is a slog.Handler that keeps every record as one line: level, message, attributes.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}

// take returns the lines logged since the last take that contain "pools" (the fit verdicts).
func (h *logRecorder) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, l := range h.lines {
		if strings.Contains(l, "pools") {
			out = append(out, l)
		}
	}
	h.lines = nil
	return out
}

// TestPoolsFitWarning: when a node's pools cannot all fit its budget, a warning says so with the
// numbers, once: not again for another pool or the same budget, again when the numbers change
// while it does not fit, and a line when it fits again.
func TestPoolsFitWarning(t *testing.T) {
	m, k := newTestManager(t)
	logs := &logRecorder{}
	m.Logger = slog.New(logs)
	s := m.Settings()
	s.PoolSize = 10
	s.MaxServerConnections = 100
	m.SetSettings(s)
	m.SetNodeBudget(k.Node, 25)
	pool := func(user string) {
		t.Helper()
		key := k
		key.User = user
		c, err := m.TryAcquire(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		m.Release(c, false)
	}
	want := func(when string, parts ...string) {
		t.Helper()
		got := logs.take()
		if len(parts) == 0 {
			if len(got) != 0 {
				t.Fatalf("%s: logged %q, want nothing", when, got)
			}
			return
		}
		if len(got) != 1 {
			t.Fatalf("%s: logged %q, want one line", when, got)
		}
		for _, p := range parts {
			if !strings.Contains(got[0], p) {
				t.Fatalf("%s: %q lacks %q", when, got[0], p)
			}
		}
	}
	pool("a")
	pool("b")
	want("two pools of 10 on a budget of 25")
	pool("c")
	want("three pools of 10 on a budget of 25", "WARN the node's pools cannot all fit its budget", "node="+k.Node,
		"pools=3", "pool_size=10", "budget=25", "need=30", "clients wait", "Lower pool_size")
	pool("d")
	want("a fourth pool, still over")
	m.SetNodeBudget(k.Node, 25)
	m.SetSettings(s)
	want("the same budget and settings again")
	m.SetNodeBudget(k.Node, 30)
	want("a budget of 30, still over", "WARN", "budget=30", "need=40")
	m.SetNodeBudget(k.Node, 40)
	want("a budget of 40", "INFO the node's pools fit its budget again", "budget=40")
	m.SetNodeBudget(k.Node, 50)
	want("a budget of 50, still fitting")
	s.MinIdle = 13
	s.PoolSize = 13
	m.SetSettings(s)
	want("min_idle 13 on 4 pools", "WARN min_idle cannot be kept on every pool", "need=52", "budget=50")
	s.MaxServerConnections = 30 // lower than the budget: the cap
	m.SetSettings(s)
	want("max_server_connections 30", "WARN min_idle", "budget=30")
}
