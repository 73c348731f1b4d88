package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
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
address of the status page (--admin-listen). Ctrl-C stops the proxy and the cluster and removes
the temporary directory.

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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

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
		for _, ep := range []router.Endpoint{router.Auto, router.Writer, router.Reader} {
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
	})
	if err != nil {
		fmt.Fprintln(stderr, "pgtide local:", err)
		return 1
	}
	fmt.Fprintln(stdout, "stopping the local cluster and removing", cl.Dir())
	return 0
}
