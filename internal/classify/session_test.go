package classify

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// result is the comparable form of a Session. Slices become strings; a nil slice is "".
type result struct {
	Pin           Reason
	PinParam      string
	SPSet         bool
	SPReset       bool
	SPValue       string
	DiscardAll    bool
	DeallocateAll bool
	Deallocate    string
	TxControl     bool
}

func resultOf(s *Session) result {
	return result{
		Pin:           s.Pin,
		PinParam:      string(s.PinParam),
		SPSet:         s.SearchPath.Set,
		SPReset:       s.SearchPath.Reset,
		SPValue:       string(s.SearchPath.Value),
		DiscardAll:    s.DiscardAll,
		DeallocateAll: s.DeallocateAll,
		Deallocate:    string(s.Deallocate),
		TxControl:     s.TxControl,
	}
}

func pin(r Reason) result            { return result{Pin: r} }
func sessionSet(param string) result { return result{Pin: SessionSet, PinParam: param} }
func searchPath(value string) result { return result{SPSet: true, SPValue: value} }
func deallocate(name string) result  { return result{Deallocate: name} }
func txControl() result              { return result{TxControl: true} }

var searchPathReset = result{SPSet: true, SPReset: true}

type sessionCase struct {
	name string
	sql  string
	want result
	// stmts, when not 0, is the expected Statements (TestAnalyzeSessionStatementCounts has the
	// texts without statements).
	stmts int
}

