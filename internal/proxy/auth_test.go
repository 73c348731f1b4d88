package proxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
)

// TestAuth: every client method against every server method, and wrong or unknown credentials
// refused with 28P01 without revealing which users exist.
func TestAuth(t *testing.T) {
	for _, method := range []string{config.AuthTrust, config.AuthMD5, config.AuthSCRAM} {
		t.Run(method, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Auth.Method = method })
			ctx := context.Background()
			// app: scram on the server; app_md5: md5; app_pw: cleartext password; postgres: trust.
			for _, user := range []string{"app", "app_md5", "app_pw", "postgres"} {
				if method != config.AuthTrust && user == "postgres" {
					continue // no password to check the client against
				}
				c := p.connect(t, user, "appdb", pgx.QueryExecModeExec)
				var who string
				if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != user {
					t.Fatalf("%s: current_user %q, %v", user, who, err)
				}
			}
			if method == config.AuthTrust {
				return
			}
			for _, tc := range []struct{ user, password string }{
				{"app", "wrong"},
				{"nobody", "app secret"},
			} {
				cs := strings.Replace(p.connString("app", "appdb"), "user=app ", "user="+tc.user+" ", 1)
				cs = strings.Replace(cs, "password='app secret'", "password='"+tc.password+"'", 1)
				_, err := pgx.Connect(ctx, cs)
				if pgCode(err) != "28P01" {
					t.Fatalf("%s/%s: got %v", tc.user, tc.password, err)
				}
				if !strings.Contains(err.Error(), `password authentication failed for user "`+tc.user+`"`) {
					t.Fatalf("message: %v", err)
				}
			}
		})
	}
}
