package rdsiam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Lifetime is how long RDS accepts a token after it is signed: 15 minutes, the X-Amz-Expires=900
// every token carries ("After you generate an authentication token, it's valid for 15 minutes
// before it expires": Amazon Aurora User Guide, "Connecting to your DB cluster using IAM
// authentication"). The token is checked only at login: a connection outlives it.
const Lifetime = 15 * time.Minute

const (
	// RefreshAge is the age at which a token is rebuilt in the background (by Refresh, or by the
	// Token call that finds it this old) while it is still handed out.
	RefreshAge = 10 * time.Minute
	// MaxAge is the age from which a token is no longer handed out: Token waits for a new one.
	// The last minute of Lifetime is left for the login the token is sent in
	// (server_connect_timeout, health_check_timeout) and for clock skew with RDS.
	MaxAge = Lifetime - time.Minute
	// IdleAfter is how long an entry stays without a Token call for it (a user removed from the
	// users file, a pool no longer dialed): Refresh then drops it instead of rebuilding it, and
	// the next dial builds one again.
	IdleAfter = time.Hour
	// DefaultBuildTimeout bounds one build: renewing credentials may reach the network (instance
	// metadata, ECS, STS).
	DefaultBuildTimeout = 10 * time.Second
)

// BuildFunc makes one token for user at endpoint ("host:port", the node's address as pgtide dials
// it), signed for region. CredentialChain is the real one; tests inject others.
type BuildFunc func(ctx context.Context, endpoint, region, user string) (string, error)

// BuildError is a failed build: the credential chain found no credentials, could not renew them,
// or the endpoint has no port. It never holds a token.
type BuildError struct {
	Endpoint, User string
	Err            error
}

func (e *BuildError) Error() string {
	return fmt.Sprintf("cannot make an RDS IAM auth token for user %q on %s: %v", e.User, e.Endpoint, e.Err)
}

func (e *BuildError) Unwrap() error { return e.Err }

// ErrClosed is returned by Token after Close.
var ErrClosed = errors.New("rdsiam: token cache closed")

// Options tune a Tokens; zero values take the defaults named on each field.
type Options struct {
	Now          func() time.Time // nil: time.Now
	BuildTimeout time.Duration    // 0: DefaultBuildTimeout
	Logger       *slog.Logger     // nil: slog.Default()
}

// Tokens caches one token per (endpoint, user) and keeps it fresh. Builds run on goroutines of
// its own, at most one per (endpoint, user) at a time, each bounded by the build timeout; Close
// ends them. All methods are safe for concurrent use.
type Tokens struct {
	build        BuildFunc
	now          func() time.Time
	buildTimeout time.Duration
	logger       *slog.Logger

	life   context.Context    // ends at Close: aborts builds in flight
	end    context.CancelFunc // ends life
	builds sync.WaitGroup     // one per build goroutine

	mu      sync.Mutex
	entries map[key]*entry // guarded by mu
	closed  bool           // guarded by mu
}

type key struct{ endpoint, user string }

// entry is one (endpoint, user)'s token. Guarded by Tokens.mu.
type entry struct {
	token  string    // "" until a build succeeded
	region string    // the region token was signed for
	built  time.Time // when the build of token started: its age counts from there (an upper bound)
	used   time.Time // when Token last asked for it
	flight *flight   // the build under way, nil if none
	// failing says the last build failed: a failure is logged when it begins, and a line when
	// builds succeed again, not at every attempt.
	failing bool
}

// flight is one build. token and err are set before done is closed and never change after.
type flight struct {
	region string
	done   chan struct{}
	token  string
	err    error
}

// New returns a Tokens that makes tokens with build.
func New(build BuildFunc, o Options) *Tokens {
	t := &Tokens{build: build, now: o.Now, buildTimeout: o.BuildTimeout, logger: o.Logger,
		entries: make(map[key]*entry)}
	if t.now == nil {
		t.now = time.Now
	}
	if t.buildTimeout <= 0 {
		t.buildTimeout = DefaultBuildTimeout
	}
	if t.logger == nil {
		t.logger = slog.Default()
	}
	t.life, t.end = context.WithCancel(context.Background())
	return t
}

