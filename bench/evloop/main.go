// Command evloop is a prototype, not part of pgtide: the plain transaction-mode request/response
// relay of issue 14 on an edge-triggered epoll loop, to measure against pgtide's
// goroutine-per-client data path and against PgBouncer before any of pgtide is ported to it.
//
// What it does: it accepts clients on -listen with trust authentication (it answers the startup
// message itself, with the ParameterStatus messages its first server connection received, and
// refuses SSL), keeps -pool-size server connections to -server logged in as -user/-database
// (trust), and lends a server connection to a client when the client's request arrives, for as
// long as the request's answers take: until the server's ReadyForQuery says 'I' (idle, outside a
// transaction block) with no Query, Sync or FunctionCall of the client left unanswered and no
// half-sent extended-protocol request. Enough for pgbench -S -M simple and -M extended.
//
// How: -loops event loops (default GOMAXPROCS), each on its own locked OS thread, with its own
// SO_REUSEPORT listener, epoll instance, server connections and wait queue, so that loops share
// nothing and take no lock. Every socket is registered once, for input and output, edge-triggered;
// the loop never calls epoll_ctl again for it. Bytes are framed by the 5-byte message header and
// forwarded raw from one loop-wide scratch buffer; a connection holds a buffer of its own only
// while the other side cannot take its bytes (a partial write), so an idle client holds none: it
// costs its descriptor, one small struct and its slot in the loop's table. Reads and writes are
// raw non-blocking system calls that bypass the Go scheduler's syscall bookkeeping.
//
// What it does not do (it is a prototype): user or database routing (every client shares the one
// pool), passwords, TLS, cancel requests, session mode, named prepared statements across server
// connections (pgbench -M prepared fails as under PgBouncer before 1.21), COPY, settings tracking,
// reconnecting a server connection that died (the pool shrinks), timeouts, metrics, graceful
// shutdown (SIGTERM ends the process). See bench/README.md for how to run and measure it.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
)

// options are the command-line flags.
type options struct {
	listen   string // host:port for clients
	server   string // host:port of PostgreSQL
	user     string // server login user
	database string // server login database
	poolSize int    // server connections over all loops
	loops    int
}

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:6433", "host:port to accept clients on")
	flag.StringVar(&o.server, "server", "127.0.0.1:5432", "PostgreSQL host:port (trust authentication)")
	flag.StringVar(&o.user, "user", "postgres", "user the server connections log in as")
	flag.StringVar(&o.database, "database", "postgres", "database the server connections log in to")
	flag.IntVar(&o.poolSize, "pool-size", 20, "server connections, split evenly over the loops (at least one each)")
	flag.IntVar(&o.loops, "loops", runtime.GOMAXPROCS(0), "event loops, each on its own OS thread")
	flag.Parse()
	if o.loops < 1 || o.poolSize < 1 {
		fmt.Fprintln(os.Stderr, "evloop: -loops and -pool-size must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		log.Fatalf("evloop: %v", err)
	}
}

// run starts the loops and blocks for the life of the process: the loops never return unless
// their epoll instance fails.
func run(o options) error {
	greeting, err := probeGreeting(o)
	if err != nil {
		return err
	}
	errc := make(chan error, o.loops)
	for i := range o.loops {
		n := o.poolSize / o.loops
		if i < o.poolSize%o.loops {
			n++
		}
		l, err := newLoop(i, o, max(n, 1), greeting)
		if err != nil {
			return err
		}
		go func() { errc <- l.run() }()
	}
	log.Printf("evloop: %d loop(s) on %s, %d server connection(s) to %s", o.loops, o.listen, o.poolSize, o.server)
	return <-errc
}
