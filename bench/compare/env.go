package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// environment is what a reader needs to judge the numbers: the machine and
// the versions of everything measured.
type environment struct {
	date      time.Time
	cpus      int
	cpuModel  string
	memTotal  string
	kernel    string
	goVersion string
	postgres  string
	pgbench   string
	pgbouncer string // "" when skipped
	haproxy   string // "" when skipped
	pgtide    string // commit and whether the tree was modified
	loadStart string // /proc/loadavg before the first run
}

// readEnvironment gathers the header. srcDir is where pgtideBin was built
// from; "" for a prebuilt binary.
func readEnvironment(ctx context.Context, primary *pgconn.PgConn, pgtideBin, srcDir, pgbouncerBin, haproxyBin string) environment {
	e := environment{
		date:      time.Now().UTC(),
		cpus:      runtime.NumCPU(),
		cpuModel:  procField("/proc/cpuinfo", "model name"),
		memTotal:  memTotal(),
		goVersion: runtime.Version(),
		pgbench:   firstLine(ctx, "pgbench", "--version"),
		pgtide:    pgtideVersion(ctx, pgtideBin, srcDir),
		loadStart: loadAverage(),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
	if rs, err := primary.Exec(ctx, "SHOW server_version").ReadAll(); err == nil && len(rs) == 1 && len(rs[0].Rows) == 1 {
		e.postgres = string(rs[0].Rows[0][0])
	}
	if pgbouncerBin != "" {
		e.pgbouncer = firstLine(ctx, pgbouncerBin, "--version")
	}
	if haproxyBin != "" {
		e.haproxy, _, _ = strings.Cut(firstLine(ctx, haproxyBin, "-v"), " - ") // without the project's web address
	}
	return e
}

// procField returns the value of the first "key : value" line of a /proc
// file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func memTotal() string {
	f := strings.Fields(procField("/proc/meminfo", "MemTotal")) // "24683468 kB"
	if len(f) != 2 {
		return "?"
	}
	kb, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f GiB", kb/1024/1024)
}

func firstLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// pgtideVersion names the pgtide measured: the VCS stamp go build put into
// the binary or, when builds are not stamped (GOFLAGS=-buildvcs=false) and
// we built it from srcDir, what git says about srcDir.
func pgtideVersion(ctx context.Context, bin, srcDir string) string {
	rev, modified := "", false
	if info, err := buildinfo.ReadFile(bin); err == nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if rev == "" && srcDir != "" {
		out, err := exec.CommandContext(ctx, "git", "-C", srcDir, "rev-parse", "HEAD").Output()
		if err == nil {
			rev = strings.TrimSpace(string(out))
			out, err = exec.CommandContext(ctx, "git", "-C", srcDir, "status", "--porcelain").Output()
			modified = err != nil || len(bytes.TrimSpace(out)) > 0
		}
	}
	if rev == "" {
		return bin + " (commit unknown)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		return "commit " + rev + " plus uncommitted changes"
	}
	return "commit " + rev
}

// loadAverage is the 1, 5 and 15 minute load average: other work on the
// machine competes with the benchmark for the same CPUs.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
