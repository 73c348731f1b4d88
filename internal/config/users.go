package config

import (
	"fmt"
	"log/slog"

	"github.com/BurntSushi/toml"

	"pgtide/internal/secret"
)

// User is one entry of the users file.
type User struct {
	// Name is the PostgreSQL role name clients log in as.
	Name string `toml:"name"`
	// Password authenticates the client (md5, scram-sha-256) and logs pgtide in to the server,
	// unless IAM is set: then it only authenticates the client. As in PgBouncer's auth_file, it is
	// one of three forms, recognised by prefix (package secret): the plaintext password;
	// PostgreSQL's md5 hash, "md5" + hex(md5(password + name)); or PostgreSQL's SCRAM verifier,
	// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" (both as pg_authid.rolpassword
	// holds them). With a hash or a verifier, pgtide logs in to the servers by pass-through (see
	// README, "Secrets").
	Password string `toml:"password"`
	// IAM makes pgtide log in to every node as this user with an RDS IAM auth token (package
	// rdsiam) signed for [aws] region by credentials from the standard AWS credential chain,
	// sent only over TLS, instead of Password. Clients still authenticate with Password.
	IAM bool `toml:"iam"`
}

// ServerPassword returns the password pgtide may send a server for u: the plaintext one, or ""
// when the users file holds an md5 hash or a SCRAM verifier, which are never sent as passwords.
func (u User) ServerPassword() string {
	s, err := secret.Parse(u.Password)
	if err != nil {
		return ""
	}
	return s.Plaintext()
}

// String never shows the password, so a User can be printed in an error.
func (u User) String() string { return fmt.Sprintf("user %q", u.Name) }

// GoString never shows the password either, for %#v.
func (u User) GoString() string { return u.String() }

// LogValue never shows the password, so a User can be logged with slog (text or JSON).
func (u User) LogValue() slog.Value { return slog.StringValue(u.Name) }

// Users maps user names to entries.
type Users map[string]User

// LoadUsers reads a users file:
//
//	[[user]]
//	name = "app"
//	password = "secret"      # or "md5…", or "SCRAM-SHA-256$…" (see User.Password)
func LoadUsers(path string) (Users, error) {
	var f struct {
		User []User `toml:"user"`
	}
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		// The TOML error quotes the offending line, which may hold a password: report position only.
		if pe, ok := err.(toml.ParseError); ok {
			return nil, fmt.Errorf("users file %s: syntax error at line %d", path, pe.Position.Line)
		}
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("users file %s: unknown setting %q", path, und[0].String())
	}
	users := make(Users, len(f.User))
	for i, u := range f.User {
		if u.Name == "" {
			return nil, fmt.Errorf("users file %s: entry %d has no name", path, i+1)
		}
		if _, dup := users[u.Name]; dup {
			return nil, fmt.Errorf("users file %s: user %q listed twice", path, u.Name)
		}
		users[u.Name] = u
	}
	return users, nil
}
