package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/pgcluster"
)

// Proxies the suite can run against.
const (
	TargetPgtide    = "pgtide"
	TargetPgBouncer = "pgbouncer"
)

// Options configures Run. Zero fields take the defaults of the full suite.
type Options struct {
	// Target is TargetPgtide (the default) or TargetPgBouncer.
	Target string
	// PgtideCommand returns the command that runs pgtide with args ("run", "-c", FILE): a
	// built binary, or a test binary that runs pgtide's main. Required for TargetPgtide.
	PgtideCommand func(args ...string) *exec.Cmd
	// PgBouncer is the pgbouncer binary; "" looks it up on PATH.
	PgBouncer string
	// Faults are the keys of the faults to inject, in the suite's order; nil means every one
	// that applies to the target. FaultKeys lists them.
	Faults []string

	// Writers (writer endpoint), Readers (reader endpoint) and Mixed (auto endpoint) are the
	// load clients: 20, 10 and 10. Each runs one operation per Interval (100 ms).
	Writers, Readers, Mixed int
	Interval                time.Duration
	// PoolSize is the proxy's pool_size (PgBouncer's default_pool_size): 20.
	PoolSize int
	// Healthy and After are the healthy periods before and after each fault (3 s and 5 s);
	// Hold is how long a fault that is undone lasts: a node down, the blackhole, a slow client
	// after client_write_timeout (3 s).
	Healthy, After, Hold time.Duration
	// OpTimeout bounds each client operation, connects included; one that runs out counts as
	// a hang (45 s: longer than pgtide's failover_timeout).
	OpTimeout time.Duration
	// RecoverTimeout bounds the wait for the clients to be served without errors again,
	// before a fault and after it (90 s).
	RecoverTimeout time.Duration
	// ClientWriteTimeout is pgtide's [proxy] client_write_timeout (2 s).
	ClientWriteTimeout time.Duration
	// StormClients is how many clients the storm fault connects at once (1,000).
	StormClients int

	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// LogDir, if set, receives a copy of the proxy's log and the servers' logs at the end.
	LogDir string
}

func (o *Options) fill() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if o.Target == "" {
		o.Target = TargetPgtide
	}
	def(&o.Writers, 20)
	def(&o.Readers, 10)
	def(&o.Mixed, 10)
	def(&o.PoolSize, 20)
	def(&o.StormClients, 1000)
	defDur(&o.Interval, 100*time.Millisecond)
	defDur(&o.Healthy, 3*time.Second)
	defDur(&o.After, 5*time.Second)
	defDur(&o.Hold, 3*time.Second)
	defDur(&o.OpTimeout, 45*time.Second)
	defDur(&o.RecoverTimeout, 90*time.Second)
	defDur(&o.ClientWriteTimeout, 2*time.Second)
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// FaultKeys returns the keys of every fault, in the order the suite injects them.
func FaultKeys() []string {
	keys := make([]string, len(faults))
	for i, f := range faults {
		keys[i] = f.key
	}
	return keys
}

// Result is what the clients saw during one fault's window: the healthy period before it, the
// fault and the healthy period after it.
type Result struct {
	Key, Fault string
	// Codes counts the clients' errors by SQLSTATE ("net": no ErrorResponse, the connection
	// was refused or lost; "hang": no answer within OpTimeout); Samples holds one message per
	// code. Unexpected lists the classes outside the fault's expected ones.
	Codes   map[string]int
	Samples map[string]string
	// Who says, per code, which clients saw it: "writer" (writer endpoint), "reader" (reader
	// endpoint), "mixed" (auto endpoint) or "storm".
	Who        map[string]map[string]int
	Unexpected []string
	// Writes and Reads are the successful operations; WriteGap and ReadGap the longest time
	// without one (any client); Stall the longest any one client went without a success.
	Writes, Reads            int
	WriteGap, ReadGap, Stall time.Duration
	// Mark is the moment the fault's action returned ("promotion returned", ...), "" for
	// none; WritesBack and ReadsBack are the first successes after it (-1: none).
	Mark                  string
	WritesBack, ReadsBack time.Duration
	// Nodes are the proxy's server connections per node, by the node's name.
	Nodes map[string]nodeStats
	// Acked are the writes acknowledged in the window; Missing those of them not on the
	// primary afterwards; Unsure the writes that got an error, and Committed those of them
	// that are there anyway.
	Acked, Missing, Unsure, Committed int
	Notes                             []string
	// Unrecovered says the clients were not all served again within RecoverTimeout.
	Unrecovered bool
	// Err is why the fault could not be injected as planned.
	Err error
}

// Classes returns the error counts by SQLSTATE class.
func (r *Result) Classes() map[string]int {
	out := map[string]int{}
	for code, n := range r.Codes {
		out[errorClass(code)] += n
	}
	return out
}

