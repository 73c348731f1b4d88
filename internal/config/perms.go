package config

import (
	"fmt"
	"os"
	"syscall"
)

// permissionWarnings names the secret-holding files that others may read: the private key of
// [tls] key_file beyond what PostgreSQL accepts for its own ssl_key_file, and a users file with
// passwords, md5 hashes or SCRAM verifiers in it readable by every user of the machine. A file
// that cannot be read is left to the loading, which fails on it.
func (c *Config) permissionWarnings() []string {
	var out []string
	if key := c.FilePath(c.TLS.KeyFile); key != "" {
		if fi, err := os.Stat(key); err == nil {
			if w := keyFileWarning(key, fi); w != "" {
				out = append(out, w)
			}
		}
	}
	if users := c.UsersPath(); users != "" && c.holdsSecrets() {
		if fi, err := os.Stat(users); err == nil && fi.Mode().Perm()&0o004 != 0 {
			out = append(out, fmt.Sprintf("auth.users_file %s has mode %04o: every user of the machine may read its passwords, "+
				"md5 hashes or SCRAM verifiers (each as good as the password against some login): chmod 600 it", users, fi.Mode().Perm()))
		}
	}
	return out
}

// keyFileWarning applies PostgreSQL's rule for a private key file (check_ssl_key_file_permissions
// in be-secure-common.c): no access for group or others when the file belongs to the user the
// server runs as, group read at most (0640) when it belongs to root. Owned by anyone else, the
// file gets root's rule here (PostgreSQL refuses it outright).
func keyFileWarning(path string, fi os.FileInfo) string {
	perm := fi.Mode().Perm()
	own := true
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		own = int(st.Uid) == os.Geteuid()
	}
	switch {
	case own && perm&0o077 != 0:
		return fmt.Sprintf("tls.key_file %s has mode %04o: others than its owner may read or change the private key; "+
			"PostgreSQL refuses such a key file (0600 or less when owned by the user it runs as): chmod 600 it", path, perm)
	case !own && perm&0o037 != 0:
		return fmt.Sprintf("tls.key_file %s has mode %04o: PostgreSQL refuses such a key file "+
			"(0640 or less when owned by root): chmod 640 it, or 600", path, perm)
	}
	return ""
}

// holdsSecrets reports whether any users-file entry has a password (plaintext, md5 hash or
// SCRAM verifier).
func (c *Config) holdsSecrets() bool {
	for _, u := range c.Users {
		if u.Password != "" {
			return true
		}
	}
	return false
}
