package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// report writes the Markdown tables for whatever has been measured so far.
func (b *bench) report(w io.Writer) {
	e := b.env
	fmt.Fprintf(w, "## pgbench -S: direct vs PgBouncer vs pgtide (and HAProxy in TCP mode)\n\n")
	fmt.Fprintf(w, "- date: %s\n", e.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "- machine: %d CPUs (%s), %s RAM, Linux %s; load average %s before the runs, %s after\n",
		e.cpus, e.cpuModel, e.memTotal, e.kernel, e.loadStart, loadAverage())
	bouncer := e.pgbouncer
	if bouncer == "" {
		bouncer = "not installed (skipped)"
	}
	haproxy := e.haproxy
	if haproxy == "" {
		haproxy = "HAProxy not installed (skipped)"
	}
	fmt.Fprintf(w, "- versions: %s; PostgreSQL %s; %s; %s; %s; pgtide %s\n", e.goVersion, e.postgres, bouncer, haproxy, e.pgbench, e.pgtide)
	if b.opts.rounds > 1 {
		fmt.Fprintf(w, "- rounds: the whole matrix ran %d times, interleaved; a TPS, CPU or memory cell is the run with "+
			"the median TPS, a ratio is the median of the rounds' ratios (a round's targets run back to back), and the "+
			"last table has every round's ratios\n", b.opts.rounds)
	}
	fmt.Fprintf(w, "- setup: pgbench -S -n -T %d, -j 2 (-j 1 at c=1), scale %d; both proxies in transaction mode, "+
		"%d server connections (pgtide pool_size = max_server_connections, PgBouncer default_pool_size = max_db_connections); "+
		"HAProxy in TCP mode (one server connection per client, bytes forwarded and nothing else) as the "+
		"reference for what one more hop costs; everything on this one machine\n", b.seconds(), b.opts.scale, b.opts.poolSize)
	if b.evloopOn() {
		fmt.Fprintf(w, "- evloop: the bench/evloop prototype (one epoll loop per thread, transaction mode only), %d loop(s), "+
			"the same %d server connections\n", b.opts.evloopLoops, b.opts.poolSize)
	}
	if b.opts.writer {
		fmt.Fprintf(w, "- pgtide is its auto endpoint (every request classified for routing); pgtide-writer is a second "+
			"pgtide process, the same binary and pool settings, with only the writer endpoint (nothing classified "+
			"for routing); with one server both send everything to it\n")
	}
	fmt.Fprintln(w)

	b.tpsTable(w)
	b.latencyTable(w)
	b.cpuTable(w)
	b.endpointsTable(w)
	b.rssTable(w)
	b.targetsList(w)
	b.roundsTable(w)
	b.failureList(w)
}

