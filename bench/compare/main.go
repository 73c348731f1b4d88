// Command compare benchmarks pgtide against PgBouncer and against
// PostgreSQL itself with pgbench -S, on a throwaway local cluster, and
// prints the results as Markdown tables. It is a benchmark, not a test: CI
// does not run it. See bench/README.md.
//
// It owns everything it starts (the cluster, both proxies, pgbench runs)
// and a temporary directory; all are stopped and removed on exit,
// including on Ctrl-C.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgcluster"
)

// options are the command-line flags.
type options struct {
	duration    time.Duration
	clients     []int
	modes       []string
	poolSize    int
	scale       int
	idleClients int
	rounds      int
	pgbouncer   string // binary; "" when not found
	haproxy     string // binary; "" when not found
	pgtide      string // prebuilt binary; "" builds ./cmd/pgtide
	evloop      string // the bench/evloop prototype's binary; "" skips it
	evloopLoops int
	writer      bool // -pgtide-endpoints has writer: pgtide's writer endpoint is measured too
	keep        bool
}

func main() { os.Exit(run()) }

func run() int {
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseFileLimit()

	b := &bench{opts: opts, runs: map[config]map[string][]*runResult{}, results: map[config]map[string]*runResult{},
		idle: map[string]idleResult{}}
	defer b.close()
	if err := b.setup(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	b.runAll(ctx)
	b.report(os.Stdout)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "compare: interrupted; the tables above are partial")
		return 130
	case b.failures() > 0:
		fmt.Fprintf(os.Stderr, "compare: %d run(s) had failed transactions or pgbench errors\n", b.failures())
		return 1
	}
	return 0
}

func parseFlags() (options, error) {
	var o options
	var clients, modes, pgbouncer, haproxy, endpoints string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each pgbench run (-T), whole seconds")
	flag.StringVar(&clients, "clients", "1,16,64,256,1000", "comma-separated client counts (-c)")
	flag.StringVar(&modes, "modes", "simple,extended,prepared", "comma-separated pgbench query modes (-M)")
	flag.IntVar(&o.poolSize, "pool-size", 20, "server connections per pool for both proxies")
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale factor (pgbench -i -s)")
	flag.IntVar(&o.idleClients, "idle-clients", 1000, "idle clients for the RSS-per-idle-client measurement (0 skips it)")
	flag.IntVar(&o.rounds, "rounds", 1, "run the whole matrix this many times and report each cell's median run")
	flag.StringVar(&pgbouncer, "pgbouncer", "pgbouncer", "PgBouncer binary; skipped when not found")
	flag.StringVar(&haproxy, "haproxy", "haproxy", "HAProxy binary, the TCP-only reference; skipped when not found")
	flag.StringVar(&o.pgtide, "pgtide", "", "prebuilt pgtide binary to measure instead of building ./cmd/pgtide")
	flag.StringVar(&o.evloop, "evloop", "", "prebuilt bench/evloop prototype to measure as one more column (go build -o PATH ./bench/evloop)")
	flag.IntVar(&o.evloopLoops, "evloop-loops", 1, "event loops for the -evloop prototype")
	flag.StringVar(&endpoints, "pgtide-endpoints", "auto", "pgtide endpoints to measure: auto (the pgtide column), or auto,writer to add "+
		"a pgtide-writer column (a second pgtide process with only the writer endpoint) and the auto/writer ratios")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, proxy logs) and print its path")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `Usage: go run ./bench/compare [flags]

