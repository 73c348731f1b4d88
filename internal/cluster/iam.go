package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// errIAMNeedsTLS refuses an IAM login on a connection that is not encrypted.
var errIAMNeedsTLS = errors.New("health_check_user logs in with an RDS IAM auth token, which pgtide sends only over TLS, and the connection is not encrypted (server_tls)")

// errIAMToken wraps a failure to make the token (the AWS credential chain's error).
var errIAMToken = errors.New("no RDS IAM auth token could be made for health_check_user")

// useIAMToken makes pcfg log in to addr with the RDS IAM auth token of the configured user for
// addr: answered only to a cleartext password request (require_auth=password: RDS asks IAM users
// for one) and only on a TLS connection, checked once pgconn has done any TLS handshake and
// before it sends the startup message. The token is set in pcfg, never in a connection string.
func (c *Cluster) useIAMToken(ctx context.Context, pcfg *pgconn.Config, addr string) error {
	cfg := c.config()
	if cfg.Token == nil {
		return fmt.Errorf("%w: no token source configured", errIAMToken)
	}
	tok, err := cfg.Token(ctx, addr, cfg.User)
	if err != nil {
		return fmt.Errorf("%w: %w", errIAMToken, err)
	}
	pcfg.Password = tok
	pcfg.RequireAuth = "password"
	next := pcfg.AfterNetConnect
	pcfg.AfterNetConnect = func(ctx context.Context, cfg *pgconn.Config, conn net.Conn) (net.Conn, error) {
		if _, ok := conn.(*tls.Conn); !ok {
			return conn, errIAMNeedsTLS // pgconn closes what is returned, even with an error
		}
		if next != nil {
			return next(ctx, cfg, conn)
		}
		return conn, nil
	}
	return nil
}