// roundsTable shows the pgtide/PgBouncer and pgtide/direct ratios of every round, so the spread
// behind the medians is visible.
func (b *bench) roundsTable(w io.Writer) {
	if b.opts.rounds < 2 {
		return
	}
	if b.opts.writer {
		fmt.Fprintln(w, "### Every round (pgtide/PgBouncer, pgtide/direct TPS; pgtide auto/writer CPU per transaction)")
	} else {
		fmt.Fprintln(w, "### Every round (pgtide/PgBouncer, pgtide/direct TPS)")
	}
	fmt.Fprintln(w)
	head, sep := "| mode | clients | pgtide/PgBouncer by round | pgtide/direct by round |", "|---|---:|---|---|"
	if b.evloopOn() {
		head, sep = head+" evloop/PgBouncer by round |", sep+"---|"
	}
	if b.opts.writer {
		head, sep = head+" auto/writer CPU by round |", sep+"---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	list := func(rs []roundRatio) string {
		texts := make([]string, len(rs))
		for i, r := range rs {
			texts[i] = ratioText(r.v, r.ok)
		}
		return strings.Join(texts, ", ")
	}
	for _, c := range b.measured() {
		fmt.Fprintf(w, "| %s | %d | %s | %s |", modeLabel(c), c.clients,
			b.bouncerCell(list(b.roundRatios(c, namePgtide, namePgBouncer))),
			list(b.roundRatios(c, namePgtide, nameDirect)))
		if b.evloopOn() {
			fmt.Fprintf(w, " %s |", b.bouncerCell(list(b.roundRatios(c, nameEvloop, namePgBouncer))))
		}
		if b.opts.writer {
			fmt.Fprintf(w, " %s |", list(b.roundRatiosBy(cpuOf, c, namePgtide, namePgtideWriter)))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

func (b *bench) tpsTable(w io.Writer) {
	showFailed := b.failures() > 0
	fmt.Fprintln(w, "### Throughput (TPS, excluding connection time; with -C including reconnects)")
	fmt.Fprintln(w)
	head := "| mode | clients | direct | PgBouncer | pgtide | pgtide/PgBouncer | pgtide/direct | HAProxy TCP | HAProxy/direct |"
	sep := "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	if b.evloopOn() {
		head += " evloop | evloop/PgBouncer |"
		sep += "---:|---:|"
	}
	if showFailed {
		head += " failed: direct / PgBouncer / pgtide |"
		sep += "---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, c := range b.measured() {
		rs := b.results[c]
		d, pb, pt, ha := rs[nameDirect], rs[namePgBouncer], rs[namePgtide], rs[nameHAProxy]
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |", modeLabel(c), c.clients,
			tpsCell(d), b.bouncerCell(tpsCell(pb)), tpsCell(pt),
			ratioText(b.pairedRatio(c, namePgtide, namePgBouncer)), ratioText(b.pairedRatio(c, namePgtide, nameDirect)),
			b.haproxyCell(tpsCell(ha)), b.haproxyCell(ratioText(b.pairedRatio(c, nameHAProxy, nameDirect))))
		if b.evloopOn() {
			fmt.Fprintf(w, " %s | %s |", tpsCell(rs[nameEvloop]), b.bouncerCell(ratioText(b.pairedRatio(c, nameEvloop, namePgBouncer))))
		}
		if showFailed {
			fmt.Fprintf(w, " %s / %s / %s |", failedCell(d), b.bouncerCell(failedCell(pb)), failedCell(pt))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

func (b *bench) latencyTable(w io.Writer) {
	var rows []config
	for _, c := range b.measured() {
		if c.clients == 1 && !c.reconnect {
			rows = append(rows, c)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "### Latency at c=1 (ms, p50 / p99 from pgbench's per-transaction log)")
	fmt.Fprintln(w)
	head, sep := "| mode | direct | PgBouncer | pgtide |", "|---|---:|---:|---:|"
	if b.evloopOn() {
		head, sep = head+" evloop |", sep+"---:|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, c := range rows {
		rs := b.results[c]
		fmt.Fprintf(w, "| %s | %s | %s | %s |", modeLabel(c),
			latencyCell(rs[nameDirect]), b.bouncerCell(latencyCell(rs[namePgBouncer])), latencyCell(rs[namePgtide]))
		if b.evloopOn() {
			fmt.Fprintf(w, " %s |", latencyCell(rs[nameEvloop]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

func (b *bench) cpuTable(w io.Writer) {
	fmt.Fprintln(w, "### Proxy CPU (CPU seconds per 10,000 transactions, user + system)")
	fmt.Fprintln(w)
	head, sep := "| mode | clients | PgBouncer | pgtide | pgtide/PgBouncer | HAProxy TCP |", "|---|---:|---:|---:|---:|---:|"
	if b.evloopOn() {
		head, sep = head+" evloop | evloop/PgBouncer |", sep+"---:|---:|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, c := range b.measured() {
		rs := b.results[c]
		pb, pt := cpuPer10k(rs[namePgBouncer]), cpuPer10k(rs[namePgtide])
		r := "–"
		if pb > 0 && pt > 0 {
			r = fmt.Sprintf("%.2f", pt/pb)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |", modeLabel(c), c.clients,
			b.bouncerCell(cpuCell(pb)), cpuCell(pt), r, b.haproxyCell(cpuCell(cpuPer10k(rs[nameHAProxy]))))
		if b.evloopOn() {
			ev, er := cpuPer10k(rs[nameEvloop]), "–"
			if pb > 0 && ev > 0 {
				er = fmt.Sprintf("%.2f", ev/pb)
			}
			fmt.Fprintf(w, " %s | %s |", cpuCell(ev), b.bouncerCell(er))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// endpointsTable compares pgtide's auto endpoint with its writer endpoint (-pgtide-endpoints
// auto,writer): what routing costs per transaction.
func (b *bench) endpointsTable(w io.Writer) {
	if !b.opts.writer {
		return
	}
	fmt.Fprintln(w, "### pgtide: auto endpoint vs writer endpoint (CPU seconds per 10,000 transactions, TPS)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | clients | pgtide CPU | pgtide-writer CPU | auto/writer CPU | pgtide TPS | pgtide-writer TPS | auto/writer TPS |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range b.measured() {
		rs := b.results[c]
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", modeLabel(c), c.clients,
			cpuCell(cpuPer10k(rs[namePgtide])), cpuCell(cpuPer10k(rs[namePgtideWriter])),
			ratioText(b.pairedRatioBy(cpuOf, c, namePgtide, namePgtideWriter)),
			tpsCell(rs[namePgtide]), tpsCell(rs[namePgtideWriter]),
			ratioText(b.pairedRatio(c, namePgtide, namePgtideWriter)))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "A ratio is the median of the rounds' ratios (the CPU ratio of a round compares its two runs' CPU per transaction).")
	fmt.Fprintln(w)
}

func (b *bench) rssTable(w io.Writer) {
	fmt.Fprintln(w, "### Proxy memory (KiB of RSS per client; RSS before → with clients in MiB)")
	fmt.Fprintln(w)
	head, sep := "| measurement | PgBouncer | pgtide |", "|---|---:|---:|"
	if b.evloopOn() {
		head, sep = head+" evloop |", sep+"---:|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	if b.opts.idleClients > 0 {
		cell := func(name string) string {
			r, ok := b.idle[name]
			if !ok {
				return "–"
			}
			return fmt.Sprintf("%.1f (%s → %s)", r.kibPerClient(), mib(r.before), mib(r.with))
		}
		fmt.Fprintf(w, "| %d idle clients | %s | %s |", b.opts.idleClients,
			b.bouncerCell(cell(namePgBouncer)), cell(namePgtide))
		if b.evloopOn() {
			fmt.Fprintf(w, " %s |", cell(nameEvloop))
		}
		fmt.Fprintln(w)
	}
	for _, c := range b.measured() {
		if c.clients < 256 || c.reconnect {
			continue
		}
		cell := func(r *runResult) string {
			if r == nil || r.err != nil || r.rssPeak == 0 {
				return "–"
			}
			kib := float64(r.rssPeak-r.rssBefore) / 1024 / float64(c.clients)
			return fmt.Sprintf("%.1f (%s → %s)", kib, mib(r.rssBefore), mib(r.rssPeak))
		}
		rs := b.results[c]
		fmt.Fprintf(w, "| active, %s c=%d | %s | %s |", c.mode, c.clients,
			b.bouncerCell(cell(rs[namePgBouncer])), cell(rs[namePgtide]))
		if b.evloopOn() {
			fmt.Fprintf(w, " %s |", cell(rs[nameEvloop]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Active rows are peak during the run minus RSS just before it; memory a process kept from an "+
		"earlier run is reused and not counted again, so the first row of each client count is the telling one.")
	fmt.Fprintln(w)
}

// targetsList checks the spec's targets against this run.
func (b *bench) targetsList(w io.Writer) {
	fmt.Fprintln(w, "### Targets")
	fmt.Fprintln(w)
	check := func(what string, have float64, ok bool, want string, pass bool) {
		switch {
		case !ok:
			fmt.Fprintf(w, "- %s: not measured (want %s)\n", what, want)
		case pass:
			fmt.Fprintf(w, "- %s: %.2f (want %s) pass\n", what, have, want)
		default:
			fmt.Fprintf(w, "- %s: %.2f (want %s) **FAIL**\n", what, have, want)
		}
	}
	for _, c := range b.measured() {
		if c.reconnect || (c.clients != 16 && c.clients != 64) {
			continue
		}
		if b.opts.pgbouncer != "" {
			v, ok := b.pairedRatio(c, namePgtide, namePgBouncer)
			check(fmt.Sprintf("%s c=%d pgtide/PgBouncer TPS", c.mode, c.clients), v, ok, "≥ 1.0", v >= 1.0)
		}
		if b.opts.writer {
			v, ok := b.pairedRatioBy(cpuOf, c, namePgtide, namePgtideWriter)
			check(fmt.Sprintf("%s c=%d pgtide auto/writer CPU per transaction", c.mode, c.clients), v, ok, "≤ 1.10", v <= 1.10)
		}
		if c.clients == 16 {
			v, ok := b.pairedRatio(c, namePgtide, nameDirect)
			what := fmt.Sprintf("%s c=16 pgtide/direct TPS", c.mode)
			if h, ok := b.pairedRatio(c, nameHAProxy, nameDirect); ok {
				what += fmt.Sprintf(" (HAProxy TCP, forwarding only: %.2f)", h)
			}
			check(what, v, ok, "≥ 0.8", v >= 0.8)
		}
	}
	if r, ok := b.idle[namePgtide]; ok {
		v := r.kibPerClient()
		// Issue 14's target; the process's fixed memory weighs on it below some 10,000 clients.
		check(fmt.Sprintf("pgtide RSS per idle client with %d idle clients, KiB", r.clients), v, true, "≤ 2", v <= 2)
	}
	fmt.Fprintln(w)
}

// failureList shows what pgbench said about every run that went wrong.
func (b *bench) failureList(w io.Writer) {
	if b.failures() == 0 {
		return
	}
	fmt.Fprintln(w, "### Failed runs")
	fmt.Fprintln(w)
	for _, c := range b.measured() {
		for _, t := range b.targets {
			for i, r := range b.runs[c][t.name] {
				if r.good() {
					continue
				}
				var why string
				switch {
				case r.err != nil:
					why = r.err.Error()
				case r.aborted:
					why = "aborted: " + strings.Join(r.errLines, " | ")
				default:
					why = fmt.Sprintf("%d failed transactions", r.failed)
				}
				round := ""
				if b.opts.rounds > 1 {
					round = fmt.Sprintf(" (round %d)", i+1)
				}
				fmt.Fprintf(w, "- %s, %s%s: %s\n", c, t.name, round, strings.ReplaceAll(why, "\n", " "))
			}
		}
	}
	fmt.Fprintln(w)
}

// measured returns the configurations with at least one result, in run
// order.
func (b *bench) measured() []config {
	var out []config
	for _, c := range b.configs {
		if len(b.results[c]) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// bouncerCell and haproxyCell replace a cell of an optional target that was not run.
func (b *bench) bouncerCell(s string) string { return skippedUnless(b.opts.pgbouncer != "", s) }
func (b *bench) haproxyCell(s string) string { return skippedUnless(b.opts.haproxy != "", s) }

// evloopOn says whether the bench/evloop prototype is measured (-evloop): its columns appear only then.
func (b *bench) evloopOn() bool { return b.opts.evloop != "" }

func skippedUnless(ran bool, s string) string {
	if !ran {
		return "skipped"
	}
	return s
}

func modeLabel(c config) string {
	if c.reconnect {
		return c.mode + " -C"
	}
	return c.mode
}

func tpsCell(r *runResult) string {
	switch {
	case r == nil:
		return "–"
	case r.err != nil:
		return "error"
	case r.aborted:
		return "aborted"
	}
	return fmt.Sprintf("%.0f", r.tps)
}

func failedCell(r *runResult) string {
	switch {
	case r == nil:
		return "–"
	case r.err != nil:
		return "error"
	case r.aborted:
		return "aborted"
	}
	return fmt.Sprint(r.failed)
}

// metric is what a ratio compares of two runs: a value, ok false when the run has none.
type metric func(*runResult) (float64, bool)

func tpsOf(r *runResult) (float64, bool) {
	if r == nil || !r.good() || r.tps == 0 {
		return 0, false
	}
	return r.tps, true
}

func cpuOf(r *runResult) (float64, bool) {
	v := cpuPer10k(r)
	return v, v > 0
}

// ratioValue is m of num over m of den.
func ratioValue(m metric, num, den *runResult) (float64, bool) {
	n, ok := m(num)
	d, dok := m(den)
	if !ok || !dok {
		return 0, false
	}
	return n / d, true
}

func ratioText(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

// pairedRatio is num's TPS over den's for configuration c: with several rounds, the median of
// the rounds' ratios (the targets of a round ran back to back, so each ratio compares runs on
// the machine in the same state), otherwise the one run's.
func (b *bench) pairedRatio(c config, num, den string) (float64, bool) {
	return b.pairedRatioBy(tpsOf, c, num, den)
}

// pairedRatioBy is pairedRatio of metric m.
func (b *bench) pairedRatioBy(m metric, c config, num, den string) (float64, bool) {
	var vs []float64
	for _, r := range b.roundRatiosBy(m, c, num, den) {
		if r.ok {
			vs = append(vs, r.v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	return vs[(len(vs)-1)/2], true
}

// roundRatio is num's TPS over den's in one round; ok is false if either run failed.
type roundRatio struct {
	v  float64
	ok bool
}

// roundRatios returns the TPS ratio of every round in which both num and den ran.
func (b *bench) roundRatios(c config, num, den string) []roundRatio {
	return b.roundRatiosBy(tpsOf, c, num, den)
}

// roundRatiosBy is roundRatios of metric m.
func (b *bench) roundRatiosBy(m metric, c config, num, den string) []roundRatio {
	ns, ds := b.runs[c][num], b.runs[c][den]
	out := make([]roundRatio, min(len(ns), len(ds)))
	for i := range out {
		out[i].v, out[i].ok = ratioValue(m, ns[i], ds[i])
	}
	return out
}

func latencyCell(r *runResult) string {
	if r == nil || !r.good() || r.p50 == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s", ms(r.p50), ms(r.p99))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// cpuPer10k is CPU seconds per 10,000 transactions; 0 when unknown.
func cpuPer10k(r *runResult) float64 {
	if r == nil || !r.good() || r.cpuSec < 0 || r.txns == 0 {
		return 0
	}
	return r.cpuSec / float64(r.txns) * 10000
}

func cpuCell(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3f", v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
