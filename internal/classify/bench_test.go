package classify

import "testing"

// kilobyteQuery is a report-style query of about 1 KiB with comments, string literals, a quoted
// identifier, a dollar-quoted string and a cast: the kind of text an ORM or a BI tool sends.
const kilobyteQuery = `/* dashboard: weekly revenue, owner=analytics, ticket='BI-1234' */
WITH recent AS (
    SELECT o.id, o.customer_id, o.total_cents, o.created_at -- orders of the last week
    FROM public.orders AS o
    WHERE o.created_at >= now() - interval '7 days'
      AND o.status IN ('paid', 'shipped', 'it''s complicated')
      AND o.note NOT LIKE E'%\\%refund%'
), per_customer AS (
    SELECT r.customer_id, count(*) AS n, sum(r.total_cents)::numeric / 100 AS revenue
    FROM recent r
    GROUP BY r.customer_id
    HAVING sum(r.total_cents) > 0
)
SELECT c.id,
       c."Display Name" AS name,
       coalesce(c.segment, $$unknown$$) AS segment,
       pc.n,
       round(pc.revenue, 2) AS revenue,
       /* rank customers inside their segment; ties broken by id */
       rank() OVER (PARTITION BY c.segment ORDER BY pc.revenue DESC, c.id) AS segment_rank
FROM per_customer pc
JOIN public.customers c ON c.id = pc.customer_id
WHERE c.deleted_at IS NULL
  AND c.country = ANY ($1::text[])
ORDER BY revenue DESC
LIMIT 100 OFFSET $2`

// benchCase is a statement a benchmark runs on.
type benchCase struct{ name, sql string }

// commonBench are the statements every classifier benchmark includes: the common OLTP pair and
// a longer report query.
var commonBench = []benchCase{
	{"pgbench_select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
	{"pgbench_update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"},
	{"1KB_comments_strings", kilobyteQuery},
}

// benchEach runs f on each case's statement as a sub-benchmark, reporting allocations and
// bytes.
func benchEach(b *testing.B, cases []benchCase, f func(sql []byte)) {
	for _, bc := range cases {
		sql := []byte(bc.sql)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(sql)))
			for b.Loop() {
				f(sql)
			}
		})
	}
}

func BenchmarkAnalyzeSession(b *testing.B) {
	var s Session
	benchEach(b, append(commonBench[:len(commonBench):len(commonBench)],
		benchCase{"set_timezone", "SET TimeZone = 'UTC'"},
		benchCase{"set_search_path", "SET search_path TO app, public"},
		benchCase{"advisory_lock", "SELECT pg_advisory_lock(42)"},
		benchCase{"multi_statement", "BEGIN; SET LOCAL statement_timeout = '5s'; SELECT set_config('app.user', $1, true); COMMIT"},
	), func(sql []byte) { AnalyzeSession(sql, &s) })
}

func BenchmarkMaySetSessionState(b *testing.B) {
	sql := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 74503;")
	b.SetBytes(int64(len(sql)))
	b.ReportAllocs()
	for b.Loop() {
		if MaySetSessionState(sql) {
			b.Fatal("true")
		}
	}
}

// BenchmarkClassifyRoute runs with a Functions that, like a real one should, answers without
// allocating.
func BenchmarkClassifyRoute(b *testing.B) {
	var fns Functions = fakeFuncs{}
	benchEach(b, append(commonBench[:len(commonBench):len(commonBench)],
		benchCase{"orm_select", `SELECT "users"."id", "users"."email", "users"."created_at" FROM "users" WHERE "users"."deleted_at" IS NULL AND "users"."id" = $1 ORDER BY "users"."id" LIMIT 1`},
		benchCase{"modifying_cte", "WITH moved AS (DELETE FROM queue WHERE id = $1 RETURNING *) INSERT INTO done SELECT * FROM moved"},
		benchCase{"user_function", "SELECT public.myfunc(x), MyRead(y) FROM t WHERE z = $1"},
		benchCase{"read_only_transaction", "BEGIN READ ONLY; SELECT count(*) FROM t; COMMIT"},
		benchCase{"hint", "/* pgtide:reader */ SELECT report($1)"},
	), func(sql []byte) { ClassifyRoute(sql, fns) })
}

func BenchmarkParseRouteCommand(b *testing.B) {
	benchEach(b, []benchCase{
		{"select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
		{"set_other", "SET application_name = 'batch'"},
		{"set_route", "SET pgtide.route = 'reader'"},
	}, func(sql []byte) { ParseRouteCommand(sql) })
}

// requestBench are the statements issue 14's routing target is about: pgbench -S in simple and
// extended mode, and the typical statements of an ORM.
var requestBench = []benchCase{
	{"pgbench_simple", "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"},
	{"pgbench_extended", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
	{"orm_join", "SELECT u.id, u.email, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 AND o.status IN ($2, $3) ORDER BY o.created_at DESC LIMIT 10"},
	{"orm_quoted", `SELECT "users"."id", "users"."email" FROM "users" WHERE "users"."deleted_at" IS NULL AND "users"."id" = $1 LIMIT 1`},
	{"insert_returning", "INSERT INTO orders (user_id, total, status) VALUES ($1, $2, 'new') RETURNING id"},
	{"update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"},
	{"begin", "BEGIN"},
	{"commit", "COMMIT"},
	{"set", "SET statement_timeout = '5s'"},
	{"show", "SHOW transaction_isolation"},
}

// BenchmarkRequest is the classifier's work on one Query or Parse text on the auto endpoint:
// its route and whether it may set session state.
func BenchmarkRequest(b *testing.B) {
	var fns Functions = fakeFuncs{}
	benchEach(b, requestBench, func(sql []byte) { requestWork(sql, fns) })
}

// requestWork is BenchmarkRequest's unit of work, a function of its own for callgrind's
// --toggle-collect.
//
//go:noinline
func requestWork(sql []byte, fns Functions) TextInfo {
	return Classify(sql, fns)
}
