package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ownerFile, in a cluster's directory, names the process that owns the cluster: its PID, its
// start time (field 22 of /proc/PID/stat), so a PID reused by another process is not taken for
// the owner, and its PID namespace, so a cluster made in another container sharing /tmp, whose
// owner this process cannot see, is never taken for an orphan.
const ownerFile = "owner"

// pidNamespace names this process's PID namespace ("" if unknown).
func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}

// processStart returns the start time of process pid (clock ticks since boot), or "" if there
// is no such process.
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return "" // a zombie (killed, not reaped yet) or dead process owns nothing
	}
	return fields[19] // field 22 overall
}

// writeOwner records this process as the owner of dir.
func writeOwner(dir string) error {
	pid := os.Getpid()
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(fmt.Sprintf("%d %s %s\n", pid, processStart(pid), pidNamespace())), 0o644)
}

// orphaned reports whether dir's owner is gone. A directory without an owner file (being
// created, or made by an older version) is never orphaned.
func orphaned(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	if len(fields) < 3 || fields[2] != pidNamespace() || fields[2] == "" {
		return false // another namespace's (or an older format): its owner may live where we cannot see
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		return false
	}
	start := fields[1]
	now := processStart(pid)
	return now == "" || now != start
}

// RemoveOrphans stops the servers of, and removes, every cluster directory in the temporary
// directory whose owning process is gone (a `pgtide local` or a test that was killed), and
// returns the directories it removed. Clusters whose owner runs are left alone.
func RemoveOrphans(ctx context.Context) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "pgcluster-*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, dir := range dirs {
		if !orphaned(dir) {
			continue
		}
		r, err := newRunner(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pidFiles, _ := filepath.Glob(filepath.Join(dir, "*", "postmaster.pid"))
		stopped := true
		for _, pf := range pidFiles {
			if _, err := r.run(ctx, "pg_ctl", "stop", "-m", "immediate", "-w", "-t", "60", "-D", filepath.Dir(pf)); err != nil {
				if _, serr := r.run(ctx, "pg_ctl", "status", "-D", filepath.Dir(pf)); serr == nil {
					stopped = false // still running: keep its directory
					errs = append(errs, fmt.Errorf("pgcluster: stop the orphaned server in %s: %w", filepath.Dir(pf), err))
				}
			}
		}
		if !stopped {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}