Starts a local PostgreSQL primary, PgBouncer and pgtide (both in transaction mode with the
same pool size) and runs pgbench -S against all three for each query mode and client count,
then prints Markdown tables. Quick look: -duration 3s -clients 1,16,64

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	if o.duration < time.Second || o.duration%time.Second != 0 {
		return o, fmt.Errorf("-duration %v: must be whole seconds, at least 1s", o.duration)
	}
	for f := range strings.SplitSeq(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-clients %q: %q is not a positive number", clients, f)
		}
		o.clients = append(o.clients, n)
	}
	for f := range strings.SplitSeq(modes, ",") {
		m := strings.TrimSpace(f)
		if m != "simple" && m != "extended" && m != "prepared" {
			return o, fmt.Errorf("-modes %q: %q is not simple, extended or prepared", modes, m)
		}
		o.modes = append(o.modes, m)
	}
	if o.poolSize < 1 {
		return o, errors.New("-pool-size must be at least 1")
	}
	if o.scale < 1 {
		return o, errors.New("-scale must be at least 1")
	}
	if o.idleClients < 0 {
		return o, errors.New("-idle-clients must not be negative")
	}
	if o.rounds < 1 {
		return o, errors.New("-rounds must be at least 1")
	}
	if o.evloopLoops < 1 {
		return o, errors.New("-evloop-loops must be at least 1")
	}
	auto := false
	for f := range strings.SplitSeq(endpoints, ",") {
		switch e := strings.TrimSpace(f); e {
		case "auto":
			auto = true
		case "writer":
			o.writer = true
		default:
			return o, fmt.Errorf("-pgtide-endpoints %q: %q is not auto or writer", endpoints, e)
		}
	}
	if !auto {
		return o, fmt.Errorf("-pgtide-endpoints %q: auto is measured always (the pgtide column); say auto or auto,writer", endpoints)
	}
	if path, err := exec.LookPath(pgbouncer); err == nil {
		o.pgbouncer = path
	}
	if path, err := exec.LookPath(haproxy); err == nil {
		o.haproxy = path
	}
	return o, nil
}

// raiseFileLimit lifts the soft open-files limit to the hard one. Calling
// Setrlimit ourselves also makes os/exec pass the raised limit on to
// pgbench and the proxies, which each need over a thousand descriptors.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		fmt.Fprintln(os.Stderr, "compare: raise the open-files limit:", err)
	}
}

// bench is one benchmark session. Everything is owned by the goroutine
// running run; only the helpers it calls start goroutines, and they end
// before returning.
type bench struct {
	opts    options
	dir     string // temporary directory: proxy binary, configs, logs
	cluster *pgcluster.Cluster
	monitor *pgconn.PgConn // superuser connection to the primary, for waitBackendsGone
	targets []*target      // direct, HAProxy and PgBouncer (if installed), pgtide
	env     environment

	configs []config                           // in run order
	runs    map[config]map[string][]*runResult // every run, by target name, in round order
	results map[config]map[string]*runResult   // the run each table shows: see median
	idle    map[string]idleResult              // by target name
}

// runResult is one pgbench run against one target plus what we measured
// of the proxy process meanwhile.
type runResult struct {
	*pgbenchResult     // nil when err is set
	err                error
	cpuSec             float64 // proxy CPU seconds during the run; -1 for direct
	rssBefore, rssPeak int64   // proxy VmRSS before and at most during the run
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	b.dir, err = os.MkdirTemp("", "pgtide-bench-")
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 && b.opts.pgbouncer != "" {
		// PgBouncer runs as postgres and writes its log here.
		cred, err := pgcluster.ServerCredential()
		if err != nil {
			return err
		}
		if err := os.Chown(b.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}

	bin, srcDir := b.opts.pgtide, ""
	if bin == "" {
		progress("building pgtide")
		if srcDir, err = moduleRoot(ctx); err != nil {
			return err
		}
		if bin, err = buildPgtide(ctx, srcDir, b.dir); err != nil {
			return err
		}
	}
	progress("starting PostgreSQL and loading pgbench -i -s %d", b.opts.scale)
	b.cluster, err = startCluster(ctx, b.opts.scale)
	if err != nil {
		return err
	}
	primary := b.cluster.Primary().Addr()
	direct := &target{name: nameDirect, addr: primary}
	b.monitor, err = pgconn.Connect(ctx, direct.connString())
	if err != nil {
		return fmt.Errorf("connect to the primary: %w", err)
	}
	b.targets = append(b.targets, direct)

	if b.opts.haproxy != "" {
		progress("starting HAProxy (TCP mode, the reference for one more hop)")
		t, err := startHAProxy(ctx, b.opts.haproxy, b.dir, primary)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	} else {
		progress("HAProxy not found: its reference column is skipped (install it with make bench-deps)")
	}
	if b.opts.pgbouncer != "" {
		progress("starting PgBouncer")
		t, err := startPgBouncer(ctx, b.opts.pgbouncer, b.dir, primary, b.opts.poolSize)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	} else {
		progress("PgBouncer not found: skipped (install it with make bench-deps)")
	}
	progress("starting pgtide")
	t, err := startPgtide(ctx, bin, b.dir, primary, b.opts.poolSize, namePgtide)
	if err != nil {
		return err
	}
	b.targets = append(b.targets, t)
	if b.opts.writer {
		progress("starting pgtide with its writer endpoint")
		t, err := startPgtide(ctx, bin, b.dir, primary, b.opts.poolSize, namePgtideWriter)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	if b.opts.evloop != "" {
		progress("starting the evloop prototype (%d loop(s))", b.opts.evloopLoops)
		t, err := startEvloop(ctx, b.opts.evloop, b.dir, primary, b.opts.poolSize, b.opts.evloopLoops)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}

	b.env = readEnvironment(ctx, b.monitor, bin, srcDir, b.opts.pgbouncer, b.opts.haproxy)
	return nil
}

// close stops everything setup started, proxies before the server, and
// removes the temporary directory unless -keep.
func (b *bench) close() {
	for _, t := range slices.Backward(b.targets) {
		if t.proc != nil {
			t.proc.stop()
		}
	}
	if b.monitor != nil {
		b.monitor.Close(context.Background())
	}
	if b.cluster != nil {
		if err := b.cluster.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "compare: stop the cluster:", err)
		}
	}
	if b.dir == "" {
		return
	}
	if b.opts.keep {
		fmt.Fprintln(os.Stderr, "compare: kept", b.dir)
		return
	}
	if err := os.RemoveAll(b.dir); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
	}
}