// Report is a run of the suite against one proxy.
type Report struct {
	Target  string
	Results []Result
	// NotApplicable lists the faults the target cannot meet (PgBouncer has no replicas).
	NotApplicable []string
	// Acked and Missing are over the whole run, checked on the final primary after the load
	// stopped.
	Acked, Missing int
	// Alarms are what needs a person's attention: lost writes, hangs, unexpected errors, a
	// proxy that crashed or reported a data race.
	Alarms []Alarm
	// Server is the PostgreSQL version; Proxy the proxy's version line.
	Server, Proxy string
}

// Run starts a cluster and the proxy, drives the load, injects the faults and measures them.
// It returns the report so far with an error when a fault could not be injected or the setup
// failed.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.fill()
	rep := &Report{Target: opts.Target}
	var todo []fault
	for _, f := range faults {
		if opts.Faults != nil && !slices.Contains(opts.Faults, f.key) {
			continue
		}
		if opts.Target == TargetPgBouncer && f.bouncer == "" {
			rep.NotApplicable = append(rep.NotApplicable, f.name)
			continue
		}
		todo = append(todo, f)
	}
	for _, k := range opts.Faults {
		if !slices.Contains(FaultKeys(), k) {
			return nil, fmt.Errorf("chaos: no fault %q (faults: %s)", k, strings.Join(FaultKeys(), ", "))
		}
	}

	dir, err := os.MkdirTemp("", "pgtide-chaos-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	bouncer := opts.Target == TargetPgBouncer
	replicas := 2
	if bouncer {
		replicas = 0 // PgBouncer knows only the primary
	}
	opts.Logf("chaos: starting a primary and %d replicas", replicas)
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: replicas, InitSQL: initSQL,
		ExtraConf: []string{"log_min_messages = warning"}})
	if err != nil {
		return nil, err
	}
	defer cluster.Close()

	e := &env{opts: opts, cluster: cluster, rec: &recorder{}, bouncer: bouncer, primary: cluster.Primary(),
		names: map[string]string{}}
	var hosts []string
	for _, n := range cluster.Nodes() {
		e.names[n.Addr()] = n.Name()
		hosts = append(hosts, n.Addr())
	}
	s := proxySettings{Hosts: hosts, PoolSize: opts.PoolSize}
	execMode := pgx.QueryExecModeCacheStatement
	if bouncer {
		e.proxy, err = newBouncer(opts.PgBouncer, dir, s)
		execMode = pgx.QueryExecModeExec
	} else {
		if opts.PgtideCommand == nil {
			return nil, errors.New("chaos: Options.PgtideCommand is required for pgtide")
		}
		e.proxy, err = newPgtide(opts.PgtideCommand, dir, s, opts.ClientWriteTimeout)
	}
	if err != nil {
		return nil, err
	}
	defer e.proxy.close()
	if opts.LogDir != "" {
		defer copyLogs(opts.LogDir, e.proxy.logFile(), cluster)
	}
	if err := e.proxy.start(ctx); err != nil {
		return nil, err
	}
	rep.Server, rep.Proxy = versions(ctx, e)

	bg, stopBG := context.WithCancel(ctx)
	var bgWG sync.WaitGroup
	defer func() {
		stopBG()
		bgWG.Wait()
	}()
	mon := &monitor{proxy: e.proxy, fixedCap: func() int { return e.proxy.settings().PoolSize },
		nodes: func() []string {
			var out []string
			for _, n := range cluster.Nodes() {
				out = append(out, n.Addr())
			}
			return out
		}}
	bgWG.Add(1)
	go func() {
		defer bgWG.Done()
		mon.run(bg)
	}()
	ld := &load{rec: e.rec, addr: e.proxy.addr, interval: opts.Interval, opTimeout: opts.OpTimeout, execMode: execMode}
	ld.start(bg, opts.Writers, opts.Readers, opts.Mixed)
	bgWG.Add(1)
	go func() {
		defer bgWG.Done()
		ld.wait()
	}()

	for _, f := range todo {
		res, err := e.runFault(ctx, f, mon)
		rep.Results = append(rep.Results, res)
		if why := e.proxy.crashed(); why != "" {
			rep.Alarms = append(rep.Alarms, Alarm{f.key, AlarmProxy, e.proxy.name() + " " + why})
			if err == nil {
				err = e.proxy.start(ctx)
			}
		}
		if err != nil {
			rep.Alarms = append(rep.Alarms, alarms(rep, e.proxy.logFile())...)
			return rep, fmt.Errorf("chaos: %s: %w", f.key, err)
		}
	}
	stopBG()
	bgWG.Wait()

	all := e.rec.allAcked()
	present, err := e.present(ctx, all)
	if err != nil {
		return rep, err
	}
	rep.Acked, rep.Missing = len(all), len(all)-present
	rep.Alarms = append(rep.Alarms, alarms(rep, e.proxy.logFile())...)
	return rep, nil
}

