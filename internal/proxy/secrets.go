package proxy

import (
	"pgtide/internal/auth"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/secret"
)

// passThroughFor is what answers a server for user by pass-through, from the users file in force
// and the keys clients' logins have proved to a: nil when the users file has a plaintext password
// for user, or no entry.
func passThroughFor(cfg *config.Config, a *auth.Authenticator, user string) *pool.PassThrough {
	s, err := secret.Parse(cfg.Users[user].Password)
	if err != nil || s.Kind == secret.Plaintext {
		return nil
	}
	out := &pool.PassThrough{Kind: s.Kind}
	if s.Kind == secret.MD5 {
		out.MD5 = s.Text
	} else {
		out.Keys, out.HaveKeys = a.PassThroughKeys(user, s.Verifier)
	}
	return out
}
