package admin

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"pgtide/internal/auth"
	"pgtide/internal/session"
	"pgtide/internal/wire"
)

// IsConsoleDatabase reports whether a client asking for database db wants the admin console
// rather than a server: the virtual databases "pgtide" and "pgbouncer" (PgBouncer's name, so
// its users' habits and scripts work).
func IsConsoleDatabase(db string) bool { return db == "pgtide" || db == "pgbouncer" }

// Console is one connection to the admin console: a client that authenticated as usual and is
// one of [auth] admin_users (every command) or stats_users (SHOW only). It answers Query
// messages with PgBouncer-style commands (see commands.go) read from its Source, and refuses the
// extended protocol. It holds no server connection.
//
// The proxy's connection goroutine runs Login then Serve; Cancel and Shutdown may be called from
// any goroutine.
type Console struct {
	src     Source
	conn    net.Conn
	br      *wire.BufReader
	r       *wire.Reader
	logger  *slog.Logger
	user    string
	appName string

	// PID and Secret are the BackendKeyData the client is given, for its CancelRequests. Set
	// before the console is registered for cancels (the registry may change PID); read-only after.
	PID    uint32
	Secret uint32

	// Owned by the connection goroutine (Login, Serve).
	admin bool   // in admin_users: every command; otherwise stats_users: SHOW only
	out   []byte // messages to send at the next flush

	ctx  context.Context // ends at Shutdown
	stop context.CancelFunc

	mu      sync.Mutex
	closing bool               // Shutdown was called; guarded by mu
	cancel  context.CancelFunc // ends the running command (a PAUSE waiting), nil if none; guarded by mu
}

// Bounds of the console's I/O: no Query of the console needs more than a few hundred bytes, and
// a client that stops reading must not hold its goroutine for long.
const (
	maxQueryLen  = 64 << 10
	writeTimeout = 10 * time.Second
	// keepOut is the largest output buffer kept between commands (a SHOW CLIENTS of thousands
	// of clients is larger; its buffer is dropped once sent).
	keepOut = 64 << 10
)

// NewConsole returns the console for a client that sent startup asking for a console database.
// br holds anything the client sent after the startup packet; maxMessage bounds every message it
// may send (proxy.max_message_size).
func NewConsole(src Source, conn net.Conn, br *wire.BufReader, startup *wire.Startup, maxMessage int, logger *slog.Logger) *Console {
	user, _ := startup.Get("user")
	app, _ := startup.Get("application_name")
	c := &Console{src: src, conn: conn, br: br, r: wire.NewReader(br, maxMessage), user: user, appName: app,
		logger: logger.With("client", session.ClientAddr(conn), "user", user, "database", "pgtide")}
	c.ctx, c.stop = context.WithCancel(context.Background())
	var b [8]byte
	rand.Read(b[:])
	c.PID = binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
	c.Secret = binary.BigEndian.Uint32(b[4:])
	return c
}

// Login authenticates the client as any client is (auth.method, the users file), admits it if
// it is one of [auth] admin_users or stats_users, and greets it. On failure the client has been
// sent a FATAL ErrorResponse and the caller should close the connection.
func (c *Console) Login(a *auth.Authenticator) error {
	cfg := c.src.Config()
	if err := a.Authenticate(consoleExchange{c}, cfg.Auth.Method, c.user, cfg.Users); err != nil {
		c.fatal(err)
		return err
	}
	switch {
	case slices.Contains(cfg.Auth.AdminUsers, c.user):
		c.admin = true
	case slices.Contains(cfg.Auth.StatsUsers, c.user):
	default:
		err := &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeInvalidAuthorization,
			Message: fmt.Sprintf("pgtide: user %q is not allowed to use the admin console", c.user),
			Hint:    "List the user in [auth] admin_users (every command) or [auth] stats_users (SHOW commands only) in pgtide's configuration, and reload it."}
		c.fatal(err)
		return err
	}
	superuser := "off"
	if c.admin {
		superuser = "on"
	}
	c.out = binary.BigEndian.AppendUint32(wire.AppendHeader(c.out, 'R', 4), 0) // AuthenticationOk
	for _, p := range [...][2]string{
		{"server_version", serverVersion(c.src.Version())},
		{"server_encoding", "UTF8"},
		{"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},
		{"TimeZone", "UTC"},
		{"integer_datetimes", "on"},
		{"standard_conforming_strings", "on"},
		{"is_superuser", superuser},
		{"session_authorization", c.user},
		{"application_name", c.appName},
	} {
		c.out = wire.AppendParameterStatus(c.out, p[0], p[1])
	}
	c.out = wire.AppendBackendKeyData(c.out, c.PID, c.Secret)
	c.out = wire.AppendReadyForQuery(c.out, 'I')
	if err := c.flush(); err != nil {
		return err
	}
	c.logger.Info("admin console login", "admin", c.admin)
	return nil
}

