package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/pgcluster"
	"pgtide/internal/pgtls"
	"pgtide/internal/pgtls/pgtlstest"
)

// TestHealthCheckTLS: health checks speak TLS as server_tls says (verify-full against the test
// CA: the server sees an encrypted connection); a configuration with another CA makes them
// reconnect, fail, and say why on the node.
func TestHealthCheckTLS(t *testing.T) {
	checkNoLeaks(t)
	ca := pgtlstest.NewCA(t, t.TempDir(), "ca")
	p := ca.Server(t, "server", "127.0.0.1")
	crt, err1 := os.ReadFile(p.CertFile)
	key, err2 := os.ReadFile(p.KeyFile)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	pc, err := pgcluster.Start(t.Context(), pgcluster.Options{Logf: t.Logf, ExtraConf: []string{"ssl = on"},
		DataFiles: map[string][]byte{"server.crt": crt, "server.key": key}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	addr := pc.Primary().Addr()
	good, err := pgtls.NewServerTLS(pgtls.VerifyFull, ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hosts: []Host{{Addr: addr}}, HealthCheckInterval: 20 * time.Millisecond, HealthCheckFailures: 1, TLS: good}
	tc := runCluster(t, cfg)
	tc.waitChecked(t)
	if err := tc.nodeIs(addr, true, RoleWriter); err != nil {
		t.Fatal(err)
	}
	mon, err := pgx.Connect(t.Context(), pc.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close(context.Background())
	waitFor(t, 20*time.Second, "an encrypted health check connection", func() error {
		var ssl bool
		err := mon.QueryRow(t.Context(), `SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
			WHERE a.application_name = 'pgtide health check'`).Scan(&ssl)
		if err != nil || !ssl {
			return fmt.Errorf("ssl %v, %v", ssl, err)
		}
		return nil
	})

	wrong, err := pgtls.NewServerTLS(pgtls.VerifyFull, pgtlstest.NewCA(t, t.TempDir(), "wrong").CertFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = wrong
	tc.SetConfig(cfg)
	waitFor(t, 20*time.Second, "the node down for TLS", func() error {
		n := tc.node(addr)
		if n.Up() || !strings.Contains(n.CheckFailure(), "TLS with the server failed: the server's certificate is not signed by a CA in server_ca_file") {
			return fmt.Errorf("up %v, failure %q", n.Up(), n.CheckFailure())
		}
		return nil
	})
}