// runAll measures idle clients, warms up, then runs the matrix with the
// targets interleaved per configuration, so that drift (page cache, other
// load on the machine) affects all of them alike. It stops early only when
// ctx ends.
func (b *bench) runAll(ctx context.Context) {
	for _, m := range b.opts.modes {
		for _, c := range b.opts.clients {
			b.configs = append(b.configs, config{mode: m, clients: c})
		}
	}
	b.configs = append(b.configs, config{mode: "simple", clients: 16, reconnect: true})

	if b.opts.idleClients > 0 {
		for _, t := range b.targets {
			if t.proc == nil || t.name == nameHAProxy || t.name == namePgtideWriter {
				continue // the memory table compares the poolers (pgtide once)
			}
			progress("idle clients: %d through %s", b.opts.idleClients, t.name)
			r, err := measureIdle(ctx, t, b.opts.idleClients)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				progress("idle clients: %v", err)
				continue
			}
			b.idle[t.name] = r
			progress("idle clients: %s %.1f KiB/client", t.name, r.kibPerClient())
		}
	}

	warm := config{mode: "simple", clients: 16}
	for _, t := range b.targets {
		progress("warm-up: %s %s", warm, t.name)
		r, err := b.pgbench(ctx, t, warm, min(2, b.seconds()), "")
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			progress("warm-up against %s: %v", t.name, err)
		} else if !r.ok() {
			progress("warm-up against %s failed: %s", t.name, strings.Join(r.errLines, " | "))
		}
	}

	total := b.opts.rounds * len(b.configs) * len(b.targets)
	n := 0
	for range b.opts.rounds {
		for _, c := range b.configs {
			if b.runs[c] == nil {
				b.runs[c] = map[string][]*runResult{}
				b.results[c] = map[string]*runResult{}
			}
			for _, t := range b.targets {
				n++
				r := b.runOne(ctx, t, c)
				if ctx.Err() != nil {
					return
				}
				b.runs[c][t.name] = append(b.runs[c][t.name], r)
				b.results[c][t.name] = median(b.runs[c][t.name])
				progress("[%d/%d] %-18s %-9s %s", n, total, c, t.name, r.summary())
			}
		}
	}
}

// median is the run a table shows for one target and configuration: a failed run if there was
// one (failures are never averaged away), otherwise the run with the median TPS (the lower of
// the two middle ones for an even count). Its CPU and memory figures come with it.
func median(runs []*runResult) *runResult {
	for _, r := range runs {
		if !r.good() {
			return r
		}
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b *runResult) int { return cmp.Compare(a.tps, b.tps) })
	return sorted[(len(sorted)-1)/2]
}

func (b *bench) seconds() int { return int(b.opts.duration / time.Second) }

