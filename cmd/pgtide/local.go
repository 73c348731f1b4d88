package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
	"pgtide/internal/proxy"
	"pgtide/internal/router"
)

const localUsage = `Usage: pgtide local [flags]

Starts a throwaway PostgreSQL cluster from the server binaries on this machine (a primary and
streaming replicas on free loopback ports, in a temporary directory), writes a pgtide
configuration for it, runs the proxy in front and prints the psql line to connect and the
address of the status page (--admin-listen). Ctrl-C (SIGINT, SIGTERM, or SIGHUP when the
terminal goes away) stops the proxy and the cluster and removes the temporary directory; what a
killed run left behind is removed by the next one.

To try [[endpoint]] tables (or any other setting), edit the configuration file it prints: it is
watched, and an edit is applied as a reload. Unlike pgtide run, pgtide local stops on SIGHUP
(its terminal went away) instead of reloading.

PostgreSQL refuses to run as root; as root, the servers run as the "postgres" user.

Flags:
`

func cmdLocal(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:6432", "address of the automatic endpoint")
	writerListen := fs.String("writer-listen", "127.0.0.1:6433", "address of the writer endpoint (\"\" for none)")
	readerListen := fs.String("reader-listen", "127.0.0.1:6434", "address of the reader endpoint (\"\" for none)")
	adminListen := fs.String("admin-listen", "127.0.0.1:6480", "HTTP address of the status page, /status.json, /metrics, /healthz and /readyz (\"\" for none)")
	replicas := fs.Int("replicas", 2, "number of streaming replicas")
	mode := fs.String("pool-mode", config.PoolModeTransaction, "pool mode: session or transaction")
	poolSize := fs.Int("pool-size", 20, "server connections per (node, database, user)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), localUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pgtide local: unexpected argument %q (flags start with -)\n", fs.Arg(0))
		return 2
	}
	// Everything that can be checked before a cluster is started is: a bad flag or a port in
	// use must not cost a cluster start and stop.
	if err := checkLocalFlags(*replicas, *mode, *poolSize, map[string]string{"--listen": *listen,
		"--writer-listen": *writerListen, "--reader-listen": *readerListen, "--admin-listen": *adminListen}); err != nil {
		fmt.Fprintln(stderr, "pgtide local:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	// What an earlier pgtide local left behind when it was killed (kill -9, an OOM kill):
	// servers no process owns any more, and their directories.
	if removed, err := pgcluster.RemoveOrphans(ctx); err != nil {
		fmt.Fprintln(stderr, "pgtide local: cleaning up after an earlier run:", err)
	} else {
		for _, dir := range removed {
			fmt.Fprintln(stdout, "removed a cluster an earlier run left behind:", dir)
		}
	}

	fmt.Fprintf(stdout, "starting a local PostgreSQL cluster: 1 primary + %d replicas...\n", *replicas)
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: *replicas})
	if err != nil {
		fmt.Fprintln(stderr, "pgtide local:", err)
		return 1
	}
	defer cl.Close()

	cfg := config.Defaults()
	cfg.Proxy.Listen = *listen
	cfg.Proxy.WriterListen = *writerListen
	cfg.Proxy.ReaderListen = *readerListen
	cfg.Admin.Listen = *adminListen
	cfg.Proxy.PoolMode = *mode
	cfg.Cluster.PoolSize = *poolSize
	cfg.Auth.AdminUsers = []string{"postgres"}
	for _, n := range cl.Nodes() {
		cfg.Cluster.Hosts = append(cfg.Cluster.Hosts, n.Addr())
	}
	path := filepath.Join(cl.Dir(), "pgtide.toml")
	if err := writeConfig(path, cfg); err != nil {
		fmt.Fprintln(stderr, "pgtide local:", err)
		return 1
	}
	cfg, err = config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, "pgtide local:", err)
		return 1
	}
	for i, n := range cl.Nodes() {
		role := "primary"
		if i > 0 {
			role = "replica"
		}
		fmt.Fprintf(stdout, "  %-8s %s  (data %s)\n", role, n.Addr(), n.DataDir())
	}
	fmt.Fprintf(stdout, "configuration: %s\n", path)

	err = serve(cfg, stderr, func(srv *proxy.Server) {
		fmt.Fprintf(stdout, "\npgtide is ready. Connect with:\n\n")
		for _, ep := range []router.Route{router.Auto, router.Writer, router.Reader} {
			if a := srv.EndpointAddr(ep); a != nil {
				host, port := splitAddr(a.String())
				fmt.Fprintf(stdout, "  psql -h %s -p %s -U postgres postgres    # %s endpoint\n", host, port, ep)
			}
		}
		host, port := splitAddr(srv.Addr().String())
		fmt.Fprintf(stdout, "  psql -h %s -p %s -U postgres pgtide      # admin console: SHOW HELP\n", host, port)
		if a := srv.AdminAddr(); a != nil {
			fmt.Fprintf(stdout, "\nStatus page: http://%s/   (metrics: http://%s/metrics)\n", a, a)
		}
		fmt.Fprintf(stdout, "\nCtrl-C stops everything.\n")
	}, true)
	if err != nil {
		fmt.Fprintln(stderr, "pgtide local:", err)
		return 1
	}
	fmt.Fprintln(stdout, "stopping the local cluster and removing", cl.Dir())
	return 0
}

// checkLocalFlags checks pgtide local's flags, and that each listen address is free, in the
// flags' own words.
func checkLocalFlags(replicas int, mode string, poolSize int, listens map[string]string) error {
	if replicas < 0 {
		return fmt.Errorf("--replicas must be 0 or more, not %d", replicas)
	}
	if mode != config.PoolModeSession && mode != config.PoolModeTransaction {
		return fmt.Errorf("--pool-mode must be %q or %q, not %q", config.PoolModeSession, config.PoolModeTransaction, mode)
	}
	if poolSize < 1 {
		return fmt.Errorf("--pool-size must be at least 1, not %d", poolSize)
	}
	seen := map[string]string{}
	for _, flagName := range slices.Sorted(maps.Keys(listens)) {
		addr := listens[flagName]
		if addr == "" {
			continue
		}
		if other, dup := seen[addr]; dup {
			return fmt.Errorf("%s and %s are both %s: give each its own address", other, flagName, addr)
		}
		seen[addr] = flagName
		ln, err := net.Listen("tcp", proxy.ListenAddr(addr))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%s %s: the address is in use (another pgtide local?); pick another with %s", flagName, addr, flagName)
			}
			return fmt.Errorf("%s %s: %v", flagName, addr, err)
		}
		ln.Close()
	}
	return nil
}
