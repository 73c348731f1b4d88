package classify

import "testing"

func TestSingleTransaction(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"INSERT INTO t VALUES (1)", true},
		{"insert into t select 1, pg_sleep(1)", true},
		{"UPDATE t SET a = 1; DELETE FROM t WHERE a = 2", true},
		{"WITH x AS (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM x", true},
		{"MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", true},
		{"SELECT 1; VALUES (2); TABLE t; (SELECT 3)", true},
		{"/* c */ SELECT 1 -- d\n;;", true},
		{"SELECT ';COMMIT'", true},
		{"SELECT $$; CALL p()$$", true},
		{"", false},
		{";", false},
		{"-- nothing", false},
		{"COMMIT", false},
		{"INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2)", false},
		{"BEGIN; INSERT INTO t VALUES (1); COMMIT", false},
		{"START TRANSACTION", false},
		{"SAVEPOINT a", false},
		{"CALL p()", false},
		{"DO $$BEGIN COMMIT; END$$", false},
		{"VACUUM t", false},
		{"CREATE INDEX CONCURRENTLY i ON t (a)", false},
		{"CREATE TABLE t (a int)", false},
		{"ALTER SYSTEM SET work_mem = '1MB'", false},
		{"SELECT 1; CALL p()", false},
		{"EXPLAIN ANALYZE INSERT INTO t VALUES (1)", false},
		{"SET x = 1", false},
		{"EXECUTE s", false},
		{"COPY t FROM STDIN", false},
		{`"select" 1`, false},
		{"CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END; SELECT f()", false},
	} {
		if got := SingleTransaction([]byte(tc.sql)); got != tc.want {
			t.Errorf("SingleTransaction(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}

func TestSingleTransactionAllocs(t *testing.T) {
	sql := []byte("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x; UPDATE t SET a = 'b;c'")
	if n := testing.AllocsPerRun(10, func() { SingleTransaction(sql) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
