// Command pgtide is a PostgreSQL connection pooler and read-scaling proxy.
//
//	pgtide run -c pgtide.toml   run the proxy
//	pgtide local                run a throwaway local cluster with the proxy in front
//	pgtide plan                 size pools against Aurora's connection ceilings
//	pgtide version              print the version
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version and commit are set at build time (the Makefile does: -ldflags "-X main.version=...
// -X main.commit=..."); otherwise they come from the module version and the VCS stamp, if any.
var version, commit = "", ""

const usage = `pgtide - a PostgreSQL connection pooler and read-scaling proxy

Usage:
  pgtide run -c pgtide.toml   run the proxy with a configuration file
  pgtide local [flags]        start a local primary + replicas and the proxy in front of them
  pgtide plan [flags]         how big may my pools be? Aurora's connection ceilings, no database
  pgtide version              print the version

Run "pgtide <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// survivePipes makes writes to a closed pipe fail instead of killing the process: output to a
// pipe that closed first (`pgtide local | tee log`, then Ctrl-C) must not stop a long-running
// command halfway through its shutdown.
func survivePipes() { signal.Ignore(syscall.SIGPIPE) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		survivePipes()
		return cmdRun(args[1:], stdout, stderr)
	case "local":
		survivePipes()
		return cmdLocal(args[1:], stdout, stderr)
	case "plan":
		return cmdPlan(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "pgtide", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "pgtide: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// versionString is the version and, when known, the commit: "v1.2.0 (commit 0123456789ab)".
func versionString() string {
	v, c, dirty := version, commit, false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.modified" && commit == "":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		return v
	}
	c = c[:min(len(c), 12)]
	if dirty {
		c += ", modified"
	}
	return v + " (commit " + c + ")"
}

// newLogger builds the process logger; level can be changed later (reload).
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	l.UnmarshalText([]byte(s))
	return l
}