var sessionCases = []sessionCase{
	// SET of parameters pgtide does not track.
	{name: "set equals", sql: "SET statement_timeout = 0", want: sessionSet("statement_timeout")},
	{name: "set to", sql: "SET statement_timeout TO '5s'", want: sessionSet("statement_timeout")},
	{name: "set mixed case", sql: "set Statement_Timeout to 0", want: sessionSet("statement_timeout")},
	{name: "set session scope", sql: "SET SESSION work_mem = '64MB'", want: sessionSet("work_mem")},
	{name: "set dotted", sql: "SET myext.setting = 'x'", want: sessionSet("myext.setting")},
	{name: "set dotted spaced", sql: "SET MyExt . Setting TO 1", want: sessionSet("myext.setting")},
	{name: "set dotted quoted", sql: `SET "MyExt"."Setting" = 1`, want: sessionSet("myext.setting")},
	{name: "set quoted with doubled quote", sql: `SET "a""b".c = 1`, want: sessionSet(`a"b.c`)},
	{name: "set param named local", sql: "SET local.foo = 1", want: sessionSet("local.foo")},
	{name: "set param named session", sql: "SET session.x TO 2", want: sessionSet("session.x")},
	{name: "set from current", sql: "SET work_mem FROM CURRENT", want: sessionSet("work_mem")},
	{name: "set to string default", sql: "SET work_mem = 'default'", want: sessionSet("work_mem")},
	{name: "set xml option", sql: "SET XML OPTION DOCUMENT", want: sessionSet("xmloption")},
	{name: "set default xact isolation", sql: "SET default_transaction_isolation = 'serializable'", want: sessionSet("default_transaction_isolation")},
	{name: "set name longer than the prefix kept", sql: "SET a.b.c.d.e.f.g.h.i = 1", want: sessionSet("a.b.c.d.e.f.g.h")},
	{name: "set unreadable name", sql: "SET 'x' = 1", want: sessionSet("set")},
	{name: "set name without value", sql: "SET xx", want: sessionSet("xx")},

	// SET that does not pin.
	{name: "set local", sql: "SET LOCAL work_mem = '64MB'", want: pin(None)},
	{name: "set local search_path", sql: "SET LOCAL search_path TO x", want: pin(None)},
	{name: "set to DEFAULT", sql: "SET work_mem = DEFAULT", want: pin(None)},
	{name: "set to default lower", sql: "SET work_mem TO default", want: pin(None)},
	{name: "set timezone", sql: "SET TimeZone = 'UTC'", want: pin(None)},
	{name: "set quoted timezone", sql: `SET "TimeZone" = 'UTC'`, want: pin(None)},
	{name: "set session timezone", sql: "SET SESSION timezone TO 'UTC'", want: pin(None)},
	{name: "set time zone", sql: "SET TIME ZONE 'Europe/Paris'", want: pin(None)},
	{name: "set session time zone", sql: "SET SESSION TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", want: pin(None)},
	{name: "set time zone local", sql: "SET TIME ZONE LOCAL", want: pin(None)},
	{name: "set names", sql: "SET NAMES 'UTF8'", want: pin(None)},
	{name: "set client_encoding", sql: "SET client_encoding TO 'UTF8'", want: pin(None)},
	{name: "set datestyle", sql: "SET DateStyle = ISO, MDY", want: pin(None)},
	{name: "set intervalstyle", sql: "SET IntervalStyle = postgres", want: pin(None)},
	{name: "set standard_conforming_strings", sql: "SET standard_conforming_strings = on", want: pin(None)},
	{name: "set application_name", sql: "SET application_name = 'batch'", want: pin(None)},
	{name: "set transaction", sql: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", want: pin(None)},
	{name: "set session transaction", sql: "SET SESSION TRANSACTION READ ONLY", want: pin(None)},
	{name: "set transaction snapshot", sql: "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", want: pin(None)},
	{name: "set constraints", sql: "SET CONSTRAINTS ALL DEFERRED", want: pin(None)},
	{name: "set transaction_isolation", sql: "SET transaction_isolation = 'serializable'", want: pin(None)},
	{name: "reset param", sql: "RESET work_mem", want: pin(None)},
	{name: "reset role", sql: "RESET ROLE", want: pin(None)},
	{name: "reset session authorization", sql: "RESET SESSION AUTHORIZATION", want: pin(None)},
	{name: "alter role set", sql: "ALTER ROLE bob SET search_path = x", want: pin(None)},
	{name: "update set", sql: "UPDATE t SET role = 'x'", want: pin(None)},

	// search_path.
	{name: "search_path to", sql: "SET search_path TO myschema, public", want: searchPath("myschema, public")},
	{name: "search_path quoted value and comment", sql: `SET search_path = "$user", public -- hi`, want: searchPath(`"$user", public`)},
	{name: "search_path session", sql: "SET SESSION search_path TO 'a'", want: searchPath("'a'")},
	{name: "search_path multiline", sql: "SET search_path = a,\n  b ;", want: searchPath("a,\n  b")},
	{name: "search_path inner comment kept", sql: "SET search_path = a /* x */, b", want: searchPath("a /* x */, b")},
	{name: "search_path quoted name", sql: `SET "Search_Path" = x`, want: searchPath("x")},
	{name: "set schema", sql: "SET SCHEMA 'app'", want: searchPath("'app'")},
	{name: "search_path default", sql: "SET search_path TO DEFAULT", want: searchPathReset},
	{name: "reset search_path", sql: "RESET search_path", want: searchPathReset},
	{name: "reset all", sql: "RESET ALL", want: searchPathReset},
	{name: "search_path last wins", sql: "SET search_path TO a; SET search_path TO b", want: searchPath("b"), stmts: 2},
	{name: "search_path then reset", sql: "SET search_path TO a; RESET search_path", want: searchPathReset, stmts: 2},
	{name: "reset then search_path", sql: "RESET search_path; SET search_path = a", want: searchPath("a"), stmts: 2},
	{name: "search_path from current", sql: "SET search_path FROM CURRENT", want: sessionSet("search_path")},

	// Roles and session characteristics.
	{name: "set role", sql: "SET ROLE admin", want: pin(Role)},
	{name: "set session role", sql: "SET SESSION ROLE admin", want: pin(Role)},
	{name: "set local role", sql: "SET LOCAL ROLE admin", want: pin(None)},
	{name: "set role param", sql: "SET role = 'admin'", want: pin(Role)},
	{name: "set quoted role param", sql: `SET "role" TO admin`, want: pin(Role)},
	{name: "set role none", sql: "SET ROLE NONE", want: pin(None)},
	{name: "set role default", sql: "SET role TO DEFAULT", want: pin(None)},
	{name: "set session authorization", sql: "SET SESSION AUTHORIZATION 'bob'", want: pin(Role)},
	{name: "set session session authorization", sql: "SET SESSION SESSION AUTHORIZATION bob", want: pin(Role)},
	{name: "set session authorization default", sql: "SET SESSION AUTHORIZATION DEFAULT", want: pin(None)},
	{name: "set session_authorization param", sql: "SET session_authorization = bob", want: pin(Role)},
	{name: "session characteristics", sql: "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", want: pin(SessionCharacteristics)},
	{name: "local session characteristics", sql: "SET LOCAL SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", want: pin(None)},

	// set_config.
	{name: "set_config false", sql: "SELECT set_config('work_mem', '64MB', false)", want: sessionSet("work_mem")},
	{name: "set_config true", sql: "SELECT set_config('work_mem', '64MB', true)", want: pin(None)},
	{name: "set_config TRUE spaced", sql: "SELECT set_config('work_mem', '64MB', TRUE )", want: pin(None)},
	{name: "set_config comments", sql: "select SET_CONFIG ( 'Work_Mem' , '1' , /* c */ true )", want: pin(None)},
	{name: "set_config param is_local", sql: "SELECT set_config('work_mem', '64MB', $1)", want: sessionSet("work_mem")},
	{name: "set_config params", sql: "SELECT set_config($1, $2, false)", want: sessionSet("set_config")},
	{name: "set_config qualified", sql: "SELECT pg_catalog.set_config('a.b', 'c', false)", want: sessionSet("a.b")},
	{name: "set_config tracked", sql: "SELECT set_config('application_name', 'x', false)", want: pin(None)},
	{name: "set_config tracked mixed case", sql: "SELECT set_config('TimeZone', 'UTC', false)", want: pin(None)},
	{name: "set_config search_path", sql: "SELECT set_config('search_path', 'x', false)", want: sessionSet("search_path")},
	{name: "set_config search_path local", sql: "SELECT set_config('search_path', 'x', true)", want: pin(None)},
	{name: "set_config role", sql: "SELECT set_config('role', 'bob', false)", want: pin(Role)},
	{name: "set_config expression name local", sql: "SELECT set_config('a' || 'b', 'c', true)", want: pin(None)},
	{name: "set_config expression name", sql: "SELECT set_config('a' || 'b', 'c', false)", want: sessionSet("set_config")},
	{name: "set_config nested", sql: "SELECT set_config('x.y', (SELECT set_config('p.q', 'v', false)), true)", want: sessionSet("p.q")},
	{name: "set_config parenthesized true", sql: "SELECT set_config('x.y', 'v', (true))", want: sessionSet("x.y")},
	{name: "set_config two args", sql: "SELECT set_config('x.y', 'v')", want: sessionSet("x.y")},
	{name: "set_config four args", sql: "SELECT set_config('x.y', 'v', true, 1)", want: sessionSet("x.y")},
	{name: "set_config quoted name", sql: `SELECT "set_config"('x.y', 'v', false)`, want: sessionSet("x.y")},
	{name: "set_config E literal", sql: "SELECT set_config(E'x.y', 'v', false)", want: sessionSet("x.y")},
	{name: "set_config dollar literal", sql: "SELECT set_config($$X.Y$$, 'v', false)", want: sessionSet("x.y")},
	{name: "set_config escaped literal", sql: "SELECT set_config('it''s', 'v', false)", want: sessionSet("set_config")},
	{name: "set_config comment before paren", sql: "SELECT set_config -- c\n ('x.y','v',false)", want: sessionSet("x.y")},
	{name: "set_config nested too deep", sql: "SELECT set_config('a.a', set_config('b.b', set_config('c.c', set_config('d.d', set_config('e.e', 'v', true), true), true), true), true)", want: sessionSet("set_config")},
	{name: "set_config column", sql: "SELECT set_config FROM t", want: pin(None)},
	{name: "set_config in string", sql: "SELECT 'set_config(''a'',''b'',false)'", want: pin(None)},
	{name: "set_config in where", sql: "UPDATE t SET a = 1 WHERE set_config('x.y', 'v', false) IS NOT NULL", want: sessionSet("x.y")},

	// PREPARE and transaction control.
	{name: "prepare", sql: "PREPARE q AS SELECT 1", want: pin(Prepare)},
	{name: "prepare with types", sql: "PREPARE q (int, text) AS SELECT $1", want: pin(Prepare)},
	{name: "prepare transaction", sql: "PREPARE TRANSACTION 'gid1'", want: txControl()},
	{name: "prepare named transaction", sql: "prepare transaction as select 1", want: pin(Prepare)},
	{name: "commit prepared", sql: "COMMIT PREPARED 'gid1'", want: txControl()},
	{name: "rollback prepared", sql: "ROLLBACK PREPARED 'gid1'", want: txControl()},
	{name: "begin", sql: "BEGIN", want: txControl()},
	{name: "begin isolation", sql: "begin isolation level serializable", want: txControl()},
	{name: "start transaction", sql: "START TRANSACTION READ ONLY", want: txControl()},
	{name: "commit", sql: "COMMIT", want: txControl()},
	{name: "end", sql: "END", want: txControl()},
	{name: "rollback", sql: "ROLLBACK", want: txControl()},
	{name: "abort", sql: "ABORT", want: txControl()},
	{name: "savepoint", sql: "SAVEPOINT s1", want: txControl()},
	{name: "release", sql: "RELEASE SAVEPOINT s1", want: txControl()},
	{name: "rollback to", sql: "ROLLBACK TO SAVEPOINT s1", want: txControl()},
	{name: "tx block with set local", sql: "BEGIN; SET LOCAL work_mem = 1; COMMIT", want: txControl(), stmts: 3},
	{name: "select is not tx control", sql: "SELECT 1", want: pin(None)},

	// Advisory locks.
	{name: "advisory lock", sql: "SELECT pg_advisory_lock(42)", want: pin(AdvisoryLock)},
	{name: "try advisory lock", sql: "SELECT pg_try_advisory_lock(1, 2)", want: pin(AdvisoryLock)},
	{name: "advisory lock shared", sql: "SELECT pg_advisory_lock_shared(1)", want: pin(AdvisoryLock)},
	{name: "try advisory lock shared upper", sql: "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)", want: pin(AdvisoryLock)},
	{name: "advisory lock qualified", sql: "SELECT pg_catalog.pg_advisory_lock(1)", want: pin(AdvisoryLock)},
	{name: "advisory lock comment before paren", sql: "SELECT pg_advisory_lock /* why */ (1)", want: pin(AdvisoryLock)},
	{name: "advisory lock quoted", sql: `SELECT "pg_advisory_lock"(1)`, want: pin(AdvisoryLock)},
	{name: "advisory lock quoted other case", sql: `SELECT "PG_ADVISORY_LOCK"(1)`, want: pin(None)},
	{name: "advisory lock unicode escapes", sql: `SELECT U&"pg\005Fadvisory\005Flock"(1)`, want: pin(AdvisoryLock)},
	{name: "advisory lock uescape", sql: `SELECT U&"pg!005Fadvisory!+00005Flock" UESCAPE '!' (1)`, want: pin(AdvisoryLock)},
	{name: "advisory lock in where", sql: "SELECT * FROM jobs WHERE pg_try_advisory_lock(id) LIMIT 1", want: pin(AdvisoryLock)},
	{name: "advisory lock after number", sql: "SELECT 1from pg_advisory_lock(1)", want: pin(AdvisoryLock)},
	{name: "xact advisory lock", sql: "SELECT pg_advisory_xact_lock(1)", want: pin(None)},
	{name: "try xact advisory lock shared", sql: "SELECT pg_try_advisory_xact_lock_shared(1)", want: pin(None)},
	{name: "advisory unlock", sql: "SELECT pg_advisory_unlock(1)", want: pin(None)},
	{name: "advisory lock column", sql: "SELECT pg_advisory_lock FROM t", want: pin(None)},
	{name: "advisory lock in string", sql: "SELECT 'pg_advisory_lock(1)'", want: pin(None)},
	{name: "advisory lock in line comment", sql: "SELECT 1 -- pg_advisory_lock(1)", want: pin(None)},
	{name: "advisory lock in dollar quote", sql: "SELECT $$pg_advisory_lock(1)$$", want: pin(None)},
	{name: "advisory lock in function body", sql: "CREATE FUNCTION f() RETURNS void AS $body$ SELECT pg_advisory_lock(1) $body$ LANGUAGE sql", want: pin(None)},

	// Temporary objects.
	{name: "create temp table", sql: "CREATE TEMP TABLE t (a int)", want: pin(TempObject)},
	{name: "create temporary table as", sql: "CREATE TEMPORARY TABLE t AS SELECT 1", want: pin(TempObject)},
	{name: "create global temporary", sql: "CREATE GLOBAL TEMPORARY TABLE t (a int)", want: pin(TempObject)},
	{name: "create local temp", sql: "create local temp table t (a int)", want: pin(TempObject)},
	{name: "create temp view", sql: "CREATE TEMP VIEW v AS SELECT 1", want: pin(TempObject)},
	{name: "create or replace temp view", sql: "CREATE OR REPLACE TEMP VIEW v AS SELECT 1", want: pin(TempObject)},
	{name: "create temp sequence", sql: "CREATE TEMP SEQUENCE s", want: pin(TempObject)},
	{name: "create temp on commit drop", sql: "CREATE TEMP TABLE t (a int) ON COMMIT DROP", want: pin(TempObject)},
	{name: "create temp comments between", sql: "CREATE /* a */ TEMP -- b\n TABLE t (a int)", want: pin(TempObject)},
	{name: "create in pg_temp", sql: "CREATE TABLE pg_temp.t (a int)", want: pin(TempObject)},
	{name: "create function in pg_temp", sql: "CREATE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql", want: pin(TempObject)},
	{name: "create table named temp", sql: "CREATE TABLE temp (a int)", want: pin(None)},
	{name: "create unlogged", sql: "CREATE UNLOGGED TABLE t (a int)", want: pin(None)},
	{name: "create temp in string", sql: "SELECT 'CREATE TEMP TABLE x'", want: pin(None)},
	{name: "select into temp", sql: "SELECT * INTO TEMP t FROM src", want: pin(TempObject)},
	{name: "select into temporary table", sql: "SELECT * INTO TEMPORARY TABLE t FROM src", want: pin(TempObject)},
	{name: "select into local temp", sql: "SELECT * INTO LOCAL TEMP t FROM src", want: pin(TempObject)},
	{name: "select into pg_temp", sql: "SELECT * INTO pg_temp.t FROM src", want: pin(TempObject)},
	{name: "with select into temp", sql: "WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x", want: pin(TempObject)},
	{name: "select into plain", sql: "SELECT * INTO t FROM src", want: pin(None)},
	{name: "select into table named temp", sql: "SELECT 1 AS a INTO temp FROM src", want: pin(None)},
	{name: "insert into temp", sql: "INSERT INTO temp VALUES (1)", want: pin(None)},
	{name: "insert comment into temp", sql: "INSERT /* x */ INTO temp SELECT 1", want: pin(None)},
	{name: "merge into temp", sql: "MERGE INTO temp t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", want: pin(None)},
	{name: "import foreign schema into temp", sql: "IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO temp", want: pin(None)},
	{name: "explain analyze create temp", sql: "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", want: pin(TempObject)},
	{name: "explain long options create temp", sql: "EXPLAIN (ANALYZE, BUFFERS, COSTS off, TIMING off, SUMMARY on, VERBOSE true, SETTINGS on, WAL on, FORMAT json) CREATE TEMPORARY TABLE t AS SELECT 1", want: pin(TempObject)},
	{name: "explain select", sql: "EXPLAIN SELECT 1", want: pin(None)},

	// LISTEN, cursors, LOAD.
	{name: "listen", sql: "LISTEN ch", want: pin(Listen)},
	{name: "listen quoted", sql: `listen "Chan"`, want: pin(Listen)},
	{name: "unlisten", sql: "UNLISTEN *", want: pin(None)},
	{name: "notify", sql: "NOTIFY ch, 'LISTEN'", want: pin(None)},
	{name: "hold cursor", sql: "DECLARE c CURSOR WITH HOLD FOR SELECT 1", want: pin(HoldCursor)},
	{name: "hold cursor options", sql: "DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT 1", want: pin(HoldCursor)},
	{name: "hold cursor named cursor", sql: "DECLARE cursor CURSOR WITH HOLD FOR SELECT 1", want: pin(HoldCursor)},
	{name: "hold cursor comments", sql: "declare c asensitive cursor /* x */ with\n\thold for select 1", want: pin(HoldCursor)},
	{name: "cursor without hold", sql: "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", want: pin(None)},
	{name: "cursor plain", sql: "DECLARE c SCROLL CURSOR FOR SELECT 'WITH HOLD'", want: pin(None)},
	{name: "load", sql: "LOAD 'auto_explain'", want: pin(Load)},

	// DISCARD and DEALLOCATE.
	{name: "discard all", sql: "DISCARD ALL", want: result{DiscardAll: true, DeallocateAll: true, SPSet: true, SPReset: true}},
	{name: "discard plans", sql: "DISCARD PLANS", want: pin(None)},
	{name: "discard temp", sql: "DISCARD TEMP", want: pin(None)},
	{name: "deallocate all", sql: "DEALLOCATE ALL", want: result{DeallocateAll: true}},
	{name: "deallocate prepare all", sql: "deallocate prepare all", want: result{DeallocateAll: true}},
	{name: "deallocate name", sql: "DEALLOCATE stmt1", want: deallocate("stmt1")},
	{name: "deallocate prepare name", sql: "DEALLOCATE PREPARE Stmt1", want: deallocate("stmt1")},
	{name: "deallocate quoted", sql: `DEALLOCATE "Stmt""1"`, want: deallocate(`Stmt"1`)},
	{name: "deallocate named prepare", sql: "DEALLOCATE prepare", want: deallocate("prepare")},
	{name: "deallocate quoted all", sql: `DEALLOCATE "all"`, want: deallocate("all")},
	{name: "deallocate unicode", sql: `DEALLOCATE U&"d\0061t\+000061"`, want: deallocate("data")},
	{name: "deallocate last wins", sql: "DEALLOCATE a; DEALLOCATE b", want: deallocate("b"), stmts: 2},
	{name: "deallocate truncated", sql: "DEALLOCATE " + strings.Repeat("A", 70), want: deallocate(strings.Repeat("a", 63))},
	{name: "deallocate truncated at rune", sql: `DEALLOCATE "` + strings.Repeat("a", 62) + `é"`, want: deallocate(strings.Repeat("a", 62))},
	{name: "deallocate pgx style", sql: `deallocate "stmtcache_8a3b7c"`, want: deallocate("stmtcache_8a3b7c")},

	// Lexing: nothing inside literals, quoted identifiers or comments counts.
	{name: "doubled quote", sql: "SELECT 'it''s; SET ROLE x'", want: pin(None), stmts: 1},
	{name: "E string backslash quote", sql: `SELECT E'\'; SET ROLE x; '`, want: pin(None), stmts: 1},
	{name: "E string backslash backslash", sql: `SELECT E'\\'; SET ROLE x`, want: pin(Role), stmts: 2},
	{name: "standard string backslash", sql: `SELECT '\'; SET ROLE x; --'`, want: pin(Role), stmts: 2},
	{name: "E string continued", sql: "SELECT E'a'\n'\\'; SET ROLE x; '", want: pin(None), stmts: 1},
	{name: "E string continued after comment", sql: "SELECT E'a' -- c\n  -- d\n'\\'; SET ROLE x; '", want: pin(None), stmts: 1},
	{name: "E string not continued on one line", sql: `SELECT E'a' '\'; SET ROLE x; --'`, want: pin(Role), stmts: 2},
	{name: "E string not continued over block comment", sql: "SELECT E'a' /* */\n'\\'; SET ROLE x; --'", want: pin(Role), stmts: 2},
	{name: "unicode string", sql: `SELECT U&'\0041'; SET ROLE x`, want: pin(Role), stmts: 2},
	{name: "unicode string backslash", sql: `SELECT U&'\' AS x; SET ROLE y`, want: pin(Role), stmts: 2},
	{name: "bit strings", sql: "SELECT B'1010', X'FF'; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "national string", sql: "SELECT N'abc;'; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "quoted identifier", sql: `SELECT "a;""b" FROM t; SET ROLE x`, want: pin(Role), stmts: 2},
	{name: "quoted identifier keyword", sql: `SELECT "SET ROLE x; LISTEN y" FROM t`, want: pin(None), stmts: 1},
	{name: "dollar quote", sql: "SELECT $$ ; SET ROLE x; $$", want: pin(None), stmts: 1},
	{name: "dollar tag", sql: "SELECT $tag$ $$ ; SET ROLE x; $$ $tag$", want: pin(None), stmts: 1},
	{name: "dollar other tag inside", sql: "SELECT $a$ $b$ ; SET ROLE x $a$", want: pin(None), stmts: 1},
	{name: "dollar tag overlap", sql: "SELECT $a$ $ba$a$; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "param is not dollar quote", sql: "SELECT $1; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "dollar in identifier", sql: "SELECT a$b$ FROM t; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "block comment", sql: "/* SET ROLE x; */ SELECT 1", want: pin(None), stmts: 1},
	{name: "nested block comment", sql: "/* nested /* SET ROLE x; */ still; SET ROLE y */ SELECT 1", want: pin(None), stmts: 1},
	{name: "line comment", sql: "-- SET ROLE x\nSELECT 1", want: pin(None), stmts: 1},
	{name: "line comment CR", sql: "-- SET ROLE x\rSET ROLE y", want: pin(Role), stmts: 1},
	{name: "line comment to end", sql: "SELECT 1 --; SET ROLE x", want: pin(None), stmts: 1},
	{name: "quote in comment", sql: "/* ' */ SET ROLE x", want: pin(Role)},
	{name: "comment opener in string", sql: "SELECT '/*'; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "comment after operator", sql: "SELECT 2*/*c*/3; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "line comment after operator", sql: "SELECT 1 +-- c\n 2; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "comments between keywords", sql: "SET /* c */ ROLE -- c\n admin", want: pin(Role)},
	{name: "odd whitespace", sql: "SET\n\tROLE\r\n\f\vadmin", want: pin(Role)},
	{name: "keyword case", sql: "sEt rOlE x", want: pin(Role)},
	{name: "unterminated string", sql: "SELECT 'unterminated; SET ROLE x", want: pin(None), stmts: 1},
	{name: "unterminated dollar", sql: "SELECT $$unterminated; SET ROLE x", want: pin(None), stmts: 1},
	{name: "unterminated identifier", sql: `SELECT "unterminated; SET ROLE x`, want: pin(None), stmts: 1},
	{name: "unterminated comment", sql: "/* unterminated SET ROLE x", want: pin(None), stmts: 0},
	{name: "semicolon in parens", sql: "SELECT (1; SET ROLE x)", want: pin(None), stmts: 1},
	{name: "begin atomic body", sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "begin atomic procedure", sql: "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END; LISTEN c", want: pin(Listen), stmts: 2},
	{name: "function named begin", sql: "CREATE FUNCTION begin() RETURNS int LANGUAGE sql AS 'select 1'; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "begin column in atomic body", sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin FROM t; END; SET ROLE x", want: pin(Role), stmts: 2},
	{name: "case in parens in atomic body", sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT (CASE WHEN true THEN 1 END); END; LISTEN c", want: pin(Listen), stmts: 2},
	{name: "return case without body", sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 END; LISTEN c", want: pin(Listen), stmts: 2},
	{name: "begin atomic no tx control", sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", want: pin(None), stmts: 1},

	// Several statements.
	{name: "empty", sql: "", want: pin(None), stmts: 0},
	{name: "only whitespace and comments", sql: " \n -- x\n /* y */ ", want: pin(None), stmts: 0},
	{name: "empty statements", sql: "SELECT 1; ; ;SELECT 2;", want: pin(None), stmts: 2},
	{name: "first pin wins", sql: "LISTEN a; SET ROLE b", want: pin(Listen), stmts: 2},
	{name: "first pin keeps its param", sql: "SET work_mem = 1; SET ROLE b; SET x.y = 2", want: sessionSet("work_mem"), stmts: 3},
	{name: "first pin then set_config", sql: "SELECT pg_advisory_lock(1); SELECT set_config('a.b', 'c', false)", want: pin(AdvisoryLock), stmts: 2},
	{name: "pin after plain statements", sql: "SELECT 1; DECLARE c CURSOR WITH HOLD FOR SELECT 1", want: pin(HoldCursor), stmts: 2},
	{name: "statement start before call", sql: "PREPARE p AS SELECT pg_advisory_lock(1)", want: pin(Prepare)},
	{name: "earlier call wins", sql: "SELECT set_config('a.b', pg_advisory_lock(1)::text, false)", want: sessionSet("a.b")},
	{name: "search_path and pin", sql: "SET search_path TO app; SET work_mem = 1; COMMIT", want: result{Pin: SessionSet, PinParam: "work_mem", SPSet: true, SPValue: "app", TxControl: true}, stmts: 3},
	{name: "string in where", sql: "SELECT 1 FROM t WHERE x = 'SET ROLE'", want: pin(None)},
}

func TestAnalyzeSession(t *testing.T) {
	for _, tc := range sessionCases {
		t.Run(tc.name, func(t *testing.T) {
			var s Session
			sql := []byte(tc.sql)
			AnalyzeSession(sql, &s)
			if got := resultOf(&s); got != tc.want {
				t.Errorf("AnalyzeSession(%q):\n got %+v\nwant %+v", tc.sql, got, tc.want)
			}
			if tc.stmts != 0 && s.Statements != tc.stmts {
				t.Errorf("AnalyzeSession(%q): Statements = %d, want %d", tc.sql, s.Statements, tc.stmts)
			}
			checkSession(t, sql, &s)
		})
	}
}

// TestAnalyzeSessionStatementCounts covers the zero-statement cases the table cannot express
// with its "0 means unchecked" rule.
func TestAnalyzeSessionStatementCounts(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want int
	}{
		{"", 0},
		{";", 0},
		{" ; ;\n;", 0},
		{"-- only a comment", 0},
		{"/* unterminated SET ROLE x", 0},
		{"SELECT 1", 1},
		{"SELECT 1;", 1},
		{"SELECT 1;SELECT 2", 2},
		{"SELECT ';'; SELECT \";\"; SELECT $$;$$; SELECT 1 -- ;\n", 4},
	} {
		var s Session
		AnalyzeSession([]byte(tc.sql), &s)
		if s.Statements != tc.want {
			t.Errorf("AnalyzeSession(%q).Statements = %d, want %d", tc.sql, s.Statements, tc.want)
		}
	}
}

// TestAnalyzeSessionReuse checks that a Session is fully reset between calls, and that results
// alias the input or the Session's own buffers as documented.
func TestAnalyzeSessionReuse(t *testing.T) {
	var s Session
	AnalyzeSession([]byte(`SET Work_Mem = 1; DEALLOCATE "X"; DISCARD ALL; BEGIN`), &s)
	if s.Pin != SessionSet || string(s.PinParam) != "work_mem" || string(s.Deallocate) != "X" || !s.DiscardAll || !s.TxControl {
		t.Fatalf("first analysis: %+v", resultOf(&s))
	}
	AnalyzeSession([]byte("SELECT 1"), &s)
	if got := resultOf(&s); got != (result{}) || s.Statements != 1 {
		t.Fatalf("after reuse: %+v, %d statements", got, s.Statements)
	}

	sql := []byte("SET search_path TO a, b; SET Work_Mem = 1; DEALLOCATE Q")
	AnalyzeSession(sql, &s)
	if !within(s.SearchPath.Value, sql) {
		t.Errorf("SearchPath.Value %q does not alias the input", s.SearchPath.Value)
	}
	if !within(s.PinParam, s.pinBuf[:]) {
		t.Errorf("PinParam %q is not in the Session's buffer", s.PinParam)
	}
	if !within(s.Deallocate, s.deallocBuf[:]) {
		t.Errorf("Deallocate %q is not in the Session's buffer", s.Deallocate)
	}
}

func TestAnalyzeSessionLongParamName(t *testing.T) {
	// Too long for the buffer: given as written, aliasing the input.
	name := "Ext." + strings.Repeat("p", 60) + "." + strings.Repeat("q", 60) + "." + strings.Repeat("r", 60)
	sql := []byte("SET " + name + " = 1")
	var s Session
	AnalyzeSession(sql, &s)
	if s.Pin != SessionSet || string(s.PinParam) != name || !within(s.PinParam, sql) {
		t.Fatalf("got %v %q", s.Pin, s.PinParam)
	}
	long := strings.Repeat("x", 200)
	sql = []byte("SELECT set_config('" + long + "', 'v', false)")
	AnalyzeSession(sql, &s)
	if s.Pin != SessionSet || string(s.PinParam) != long {
		t.Fatalf("set_config: got %v %q", s.Pin, s.PinParam)
	}
}

// TestAnalyzeSessionNoInputChange checks that the input is left as it was.
func TestAnalyzeSessionNoInputChange(t *testing.T) {
	for _, tc := range sessionCases {
		sql := []byte(tc.sql)
		orig := bytes.Clone(sql)
		var s Session
		AnalyzeSession(sql, &s)
		if !bytes.Equal(sql, orig) {
			t.Fatalf("AnalyzeSession(%q) modified its input", tc.sql)
		}
	}
}

func TestAnalyzeSessionAllocs(t *testing.T) {
	var s Session
	for _, tc := range sessionCases {
		sql := []byte(tc.sql)
		if n := testing.AllocsPerRun(10, func() { AnalyzeSession(sql, &s) }); n != 0 {
			t.Errorf("AnalyzeSession(%q): %v allocations, want 0", tc.sql, n)
		}
	}
}

func TestReasonString(t *testing.T) {
	for _, tc := range []struct {
		r    Reason
		want string
	}{
		{None, "none"},
		{SessionSet, "session_set"},
		{Prepare, "prepare"},
		{AdvisoryLock, "advisory_lock"},
		{TempObject, "temp_object"},
		{Listen, "listen"},
		{HoldCursor, "hold_cursor"},
		{Role, "role"},
		{SessionCharacteristics, "session_characteristics"},
		{Load, "load"},
		{Load + 1, "unknown"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("Reason(%d).String() = %q, want %q", uint8(tc.r), got, tc.want)
		}
	}
}

func ExampleAnalyzeSession() {
	var s Session
	AnalyzeSession([]byte("SET search_path TO app, public; SELECT pg_advisory_lock(42)"), &s)
	fmt.Println(s.Pin, s.Statements)
	fmt.Printf("%s\n", s.SearchPath.Value)
	// Output:
	// advisory_lock 2
	// app, public
}

// TestAnalyzeSessionAdversarial runs 256 KiB inputs built to make a careless lexer or rule
// quadratic; with linear time each takes milliseconds, a quadratic one would not finish.
func TestAnalyzeSessionAdversarial(t *testing.T) {
	const n = 1 << 18
	rep := func(s string) []byte { return bytes.Repeat([]byte(s), n/len(s)) }
	for name, sql := range map[string][]byte{
		"dollar tags":            append([]byte("$a$"), rep("$b$$ab$$a")...),
		"long dollar tag":        append(append([]byte("$"), append(rep("t"), '$')...), rep("$t")...),
		"open parens":            rep("("),
		"set_config calls":       rep("set_config("),
		"nested set_config":      rep("set_config('a', "),
		"advisory lock names":    rep("pg_advisory_lock "),
		"comment openers":        rep("/*"),
		"uescape lookahead":      rep(`U&"x"  /* c */ `),
		"string continuations":   rep("'a'\n"),
		"E string backslashes":   append([]byte("E'"), rep(`\\`)...),
		"into temp":              rep("SELECT 1 INTO TEMP "),
		"semicolons":             rep(";"),
		"begin atomic":           append([]byte("CREATE FUNCTION f() BEGIN ATOMIC "), rep("CASE ")...),
		"quoted identifiers":     rep(`"a""b" `),
		"unicode identifiers":    rep(`U&"\0061\+000062" `),
		"explain options":        append([]byte("EXPLAIN ("), rep("ANALYZE, ")...),
		"dotted set":             append([]byte("SET "), rep("a.")...),
		"line comments":          rep("--\n"),
		"numbers":                rep("1.5e10 "),
		"statements with pins":   rep("SET ROLE x; "),
		"quoted pg_temp":         rep(`"pg_temp". `),
		"deallocate statements":  rep(`DEALLOCATE "X"; `),
		"search_path statements": rep("SET search_path TO a, b; "),
	} {
		t.Run(name, func(t *testing.T) {
			var s Session
			AnalyzeSession(sql, &s)
			checkSession(t, sql, &s)
		})
	}
}

// TestAnalyzeSessionRefsAndResets: statements that name prepared statements (with where the name
// is, so it can be replaced) and parameters returned to their defaults.
func TestAnalyzeSessionRefsAndResets(t *testing.T) {
	type ref struct {
		kind RefKind
		name string // "" for a name that cannot be read
		at   string // the text at Start:End
	}
	x, d, all, p := RefExecute, RefDeallocate, RefDeallocateAll, RefPrepare
	for _, tc := range []struct {
		sql      string
		refs     []ref
		overflow bool
		resetAll bool
		resets   []string
		resetOvf bool
	}{
		{sql: "SELECT 1"},
		{sql: "DEALLOCATE drv_1", refs: []ref{{d, "drv_1", "drv_1"}}},
		{sql: `deallocate prepare "Q""1"`, refs: []ref{{d, `Q"1`, `"Q""1"`}}},
		{sql: "DEALLOCATE ALL", refs: []ref{{all, "", ""}}},
		{sql: "EXECUTE s1(1, 'a')", refs: []ref{{x, "s1", "s1"}}},
		{sql: "execute S1", refs: []ref{{x, "s1", "S1"}}},
		{sql: "EXPLAIN (ANALYZE) EXECUTE q(2)", refs: []ref{{x, "q", "q"}}},
		{sql: "CREATE TABLE t (a int, b text) AS EXECUTE q(2)", refs: []ref{{x, "q", "q"}}},
		{sql: "create table t as execute \"Q\"", refs: []ref{{x, "Q", `"Q"`}}},
		{sql: "CREATE TABLE t AS SELECT 1 AS execute"},
		{sql: "PREPARE p1 (int) AS SELECT $1", refs: []ref{{p, "p1", "p1"}}},
		{sql: "SELECT 0; EXECUTE a(1); DEALLOCATE b; DISCARD ALL", refs: []ref{{x, "a", "a"}, {d, "b", "b"}, {all, "", ""}}, resetAll: true},
		{sql: "DEALLOCATE"}, // a syntax error: the server deallocates nothing
		{sql: "SELECT 'EXECUTE x'"},
		{sql: strings.Repeat("EXECUTE a; ", 9), refs: []ref{{x, "a", "a"}, {x, "a", "a"}, {x, "a", "a"},
			{x, "a", "a"}, {x, "a", "a"}, {x, "a", "a"}, {x, "a", "a"}, {x, "a", "a"}}, overflow: true},
		{sql: "RESET ALL", resetAll: true},
		{sql: "DISCARD ALL", refs: []ref{{all, "", ""}}, resetAll: true},
		{sql: "RESET Statement_Timeout", resets: []string{"statement_timeout"}},
		{sql: "SET work_mem TO DEFAULT; SET SESSION application_name = default", resets: []string{"work_mem", "application_name"}},
		{sql: "SET search_path TO DEFAULT", resets: []string{"search_path"}},
		{sql: "SET LOCAL work_mem TO DEFAULT"},
		{sql: "SET work_mem TO 'default'"},
		{sql: "RESET a; RESET b; RESET c; RESET d; RESET e", resets: []string{"a", "b", "c", "d"}, resetOvf: true},
		{sql: "RESET " + strings.Repeat("x", 70), resets: []string{strings.Repeat("x", 63)}}, // truncated as the server does
		{sql: "RESET a" + strings.Repeat(".b", 40), resetOvf: true},
	} {
		var s Session
		sql := []byte(tc.sql)
		AnalyzeSession(sql, &s)
		var got []ref
		for _, r := range s.Refs {
			got = append(got, ref{r.Kind, string(r.Name), string(sql[r.Start:r.End])})
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.refs) || s.RefsOverflow != tc.overflow {
			t.Errorf("%q: refs %v overflow %v, want %v %v", tc.sql, got, s.RefsOverflow, tc.refs, tc.overflow)
		}
		var resets []string
		for _, r := range s.Resets {
			resets = append(resets, string(r))
		}
		if s.ResetAll != tc.resetAll || fmt.Sprint(resets) != fmt.Sprint(tc.resets) || s.ResetsOverflow != tc.resetOvf {
			t.Errorf("%q: ResetAll %v resets %v overflow %v, want %v %v %v", tc.sql, s.ResetAll, resets, s.ResetsOverflow,
				tc.resetAll, tc.resets, tc.resetOvf)
		}
		if (len(s.Refs) > 0 || s.ResetAll || len(s.Resets) > 0 || s.ResetsOverflow) && !MaySetSessionState(sql) {
			t.Errorf("%q: MaySetSessionState is false", tc.sql)
		}
	}
}
