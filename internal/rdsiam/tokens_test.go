package rdsiam

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeBuilder makes tokens "tok-<n>-<region>-<endpoint>-<user>" and counts its builds. While gate
// is set, builds wait for it (or their context); while fail is set, they fail with it.
type fakeBuilder struct {
	mu     sync.Mutex
	builds int           // started
	gate   chan struct{} // nil: builds return at once
	fail   error
}

func (b *fakeBuilder) build(ctx context.Context, endpoint, region, user string) (string, error) {
	b.mu.Lock()
	b.builds++
	n, gate, fail := b.builds, b.gate, b.fail
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if fail != nil {
		return "", fail
	}
	return fmt.Sprintf("tok-%d-%s-%s-%s", n, region, endpoint, user), nil
}

func (b *fakeBuilder) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.builds
}

func (b *fakeBuilder) set(gate chan struct{}, fail error) {
	b.mu.Lock()
	b.gate, b.fail = gate, fail
	b.mu.Unlock()
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// newTestTokens returns Tokens over a fake builder and clock, closed (and checked for leaked
// goroutines and for tokens in its log) when the test ends.
func newTestTokens(t *testing.T) (*Tokens, *fakeBuilder, *fakeClock, *syncBuffer) {
	t.Helper()
	before := runtime.NumGoroutine()
	b := &fakeBuilder{}
	clock := &fakeClock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	log := &syncBuffer{}
	tk := New(b.build, Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(log, nil))})
	t.Cleanup(func() {
		tk.Close()
		if strings.Contains(log.String(), "tok-") {
			t.Errorf("a token was logged:\n%s", log)
		}
		waitFor(t, "no goroutine left", func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("%d goroutines, %d before", n, before)
			}
			return nil
		})
	})
	return tk, b, clock, log
}

