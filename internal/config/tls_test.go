package config

import (
	"path/filepath"
	"testing"
)

func TestValidateTLS(t *testing.T) {
	withCert := func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "server.crt", "server.key" }
	checkValidate(t, []validateCase{
		{"defaults", func(c *Config) {}, ""},
		{"allow", func(c *Config) { withCert(c); c.TLS.ClientTLS = "allow" }, ""},
		{"require", func(c *Config) { withCert(c); c.TLS.ClientTLS = "require" }, ""},
		{"verify-full with a CA", func(c *Config) { withCert(c); c.TLS.CAFile = "ca.crt"; c.TLS.ClientTLS = "verify-full" }, ""},
		{"a certificate, not offered", func(c *Config) { withCert(c) }, ""},
		{"every server mode", func(c *Config) {
			c.Cluster.ServerTLS, c.Cluster.ServerCAFile = "verify-full", "rds.pem"
		}, ""},
		{"server_tls disable", func(c *Config) { c.Cluster.ServerTLS = "disable" }, ""},
		{"server_tls require with a CA", func(c *Config) { c.Cluster.ServerTLS, c.Cluster.ServerCAFile = "require", "rds.pem" }, ""},

		{"cert without key", func(c *Config) { c.TLS.CertFile = "server.crt" }, "tls.cert_file and tls.key_file must be set together"},
		{"key without cert", func(c *Config) { c.TLS.KeyFile = "server.key" }, "tls.cert_file and tls.key_file must be set together"},
		{"require without a certificate", func(c *Config) { c.TLS.ClientTLS = "require" }, `tls.client_tls = "require" needs tls.cert_file`},
		{"allow without a certificate", func(c *Config) { c.TLS.ClientTLS = "allow" }, `tls.client_tls = "allow" needs tls.cert_file`},
		{"verify-ca without a CA", func(c *Config) { withCert(c); c.TLS.ClientTLS = "verify-ca" }, `tls.client_tls = "verify-ca" needs tls.ca_file`},
		{"unknown client_tls", func(c *Config) { withCert(c); c.TLS.ClientTLS = "prefer" }, `tls.client_tls "prefer": must be "disable", "allow", "require", "verify-ca" or "verify-full"`},
		{"empty client_tls", func(c *Config) { c.TLS.ClientTLS = "" }, `tls.client_tls ""`},
		{"CA without a certificate", func(c *Config) { c.TLS.CAFile = "ca.crt" }, "tls.ca_file needs tls.cert_file"},
		{"unknown server_tls", func(c *Config) { c.Cluster.ServerTLS = "allow" }, `cluster.server_tls "allow": must be "disable", "prefer", "require", "verify-ca" or "verify-full"`},
		{"server verify-full without a CA", func(c *Config) { c.Cluster.ServerTLS = "verify-full" }, `cluster.server_tls = "verify-full" needs cluster.server_ca_file`},
		{"server verify-ca without a CA", func(c *Config) { c.Cluster.ServerTLS = "verify-ca" }, `cluster.server_tls = "verify-ca" needs cluster.server_ca_file`},
	})
}

// TestLoadTLS: client_tls defaults to allow when the file sets a certificate, disable otherwise;
// file paths are relative to the config file; SHOW CONFIG lists the paths.
func TestLoadTLS(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    string
	}{
		{"", "disable"},
		{"[tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\n", "allow"},
		{"[tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\nclient_tls = \"disable\"\n", "disable"},
		{"[tls]\ncert_file = \"s.crt\"\nkey_file = \"/etc/pgtide/s.key\"\nca_file = \"ca.crt\"\nclient_tls = \"verify-full\"\n", "verify-full"},
	} {
		path := writeFile(t, filepath.Join(dir, "pgtide.toml"), "[cluster]\nhosts = [\"127.0.0.1:5432\"]\nserver_tls = \"verify-full\"\nserver_ca_file = \"rds/global-bundle.pem\"\n"+tc.content)
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.TLS.ClientTLS != tc.want {
			t.Errorf("%q: client_tls %q, want %q", tc.content, c.TLS.ClientTLS, tc.want)
		}
		if got, want := c.FilePath(c.Cluster.ServerCAFile), filepath.Join(dir, "rds", "global-bundle.pem"); got != want {
			t.Errorf("server_ca_file at %q, want %q", got, want)
		}
		if c.TLS.KeyFile == "/etc/pgtide/s.key" && c.FilePath(c.TLS.KeyFile) != c.TLS.KeyFile {
			t.Errorf("an absolute path moved: %q", c.FilePath(c.TLS.KeyFile))
		}
		if c.FilePath("") != "" {
			t.Error("FilePath of no file is not empty")
		}
		shown := map[string]string{}
		for _, s := range c.Settings() {
			shown[s.Key] = s.Value
		}
		for key, want := range map[string]string{
			"tls.cert_file": c.TLS.CertFile, "tls.key_file": c.TLS.KeyFile, "tls.ca_file": c.TLS.CAFile,
			"tls.client_tls": tc.want, "cluster.server_tls": "verify-full", "cluster.server_ca_file": "rds/global-bundle.pem",
		} {
			if got, ok := shown[key]; !ok || got != want {
				t.Errorf("SHOW CONFIG %s = %q (listed: %v), want %q", key, got, ok, want)
			}
		}
	}
}
