package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
)

// TestManyClients (PGTIDE_HEAVY=1): a pgtide process serves 10,000 concurrent client
// connections, most idle and some active, on a pool of 20; it reports its resident memory per
// idle client, and after the clients leave its goroutines and open files are back where they
// were. The figures go to RELIABILITY.md.
func TestManyClients(t *testing.T) {
	if os.Getenv("PGTIDE_HEAVY") == "" {
		t.Skip("set PGTIDE_HEAVY=1: opens 10,000 connections")
	}
	clients := 10000
	if n, err := strconv.Atoi(os.Getenv("PGTIDE_CLIENTS")); err == nil {
		clients = n
	}
	const active = 100
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := config.Defaults()
	cfg.Proxy.Listen = addr
	cfg.Proxy.MaxClientConnections = clients + active + 10
	cfg.Proxy.LogLevel = "warn"
	cfg.Admin.Listen = admin
	cfg.Cluster.Hosts = []string{c.Primary().Addr()}
	cfg.Cluster.PoolSize = 20
	if err := writeConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "-c", path)
	cmd.Env = append(os.Environ(), "PGTIDE_TEST_MAIN=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	metric := func(name string) float64 {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	rss := func() int64 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				return n
			}
		}
		return 0
	}
	deadline := time.Now().Add(time.Minute)
	for metric("go_goroutines") < 0 {
		if time.Now().After(deadline) {
			t.Fatal("pgtide did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One client first, so the pool and its first server connection exist in the baseline.
	warm := login(t, addr)
	simpleQuery(t, warm, "SELECT 1")
	warm.Close()
	baseRSS, baseG, baseFDs := rss(), metric("go_goroutines"), metric("process_open_fds")

	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	start := time.Now()
	for range clients {
		conns = append(conns, login(t, addr))
	}
	idleRSS := rss()
	t.Logf("%d clients logged in in %s; RSS %d KiB (baseline %d KiB): %.2f KiB per idle client; goroutines %.0f (baseline %.0f), open files %.0f",
		clients, time.Since(start).Round(time.Millisecond), idleRSS, baseRSS, float64(idleRSS-baseRSS)/float64(clients),
		metric("go_goroutines"), baseG, metric("process_open_fds"))

	// Some of them work while the rest stay idle: every query succeeds.
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	loadStart := time.Now()
	for i := range active {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := trySimpleQuery(conns[i*(clients/active)], "SELECT pg_sleep(0.001)"); err != nil {
					failed.Add(1)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d queries by %d active clients among %d in %s, %d failed; RSS %d KiB",
		done.Load(), active, clients, time.Since(loadStart).Round(time.Millisecond), failed.Load(), rss())
	if failed.Load() > 0 {
		t.Fatalf("%d active clients failed", failed.Load())
	}

	for _, conn := range conns {
		conn.Close()
	}
	conns = nil
	deadline = time.Now().Add(2 * time.Minute)
	// What stays: the pool's server connections (at most pool_size), opened for the load.
	for metric("go_goroutines") > baseG+5 || metric("process_open_fds") > baseFDs+float64(cfg.Cluster.PoolSize)+5 {
		if time.Now().After(deadline) {
			t.Fatalf("after the clients left: goroutines %.0f (baseline %.0f), open files %.0f (baseline %.0f)",
				metric("go_goroutines"), baseG, metric("process_open_fds"), baseFDs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("clients gone: goroutines %.0f, open files %.0f, RSS %d KiB", metric("go_goroutines"), metric("process_open_fds"), rss())
}

// login opens a client connection to pgtide at addr as user postgres (trust) and reads up to its
// first ReadyForQuery.
func login(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 0}, 196608)
	msg = append(msg, "user\x00postgres\x00database\x00postgres\x00\x00"...)
	binary.BigEndian.PutUint32(msg, uint32(len(msg)))
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := readUntilReady(conn); err != nil {
		t.Fatalf("login: %v", err)
	}
	return conn
}

func simpleQuery(t *testing.T, conn net.Conn, sql string) {
	t.Helper()
	if err := trySimpleQuery(conn, sql); err != nil {
		t.Fatal(err)
	}
}

func trySimpleQuery(conn net.Conn, sql string) error {
	msg := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(sql)+1))
	msg = append(append(msg, sql...), 0)
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	return readUntilReady(conn)
}

// readUntilReady reads messages up to ReadyForQuery, failing on an ErrorResponse.
func readUntilReady(conn net.Conn) error {
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	defer conn.SetReadDeadline(time.Time{})
	var hdr [5]byte
	var failed error
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return err
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(conn, body); err != nil {
			return err
		}
		switch hdr[0] {
		case 'E':
			failed = fmt.Errorf("server error: %q", body)
		case 'Z':
			return failed
		}
	}
}