// serverVersion is what the console reports as server_version: pgtide's version, as PgBouncer
// reports "1.23.1/bouncer", so libpq parses a number from it.
func serverVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0.0.0"
	}
	return v + "/pgtide"
}

// consoleExchange is the console's connection as package auth sees it.
type consoleExchange struct{ c *Console }

func (e consoleExchange) Send(msg []byte) error {
	e.c.out = append(e.c.out, msg...)
	return e.c.flush()
}

func (e consoleExchange) Receive() (byte, []byte, error) {
	typ, _, err := e.c.r.Next()
	if err != nil {
		return 0, nil, err
	}
	body, err := e.c.r.Body()
	return typ, body, err
}

// Serve answers the client until it leaves, breaks the protocol or Shutdown is called. It lifts
// the login's deadline (client_login_timeout).
func (c *Console) Serve() {
	c.clearReadDeadline()
	skipToSync := false // an extended-protocol message was refused: ignore all until Sync
	for {
		typ, n, err := c.r.Next()
		if err != nil {
			c.readFailed(err)
			return
		}
		switch {
		case typ == 'X':
			return
		case typ == 'S':
			skipToSync = false
			err = c.r.Skip()
			c.out = wire.AppendReadyForQuery(c.out, 'I')
		case skipToSync, typ == 'H', typ == 'd', typ == 'c', typ == 'f':
			// A Flush has nothing to flush; COPY messages outside a COPY are ignored, as
			// PostgreSQL ignores them.
			err = c.r.Skip()
		case typ == 'Q' && n > maxQueryLen:
			err = c.r.Skip()
			c.appendError(&wire.Error{Severity: wire.SeverityError, Code: wire.CodeProgramLimitExceeded,
				Message: fmt.Sprintf("pgtide admin console: query of %d bytes; the console takes at most %d", n, maxQueryLen)})
			c.out = wire.AppendReadyForQuery(c.out, 'I')
		case typ == 'Q':
			err = c.query()
		case strings.IndexByte("PBEDC", typ) >= 0:
			skipToSync = true
			err = c.r.Skip()
			c.appendError(&wire.Error{Severity: wire.SeverityError, Code: wire.CodeFeatureNotSupported,
				Message: "pgtide admin console: the extended query protocol is not supported; use the simple query protocol",
				Hint:    "psql uses it; with pgx, run the console's commands with QueryExecModeSimpleProtocol."})
		case typ == 'F':
			err = c.r.Skip()
			c.appendError(&wire.Error{Severity: wire.SeverityError, Code: wire.CodeFeatureNotSupported,
				Message: "pgtide admin console: function calls are not supported"})
			c.out = wire.AppendReadyForQuery(c.out, 'I')
		default:
			c.fatal(&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation,
				Message: fmt.Sprintf("invalid frontend message type %d", typ)})
			return
		}
		if err == nil && c.r.Buffered() == 0 {
			err = c.flush() // nothing more from the client yet: send what it is owed
		}
		var sent *wire.Error
		if errors.As(err, &sent) {
			return // a FATAL the client has been sent
		}
		if err != nil {
			c.readFailed(err)
			return
		}
	}
}

// readFailed ends the connection after a failed read or write: with FATAL 57P01 if Shutdown
// was called, with FATAL 08P01 if the client broke the framing, silently if it left.
func (c *Console) readFailed(err error) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	var tooLarge *wire.MessageTooLargeError
	var malformed *wire.MalformedError
	switch {
	case closing:
		c.fatal(&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeAdminShutdown,
			Message: "terminating connection because pgtide is shutting down"})
	case errors.As(err, &tooLarge), errors.As(err, &malformed):
		c.fatal(&wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeProtocolViolation, Message: err.Error()})
	case !isNetErr(err):
		c.logger.Warn("admin console connection failed", "err", err)
	}
}

