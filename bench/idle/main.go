// Command idle measures a proxy's resident memory per idle client at counts beyond bench/compare's
// (issue 14 asks for 100,000): it logs N clients in through -addr (trust, protocol 3.0, written
// by hand so that the client side costs one socket and a few bytes each), runs SELECT 1 on each,
// holds them all idle, and reports the proxy's VmRSS from /proc/PID/status before and with them.
// The proxy and this program each need N descriptors: raise RLIMIT_NOFILE (ulimit -n) for both.
//
//	go run ./bench/idle -addr 127.0.0.1:6433 -pid $(pgrep -n evloop) -clients 10000
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6433", "proxy address")
	user := flag.String("user", "postgres", "user")
	db := flag.String("db", "postgres", "database")
	pid := flag.Int("pid", 0, "the proxy's process ID, for /proc/PID/status")
	clients := flag.Int("clients", 10000, "idle clients to hold")
	dialers := flag.Int("dialers", 32, "clients logging in at once")
	settle := flag.Duration("settle", 2*time.Second, "time to wait with all clients idle before reading RSS")
	flag.Parse()
	if *pid == 0 {
		fmt.Fprintln(os.Stderr, "idle: -pid is required")
		os.Exit(2)
	}
	raiseFileLimit()

	// One client first, so that the pool's first server connection is not counted.
	first, err := login(*addr, *user, *db)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
	defer first.Close()
	before := rssKiB(*pid)

	conns := make([]net.Conn, *clients)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards fail and nerr
		fail error
		nerr int
	)
	next := make(chan int)
	for range *dialers {
		wg.Go(func() {
			for i := range next {
				c, err := login(*addr, *user, *db)
				if err != nil {
					mu.Lock()
					if fail == nil {
						fail = err
					}
					nerr++
					mu.Unlock()
					continue
				}
				conns[i] = c
			}
		})
	}
	start := time.Now()
	for i := range *clients {
		next <- i
	}
	close(next)
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if nerr > 0 {
		fmt.Fprintf(os.Stderr, "idle: %d of %d clients failed, the first: %v\n", nerr, *clients, fail)
		os.Exit(1)
	}
	time.Sleep(*settle)
	with := rssKiB(*pid)
	n := *clients
	fmt.Printf("%d idle clients (logged in in %.1f s): RSS %.1f MiB -> %.1f MiB, %.2f KiB per client\n",
		n, time.Since(start).Seconds(), float64(before)/1024, float64(with)/1024, float64(with-before)/float64(n))
}

// login opens a client connection, logs in with trust and runs SELECT 1 on it.
func login(addr, user, db string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	startup := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	startup = append(startup, "user\x00"+user+"\x00database\x00"+db+"\x00\x00"...)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	r := bufio.NewReaderSize(c, 512)
	if _, err := c.Write(startup); err == nil {
		err = untilReady(r)
	}
	if err == nil {
		q := append([]byte{'Q', 0, 0, 0, 0}, "SELECT 1\x00"...)
		binary.BigEndian.PutUint32(q[1:], uint32(len(q)-1))
		if _, err = c.Write(q); err == nil {
			err = untilReady(r)
		}
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// untilReady reads messages up to ReadyForQuery; an ErrorResponse or a password request fails.
func untilReady(r *bufio.Reader) error {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		body := make([]byte, int(binary.BigEndian.Uint32(hdr[1:]))-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		switch hdr[0] {
		case 'E':
			return fmt.Errorf("server error: %q", body)
		case 'R':
			if binary.BigEndian.Uint32(body) != 0 {
				return errors.New("the proxy asks for a password; use trust")
			}
		case 'Z':
			return nil
		}
	}
}

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// raiseFileLimit lifts the soft open-files limit to the hard one.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
