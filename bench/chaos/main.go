// Command chaos runs pgtide's fault-injection suite (internal/chaos) against pgtide and, for
// comparison, PgBouncer, and prints the tables. With -record FILE it also replaces the measured
// part of FILE (between the chaos:begin and chaos:end markers, as in RELIABILITY.md) with them.
//
//	go run ./bench/chaos                       # everything, about 4 minutes
//	go run ./bench/chaos -targets pgtide -faults stop-promote,sighup
//	go run ./bench/chaos -record RELIABILITY.md
//
// Run it from the repository root: it builds ./cmd/pgtide of the working tree.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"pgtide/internal/chaos"
)

func main() {
	targets := flag.String("targets", "pgtide,pgbouncer", "proxies to run the suite against, in order")
	faults := flag.String("faults", "", "comma-separated fault keys (default: all): "+strings.Join(chaos.FaultKeys(), ", "))
	record := flag.String("record", "", "replace the part of this file between <!-- chaos:begin --> and <!-- chaos:end --> with the results")
	logs := flag.String("logs", "", "keep the proxies' and servers' logs in this directory (default: a new temporary one)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, strings.Split(*targets, ","), *faults, *record, *logs); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, targets []string, faults, record, logs string) error {
	bin, cleanup, err := buildPgtide(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	if logs == "" {
		if logs, err = os.MkdirTemp("", "pgtide-chaos-logs-"); err != nil {
			return err
		}
	}
	var keys []string
	if faults != "" {
		keys = strings.Split(faults, ",")
	}
	started := time.Now().UTC()
	var (
		out    strings.Builder
		failed []error
		alarms int
	)
	fmt.Fprintf(&out, "%s\n\n", environment(ctx, started))
	for _, target := range targets {
		logDir := filepath.Join(logs, target)
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return err
		}
		t0 := time.Now()
		rep, err := chaos.Run(ctx, chaos.Options{
			Target:        target,
			PgtideCommand: func(args ...string) *exec.Cmd { return exec.Command(bin, args...) },
			Faults:        keys,
			LogDir:        logDir,
			Logf: func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
			},
		})
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", target, err))
		}
		if rep == nil {
			continue
		}
		alarms += len(rep.Alarms)
		fmt.Fprintf(&out, "### %s, PostgreSQL %s (the suite took %s)\n\n%s\n%s", rep.Proxy, rep.Server,
			time.Since(t0).Round(time.Second), rep.Table(), rep.Details())
		if len(rep.NotApplicable) > 0 {
			fmt.Fprintf(&out, "\nNot applicable: %s.\n", strings.Join(rep.NotApplicable, "; "))
		}
		fmt.Fprintf(&out, "\nWhole run: %d acknowledged writes, %d missing at the end.\n", rep.Acked, rep.Missing)
		for _, a := range rep.Alarms {
			fmt.Fprintf(&out, "\n**ALARM**: %s\n", a)
		}
		out.WriteString("\n")
	}
	fmt.Print(out.String())
	fmt.Fprintf(os.Stderr, "logs: %s\n", logs)
	if record != "" && len(failed) == 0 {
		if err := recordIn(record, out.String()); err != nil {
			return err
		}
	}
	if err := errors.Join(failed...); err != nil {
		return err
	}
	if alarms > 0 {
		return fmt.Errorf("%d alarms (see above)", alarms)
	}
	return nil
}

// buildPgtide builds ./cmd/pgtide into a temporary directory.
func buildPgtide(ctx context.Context) (string, func(), error) {
	dir, err := os.MkdirTemp("", "pgtide-chaos-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	bin := filepath.Join(dir, "pgtide")
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.commit="+commit(ctx), "-o", bin, "./cmd/pgtide")
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("go build ./cmd/pgtide: %w\n%s", err, out)
	}
	return bin, cleanup, nil
}

// commit is the working tree's commit, with "-dirty" when it has uncommitted changes.
func commit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, _ := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
		c += "-dirty"
	}
	return c
}

// environment is the line that says when, where and on what the numbers were measured.
func environment(ctx context.Context, at time.Time) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := exec.CommandContext(ctx, "uname", "-r").Output()
	return fmt.Sprintf("Measured %s on %d × %s, Linux %s, pgtide commit %s (`go run ./bench/chaos`).",
		at.Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), commit(ctx))
}

// recordIn replaces what lies between the markers in path with text.
func recordIn(path, text string) error {
	const begin, end = "<!-- chaos:begin -->", "<!-- chaos:end -->"
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + text + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
