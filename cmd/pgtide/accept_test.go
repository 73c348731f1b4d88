package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"pgtide/internal/config"
)

// TestMain lets a test run the test binary as pgtide itself (PGTIDE_TEST_MAIN=1), with its
// file-descriptor limit lowered to PGTIDE_TEST_NOFILE when set.
func TestMain(m *testing.M) {
	if os.Getenv("PGTIDE_TEST_MAIN") == "1" {
		if n, err := strconv.Atoi(os.Getenv("PGTIDE_TEST_NOFILE")); err == nil {
			lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
				panic(err)
			}
		}
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAcceptOutOfFiles: a pgtide process that runs out of file descriptors keeps its listener:
// it logs once that it cannot accept, and once the clients holding the descriptors leave it
// accepts and answers new ones. (The accept loop used to return on the first error that was not
// a timeout, and the process shut down.)
func TestAcceptOutOfFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a pgtide process")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c := config.Defaults()
	c.Proxy.Listen = addr
	c.Cluster.Hosts = []string{"127.0.0.1:1"} // nothing there: the checks fail, accepting does not care
	if err := writeConfig(path, c); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "-c", path)
	cmd.Env = append(os.Environ(), "PGTIDE_TEST_MAIN=1", "PGTIDE_TEST_NOFILE=40")
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	cmd.Stdout, cmd.Stderr = sw, sw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	logText := func() string {
		sw.mu.Lock()
		defer sw.mu.Unlock()
		return logs.String()
	}
	// waitLog waits for the log to contain want, failing if the process exits first.
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(logText(), want) {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("pgtide exited (%v) before logging %q:\n%s", err, want, logText())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", want, logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog("pgtide listening")

	// Clients that connect and say nothing each hold one of pgtide's 40 descriptors until
	// client_login_timeout; more than 40 of them exhaust the process.
	var held []net.Conn
	defer func() {
		for _, conn := range held {
			conn.Close()
		}
	}()
	for range 60 {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	waitLog("cannot accept client connections")
	for _, conn := range held {
		conn.Close()
	}
	held = nil

	// A new client is served: an SSLRequest gets its 'N'.
	deadline := time.Now().Add(time.Minute)
	for {
		if answered(addr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from pgtide after the clients left:\n%s", logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitLog("accepting client connections again")
	// One line per episode, however many accepts failed in it. (The probes above may start
	// another episode while the closed clients' descriptors are still being released.)
	text := logText()
	first := text[:strings.Index(text, "accepting client connections again")]
	if n := strings.Count(first, "cannot accept client connections"); n != 1 {
		t.Errorf("the episode was logged %d times, want once", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("pgtide exited with %v:\n%s", err, logText())
		}
	case <-time.After(time.Minute):
		t.Fatal("SIGTERM did not stop pgtide")
	}
}

// answered reports whether pgtide at addr answers an SSLRequest.
func answered(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		return false
	}
	var b [1]byte
	_, err = conn.Read(b[:])
	return err == nil && b[0] == 'N'
}
