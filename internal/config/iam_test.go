package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLoadIAM: iam = true in the users file and [aws] region in the config file load; the
// password of an iam user stays the client's, and the region shows in the settings.
func TestLoadIAM(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "users.toml"), `
[[user]]
name = "app"
password = "client secret"
iam = true

[[user]]
name = "monitor"
password = "monitor secret"
`)
	path := writeFile(t, filepath.Join(dir, "pgtide.toml"), `
[auth]
method = "scram-sha-256"
users_file = "users.toml"

[cluster]
hosts = ["db-1.abc123.eu-west-1.rds.amazonaws.com:5432"]
server_tls = "verify-full"
server_ca_file = "global-bundle.pem"

[aws]
region = "eu-west-1"
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.IAMUsers(); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("IAMUsers = %v", got)
	}
	if u := c.Users["app"]; !u.IAM || u.Password != "client secret" || c.Users["monitor"].IAM {
		t.Fatalf("users %+v", c.Users)
	}
	if c.AWS.Region != "eu-west-1" {
		t.Fatalf("region %q", c.AWS.Region)
	}
	found := false
	for _, s := range c.Settings() {
		if s.Key == "aws.region" {
			found = s == Setting{Key: "aws.region", Value: "eu-west-1", Default: "", Reloadable: true}
		}
	}
	if !found {
		t.Error("aws.region is not in the settings as a reloadable setting")
	}
}

// TestValidateIAM: an iam user needs [aws] region; a region must look like one; with md5 or
// scram-sha-256 an iam user still needs a password (the client's), with trust none.
func TestValidateIAM(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		users  Users
		region string
		err    string
	}{
		{"iam with region", AuthSCRAM, Users{"app": {Name: "app", Password: "x", IAM: true}}, "us-east-1", ""},
		{"iam without region", AuthSCRAM, Users{"app": {Name: "app", Password: "x", IAM: true}, "b": {Name: "b", Password: "y"}}, "",
			`aws.region is required: users ["app"] log in to the servers with RDS IAM auth tokens (iam = true)`},
		{"iam without client password", AuthMD5, Users{"app": {Name: "app", IAM: true}}, "us-east-1", `user "app" has no password`},
		{"iam with trust", AuthTrust, Users{"app": {Name: "app", IAM: true}}, "us-gov-west-1", ""},
		{"region without iam users", AuthTrust, nil, "eu-central-2", ""},
		{"bad region", AuthTrust, nil, "eu-west-1 ", `aws.region "eu-west-1 ": not an AWS region name`},
		{"bad region uppercase", AuthTrust, Users{"app": {Name: "app", IAM: true}}, "EU-WEST-1", `not an AWS region name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			c.Auth.Method = tc.method
			c.Auth.UsersFile = "users.toml"
			c.Users = tc.users
			c.AWS.Region = tc.region
			c.Cluster.ServerTLS = "require"
			err := c.Validate()
			if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate = %v, want %q", err, tc.err)
			}
		})
	}
	t.Run("iam over server_tls prefer", func(t *testing.T) {
		c := valid()
		c.Users = Users{"app": {Name: "app", Password: "x", IAM: true}}
		c.AWS.Region = "us-east-1"
		c.Cluster.ServerTLS = "prefer"
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `users ["app"] have iam = true: cluster.server_tls must be`) {
			t.Fatalf("Validate = %v", err)
		}
	})
}

// TestCheckIAMServerTLS: only the server_tls modes that never send a byte in plaintext pass.
func TestCheckIAMServerTLS(t *testing.T) {
	for mode, ok := range map[string]bool{
		"require": true, "verify-ca": true, "verify-full": true,
		"disable": false, "prefer": false, "allow": false, "": false, "REQUIRE": false,
	} {
		err := checkIAMServerTLS(mode)
		if (err == nil) != ok {
			t.Errorf("%q: %v", mode, err)
		}
		if err != nil && !strings.Contains(err.Error(), `cluster.server_tls must be "require", "verify-ca" or "verify-full"`) {
			t.Errorf("%q: unclear error %v", mode, err)
		}
	}
}
