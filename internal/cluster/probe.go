package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgtls"
)

// probeConn is one health-check or discovery connection. It is owned by one
// goroutine (a checker or the discovery loop), which must call close.
//
// pgconn closes a connection whose query failed or timed out in a goroutine
// of its own that sends a cancel request and drains the socket for up to 15
// seconds: against a hung server that goroutine would outlive Run. So every
// socket pgconn dials through a probeConn is tracked, and close ends them
// all and refuses new dials, which lets that goroutine finish at once; close
// then waits for it.
type probeConn struct {
	pg *pgconn.PgConn

	life context.Context    // ends at close; aborts dials in flight
	end  context.CancelFunc // ends life

	mu    sync.Mutex // guards socks
	socks []net.Conn // every socket dialed for this connection, cancel requests included

	login login // who it logged in as; immutable
}

var errProbeClosed = errors.New("health check connection closed")

// connect opens a connection to addr with the health check's login. ctx
// bounds the whole login.
func (c *Cluster) connect(ctx context.Context, addr string) (*probeConn, error) {
	return c.connectDB(ctx, addr, c.config().Database)
}

// connectDB is connect to database instead of the health check's.
func (c *Cluster) connectDB(ctx context.Context, addr, database string) (*probeConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	pcfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable",
		connValue(host), connValue(port), connValue(c.config().User), connValue(database)))
	if err != nil {
		return nil, fmt.Errorf("connection settings for %s: %w", addr, err)
	}
	// Set outside the connection string so it needs no quoting and can never
	// show up in a parse error.
	pcfg.Password = c.config().Password
	if c.config().IAM {
		if err := c.useIAMToken(ctx, pcfg, addr); err != nil {
			return nil, err
		}
	}
	pcfg.ConnectTimeout = c.config().HealthCheckTimeout
	pcfg.RuntimeParams["application_name"] = "pgtide health check"
	// The dialer gets the configured address as it is: net.Dialer resolves
	// names itself, and an injected Dial sees what it was configured with.
	pcfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }

	life, end := context.WithCancel(context.Background())
	p := &probeConn{life: life, end: end, login: c.login(database)}
	pcfg.DialFunc = p.dialer(c.config().Dial, addr)
	pg, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		p.close(ctx)
		return nil, err
	}
	p.pg = pg
	return p, nil
}

// dialer returns pgconn's dialer for p's connection to node: the socket, tracked, then TLS as
// p's login says (pgconn itself is told sslmode=disable, so that the pool's rules apply here
// too). The node's own address, not the one pgconn dials (a cancel request dials the socket's
// IP address), is what verify-full checks the certificate against.
func (p *probeConn) dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), node string) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(p.life, cancel)
		defer stop()
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		if p.life.Err() != nil {
			p.mu.Unlock()
			conn.Close()
			return nil, errProbeClosed
		}
		p.socks = append(p.socks, conn)
		p.mu.Unlock()
		return p.login.tls.Negotiate(ctx, conn, node) // on error pgconn closes nothing: close does
	}
}

// query runs sql with the simple protocol and returns the rows of its one
// result, valid until the next query. Any error leaves the connection
// unusable: the caller closes it.
func (p *probeConn) query(ctx context.Context, sql string) ([][][]byte, error) {
	res, err := p.pg.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("%d results, want 1", len(res))
	}
	return res[0].Rows, nil
}

// close says goodbye to the server if the connection is still healthy, then
// closes every socket and waits until pgconn's cleanup is done. ctx bounds
// the goodbye only; a hung server cannot hold close up beyond it.
func (p *probeConn) close(ctx context.Context) {
	if p.pg != nil && !p.pg.IsClosed() {
		p.pg.Close(ctx) // sends Terminate; errors only mean the socket is gone already
	}
	p.end()
	p.mu.Lock()
	socks := p.socks
	p.socks = nil
	p.mu.Unlock()
	for _, s := range socks {
		s.Close()
	}
	if p.pg != nil {
		<-p.pg.CleanupDone()
	}
}

// connValue quotes a keyword/value connection string value when it has to.
func connValue(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, `'`, `\'`) + "'"
}

// login is who a probe connection logged in as, and how it speaks TLS. An IAM login's token is
// not part of it: a new token for the same user is the same login.
type login struct {
	user, password, database string
	iam                      bool
	tls                      *pgtls.ServerTLS
}

// login returns the login the configuration in force gives for database.
func (c *Cluster) login(database string) login {
	cfg := c.config()
	return login{cfg.User, cfg.Password, database, cfg.IAM, cfg.TLS}
}

// outdated reports whether p, a health-check or discovery connection, logged in otherwise than
// the configuration now says (a reload fixed or rotated the password, changed the user or
// database, or server_tls or its CA file): its owner reconnects rather than go on as before.
func (c *Cluster) outdated(p *probeConn) bool { return p.login != c.login(c.config().Database) }
