package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"pgtide/internal/cluster"
	"pgtide/internal/pgtls"
	"pgtide/internal/pool"
	"pgtide/internal/wire"
)

// TestLeaseTLSFailure: a server that refuses the TLS server_tls requires fails the lease at once
// (not a node that may come back: no waiting for failover_timeout), with a client error that says
// TLS failed and why, without the server's address, and a log line that names it.
func TestLeaseTLSFailure(t *testing.T) {
	w := cluster.NewNodeForTest("10.1.2.3:5432", cluster.NodeStateForTest{Up: true, Role: cluster.RoleWriter})
	r, _ := leaseRouter(t, w)
	var log bytes.Buffer // written by Lease, in this goroutine
	r.logger = slog.New(slog.NewTextHandler(&log, nil))
	r.config().Cluster.FailoverTimeout.Duration = time.Minute
	require, err := pgtls.NewServerTLS(pgtls.Require, "")
	if err != nil {
		t.Fatal(err)
	}
	r.pools.ServerTLS = func() *pgtls.ServerTLS { return require }
	var wg sync.WaitGroup
	defer wg.Wait()
	r.pools.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		client, server := net.Pipe()
		wg.Go(func() { // a server without TLS: 'N' to the SSLRequest
			defer server.Close()
			if _, err := io.ReadFull(server, make([]byte, 8)); err == nil {
				server.Write([]byte{'N'})
			}
		})
		return client, nil
	}
	start := time.Now()
	_, _, err = r.Lease(context.Background(), epFor(r.config(), Writer), Writer, pool.Key{Database: "db", User: "u"}, Intent{})
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the lease waited %s", took)
	}
	var le *LeaseError
	if !errors.As(err, &le) || !errors.Is(err, pgtls.ErrNoServerTLS) {
		t.Fatalf("Lease: %v", err)
	}
	we := le.ClientError(wire.SeverityFatal)
	if we.Code != wire.CodeUnableToConnect || we.Severity != wire.SeverityFatal ||
		!strings.Contains(we.Message, "TLS failed: the server does not support TLS") || strings.Contains(we.Message, "10.1.2.3") {
		t.Fatalf("ClientError = %+v", we)
	}
	if got := log.String(); !strings.Contains(got, "TLS with a server failed") || !strings.Contains(got, "10.1.2.3:5432") {
		t.Fatalf("log: %s", got)
	}
}
