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
	"pgtide/internal/pgtls"
)

// TestIAMUser: a user with iam = true logs in to the servers with an RDS IAM auth token, never
// its users-file password, and only over TLS. A configuration that could send the token in the
// clear (server_tls "prefer", the default) is refused. Over TLS (verify-full, against a local
// server that cannot check IAM tokens) pgtide makes the token (static credentials from the
// environment here: nothing reaches the network) and sends it: the server refuses it, the
// client is told, and neither the token nor the password appears in the log; the health check
// as an iam user fails the same way. Clients still authenticate with the users file's password.
// (What the server receives is checked against a scripted server: package rdsiam.)
func TestIAMUser(t *testing.T) {
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ROLE_ARN": "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
	} {
		t.Setenv(k, v)
	}
	c, tt := sharedTLSCluster(t)
	p := startProxy(t, func(cfg *config.Config) {
		tt.configure(cfg, pgtls.Disable, pgtls.Prefer)
		cfg.Cluster.Hosts = []string{c.Primary().Addr()}
		cfg.Auth.Method = config.AuthSCRAM
		cfg.AWS.Region = "eu-west-1"
	})
	usersPath := filepath.Join(filepath.Dir(p.cfgPath), "users.toml")
	var b strings.Builder
	for _, u := range testUsers {
		b.WriteString("[[user]]\nname = \"" + u.Name + "\"\npassword = \"" + u.Password + "\"\n")
		if u.Name == "app_pw" {
			b.WriteString("iam = true\n")
		}
	}
	if err := os.WriteFile(usersPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	err := p.ReloadFile(p.cfgPath)
	if err == nil || !strings.Contains(err.Error(), `users ["app_pw"] have iam = true: cluster.server_tls must be "require", "verify-ca" or "verify-full"`) {
		t.Fatalf("reload with server_tls = prefer: %v", err)
	}
	cfg := *p.Config()
	cfg.Cluster.ServerTLS = string(pgtls.VerifyFull)
	writeFile(t, p.cfgPath, &cfg)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}

	// The client authenticates (scram-sha-256 with its users-file password); the server refuses
	// the token pgtide logs in with.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.connString("app_pw", "postgres"))
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT 1")
		conn.Close(ctx)
	}
	if code := pgCode(err); code != "08004" && code != "28P01" {
		t.Fatalf("client: %v, want the server's refusal", err)
	}
	waitFor(t, 10*time.Second, "the refusal logged", func() bool {
		return len(p.logged("level=WARN", "user=app_pw", "28P01")) > 0
	})
	// Other users are not affected.
	mustExec(t, p.connect(t, "app", "appdb", pgx.QueryExecModeExec), "SELECT 1")

	// The health check as an iam user: refused by the server too, and back when it is not one.
	cfg.Cluster.HealthCheckUser = "app_pw"
	writeFile(t, p.cfgPath, &cfg)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the health check's refusal", func() bool {
		return len(p.logged("level=WARN", `msg="health checks failing"`, "refuses the health check's login", "user=app_pw")) == 1
	})
	cfg.Cluster.HealthCheckUser = "postgres"
	writeFile(t, p.cfgPath, &cfg)
	if err := p.ReloadFile(p.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the health checks passing", func() bool {
		return len(p.logged(`msg="health checks pass again"`)) == 1
	})
	for _, l := range p.logged("X-Amz-") {
		t.Errorf("a token in the log: %s", l)
	}
	for _, l := range p.logged("pw secret") {
		t.Errorf("the iam user's password in the log: %s", l)
	}
}
