package cluster

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgtide/internal/pgcluster"
)

// The health-check login of the Aurora tests: its search_path puts
// aurora_shadow before pg_catalog, so the functions there shadow the
// built-in ones of the same name (pg_catalog must be named: left out, it is
// searched first).
const (
	auroraUser   = "pgtide_aurora"
	auroraSchema = "aurora_shadow"
)

// refuse returns SQL defining aurora_shadow.fn() to fail as Aurora does.
func refuse(fn, returns, sqlstate, msg string) string {
	return fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s.%s() RETURNS %s LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION '%s' USING ERRCODE = '%s'; END $$`, auroraSchema, fn, returns, strings.ReplaceAll(msg, "'", "''"), sqlstate)
}

// auroraRefusals makes the WAL functions fail for auroraUser as they do on
// Aurora PostgreSQL.
var auroraRefusals = []string{
	refuse("pg_last_wal_receive_lsn", "pg_lsn", "0A000", "Function pg_last_xlog_receive_location() is currently not supported for Aurora"),
	refuse("pg_last_wal_replay_lsn", "pg_lsn", "0A000", "Function pg_last_xlog_replay_location() is currently not supported for Aurora"),
	refuse("pg_last_xact_replay_timestamp", "timestamptz", "0A000", "Function pg_last_xact_replay_timestamp() is currently not supported for Aurora"),
	// Aurora's writer refuses them too.
	refuse("pg_current_wal_lsn", "pg_lsn", "55000", "wal_level must be set to 'logical'"),
	refuse("pg_current_wal_flush_lsn", "pg_lsn", "55000", "wal_level must be set to 'logical'"),
}

// setUpAurora makes the primary (and so its replicas) look like Aurora to
// auroraUser: its WAL functions refused, and, if stubs, aurora_version(),
// aurora_db_instance_identifier() (each node answers its port) and
// aurora_replica_status() (the given rows). Undone when the test ends.
func setUpAurora(t *testing.T, pc *pgcluster.Cluster, stubs bool, rows ...replicaStatus) {
	t.Helper()
	primary := pc.Primary()
	t.Cleanup(func() {
		execSQL(t, primary, "DROP SCHEMA IF EXISTS "+auroraSchema+" CASCADE", "DROP ROLE IF EXISTS "+auroraUser)
	})
	stmts := []string{
		"CREATE ROLE " + auroraUser + " LOGIN",
		"CREATE SCHEMA " + auroraSchema,
		"GRANT USAGE ON SCHEMA " + auroraSchema + " TO " + auroraUser,
		"ALTER ROLE " + auroraUser + " SET search_path = " + auroraSchema + ", pg_catalog, public",
	}
	stmts = append(stmts, auroraRefusals...)
	if stubs {
		stmts = append(stmts,
			"CREATE FUNCTION "+auroraSchema+".aurora_version() RETURNS text LANGUAGE sql AS $$ SELECT '15.4.3' $$",
			"CREATE FUNCTION "+auroraSchema+".aurora_db_instance_identifier() RETURNS text LANGUAGE sql AS $$ SELECT current_setting('port') $$",
			replicaStatusStub(auroraSchema+".aurora_replica_status", rows...))
	}
	execSQL(t, primary, stmts...)
	syncReplicas(t, pc)
}

// nodeLag checks a node's lag, bytes lag and position.
func nodeLag(n *Node, lag time.Duration, lagBytes int64, lsn uint64) error {
	if n.Lag() != lag || n.LagBytes() != lagBytes || n.ReplayLSN() != lsn {
		return fmt.Errorf("%s: lag %v, %d bytes, position %d; want %v, %d, %d", n, n.Lag(), n.LagBytes(), n.ReplayLSN(), lag, lagBytes, lsn)
	}
	return nil
}

// On Aurora (here a local cluster whose WAL functions fail as Aurora's do,
// with Aurora's functions stubbed) the health check never calls the WAL
// functions: readers stay readers, and their lag comes from their rows in
// aurora_replica_status(), found through aurora_db_instance_identifier().
func TestAuroraHealthCheck(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	port := func(i int) string { return strconv.Itoa(pg[i].Port()) }
	// LSNs past 32 bits, as decimal numbers.
	writerRow := replicaStatus{serverID: port(0), writer: true, lagMS: "NULL", durableLSN: "5000000000", currentReadLSN: "NULL"}
	setUpAurora(t, pc, true,
		writerRow,
		replicaStatus{serverID: port(1), lagMS: "1234.5", durableLSN: "4999000000", currentReadLSN: "4998000000"},
		// Without durable_lsn: current_read_lsn.
		replicaStatus{serverID: port(2), lagMS: "20", durableLSN: "NULL", currentReadLSN: "4999500000"},
	)
	var queries queryCounter
	start := time.Now()
	tc := runCluster(t, Config{
		Hosts:               hostsOf(pg),
		User:                auroraUser,
		HealthCheckInterval: 100 * time.Millisecond,
		HealthCheckTimeout:  5 * time.Second,
		Dial:                queries.dial,
	})
	tc.waitChecked(t)
	w, r1, r2 := tc.node(pg[0].Addr()), tc.node(pg[1].Addr()), tc.node(pg[2].Addr())
	waitFor(t, 30*time.Second, "roles and lag from aurora_replica_status()", func() error {
		if err := tc.writerIs(w.Addr()); err != nil {
			return err
		}
		for _, r := range []*Node{r1, r2} {
			if err := tc.nodeIs(r.Addr(), true, RoleReader); err != nil {
				return err
			}
		}
		if err := nodeLag(w, 0, 0, 5000000000); err != nil {
			return err
		}
		if err := nodeLag(r1, 1234500*time.Microsecond, 1000000, 4999000000); err != nil {
			return err
		}
		return nodeLag(r2, 20*time.Millisecond, 500000, 4999500000)
	})
	if lsn, ok := tc.WriterLSNAfter(start); !ok || lsn != 5000000000 {
		t.Errorf("WriterLSNAfter = %d, %v; want the writer's durable_lsn 5000000000", lsn, ok)
	}
	for _, n := range []*Node{w, r1, r2} {
		if c := tc.logs.countAddr(slog.LevelInfo, "health check: server kind", n.Addr()); c != 1 {
			t.Errorf("%s: Aurora detection logged %d times, want 1", n, c)
		}
	}

	// The readers catch up.
	execSQL(t, pc.Primary(), replicaStatusStub(auroraSchema+".aurora_replica_status",
		writerRow,
		replicaStatus{serverID: port(1), lagMS: "0", durableLSN: "5000000000", currentReadLSN: "NULL"},
		replicaStatus{serverID: port(2), lagMS: "0", durableLSN: "5000000000", currentReadLSN: "NULL"}))
	waitFor(t, 30*time.Second, "readers caught up", func() error {
		for _, r := range []*Node{r1, r2} {
			if err := nodeLag(r, 0, 0, 5000000000); err != nil {
				return err
			}
		}
		return nil
	})

	// One query per check once connected: checks are seen by LastCheck moving on, and no two
	// start less than an interval (-10%) apart.
	before := time.Now()
	sent, last := queries.count(r1.Addr()).Load(), r1.LastCheck()
	checks := int64(0)
	waitFor(t, 30*time.Second, "five more checks of a reader", func() error {
		if l := r1.LastCheck(); l.After(last) {
			checks, last = checks+1, l
		}
		if checks < 5 {
			return fmt.Errorf("%d checks", checks)
		}
		return nil
	})
	// A check under way when the counting began has its query counted on one side of the start
	// and its end on the other: one query either way is that check's.
	q, most := queries.count(r1.Addr()).Load()-sent, int64(time.Since(before)/(90*time.Millisecond))+1
	if q < checks-1 || q > most+1 {
		t.Errorf("%d queries for at least %d and at most %d checks", q, checks, most)
	}
	if n := tc.logs.count(slog.LevelWarn, "health query refused"); n != 0 {
		t.Errorf("%d health queries refused", n)
	}
}

// Plain PostgreSQL whose WAL functions are refused (no aurora_version(), so
// not taken for Aurora): every check fails, the SQL error is warned once per
// node however many checks fail, again when the error changes, and a line
// says when checks are answered again.
func TestHealthQueryRefused(t *testing.T) {
	checkNoLeaks(t)
	pc := sharedCluster(t)
	pg := pc.Nodes()
	setUpAurora(t, pc, false)
	tc := runCluster(t, Config{
		Hosts:               hostsOf(pg),
		User:                auroraUser,
		HealthCheckInterval: 50 * time.Millisecond,
		HealthCheckTimeout:  5 * time.Second,
	})
	tc.waitChecked(t)
	since := time.Time{}
	failed := func(n int) func() error {
		return func() error {
			for _, p := range pg {
				if c := tc.logs.failedChecks(p.Addr(), since); c < n {
					return fmt.Errorf("%s: %d failed checks", p.Name(), c)
				}
			}
			return nil
		}
	}
	waitFor(t, 30*time.Second, "five failed checks of every node", failed(5))
	warned := func(addr string) int {
		return tc.logs.countAddr(slog.LevelWarn, "health query refused by the server", addr)
	}
	for i, p := range pg {
		if err := tc.nodeIs(p.Addr(), false, RoleUnknown); err != nil {
			t.Error(err)
		}
		if c := warned(p.Addr()); c != 1 {
			t.Errorf("%s: refusal warned %d times, want 1", p.Name(), c)
		}
		want := "0A000 Function pg_last_xlog_replay_location() is currently not supported for Aurora"
		if i == 0 {
			want = "55000 wal_level must be set to 'logical'"
		}
		if got := tc.logs.refusal(p.Addr()); got != want {
			t.Errorf("%s: refusal warned as %q, want %q", p.Name(), got, want)
		}
	}

	// Another error: warned once more.
	execSQL(t, pc.Primary(), refuse("pg_last_wal_replay_lsn", "pg_lsn", "0A000", "still not supported"))
	since = time.Now()
	waitFor(t, 30*time.Second, "five checks failing with the new error", failed(5))
	for _, p := range pg[1:] {
		if c := warned(p.Addr()); c != 2 {
			t.Errorf("%s: refusals warned %d times, want 2", p.Name(), c)
		}
		if got := tc.logs.refusal(p.Addr()); got != "0A000 still not supported" {
			t.Errorf("%s: new refusal warned as %q", p.Name(), got)
		}
	}

	// The built-in functions again: answered, a line for each node, and no more warnings.
	// The schema loses its place in the checker's search path rather than being dropped:
	// a check that looked a function up as DROP SCHEMA committed would fail with "schema
	// with OID n does not exist", a third error warned as such.
	execSQL(t, pc.Primary(), "REVOKE USAGE ON SCHEMA "+auroraSchema+" FROM "+auroraUser)
	waitFor(t, 30*time.Second, "nodes up", func() error {
		if err := tc.writerIs(pg[0].Addr()); err != nil {
			return err
		}
		for _, p := range pg[1:] {
			if err := tc.nodeIs(p.Addr(), true, RoleReader); err != nil {
				return err
			}
		}
		return nil
	})
	for i, p := range pg {
		if c := tc.logs.countAddr(slog.LevelInfo, "health query answered again", p.Addr()); c != 1 {
			t.Errorf("%s: answered again logged %d times, want 1", p.Name(), c)
		}
		want := 2
		if i == 0 {
			want = 1
		}
		if c := warned(p.Addr()); c != want {
			t.Errorf("%s: refusals warned %d times, want %d", p.Name(), c, want)
		}
	}
}

// refusal returns the SQLSTATE and message of the last refusal warned for addr.
func (h *logRecorder) refusal(addr string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	got := ""
	for _, r := range h.recs {
		if r.Message != "health query refused by the server" {
			continue
		}
		var a, code, msg string
		r.Attrs(func(at slog.Attr) bool {
			switch at.Key {
			case "addr":
				a = at.Value.String()
			case "sqlstate":
				code = at.Value.String()
			case "err":
				msg = at.Value.String()
			}
			return true
		})
		if a == addr {
			got = strings.TrimSpace(code + " " + msg)
		}
	}
	return got
}
