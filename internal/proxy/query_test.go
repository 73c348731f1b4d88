package proxy_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
)

var bothModes = []string{config.PoolModeTransaction, config.PoolModeSession}

// TestQueries runs simple and extended (unnamed statement) queries, errors inside and outside
// transactions, and COPY in both directions, in both pool modes.
func TestQueries(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.Proxy.PoolMode = mode; c.Cluster.PoolSize = 4 })
			ctx := context.Background()
			for _, qm := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
				c := p.connect(t, "app", "appdb", qm)
				var n int
				var s string
				if err := c.QueryRow(ctx, "SELECT $1::int + 1, $2::text", 41, "x'y").Scan(&n, &s); err != nil {
					t.Fatalf("mode %v: %v", qm, err)
				}
				if n != 42 || s != "x'y" {
					t.Fatalf("mode %v: got %d %q", qm, n, s)
				}
				// Many rows, more than a buffer's worth.
				rows, _ := c.Query(ctx, "SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
				count := 0
				for rows.Next() {
					count++
				}
				if err := rows.Err(); err != nil || count != 5000 {
					t.Fatalf("mode %v: %d rows, err %v", qm, count, err)
				}
				// A large parameter and result (bigger than the relay buffers).
				big := strings.Repeat("pgtide", 100000)
				var back string
				if err := c.QueryRow(ctx, "SELECT $1::text", big).Scan(&back); err != nil || back != big {
					t.Fatalf("mode %v: big round trip: len %d, err %v", qm, len(back), err)
				}
			}

			c := p.connect(t, "app", "appdb", pgx.QueryExecModeExec)
			// An error outside a transaction leaves the connection usable.
			_, err := c.Exec(ctx, "SELECT 1/0")
			if code := pgCode(err); code != "22012" {
				t.Fatalf("division by zero: got %v", err)
			}
			if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			// An error inside a transaction aborts it, as on PostgreSQL, until ROLLBACK.
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT no_such_column FROM pg_class"); pgCode(err) != "42703" {
				t.Fatalf("undefined column: got %v", err)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); pgCode(err) != "25P02" {
				t.Fatalf("in failed transaction: got %v", err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			// A committed transaction's writes are visible afterwards, from any server connection.
			table := "t_queries_" + mode
			mustExec(t, c, "DROP TABLE IF EXISTS "+table)
			mustExec(t, c, "CREATE TABLE "+table+" (id int primary key, v text)")
			tx, _ = c.Begin(ctx)
			if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (1, 'a'), (2, 'b')"); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}

			// COPY FROM STDIN and COPY TO STDOUT.
			var in bytes.Buffer
			for i := 3; i <= 20000; i++ {
				in.WriteString(itoa(i) + "\tvalue " + itoa(i) + "\n")
			}
			tag, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY "+table+" FROM STDIN")
			if err != nil || tag.RowsAffected() != 19998 {
				t.Fatalf("copy in: %v %v", tag, err)
			}
			var out bytes.Buffer
			tag, err = c.PgConn().CopyTo(ctx, &out, "COPY (SELECT * FROM "+table+" ORDER BY id) TO STDOUT")
			if err != nil || tag.RowsAffected() != 20000 {
				t.Fatalf("copy out: %v %v", tag, err)
			}
			if !strings.HasPrefix(out.String(), "1\ta\n2\tb\n3\tvalue 3\n") {
				t.Fatalf("copy out starts %q", out.String()[:40])
			}
			// A COPY that fails midway (bad data) reports the error and the connection goes on.
			_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("1\tdup\n"), "COPY "+table+" FROM STDIN")
			if pgCode(err) != "23505" {
				t.Fatalf("copy duplicate: got %v", err)
			}
			var total int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&total); err != nil || total != 20000 {
				t.Fatalf("count after copy: %d %v", total, err)
			}
			mustExec(t, c, "DROP TABLE "+table)
		})
	}
}

// TestPsql runs the real psql client through the proxy.
func TestPsql(t *testing.T) {
	psql, err := lookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	p := startProxy(t, nil)
	out := run(t, 30*time.Second, psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", p.connString("app", "appdb"),
		"-c", "SELECT 'hello from ' || current_user", "-c", "SELECT count(*) FROM generate_series(1,1000)")
	if want := "hello from app\n1000\n"; out != want {
		t.Fatalf("psql printed %q, want %q", out, want)
	}
}

func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
