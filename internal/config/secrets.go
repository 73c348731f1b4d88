package config

import (
	"fmt"
	"maps"
	"slices"

	"pgtide/internal/secret"
)

// secretErrors checks that every users-file password that starts like a SCRAM verifier is a
// whole one (package secret says what is wrong, never quoting it).
func (c *Config) secretErrors() []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(c.Users)) {
		if _, err := secret.Parse(c.Users[name].Password); err != nil {
			errs = append(errs, fmt.Errorf("users file: the password of user %q starts with \"SCRAM-SHA-256$\" but is %w "+
				"(copy the whole of pg_authid.rolpassword)", name, err))
		}
	}
	return errs
}

// secretWarnings names the users-file entries whose stored form cannot serve every login the
// configuration asks of it (see README, "Secrets").
func (c *Config) secretWarnings() []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(c.Users)) {
		s, err := secret.Parse(c.Users[name].Password)
		if err != nil {
			continue // an error of Validate's
		}
		switch {
		case s.Kind == secret.MD5 && c.Auth.Method == AuthSCRAM:
			out = append(out, fmt.Sprintf("users file: user %q has an md5 hash, which cannot serve auth.method = %q: "+
				"its clients will be refused (give it the role's SCRAM verifier, or use auth.method = %q)", name, AuthSCRAM, AuthMD5))
		case s.Kind == secret.SCRAM && c.Auth.Method == AuthTrust:
			out = append(out, fmt.Sprintf("users file: user %q has a SCRAM verifier, but with auth.method = %q its clients prove "+
				"nothing, so pgtide never learns the keys to log in to the servers with (pass-through): the servers must trust it", name, AuthTrust))
		}
		if s.Kind != secret.Plaintext && name == c.Cluster.HealthCheckUser && !c.Users[name].IAM {
			out = append(out, fmt.Sprintf("users file: cluster.health_check_user %q has %s; health checks and discovery log in "+
				"with a plaintext password only, so the servers must trust that user (or give it a plaintext password in the users file)", name, s.Kind))
		}
	}
	if _, ok := c.Users[c.Cluster.HealthCheckUser]; !ok && c.Auth.Method != AuthTrust {
		out = append(out, fmt.Sprintf("users file: cluster.health_check_user %q has no entry; the health checks, discovery and the "+
			"function catalogs then log in without a password, so the servers must trust that user "+
			"(or give it a plaintext password, or iam = true, in the users file)", c.Cluster.HealthCheckUser))
	}
	return out
}