// waitFor polls f until it returns nil, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mustToken(t *testing.T, tk *Tokens, region, endpoint, user string) string {
	t.Helper()
	tok, err := tk.Token(t.Context(), region, endpoint, user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTokenCachedPerEndpointAndUser: one build per (endpoint, user); the same token until it is
// old; another endpoint, user or region gets its own.
func TestTokenCachedPerEndpointAndUser(t *testing.T) {
	tk, b, _, _ := newTestTokens(t)
	first := mustToken(t, tk, "eu-west-1", "a:5432", "app")
	if first != "tok-1-eu-west-1-a:5432-app" {
		t.Fatalf("token %q", first)
	}
	for range 3 {
		if got := mustToken(t, tk, "eu-west-1", "a:5432", "app"); got != first {
			t.Fatalf("token %q, want the cached %q", got, first)
		}
	}
	if b.count() != 1 {
		t.Fatalf("%d builds, want 1", b.count())
	}
	for _, c := range []struct{ region, endpoint, user string }{
		{"eu-west-1", "b:5432", "app"}, {"eu-west-1", "a:5432", "report"}, {"us-east-1", "a:5432", "app"},
	} {
		if got := mustToken(t, tk, c.region, c.endpoint, c.user); !strings.HasSuffix(got, c.region+"-"+c.endpoint+"-"+c.user) {
			t.Errorf("%+v: token %q", c, got)
		}
	}
	if b.count() != 4 {
		t.Fatalf("%d builds, want 4", b.count())
	}
	// The region changed (a reload): the old region's token is never handed out again.
	if got := mustToken(t, tk, "us-east-1", "a:5432", "app"); !strings.Contains(got, "us-east-1") {
		t.Errorf("token %q after the region changed", got)
	}
}

// TestTokenRefresh: from RefreshAge the cached token is still handed out while a new one is built
// in the background; from MaxAge a caller waits for a new one; Refresh rebuilds old tokens with no
// caller at all.
func TestTokenRefresh(t *testing.T) {
	tk, b, clock, _ := newTestTokens(t)
	first := mustToken(t, tk, "r", "a:5432", "app")

	clock.Add(RefreshAge - time.Second)
	if got := mustToken(t, tk, "r", "a:5432", "app"); got != first || b.count() != 1 {
		t.Fatalf("young token: got %q after %d builds", got, b.count())
	}

	// Old enough to refresh: the caller does not wait for the build.
	gate := make(chan struct{})
	b.set(gate, nil)
	clock.Add(time.Second)
	if got := mustToken(t, tk, "r", "a:5432", "app"); got != first {
		t.Fatalf("token %q while refreshing, want the cached %q", got, first)
	}
	waitFor(t, "background build started", func() error {
		if b.count() != 2 {
			return fmt.Errorf("%d builds", b.count())
		}
		return nil
	})
	mustToken(t, tk, "r", "a:5432", "app") // joins the build under way rather than start another
	close(gate)
	b.set(nil, nil)
	waitFor(t, "refreshed token in use", func() error {
		if got := mustToken(t, tk, "r", "a:5432", "app"); got != "tok-2-r-a:5432-app" {
			return fmt.Errorf("token %q", got)
		}
		return nil
	})
	if b.count() != 2 {
		t.Fatalf("%d builds, want 2", b.count())
	}

	// Too old to hand out: the caller gets a new one.
	clock.Add(MaxAge)
	if got := mustToken(t, tk, "r", "a:5432", "app"); got != "tok-3-r-a:5432-app" {
		t.Fatalf("token %q past MaxAge, want a new one", got)
	}

	// Refresh rebuilds what is old with no caller, and leaves young tokens alone.
	mustToken(t, tk, "r", "b:5432", "app") // build 4
	clock.Add(RefreshAge)
	mustToken(t, tk, "r", "c:5432", "app") // build 5, young
	tk.Refresh()                           // a and b: builds 6 and 7
	waitFor(t, "Refresh rebuilt the old tokens", func() error {
		if b.count() != 7 {
			return fmt.Errorf("%d builds", b.count())
		}
		return nil
	})
	waitFor(t, "rebuilt tokens in use", func() error {
		for _, e := range []string{"a:5432", "b:5432"} {
			if got := mustToken(t, tk, "r", e, "app"); !strings.HasPrefix(got, "tok-6-") && !strings.HasPrefix(got, "tok-7-") {
				return fmt.Errorf("%s: token %q", e, got)
			}
		}
		return nil
	})
	if got := mustToken(t, tk, "r", "c:5432", "app"); got != "tok-5-r-c:5432-app" {
		t.Fatalf("young token rebuilt: %q", got)
	}
}

// TestTokenConcurrentCallersShareOneBuild: callers that find no token wait for the same build.
func TestTokenConcurrentCallersShareOneBuild(t *testing.T) {
	tk, b, _, _ := newTestTokens(t)
	gate := make(chan struct{})
	b.set(gate, nil)
	const callers = 20
	got := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			tok, err := tk.Token(t.Context(), "r", "a:5432", "app")
			if err != nil {
				t.Error(err)
			}
			got <- tok
		})
	}
	waitFor(t, "the build started", func() error {
		if b.count() != 1 {
			return fmt.Errorf("%d builds", b.count())
		}
		return nil
	})
	close(gate)
	wg.Wait()
	close(got)
	for tok := range got {
		if tok != "tok-1-r-a:5432-app" {
			t.Errorf("token %q", tok)
		}
	}
	if b.count() != 1 {
		t.Fatalf("%d builds for %d concurrent callers, want 1", b.count(), callers)
	}
}

