package router

import (
	"context"
	"errors"
	"strings"
	"testing"

	"pgtide/internal/classify"
	"pgtide/internal/cluster"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// TestLeaseCredentialError: when pgtide cannot present its own credential (no RDS IAM token could
// be made), the lease fails at once, without dialing and without waiting as for a failover, and
// the client reads that pgtide could not log in, not the AWS error (which is in the log).
func TestLeaseCredentialError(t *testing.T) {
	w := cluster.NewNodeForTest("w:1", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, d := leaseRouter(t, w)
	cause := errors.New("failed to refresh cached credentials: " + context.DeadlineExceeded.Error())
	asked := 0
	r.pools.Secret = func(ctx context.Context, node, user string) (pool.ServerSecret, error) {
		asked++
		return pool.ServerSecret{}, errors.Join(cause, context.DeadlineExceeded)
	}
	_, _, err := r.Lease(context.Background(), epFor(r.config(), Writer), Writer, pool.Key{Database: "db", User: "u"}, Intent{Route: classify.RouteWriter})
	var le *LeaseError
	var ce *pool.CredentialError
	if !errors.As(err, &le) || !errors.As(err, &ce) || ce.User != "u" {
		t.Fatalf("Lease: %v, want a *LeaseError wrapping a *pool.CredentialError", err)
	}
	if asked != 1 || d.dialed["w:1"] != 0 {
		t.Fatalf("secret asked %d times, dialed %d times; want 1 and 0", asked, d.dialed["w:1"])
	}
	if nodeMayRecover(err) {
		t.Error("a credential failure wrapping a deadline counts as a node that may recover")
	}
	we := le.ClientError(wire.SeverityFatal)
	if we.Code != wire.CodeUnableToConnect || !strings.Contains(we.Message, `pgtide cannot log in to the server as user "u"`) ||
		strings.Contains(we.Message, "refresh cached credentials") || strings.Contains(we.Message, "w:1") {
		t.Fatalf("ClientError = %+v", we)
	}

	tls := (&LeaseError{Node: "w:1", User: "u", Err: &pool.CredentialError{User: "u", Err: pool.ErrTLSRequired}}).ClientError(wire.SeverityError)
	if tls.Code != wire.CodeUnableToConnect || !strings.Contains(tls.Message, pool.ErrTLSRequired.Error()) {
		t.Fatalf("ClientError for a plaintext server connection = %+v", tls)
	}
}
