package pgcluster

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/pgtls/pgtlstest"
)

// TestDataFilesTLS: a certificate and key given as DataFiles, with ssl = on, make every node
// (replicas through pg_basebackup) serve TLS with them.
func TestDataFilesTLS(t *testing.T) {
	checkNoLeaks(t)
	ctx := t.Context()
	ca := pgtlstest.NewCA(t, t.TempDir(), "ca")
	p := ca.Server(t, "server", "127.0.0.1")
	crt, err := os.ReadFile(p.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, Options{
		Replicas:  1,
		ExtraConf: []string{"ssl = on"},
		DataFiles: map[string][]byte{"server.crt": crt, "server.key": key},
	})
	for _, n := range c.Nodes() {
		conn, err := pgx.Connect(ctx, n.ConnString("postgres", "postgres")+" sslmode=verify-full sslrootcert="+ca.CertFile)
		if err != nil {
			t.Fatalf("%s: %v", n.Name(), err)
		}
		var ssl bool
		err = conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl)
		conn.Close(ctx)
		if err != nil || !ssl {
			t.Errorf("%s: ssl %v, %v", n.Name(), ssl, err)
		}
	}
}
