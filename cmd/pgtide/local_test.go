package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLocalFlags: pgtide local checks its flags and ports before it starts a cluster, in the
// flags' own words.
func TestLocalFlags(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// The other listeners off, so that the defaults being in use (another pgtide local) cannot
	// decide the outcome.
	others := []string{"--writer-listen", "", "--reader-listen", "", "--admin-listen", ""}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--replicas", "-1"}, "--replicas must be 0 or more, not -1"},
		{[]string{"--pool-mode", "statement"}, `--pool-mode must be "session" or "transaction"`},
		{[]string{"--pool-size", "0"}, "--pool-size must be at least 1"},
		{append([]string{"--listen", busy.Addr().String()}, others...), "--listen " + busy.Addr().String() + ": the address is in use"},
		{[]string{"replicas=2"}, `unexpected argument "replicas=2"`},
		{append([]string{"--listen", "*:" + strings.TrimPrefix(busy.Addr().String(), "127.0.0.1:")}, others...), "the address is in use"},
		{append([]string{"--listen", "127.0.0.1:7932"}, append(others, "--writer-listen", "127.0.0.1:7932")...), "--listen and --writer-listen are both 127.0.0.1:7932"},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"local"}, tc.args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
		if strings.Contains(out.String(), "starting a local PostgreSQL cluster") {
			t.Errorf("%v: a cluster was started", tc.args)
		}
		if strings.Contains(errb.String(), "Options.") {
			t.Errorf("%v: internal names in %q", tc.args, errb.String())
		}
	}
}

// startLocal runs `pgtide local` (this test binary as pgtide) with no replicas on free ports and
// returns it, its stdout, and the cluster directory it printed.
func startLocal(t *testing.T) (*exec.Cmd, io.ReadCloser, string, *bufio.Reader) {
	t.Helper()
	port := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }
	cmd := exec.Command(os.Args[0], "local", "--replicas", "0", "--listen", port(), "--writer-listen", "",
		"--reader-listen", "", "--admin-listen", "")
	cmd.Env = append(os.Environ(), "PGTIDE_TEST_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	r := bufio.NewReader(out)
	dirRE := regexp.MustCompile(`\(data (\S+)/node0\)`)
	dir := ""
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("pgtide local's output ended before it was ready: %v", err)
		}
		if m := dirRE.FindStringSubmatch(line); m != nil {
			dir = m[1]
		}
		if strings.Contains(line, "Ctrl-C stops everything") {
			return cmd, out, dir, r
		}
	}
	t.Fatal("pgtide local did not get ready")
	return nil, nil, "", nil
}

// waitGone waits for path to be removed.
func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLocalCleanup: pgtide local cleans up its cluster when its output pipe closed before it
// (it used to die of SIGPIPE while logging its shutdown), when its terminal hangs up (SIGHUP),
// and a later pgtide local removes what a killed one (SIGKILL) left behind.
func TestLocalCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL clusters")
	}
	// The reader of its output goes away first, then Ctrl-C.
	cmd, out, dir, _ := startLocal(t)
	out.Close()
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pgtide local with its output closed: %v", err)
	}
	waitGone(t, dir)

	// Killed: nothing can clean up, until the next pgtide local.
	cmd, _, killedDir, _ := startLocal(t)
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(killedDir); err != nil {
		t.Fatalf("the killed run's directory: %v", err)
	}
	next, _, nextDir, _ := startLocal(t)
	waitGone(t, killedDir)

	// The terminal hangs up: stopped and cleaned up.
	next.Process.Signal(syscall.SIGHUP)
	if err := next.Wait(); err != nil {
		t.Fatalf("pgtide local after SIGHUP: %v", err)
	}
	waitGone(t, nextDir)
}