// Token returns a token for user at endpoint ("host:port") signed for region, valid for at least
// Lifetime − MaxAge (a minute) more. A cached token younger than MaxAge is returned at once
// (and, from RefreshAge, rebuilt in the background); otherwise Token waits for a build, which
// concurrent callers for the same endpoint and user share, up to ctx. A failed build is returned
// (a *BuildError) to every caller waiting for it and not cached: the next call builds again.
// A token from another region (a reload changed it) is never returned.
func (t *Tokens) Token(ctx context.Context, region, endpoint, user string) (string, error) {
	k := key{endpoint, user}
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return "", ErrClosed
		}
		now := t.now()
		e := t.entries[k]
		if e == nil {
			e = &entry{}
			t.entries[k] = e
		}
		e.used = now
		if age := now.Sub(e.built); e.token != "" && e.region == region && age < MaxAge {
			if age >= RefreshAge {
				t.startLocked(k, e, region, now)
			}
			tok := e.token
			t.mu.Unlock()
			return tok, nil
		}
		f := t.startLocked(k, e, region, now)
		t.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", &BuildError{Endpoint: endpoint, User: user, Err: fmt.Errorf("waiting for the token: %w", ctx.Err())}
		}
		if f.err != nil {
			return "", f.err
		}
		if f.region == region {
			return f.token, nil
		}
		// That build was for another region (a reload changed it meanwhile): ask again.
	}
}

// startLocked returns e's build under way, starting one for region if there is none. Requires mu.
func (t *Tokens) startLocked(k key, e *entry, region string, now time.Time) *flight {
	if e.flight != nil {
		return e.flight
	}
	f := &flight{region: region, done: make(chan struct{})}
	e.flight = f
	t.builds.Add(1)
	go t.run(k, e, f, now)
	return f
}

// run builds f's token and stores it in e. e may have been dropped meanwhile (Forget, Refresh):
// then nothing keeps the result but f's waiters.
func (t *Tokens) run(k key, e *entry, f *flight, started time.Time) {
	defer t.builds.Done()
	ctx, cancel := context.WithTimeout(t.life, t.buildTimeout)
	tok, err := t.build(ctx, k.endpoint, f.region, k.user)
	cancel()
	if err == nil && tok == "" {
		err = errors.New("the credential chain gave an empty token")
	}
	if err != nil {
		tok, err = "", &BuildError{Endpoint: k.endpoint, User: k.user, Err: err}
	}
	t.mu.Lock()
	e.flight = nil
	if err == nil {
		e.token, e.region, e.built = tok, f.region, started
	}
	wasFailing := e.failing
	e.failing = err != nil
	closed := t.closed
	t.mu.Unlock()
	defer close(f.done) // after the log line: a waiter that reads the log finds it
	f.token, f.err = tok, err
	switch {
	case closed:
	case err != nil && !wasFailing:
		t.logger.Warn("RDS IAM: cannot make an auth token; logins as this user fail once its current token (if any) is too old",
			"node", k.endpoint, "user", k.user, "err", err)
	case err == nil && wasFailing:
		t.logger.Info("RDS IAM: auth tokens are made again", "node", k.endpoint, "user", k.user)
	}
}

// Refresh starts a background build for every token older than RefreshAge and drops the entries
// no Token call asked for in IdleAfter. Run calls it periodically.
func (t *Tokens) Refresh() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	now := t.now()
	for k, e := range t.entries {
		switch {
		case now.Sub(e.used) >= IdleAfter && e.flight == nil:
			delete(t.entries, k)
		case e.token != "" && now.Sub(e.built) >= RefreshAge:
			t.startLocked(k, e, e.region, now)
		}
	}
}

// Run calls Refresh every interval (a minute is plenty: tokens are rebuilt from RefreshAge, four
// minutes before MaxAge) until ctx is done.
func (t *Tokens) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Refresh()
		}
	}
}

// Forget drops the tokens of endpoint (a node that left the topology). A build under way for it
// finishes for its waiters only.
func (t *Tokens) Forget(endpoint string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.entries {
		if k.endpoint == endpoint {
			delete(t.entries, k)
		}
	}
}

// Close aborts the builds under way (their waiters get a *BuildError) and waits for their
// goroutines; Token then returns ErrClosed.
func (t *Tokens) Close() {
	t.mu.Lock()
	t.closed = true
	t.entries = make(map[key]*entry)
	t.mu.Unlock()
	t.end()
	t.builds.Wait()
}
