package proxy

import (
	"context"
	"log/slog"

	"pgtide/internal/auth"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/rdsiam"
)

// serverSecrets says what pgtide logs in to the servers with, per node and user, reading the
// configuration in force at each login (a reload that changes a password, iam or [aws] region
// applies to the next one): for a user with iam = true an RDS IAM auth token for the node, signed
// for [aws] region and sent only over TLS; for any other user the users file's plaintext
// password, or pass-through from its md5 hash or SCRAM verifier (see passThroughFor). Clients
// authenticate to pgtide with the users file's password in every case.
type serverSecrets struct {
	cfg  func() *config.Config
	auth *auth.Authenticator // the clients' logins, which prove the keys pass-through uses
	// tokens is owned by the Server: Run on its background group, Forget when a node leaves the
	// topology, Close at Shutdown.
	tokens *rdsiam.Tokens
}

func newServerSecrets(cfg func() *config.Config, a *auth.Authenticator, logger *slog.Logger) *serverSecrets {
	return &serverSecrets{cfg: cfg, auth: a, tokens: rdsiam.New(rdsiam.CredentialChain(), rdsiam.Options{Logger: logger})}
}

// secret is the pools' pool.SecretFunc.
func (s *serverSecrets) secret(ctx context.Context, node, user string) (pool.ServerSecret, error) {
	cfg := s.cfg()
	u := cfg.Users[user]
	if !u.IAM {
		return pool.ServerSecret{Password: u.ServerPassword(), PassThrough: passThroughFor(cfg, s.auth, user)}, nil
	}
	tok, err := s.tokens.Token(ctx, cfg.AWS.Region, node, user)
	if err != nil {
		return pool.ServerSecret{}, err
	}
	return pool.ServerSecret{Password: tok, RequireTLS: true}, nil
}

// token is the health checks' and discovery's cluster.Config.Token (used when
// health_check_user has iam = true).
func (s *serverSecrets) token(ctx context.Context, node, user string) (string, error) {
	return s.tokens.Token(ctx, s.cfg().AWS.Region, node, user)
}
