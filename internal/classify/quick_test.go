package classify

import "testing"

// TestMaySetSessionState: the statements most traffic consists of skip the analysis; the
// words of every rule, in any case, and Unicode-escaped names do not. (That the analysis never
// finds anything when it is false is checked on every case of TestAnalyzeSession and by
// FuzzAnalyzeSession.)
func TestMaySetSessionState(t *testing.T) {
	for _, sql := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"INSERT INTO orders (id, total) VALUES ($1, $2) RETURNING id",
		"DELETE FROM sessions WHERE expires_at < now()",
		"BEGIN", "COMMIT", "",
		"select * from users where id = 42 for update",
	} {
		if MaySetSessionState([]byte(sql)) {
			t.Errorf("MaySetSessionState(%q) = true, want false", sql)
		}
	}
	for _, sql := range []string{
		"SET x.y = 1", "reset all", "SELECT Set_Config('a', 'b', false)", "PREPARE p AS SELECT 1",
		"DEALLOCATE p", "DISCARD ALL", "LISTEN c", "LOAD 'x'", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
		"CREATE TEMP TABLE t (i int)", "SELECT 1 INTO TEMPORARY t", "SELECT pg_try_advisory_lock(1)",
		`SELECT U&"\0073et_config"('a', 'b', false)`, "UPDATE t SET x = 1",
	} {
		if !MaySetSessionState([]byte(sql)) {
			t.Errorf("MaySetSessionState(%q) = false, want true", sql)
		}
	}
}
