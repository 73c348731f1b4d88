package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/proxy"
)

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--help"}, 0, []string{"pgtide run -c pgtide.toml", "pgtide local", "pgtide version"}},
		{nil, 2, []string{"Usage:"}},
		{[]string{"bogus"}, 2, []string{`unknown command "bogus"`}},
		{[]string{"run", "--help"}, 0, []string{"-c string", "SIGHUP", "SIGTERM", "shutdown_timeout", "[[endpoint]]", "endpoints: [[endpoint]] tables"}},
		{[]string{"local", "--help"}, 0, []string{"-listen", "-admin-listen", "-replicas", "-pool-mode", "-pool-size", "postgres", "[[endpoint]] tables", "stops on SIGHUP"}},
		{[]string{"version"}, 0, []string{"pgtide "}},
		{[]string{"run", "-c", "/nonexistent/pgtide.toml"}, 1, []string{"/nonexistent/pgtide.toml"}},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", tc.args, code, tc.code, out.String(), errb.String())
		}
		all := out.String() + errb.String()
		for _, w := range tc.want {
			if !strings.Contains(all, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, all)
			}
		}
	}
}

// TestBadConfigHidesPassword: a users file that does not parse is reported without its contents.
func TestBadConfigHidesPassword(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "users.toml"), []byte("[[user]]\nname = \"app\"\npassword = \"hunter2\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "pgtide.toml"), []byte("[auth]\nmethod = \"md5\"\nusers_file = \"users.toml\"\n[cluster]\nhosts = [\"127.0.0.1:5432\"]\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"run", "-c", filepath.Join(dir, "pgtide.toml")}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(errb.String(), "hunter2") {
		t.Fatalf("error shows the password: %s", errb.String())
	}
}

// TestSignals: SIGHUP reloads the file, SIGTERM shuts down and serve returns.
func TestSignals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	write := func(poolSize int) {
		c := config.Defaults()
		c.Proxy.Listen = "127.0.0.1:0"
		c.Cluster.Hosts = []string{"127.0.0.1:1"}
		c.Cluster.PoolSize = poolSize
		if err := writeConfig(path, c); err != nil {
			t.Fatal(err)
		}
	}
	write(5)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *proxy.Server, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- serve(cfg, &syncWriter{w: &logs}, func(s *proxy.Server) { ready <- s }, false) }()
	srv := <-ready
	write(9)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(time.Minute)
	for srv.Config().Cluster.PoolSize != 9 {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the configuration")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("SIGTERM did not stop the proxy")
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestVersionStamp: the version and commit set at build (-ldflags -X, as the Makefile does) are
// what `pgtide version` prints, the commit cut to 12 characters.
func TestVersionStamp(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "0123456789abcdef0123"
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 || out.String() != "pgtide v1.2.3 (commit 0123456789ab)\n" {
		t.Fatalf("exit %d, %q", code, out.String())
	}
}
