package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"pgtide/internal/pgcluster"
)

// config is one cell of the matrix: a pgbench query mode (-M), a client
// count (-c) and whether every transaction opens a new connection (-C).
type config struct {
	mode      string // simple, extended, prepared
	clients   int
	reconnect bool
}

func (c config) String() string {
	s := fmt.Sprintf("%s c=%d", c.mode, c.clients)
	if c.reconnect {
		s += " -C"
	}
	return s
}

// pgbenchResult is what one pgbench run reported.
type pgbenchResult struct {
	tps       float64 // excluding initial connection time (including reconnects with -C)
	latencyMs float64 // latency average
	connectMs float64 // initial connection time (average connection time with -C)
	txns      int64   // number of transactions actually processed
	failed    int64   // number of failed transactions
	aborted   bool    // a client aborted or pgbench itself failed
	errLines  []string
	// p50 and p99 come from the per-transaction log; zero when not logged.
	p50, p99 time.Duration
}

func (r *pgbenchResult) ok() bool { return !r.aborted && r.failed == 0 }

var (
	reTxns    = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	reFailed  = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	reLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	reTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	reConnect = regexp.MustCompile(`(?m)^(?:initial|average) connection time = ([0-9.]+) ms`)
)

// runPgbench runs pgbench -S against t for the configuration and seconds.
// With logDir set it writes a per-transaction log under it, computes p50
// and p99 from that and removes it. A pgbench that fails or whose clients abort gives a
// result with aborted set, not an error; errors are for not being able to
// run pgbench at all or ctx ending.
func runPgbench(ctx context.Context, t *target, c config, seconds int, logDir string) (*pgbenchResult, error) {
	host, port := t.hostPort()
	threads := 1
	if c.clients >= 2 {
		threads = 2
	}
	args := []string{"-n", "-S", "-M", c.mode,
		"-c", strconv.Itoa(c.clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(seconds),
		"-h", host, "-p", port, "-U", "postgres"}
	if c.reconnect {
		args = append(args, "-C")
	}
	prefix := ""
	if logDir != "" {
		// A directory per run, so that no run reads another's logs.
		dir, err := os.MkdirTemp(logDir, "txlog-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		prefix = filepath.Join(dir, "txlog")
		args = append(args, "-l", "--log-prefix="+prefix)
	}
	args = append(args, "postgres")

	// pgbench needs far longer than -T only when connecting stalls; the
	// bound keeps a wedged proxy from hanging the whole benchmark.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = pgcluster.CleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, runErr := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("pgbench %s against %s: %w", c, t.name, ctx.Err())
	}
	r := parsePgbench(string(out))
	if runErr != nil {
		r.aborted = true
		if len(r.errLines) == 0 {
			r.errLines = append(r.errLines, fmt.Sprintf("pgbench: %v", runErr))
		}
	}
	if prefix != "" {
		p50, p99, err := logPercentiles(prefix)
		if err != nil && r.ok() {
			return nil, err
		}
		r.p50, r.p99 = p50, p99
	}
	return r, nil
}

// parsePgbench reads pgbench's summary. Missing figures stay zero; a
// missing tps line counts as aborted.
func parsePgbench(out string) *pgbenchResult {
	r := &pgbenchResult{}
	if m := reTxns.FindStringSubmatch(out); m != nil {
		r.txns, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reFailed.FindStringSubmatch(out); m != nil {
		r.failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reLatency.FindStringSubmatch(out); m != nil {
		r.latencyMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reConnect.FindStringSubmatch(out); m != nil {
		r.connectMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reTPS.FindStringSubmatch(out); m != nil {
		r.tps, _ = strconv.ParseFloat(m[1], 64)
	} else {
		r.aborted = true
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, line := range lines {
		if strings.Contains(line, "aborted") || strings.Contains(line, "error") || strings.Contains(line, "FATAL") {
			r.aborted = true
			if len(r.errLines) < 3 {
				r.errLines = append(r.errLines, strings.TrimSpace(line))
			}
		}
	}
	if r.aborted && len(r.errLines) == 0 && reTxns.MatchString(out) && r.txns == 0 {
		// pgbench's -T clock includes connecting; pgbench prints no tps
		// when connecting took all of it.
		r.errLines = []string{"no transaction completed: connecting took the whole -T"}
	}
	if r.aborted && len(r.errLines) == 0 {
		// No line says what went wrong: the end of the output is the best
		// clue.
		r.errLines = lines[max(0, len(lines)-3):]
	}
	return r
}

// logPercentiles reads the per-transaction logs pgbench wrote under prefix
// (prefix.PID, prefix.PID.THREAD) and returns the median and 99th
// percentile of the transaction times. Lines are "client_id
// transaction_no time_us script_no epoch epoch_us"; failed transactions
// have "failed" instead of a time and are skipped.
func logPercentiles(prefix string) (p50, p99 time.Duration, err error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return 0, 0, err
	}
	var us []int64
	for _, f := range files {
		if err := readLogTimes(f, &us); err != nil {
			return 0, 0, err
		}
	}
	if len(us) == 0 {
		return 0, 0, fmt.Errorf("no transactions in pgbench logs %s.*", prefix)
	}
	slices.Sort(us)
	return time.Duration(percentile(us, 0.50)) * time.Microsecond,
		time.Duration(percentile(us, 0.99)) * time.Microsecond, nil
}

func readLogTimes(path string, us *[]int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		if v, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
			*us = append(*us, v)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// percentile returns the nearest-rank q-quantile of sorted values.
func percentile(sorted []int64, q float64) int64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