// query runs the statements of one Query message and ends its answer with ReadyForQuery.
func (c *Console) query() error {
	body, err := c.r.Body()
	if err != nil {
		return err
	}
	text := string(body)
	if i := strings.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	stmts := splitStatements(text)
	if len(stmts) == 0 {
		c.out = append(c.out, 'I', 0, 0, 0, 4) // EmptyQueryResponse
	}
	for _, s := range stmts {
		err := c.exec(s)
		var we *wire.Error
		if errors.As(err, &we) {
			c.appendError(we) // as PostgreSQL, the rest of the Query is not run
			if we.Severity == wire.SeverityFatal {
				c.flush()
				return err
			}
			break
		}
		if err != nil {
			return err
		}
	}
	c.out = wire.AppendReadyForQuery(c.out, 'I')
	return nil
}

// exec runs one statement. A *wire.Error is for the client; any other error ends the connection.
func (c *Console) exec(s string) error {
	st, err := parseStatement(s)
	if err != nil {
		return syntaxError("%s in %q", err, s)
	}
	cmd := lookup(st.verb)
	if cmd == nil {
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeSyntaxError,
			Message: fmt.Sprintf("pgtide admin console: unknown command %q; SHOW HELP lists the commands", s)}
	}
	if len(st.args) < cmd.minArgs || len(st.args) > cmd.maxArgs {
		return syntaxError("usage: %s", cmd.usage)
	}
	if cmd.admin && !c.admin {
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeInsufficientPrivilege,
			Message: fmt.Sprintf("pgtide admin console: %s needs a user of [auth] admin_users; %q is in stats_users, which may only SHOW", st.verb, c.user)}
	}
	if cmd.admin {
		c.logger.Info("admin console command", "command", st.verb, "args", st.args) // an audit trail
	}
	return cmd.run(c, st.args)
}

func syntaxError(format string, args ...any) *wire.Error {
	return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeSyntaxError,
		Message: "pgtide admin console: " + fmt.Sprintf(format, args...)}
}

// send appends a result's messages and its CommandComplete.
func (c *Console) send(r *result, tag string) {
	if r != nil {
		c.out = append(c.out, r.buf...)
	}
	c.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(tag)}).Encode(c.out)
}

// notice appends a NoticeResponse.
func (c *Console) notice(msg, detail string) {
	c.out, _ = (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000",
		Message: msg, Detail: detail}).Encode(c.out)
}

// appendError appends err as an ErrorResponse and counts it (pgtide_client_errors_total).
func (c *Console) appendError(err *wire.Error) {
	c.src.Errors().Count(err.Code)
	c.out = err.Append(c.out)
}

// fatal sends err to the client (errors that are not a *wire.Error, a failed read or write,
// have nobody to tell).
func (c *Console) fatal(err error) {
	var we *wire.Error
	if !errors.As(err, &we) {
		return
	}
	c.appendError(we)
	c.flush()
}

// flush writes what is buffered, within writeTimeout.
func (c *Console) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.conn.Write(c.out)
	c.out = c.out[:0]
	if cap(c.out) > keepOut {
		c.out = nil
	}
	return err
}

// Cancel ends the command the console is running, if any (a PAUSE waiting for its transactions):
// the client sent a CancelRequest.
func (c *Console) Cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
}

// Shutdown ends the console at once (pgtide is shutting down): a waiting PAUSE is undone and the
// client gets FATAL 57P01.
func (c *Console) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	c.stop()
	c.conn.SetReadDeadline(time.Unix(1, 0)) // ends a blocked read; Serve sees closing
}

// cancellable returns a context for a long command: it ends when the client sends a
// CancelRequest, closes its connection, or Shutdown is called. done must be called when the
// command ends, before the connection is read again.
func (c *Console) cancellable() (ctx context.Context, done func()) {
	ctx, cancel := context.WithCancel(c.ctx)
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	// The client sends nothing while it waits for the answer: a read that ends means it left
	// (or sent more, which stays buffered for Serve).
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		if _, err := c.br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
	return ctx, func() {
		c.mu.Lock()
		c.cancel = nil
		c.mu.Unlock()
		cancel()
		c.conn.SetReadDeadline(time.Unix(1, 0)) // ends the Peek
		<-watching
		c.clearReadDeadline()
	}
}

// clearReadDeadline lifts the read deadline, unless Shutdown set it to end the console.
func (c *Console) clearReadDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.conn.SetReadDeadline(time.Time{})
	}
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne)
}
