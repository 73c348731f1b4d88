package config

import (
	"strings"
	"testing"
	"time"
)

func TestSettings(t *testing.T) {
	c := Defaults()
	c.Cluster.Hosts = []string{"a:5432", "b:5432"}
	c.Cluster.Weights = map[string]int{"b:5432": 2, "a:5432": 1}
	c.Cluster.PoolSize = 7
	c.Cluster.QueryWaitTimeout.Duration = 90 * time.Second
	c.Auth.AdminUsers = []string{"ops", "dba"}
	c.Users = Users{"app": {Name: "app", Password: "very secret"}}
	byKey := map[string]Setting{}
	for _, s := range c.Settings() {
		if _, dup := byKey[s.Key]; dup {
			t.Errorf("%s listed twice", s.Key)
		}
		byKey[s.Key] = s
		if strings.Contains(s.Value, "very secret") {
			t.Errorf("%s shows a password", s.Key)
		}
	}
	for _, want := range []Setting{
		{"cluster.pool_size", "7", "20", true},
		{"cluster.hosts", "a:5432,b:5432", "", true},
		{"cluster.weights", "a:5432=1,b:5432=2", "", true},
		{"cluster.query_wait_timeout", "1m30s", "30s", true},
		{"cluster.safety_factor", "0.7", "0.7", true},
		{"auth.admin_users", "ops,dba", "", true},
		{"proxy.reader_fallback_to_writer", "true", "true", true},
		{"proxy.retry_on_failover", "true", "true", true},
		{"proxy.listen", "127.0.0.1:6432", "127.0.0.1:6432", true}, // endpoints are reloadable
		{"proxy.unix_socket_dir", "", "", false},
		{"cluster.health_check_interval", "250ms", "250ms", true},
		{"cluster.discovery", "", "", false},
		{"tls.client_tls", "disable", "disable", true},
	} {
		if got := byKey[want.Key]; got != want {
			t.Errorf("%s: got %+v, want %+v", want.Key, got, want)
		}
	}
	c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientTLS = "pgtide.crt", "pgtide.key", "require"
	for _, s := range c.Settings() {
		if s.Key == "tls.client_tls" && (s.Value != "require" || s.Default != "allow") {
			t.Errorf("tls.client_tls with a certificate: %+v, want the default allow", s)
		}
	}
	for key := range restartOnly {
		if _, ok := byKey[key]; !ok {
			t.Errorf("restartOnly names %q, which is not a setting", key)
		}
	}
}

// TestKeepRestartOnly: a reload keeps the running values of what needs a restart, and says which.
func TestKeepRestartOnly(t *testing.T) {
	cur, next := valid(), valid()
	next.Proxy.UnixSocketDir = "/run/pgtide"
	next.Proxy.LogFormat = "json"
	next.Proxy.Listen = "127.0.0.1:7000"
	next.Cluster.PoolSize = 3
	next.Cluster.HealthCheckUser = "monitor"
	changed := KeepRestartOnly(cur, next)
	if len(changed) != 2 || changed[0] != (Setting{Key: "proxy.unix_socket_dir", Value: "", Default: "/run/pgtide"}) ||
		changed[1].Key != "proxy.log_format" || changed[1].Value != "text" || changed[1].Default != "json" {
		t.Fatalf("changed %+v", changed)
	}
	if next.Proxy.UnixSocketDir != cur.Proxy.UnixSocketDir || next.Proxy.LogFormat != cur.Proxy.LogFormat {
		t.Fatalf("restart-only settings not kept: %s %s", next.Proxy.UnixSocketDir, next.Proxy.LogFormat)
	}
	if next.Cluster.PoolSize != 3 || next.Cluster.HealthCheckUser != "monitor" || next.Proxy.Listen != "127.0.0.1:7000" {
		t.Fatal("reloadable settings were reverted")
	}
}
