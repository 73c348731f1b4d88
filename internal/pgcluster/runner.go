package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runner runs PostgreSQL binaries for one cluster. It is built once in Start
// and never changed afterwards, so nodes share it without locking.
type runner struct {
	binDir  string
	workDir string // the cluster directory: a cwd the postgres user can always enter
	env     []string
	// cred is the identity every binary runs as; nil means "as this process".
	// Set only when we are root, because postgres refuses to run as root.
	cred *syscall.Credential
}

func newRunner(workDir string) (*runner, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := ServerCredential()
	if err != nil {
		return nil, err
	}
	r := &runner{binDir: binDir, workDir: workDir, env: CleanEnv(), cred: cred}
	return r, nil
}

// findBinDir prefers the server that pg_config on PATH describes and falls
// back to the highest Debian-style /usr/lib/postgresql/<version>/bin.
func findBinDir() (string, error) {
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		cancel()
		if dir := strings.TrimSpace(string(out)); err == nil && hasInitdb(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type candidate struct {
		dir     string
		version float64
	}
	var cands []candidate
	for _, dir := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil || !hasInitdb(dir) {
			continue
		}
		cands = append(cands, candidate{dir, v})
	}
	if len(cands) == 0 {
		return "", errors.New("pgcluster: no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin)")
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].version > cands[j].version })
	return cands[0].dir, nil
}

func hasInitdb(dir string) bool {
	if dir == "" {
		return false
	}
	st, err := os.Stat(filepath.Join(dir, "initdb"))
	return err == nil && !st.IsDir()
}

// CleanEnv is our environment minus anything that would steer libpq or the
// server (PGHOST, PGPORT, PGDATA, PGOPTIONS, ...) away from the explicit
// arguments we pass, with C messages so log matching does not depend on the
// caller's locale. The PostgreSQL programs the harness runs get it; so can
// other tools run against a harness cluster (pgbench in bench/).
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// run runs one PostgreSQL binary to completion and returns its combined
// output; a failure carries the command line and the output.
func (r *runner) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, name), args...)
	cmd.Dir = r.workDir
	cmd.Env = r.env
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl start hands its stdout to the postmaster only after redirecting
	// it to the log file; WaitDelay bounds Wait should a child ever keep the
	// pipe open anyway, so the copying goroutine cannot outlive the call.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		return text, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, text)
	}
	return text, nil
}

// chown hands path to the user the binaries run as; a no-op when not root.
func (r *runner) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	return os.Chown(path, int(r.cred.Uid), int(r.cred.Gid))
}

// writeFile writes a file inside a data directory (or the cluster
// directory) so that the server can read and rewrite it.
func (r *runner) writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return r.chown(path)
}
