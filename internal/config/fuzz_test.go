package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as the config file and as its users file (split at the
// first NUL byte). Load must return a config or an error, never panic; a config it returns must
// pass Validate again (Load validated it), and no error may quote the users file's text, which
// holds passwords. Seeds: a full config, one with an unknown key, a users file with two users, a
// password with TOML escapes, a truncated table header.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("[proxy]\nlisten = \"127.0.0.1:6432\"\n[auth]\nmethod = \"scram-sha-256\"\nusers_file = \"users.toml\"\n[cluster]\nhosts = [\"127.0.0.1:5432\"]\n\x00[[user]]\nname = \"app\"\npassword = \"s3cret\"\n"))
	f.Add([]byte("[proxy]\nlisten = \"*:6432\"\nbogus = 1\n[cluster]\nhosts = [\"h:1\"]\n"))
	f.Add([]byte("[auth]\nusers_file = \"users.toml\"\n[cluster]\nhosts = [\"h:1\"]\n\x00[[user]]\nname = \"a\"\npassword = \"x\"\n[[user]]\nname = \"b\"\npassword = \"y\"\n"))
	f.Add([]byte("[auth]\nusers_file = \"users.toml\"\n[cluster]\nhosts = [\"h:1\"]\n\x00[[user]]\nname = \"a\"\npassword = \"\\u00e9\\\"quoted\\\"\"\n"))
	f.Add([]byte("[cluster\nhosts = \x00[[user"))
	f.Fuzz(func(t *testing.T, data []byte) {
		main, users, _ := strings.Cut(string(data), "\x00")
		dir := t.TempDir()
		path := filepath.Join(dir, "pgtide.toml")
		if err := os.WriteFile(path, []byte(main), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "users.toml"), []byte(users), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			// A secret-looking line of the users file must not come back in the error.
			for _, line := range strings.Split(users, "\n") {
				if strings.Contains(line, "password") && len(line) > 12 && strings.Contains(err.Error(), line) {
					t.Fatalf("error quotes the users file: %v", err)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load returned a config that does not validate: %v", err)
		}
		_ = c.Warnings()
	})
}