// runOne runs pgbench once and measures the proxy's CPU time and peak RSS
// around it.
func (b *bench) runOne(ctx context.Context, t *target, c config) *runResult {
	res := &runResult{cpuSec: -1}
	if t.proc != nil && t.proc.exited() {
		res.err = fmt.Errorf("%s has exited (%v); see %s", t.name, t.proc.waitErr, t.proc.logPath)
		return res
	}
	logDir := ""
	if c.clients == 1 && !c.reconnect {
		logDir = b.dir
	}
	var (
		cpuBefore float64
		sampler   *rssSampler
	)
	if t.proc != nil {
		var err error
		if cpuBefore, err = cpuSeconds(t.proc.pid()); err != nil {
			res.err = err
			return res
		}
		if res.rssBefore, err = rssBytes(t.proc.pid()); err != nil {
			res.err = err
			return res
		}
		sampler = sampleRSS(t.proc.pid())
	}
	pr, err := b.pgbench(ctx, t, c, b.seconds(), logDir)
	if sampler != nil {
		res.rssPeak = sampler.stop()
		if after, err := cpuSeconds(t.proc.pid()); err == nil {
			res.cpuSec = after - cpuBefore
		}
	}
	res.pgbenchResult, res.err = pr, err
	return res
}

// pgbench runs pgbench against t. A run with a backend per client (direct,
// or through HAProxy) leaves up to c backends exiting on the server, which
// would eat into the next run's CPU, so it waits for them to be gone;
// through a pooler the server connections stay in the pools and there is
// nothing to wait for.
func (b *bench) pgbench(ctx context.Context, t *target, c config, seconds int, logDir string) (*pgbenchResult, error) {
	if t.name == namePgBouncer || t.name == namePgtide || t.name == namePgtideWriter || t.name == nameEvloop {
		return runPgbench(ctx, t, c, seconds, logDir)
	}
	since, sinceErr := b.serverNow(ctx)
	r, err := runPgbench(ctx, t, c, seconds, logDir)
	if sinceErr != nil {
		progress("warning: cannot wait for %s's backends to exit: %v", c, sinceErr)
	} else {
		b.waitBackendsGone(ctx, since)
	}
	return r, err
}

// serverNow returns the primary's clock as a timestamptz literal.
func (b *bench) serverNow(ctx context.Context) (string, error) {
	rs, err := b.monitor.Exec(ctx, "SELECT clock_timestamp()::text").ReadAll()
	if err != nil {
		return "", err
	}
	if len(rs) != 1 || len(rs[0].Rows) != 1 {
		return "", errors.New("SELECT clock_timestamp(): no row")
	}
	return string(rs[0].Rows[0][0]), nil
}

// waitBackendsGone polls until no client backend that started at or after
// since is left on the primary, for at most 30 s.
func (b *bench) waitBackendsGone(ctx context.Context, since string) {
	const timeout = 30 * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	q := fmt.Sprintf(`SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
		AND backend_start >= '%s'::timestamptz AND pid <> pg_backend_pid()`, strings.ReplaceAll(since, "'", "''"))
	left := "?"
	for {
		rs, err := b.monitor.Exec(ctx, q).ReadAll()
		if err == nil && len(rs) == 1 && len(rs[0].Rows) == 1 {
			if left = string(rs[0].Rows[0][0]); left == "0" {
				return
			}
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				progress("warning: %s backends of the last unpooled run still there after %v", left, timeout)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// failures counts runs with failed transactions or pgbench errors.
func (b *bench) failures() int {
	n := 0
	for _, byTarget := range b.runs {
		for _, runs := range byTarget {
			for _, r := range runs {
				if !r.good() {
					n++
				}
			}
		}
	}
	return n
}

func (r *runResult) good() bool { return r.err == nil && r.ok() }

func (r *runResult) summary() string {
	switch {
	case r.err != nil:
		return "error: " + r.err.Error()
	case r.aborted:
		return fmt.Sprintf("ABORTED (%.0f tps): %s", r.tps, strings.Join(r.errLines, " | "))
	}
	s := fmt.Sprintf("%8.0f tps  %7.3f ms avg  %7.1f ms connect", r.tps, r.latencyMs, r.connectMs)
	if r.failed > 0 {
		s += fmt.Sprintf("  %d FAILED", r.failed)
	}
	if r.p50 > 0 {
		s += fmt.Sprintf("  p50 %s p99 %s", r.p50, r.p99)
	}
	if r.cpuSec >= 0 {
		s += fmt.Sprintf("  cpu %.2fs", r.cpuSec)
	}
	return s
}

// moduleRoot is the directory of the go.mod we run in, where ./cmd/pgtide
// is built from.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run from inside the pgtide module: go run ./bench/compare")
	}
	return filepath.Dir(gomod), nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
