package proxy_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/router"
	"pgtide/internal/session"
)

// TestFailoverMeasure measures what clients see of a failover, as issue 11 did: 20 writers (one
// INSERT every 100 ms each, spread over the period, writer endpoint) and 5 readers (reader
// endpoint) while the primary is stopped fast and a replica promoted, with retry_on_failover off
// and on in turn, in the same run; and the same with INSERTs that take 50 ms, so that about half
// the writers have one in flight when the primary stops. It logs acknowledged writes lost, client
// errors by SQLSTATE (a write run twice would be 23505: the key is the client and its sequence
// number) and the longest gap between successful writes. Opt-in,
// PGTIDE_FAILOVER_MEASURE=<rounds>: its figures measure the machine as much as pgtide, so it
// asserts only that no acknowledged write is lost.
func TestFailoverMeasure(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("PGTIDE_FAILOVER_MEASURE"))
	if rounds <= 0 {
		t.Skip("set PGTIDE_FAILOVER_MEASURE=<rounds> to measure failovers")
	}
	var lines []string
	for round := 1; round <= rounds; round++ {
		for _, insert := range []string{"INSERT INTO acked VALUES ($1, $2)", "INSERT INTO acked SELECT $1, $2 FROM pg_sleep(0.05)"} {
			for _, retry := range []bool{false, true} {
				var m failoverFigures
				slow := strings.Contains(insert, "pg_sleep")
				t.Run(fmt.Sprintf("round%d/slow=%v/retry_on_failover=%v", round, slow, retry), func(t *testing.T) { m = measureFailover(t, insert, retry) })
				lines = append(lines, fmt.Sprintf("round %d, 50 ms INSERTs %-5v, retry_on_failover %-5v: %s", round, slow, retry, m))
			}
		}
	}
	t.Logf("failover figures:\n%s", strings.Join(lines, "\n"))
}

// failoverFigures is what one measured failover showed clients.
type failoverFigures struct {
	acked, lost     int
	writeErrors     map[string]int // by SQLSTATE ("conn" for errors without one)
	readErrors      map[string]int
	longestWriteGap time.Duration // between two successful writes, any clients
	firstWrite      time.Duration // from the promotion's return to the next successful write
	retried, unsafe int64
}

func (f failoverFigures) String() string {
	codes := func(m map[string]int) string {
		if len(m) == 0 {
			return "none"
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
		}
		return strings.Join(parts, " ")
	}
	return fmt.Sprintf("acked %d, lost %d; write errors %s; read errors %s; longest write gap %s; first write %s after the promotion; re-run %d, unsafe %d",
		f.acked, f.lost, codes(f.writeErrors), codes(f.readErrors), f.longestWriteGap.Round(time.Millisecond),
		f.firstWrite.Round(time.Millisecond), f.retried, f.unsafe)
}

func measureFailover(t *testing.T, insert string, retry bool) failoverFigures {
	c := startCluster(t, 2)
	ctx := context.Background()
	if err := execOn(ctx, c.Primary(), "postgres", "appdb",
		"CREATE TABLE acked (client int, seq int, PRIMARY KEY (client, seq))", "ALTER TABLE acked OWNER TO app"); err != nil {
		t.Fatal(err)
	}
	if err := replayed(ctx, c, "appdb", "SELECT to_regclass('acked') IS NOT NULL"); err != nil {
		t.Fatal(err)
	}
	p := clusterProxy(t, c, func(cfg *config.Config) {
		cfg.Cluster.PoolSize = 25
		cfg.Proxy.RetryOnFailover = retry
	})

	const writers, readers = 20, 5
	var (
		mu        sync.Mutex
		successes []time.Time // when each successful write returned
		acked     = map[[2]int]bool{}
		figures   = failoverFigures{writeErrors: map[string]int{}, readErrors: map[string]int{}}
	)
	failed := func(errs map[string]int, err error) {
		code := pgCode(err)
		if code == "" {
			code = "conn"
		}
		mu.Lock()
		errs[code]++
		mu.Unlock()
	}
	loadCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// client runs step every 100 ms, starting after offset, on a connection to ep until the load
	// stops, reconnecting after a failure that closed it, as an application would.
	client := func(ep router.Route, offset time.Duration, errs map[string]int, step func(*pgx.Conn, int) error) {
		defer wg.Done()
		select {
		case <-time.After(offset):
		case <-loadCtx.Done():
		}
		var conn *pgx.Conn
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; loadCtx.Err() == nil; n++ {
			if conn == nil || conn.IsClosed() {
				var err error
				if conn, err = pgx.Connect(ctx, p.endpointConnString(ep)); err != nil {
					failed(errs, err)
					conn = nil
				}
			}
			if conn != nil {
				if err := step(conn, n); err != nil {
					failed(errs, err)
				}
			}
			select {
			case <-tick.C:
			case <-loadCtx.Done():
			}
		}
		if conn != nil {
			conn.Close(ctx)
		}
	}
	for i := range writers {
		wg.Add(1)
		go client(router.Writer, time.Duration(i)*100*time.Millisecond/writers, figures.writeErrors, func(conn *pgx.Conn, seq int) error {
			if _, err := conn.Exec(ctx, insert, i, seq); err != nil {
				return err
			}
			mu.Lock()
			successes = append(successes, time.Now())
			acked[[2]int{i, seq}] = true
			mu.Unlock()
			return nil
		})
	}
	for i := range readers {
		wg.Add(1)
		go client(router.Reader, time.Duration(i)*100*time.Millisecond/readers, figures.readErrors, func(conn *pgx.Conn, _ int) error {
			return conn.QueryRow(ctx, "SELECT count(*) FROM acked").Scan(new(int))
		})
	}
	writes := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(successes)
	}
	waitFor(t, time.Minute, "the load to get going", func() bool { return writes() > 20*writers })

	if err := c.Primary().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	newWriter := c.Replicas()[0]
	if err := newWriter.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	before := writes()
	waitFor(t, time.Minute, "writes on the new writer", func() bool { return writes() > before+20*writers })
	stop()
	wg.Wait()

	slices.SortFunc(successes, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(successes); i++ {
		figures.longestWriteGap = max(figures.longestWriteGap, successes[i].Sub(successes[i-1]))
		if figures.firstWrite == 0 && successes[i].After(promoted) {
			figures.firstWrite = successes[i].Sub(promoted)
		}
	}
	present := map[[2]int]bool{}
	res, err := nodeConn(t, newWriter, "appdb").Query(ctx, "SELECT client, seq FROM acked")
	if err != nil {
		t.Fatal(err)
	}
	for res.Next() {
		var k [2]int
		if err := res.Scan(&k[0], &k[1]); err != nil {
			t.Fatal(err)
		}
		present[k] = true
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	figures.acked = len(acked)
	for k := range acked {
		if !present[k] {
			figures.lost++
		}
	}
	if figures.lost > 0 {
		t.Errorf("%d acknowledged writes are missing on the new writer", figures.lost)
	}
	figures.retried = p.Routes().FailoverRetries(session.FailoverRetried)
	figures.unsafe = p.Routes().FailoverRetries(session.FailoverUnsafe)
	return figures
}
