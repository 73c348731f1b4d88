package pool

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestManagerSecret: each dial asks the Secret for its node and user, once, and an idle
// connection reused asks nothing.
func TestManagerSecret(t *testing.T) {
	m, k := newTestManager(t)
	var mu sync.Mutex
	var asked []string
	m.Secret = func(ctx context.Context, node, user string) (ServerSecret, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the secret is asked for without a deadline")
		}
		mu.Lock()
		asked = append(asked, node+"/"+user)
		mu.Unlock()
		return ServerSecret{Password: "pw"}, nil // the fake server trusts: unused
	}
	for range 2 {
		c, err := m.Acquire(t.Context(), k, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		m.Release(c, false)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != k.Node+"/"+k.User {
		t.Fatalf("secret asked for %v, want once for %s/%s", asked, k.Node, k.User)
	}
}

// TestManagerSecretError: a Secret that fails fails the dial with a *CredentialError before
// anything is dialed, and gives the counted slot back.
func TestManagerSecretError(t *testing.T) {
	m, k := newTestManager(t)
	dials := atomic.Int64{}
	m.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	cause := errors.New("no EC2 IMDS role found")
	m.Secret = func(context.Context, string, string) (ServerSecret, error) { return ServerSecret{}, cause }
	_, err := m.Acquire(t.Context(), k, time.Second)
	var ce *CredentialError
	if !errors.As(err, &ce) || ce.User != k.User || !errors.Is(err, cause) {
		t.Fatalf("Acquire: %v, want a *CredentialError wrapping the cause", err)
	}
	if dials.Load() != 0 {
		t.Fatalf("dialed %d times without a secret", dials.Load())
	}
	if n := m.NodeTotal(k.Node); n != 0 {
		t.Fatalf("%d connections counted on the node after the failure", n)
	}
}

// TestDialRequireTLS: a secret that may go only over TLS is never offered on a plaintext
// connection: Dial refuses with a *CredentialError wrapping ErrTLSRequired. (That the server
// receives nothing then, and the token over TLS, is package rdsiam's scripted-backend test.)
func TestDialRequireTLS(t *testing.T) {
	m, k := newTestManager(t)
	m.Secret = func(context.Context, string, string) (ServerSecret, error) {
		return ServerSecret{Password: "bearer-token", RequireTLS: true}, nil
	}
	_, err := m.Acquire(t.Context(), k, time.Second)
	var ce *CredentialError
	if !errors.As(err, &ce) || !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("Acquire: %v, want a *CredentialError wrapping ErrTLSRequired", err)
	}
	if n := m.NodeTotal(k.Node); n != 0 {
		t.Fatalf("%d connections counted on the node after the refusal", n)
	}
	// The same user without the flag logs in over the same plaintext connection.
	m.Secret = func(context.Context, string, string) (ServerSecret, error) { return ServerSecret{Password: "pw"}, nil }
	c, err := m.Acquire(t.Context(), k, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m.Release(c, false)
}
