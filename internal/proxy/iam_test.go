package proxy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
)

// TestIAMUserWithoutTLS: a user with iam = true logs in to the servers with an RDS IAM auth token,
// never its users-file password, and never over a connection without TLS. Until server_tls
// exists every server connection is plaintext, so pgtide makes the token (static credentials
// from the environment here, nothing reaches the network) and then refuses to send it: the client
// is told why, the log says it (once, without the token), and the health check as an iam user
// fails with the same reason. Clients still authenticate with the users file's password.
func TestIAMUserWithoutTLS(t *testing.T) {
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ROLE_ARN": "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
	} {
		t.Setenv(k, v)
	}
	p := startProxy(t, func(c *config.Config) {
		c.Auth.Method = config.AuthSCRAM
		c.AWS.Region = "eu-west-1"
	})
	usersPath := filepath.Join(filepath.Dir(p.cfgPath), "users.toml")
	writeIAMUsers := func() {
		var b strings.Builder
		for _, u := range testUsers {
			b.WriteString("[[user]]\nname = \"" + u.Name + "\"\npassword = \"" + u.Password + "\"\n")
			if u.Name == "app_pw" { // password (cleartext) on the server, as RDS asks of IAM users
				b.WriteString("iam = true\n")
			}
		}
		if err := os.WriteFile(usersPath, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeIAMUsers()
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The client authenticates (scram-sha-256 with its users-file password), then pgtide cannot
	// log in to the server for it.
	conn, err := pgx.Connect(ctx, p.connString("app_pw", "postgres"))
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT 1")
		conn.Close(ctx)
	}
	want := `pgtide cannot log in to the server as user "app_pw": the server connection is not encrypted (server_tls)`
	if pgCode(err) != "08001" || !strings.Contains(err.Error(), want) {
		t.Fatalf("client: %v, want 08001 %q", err, want)
	}
	if n := len(p.logged("level=WARN", `msg="pgtide cannot log in to a server"`, "user=app_pw", "sent only over TLS")); n != 1 {
		t.Errorf("%d warnings that pgtide cannot log in, want 1", n)
	}
	// Other users are not affected.
	mustExec(t, p.connect(t, "app", "appdb", pgx.QueryExecModeExec), "SELECT 1")

	// The health check as an iam user fails with the reason, and recovers when it is not one.
	cfg := *p.Config()
	cfg.Cluster.HealthCheckUser = "app_pw"
	writeFile(t, p.cfgPath, &cfg)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the health check's refusal", func() bool {
		return len(p.logged("level=WARN", `msg="health checks failing"`, "RDS IAM auth token, which pgtide sends only over TLS", "user=app_pw")) == 1
	})
	for _, l := range p.logged("X-Amz-") {
		t.Errorf("a token in the log: %s", l)
	}
	for _, l := range p.logged("pw secret") {
		t.Errorf("the iam user's password in the log: %s", l)
	}
}
