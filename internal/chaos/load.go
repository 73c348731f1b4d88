package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The load's table: every write inserts an id no other write uses, so a write that ran twice
// fails with 23505 and a lost one is missing.
var initSQL = []string{
	`CREATE TABLE chaos_writes (id bigint PRIMARY KEY, client int NOT NULL,
		at timestamptz NOT NULL DEFAULT clock_timestamp())`,
	"CREATE ROLE " + clientUser + " LOGIN",
	"GRANT SELECT, INSERT ON chaos_writes TO " + clientUser,
}

const (
	insertSQL = `INSERT INTO chaos_writes (id, client) VALUES ($1, $2)`
	// readSQL is a short indexed read of recent rows.
	readSQL = `SELECT count(*) FROM chaos_writes WHERE id BETWEEN $1 AND $1 + 100`
)

// clientRole is what a load client does, and through which endpoint.
type clientRole int

const (
	roleWriter clientRole = iota // one INSERT per turn, writer endpoint
	roleReader                   // one SELECT per turn, reader endpoint
	roleMixed                    // half reads, a quarter INSERTs, a quarter two-INSERT transactions; auto endpoint
)

func (r clientRole) String() string {
	return [...]string{"writer", "reader", "mixed"}[r]
}

func (r clientRole) endpoint() endpoint {
	return [...]endpoint{endpointWriter, endpointReader, endpointAuto}[r]
}

// load runs the paced clients. Its goroutines run from start until the context given to start
// ends; wait returns when all of them have.
type load struct {
	rec       *recorder
	addr      func(endpoint) string // the proxy's current address for an endpoint
	interval  time.Duration
	opTimeout time.Duration
	// execMode is the pgx query mode of writers and mixed clients: pgx's default (a cache of
	// named prepared statements) for pgtide, unnamed statements for PgBouncer 1.18, whose
	// transaction mode has no prepared statements. Readers use the simple protocol.
	execMode pgx.QueryExecMode

	nextID atomic.Int64
	wg     sync.WaitGroup
}

// start starts n clients of each role; they stop when ctx ends.
func (l *load) start(ctx context.Context, writers, readers, mixed int) {
	id := 0
	for _, rc := range []struct {
		role clientRole
		n    int
	}{{roleWriter, writers}, {roleReader, readers}, {roleMixed, mixed}} {
		for range rc.n {
			l.rec.register(id)
			l.wg.Add(1)
			go l.client(ctx, id, rc.role)
			id++
		}
	}
}

func (l *load) wait() { l.wg.Wait() }

// client is one load client's loop: an operation per interval (started at a random offset, so
// the clients spread over it), reconnecting after any error that closed its connection.
func (l *load) client(ctx context.Context, id int, role clientRole) {
	defer l.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	timer := time.NewTimer(rand.N(l.interval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(l.interval)
		if conn == nil {
			var err error
			if conn, err = l.connect(ctx, role); err != nil {
				if ctx.Err() == nil {
					l.rec.failure(role.String(), err)
				}
				continue
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, l.opTimeout)
		kind, err := l.turn(opCtx, conn, id, role)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			l.rec.success(kind, id)
		default:
			l.rec.failure(role.String(), err)
		}
		if conn.IsClosed() {
			conn = nil
		}
	}
}

func (l *load) connect(ctx context.Context, role clientRole) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(clientConnString(l.addr(role.endpoint()), "chaos-"+role.String()))
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = l.execMode
	if role == roleReader {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// turn runs one operation and says whether it was a read or a write.
func (l *load) turn(ctx context.Context, conn *pgx.Conn, client int, role clientRole) (opKind, error) {
	p := rand.Float64()
	switch {
	case role == roleWriter || role == roleMixed && p < 0.25:
		return opWrite, l.insert(ctx, conn, client)
	case role == roleMixed && p < 0.5:
		return opWrite, l.transaction(ctx, conn, client)
	default:
		from := max(0, l.nextID.Load()-rand.Int64N(1000))
		var n int64
		return opRead, conn.QueryRow(ctx, readSQL, from).Scan(&n)
	}
}

func (l *load) insert(ctx context.Context, conn *pgx.Conn, client int) error {
	id := l.nextID.Add(1)
	if _, err := conn.Exec(ctx, insertSQL, id, client); err != nil {
		l.rec.unsure(id)
		return err
	}
	l.rec.ack(id)
	return nil
}

// transaction inserts two rows in one explicit transaction; both are acknowledged by COMMIT.
func (l *load) transaction(ctx context.Context, conn *pgx.Conn, client int) error {
	a, b := l.nextID.Add(1), l.nextID.Add(1)
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, id := range []int64{a, b} {
			if _, err := tx.Exec(ctx, insertSQL, id, client); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		l.rec.unsure(a, b)
		return err
	}
	l.rec.ack(a, b)
	return nil
}

// clientUser is the role the clients log in as through the proxy. It is not a superuser, so a
// node's superuser_reserved_connections stay free for the suite's own direct connections (as
// postgres), as they would for an operator.
const clientUser = "app"

// clientConnString is a libpq connection string for a client of the proxy at addr (host:port);
// callers bound the connect with their context.
func clientConnString(addr, appName string) string {
	host, port := splitHostPort(addr)
	return fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=disable application_name=%s",
		host, port, clientUser, appName)
}

// directConnString is the suite's own connection to a node, as superuser, past the proxy.
func directConnString(addr string) string {
	host, port := splitHostPort(addr)
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable application_name=chaos-direct",
		host, port)
}
