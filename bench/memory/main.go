// Command memory measures a pgtide process's memory under clients that send large queries at
// once: N clients each send one query of the given size (a string literal), all together, a few
// rounds, while the process's resident set (VmRSS, and its peak VmHWM) is sampled from /proc.
//
//	go run ./bench/memory -addr 127.0.0.1:6432 -pid $(pgrep -f 'pgtide local') -clients 1000 -size 1048576
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6432", "pgtide endpoint")
	user := flag.String("user", "postgres", "user")
	db := flag.String("db", "postgres", "database")
	pid := flag.Int("pid", 0, "pgtide's process ID, for /proc/PID/status")
	clients := flag.Int("clients", 1000, "concurrent clients")
	size := flag.Int("size", 1<<20, "bytes per query")
	rounds := flag.Int("rounds", 3, "queries per client")
	flag.Parse()
	if *pid == 0 {
		fmt.Fprintln(os.Stderr, "-pid is required")
		os.Exit(2)
	}
	host, port, _ := strings.Cut(*addr, ":")
	ctx := context.Background()
	before := status(*pid)
	conns := make([]*pgx.Conn, *clients)
	for i := range conns {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable default_query_exec_mode=simple_protocol", host, port, *user, *db))
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		conns[i] = c
	}
	idle := status(*pid)
	query := "SELECT length('" + strings.Repeat("x", *size-len("SELECT length('')")) + "')"
	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if rss := status(*pid)["VmRSS"]; rss > peak.Load() {
				peak.Store(rss)
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range *rounds {
				var n int
				if err := c.QueryRow(ctx, query).Scan(&n); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "query:", err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	sampler.Wait()
	after := status(*pid)
	for _, c := range conns {
		c.Close(ctx)
	}
	time.Sleep(2 * time.Second)
	gone := status(*pid)
	fmt.Printf("clients %d, query %d bytes, %d rounds in %s, %d failed\n", *clients, *size, *rounds, elapsed.Round(time.Millisecond), failed.Load())
	fmt.Printf("RSS KiB: before %d, %d clients idle %d, peak sampled %d (VmHWM %d), after the load %d, clients gone %d\n",
		before["VmRSS"], *clients, idle["VmRSS"], peak.Load(), after["VmHWM"], after["VmRSS"], gone["VmRSS"])
}

// status reads the kB figures of /proc/pid/status.
func status(pid int) map[string]int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		out[k] = n
	}
	return out
}