// TestTokenBuildFailure: a failed build reaches its caller as a *BuildError that says what and
// why, is logged once, and is not cached: the next call builds again. A refresh that fails keeps
// the valid token in use.
func TestTokenBuildFailure(t *testing.T) {
	tk, b, clock, log := newTestTokens(t)
	cause := errors.New("failed to refresh cached credentials, no EC2 IMDS role found")
	b.set(nil, cause)
	for i := range 2 {
		_, err := tk.Token(t.Context(), "r", "a:5432", "app")
		var be *BuildError
		if !errors.As(err, &be) || !errors.Is(err, cause) || be.User != "app" || be.Endpoint != "a:5432" {
			t.Fatalf("call %d: got %v, want a *BuildError wrapping the cause", i, err)
		}
		if msg := err.Error(); !strings.Contains(msg, `cannot make an RDS IAM auth token for user "app" on a:5432`) {
			t.Errorf("error %q", msg)
		}
	}
	if b.count() != 2 {
		t.Fatalf("%d builds for 2 calls after failures, want 2 (a failure is not cached)", b.count())
	}
	if n := strings.Count(log.String(), "cannot make an auth token"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, log)
	}

	b.set(nil, nil)
	tok := mustToken(t, tk, "r", "a:5432", "app")
	waitFor(t, "recovery logged", func() error {
		if !strings.Contains(log.String(), "auth tokens are made again") {
			return errors.New("not yet")
		}
		return nil
	})

	// A background refresh that fails leaves the current token in use until MaxAge.
	b.set(nil, cause)
	clock.Add(RefreshAge)
	tk.Refresh()
	waitFor(t, "the refresh failed", func() error {
		if strings.Count(log.String(), "cannot make an auth token") != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if got := mustToken(t, tk, "r", "a:5432", "app"); got != tok {
		t.Fatalf("token %q after a failed refresh, want the still valid %q", got, tok)
	}
	clock.Add(MaxAge - RefreshAge)
	if _, err := tk.Token(t.Context(), "r", "a:5432", "app"); !errors.Is(err, cause) {
		t.Fatalf("past MaxAge with builds failing: got %v", err)
	}
}

// TestTokenWaitBoundedByCaller: a caller gives up at its context's end; the build goes on and its
// token serves the next caller.
func TestTokenWaitBoundedByCaller(t *testing.T) {
	tk, b, _, _ := newTestTokens(t)
	gate := make(chan struct{})
	b.set(gate, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	_, err := tk.Token(ctx, "r", "a:5432", "app")
	var be *BuildError
	if !errors.As(err, &be) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a *BuildError for the deadline", err)
	}
	close(gate)
	if got := mustToken(t, tk, "r", "a:5432", "app"); got != "tok-1-r-a:5432-app" || b.count() != 1 {
		t.Fatalf("token %q after %d builds", got, b.count())
	}
}

// TestTokenForgetAndIdle: Forget drops a node's tokens; Refresh drops entries unused for
// IdleAfter instead of rebuilding them.
func TestTokenForgetAndIdle(t *testing.T) {
	tk, b, clock, _ := newTestTokens(t)
	mustToken(t, tk, "r", "a:5432", "app")
	mustToken(t, tk, "r", "a:5432", "report")
	mustToken(t, tk, "r", "b:5432", "app")
	tk.Forget("a:5432")
	if n := entries(tk); n != 1 {
		t.Fatalf("%d entries after Forget, want 1", n)
	}
	mustToken(t, tk, "r", "a:5432", "app") // built again
	if b.count() != 4 {
		t.Fatalf("%d builds, want 4", b.count())
	}
	clock.Add(IdleAfter)
	tk.Refresh()
	if n := entries(tk); n != 0 {
		t.Fatalf("%d entries after IdleAfter unused, want 0", n)
	}
	if b.count() != 4 {
		t.Fatalf("idle entries were rebuilt: %d builds", b.count())
	}
}

func entries(tk *Tokens) int {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return len(tk.entries)
}

// TestTokenClose: Close aborts a build under way (its waiter gets an error) and waits for it; then
// Token says the cache is closed.
func TestTokenClose(t *testing.T) {
	tk, b, _, log := newTestTokens(t)
	b.set(make(chan struct{}), nil) // never opens: the build ends with its context
	errc := make(chan error, 1)
	go func() {
		_, err := tk.Token(context.Background(), "r", "a:5432", "app")
		errc <- err
	}()
	waitFor(t, "the build started", func() error {
		if b.count() != 1 {
			return fmt.Errorf("%d builds", b.count())
		}
		return nil
	})
	tk.Close()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter got %v, want the build's cancellation", err)
	}
	if _, err := tk.Token(t.Context(), "r", "a:5432", "app"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if strings.Contains(log.String(), "cannot make") {
		t.Errorf("the aborted build was logged as a failure:\n%s", log)
	}
}

// TestRun: Run refreshes old tokens by itself and returns when its context ends.
func TestRun(t *testing.T) {
	tk, b, clock, _ := newTestTokens(t)
	mustToken(t, tk, "r", "a:5432", "app")
	clock.Add(RefreshAge)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		tk.Run(ctx, time.Millisecond)
		close(done)
	}()
	waitFor(t, "Run refreshed the token", func() error {
		if b.count() < 2 {
			return fmt.Errorf("%d builds", b.count())
		}
		return nil
	})
	cancel()
	<-done
}