// runFault measures one fault's window and checks its acknowledged writes.
func (e *env) runFault(ctx context.Context, f fault, mon *monitor) (Result, error) {
	res := Result{Key: f.key, Fault: f.name}
	if e.bouncer {
		res.Fault = f.bouncer
	}
	e.opts.Logf("chaos: %s: %s", f.key, res.Fault)
	if f.prepare != nil {
		if err := f.prepare(ctx, e); err != nil {
			return res, fmt.Errorf("prepare: %w", err)
		}
	}
	e.notes = nil
	if err := e.waitHealthy(ctx); err != nil {
		return res, fmt.Errorf("before the fault: %w", err)
	}
	e.rec.begin()
	mon.begin()
	err := pause(ctx, e.opts.Healthy)
	if err == nil {
		t0 := time.Now()
		if err = f.inject(ctx, e); err == nil {
			e.opts.Logf("chaos: %s: injected in %v", f.key, time.Since(t0).Round(time.Millisecond))
			t0 = time.Now()
			if herr := e.waitHealthy(ctx); herr != nil {
				e.notef("clients did not recover: %v", herr)
				res.Unrecovered = true
			} else if took := time.Since(t0); took > time.Second {
				e.notef("clients were all served again without errors %.1f s after the fault's action returned", took.Seconds())
			}
			err = pause(ctx, e.opts.After)
		}
	}
	w := e.rec.end()
	res.fill(w, f.expected)
	res.Nodes = map[string]nodeStats{}
	for addr, st := range mon.end() {
		name := cmp.Or(e.names[addr], e.extraNodes[addr], addr)
		res.Nodes[name] = st
	}
	e.extraNodes = nil
	res.Notes = e.notes

	present, perr := e.present(ctx, w.acked)
	committed, cerr := e.present(ctx, w.errored)
	if err = errors.Join(err, perr, cerr); err != nil {
		res.Err = err
		return res, err
	}
	res.Acked, res.Missing = len(w.acked), len(w.acked)-present
	res.Unsure, res.Committed = len(w.errored), committed
	if f.undo != nil {
		if err := f.undo(ctx, e); err != nil {
			return res, fmt.Errorf("undo: %w", err)
		}
	}
	return res, nil
}

// waitHealthy waits until writes and reads succeed and no client has seen an error for a
// second: a fault's window starts healthy, and its healthy period after the fault starts only
// once the clients have recovered (PgBouncer, for one, refuses them for server_login_retry
// after a failed server login).
func (e *env) waitHealthy(ctx context.Context) error {
	return waitFor(ctx, e.opts.RecoverTimeout, "clients served without errors", func(context.Context) error {
		if e.rec.healthy(500*time.Millisecond, time.Second) {
			return nil
		}
		return errors.New("errors in the last second, or no recent success")
	})
}

// fill takes the window's figures; expected are the fault's expected error classes.
func (res *Result) fill(w *window, expected []string) {
	res.Codes, res.Samples, res.Who = w.codes, w.samples, w.who
	for class := range res.Classes() {
		if !slices.Contains(expected, class) {
			res.Unexpected = append(res.Unexpected, class)
		}
	}
	sort.Strings(res.Unexpected)
	res.Writes, res.Reads = w.ops[opWrite], w.ops[opRead]
	res.WriteGap, res.ReadGap, res.Stall = w.maxGap[opWrite], w.maxGap[opRead], w.stall
	res.Mark, res.WritesBack, res.ReadsBack = w.mark, w.backAfter[opWrite], w.backAfter[opRead]
}

// present counts how many of ids are in chaos_writes on the current primary, retrying while
// it cannot connect.
func (e *env) present(ctx context.Context, ids []int64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var n int
	err := waitFor(ctx, 30*time.Second, "count writes on "+e.primary.Name(), func(ctx context.Context) error {
		return e.queryRow(ctx, e.primary, `SELECT count(*) FROM chaos_writes WHERE id = ANY($1)`, []any{ids}, &n)
	})
	return n, err
}

// versions returns the server's version and the proxy's.
func versions(ctx context.Context, e *env) (server, proxy string) {
	_ = e.queryRow(ctx, e.primary, "SHOW server_version", nil, &server)
	if e.bouncer {
		out, _ := exec.CommandContext(ctx, e.proxy.(*bouncerProxy).bin, "--version").Output()
		proxy, _, _ = strings.Cut(string(out), "\n")
		return server, proxy
	}
	out, _ := e.opts.PgtideCommand("version").Output()
	return server, strings.TrimSpace(string(out))
}

// copyLogs copies the proxy's log and every server's log into dir.
func copyLogs(dir, proxyLog string, cluster *pgcluster.Cluster) {
	paths := []string{proxyLog}
	for _, n := range cluster.Nodes() {
		paths = append(paths, n.LogFile())
	}
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644)
		}
	}
}
