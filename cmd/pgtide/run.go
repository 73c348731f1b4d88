package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"pgtide/internal/config"
	"pgtide/internal/proxy"
)

const runUsage = `Usage: pgtide run -c pgtide.toml

Runs the proxy. Clients connect to its endpoints as to PostgreSQL: [proxy] listen (auto: in
transaction mode each transaction goes to a replica when it is provably read-only, to the
writer otherwise), writer_listen (the writer) and reader_listen (the healthy readers within
max_replica_lag); and [[endpoint]] tables, each a listener with its own route (writer,
reader, auto), readers (nodes, exclude_nodes), pool_mode, max_replica_lag and pool_size
(README "[[endpoint]]"). Every node in [cluster] hosts is health-checked for its role and lag; see
the README for every setting, and its "Read/write routing" for the hints
(/* pgtide:reader */, SET pgtide.route) and read-your-writes. TLS: [tls] towards clients
(cert_file, key_file, ca_file, client_tls), [cluster] server_tls and server_ca_file towards
the servers (the README's "TLS" shows a setup for Aurora). Secrets: a users-file password may
be the role's SCRAM verifier or md5 hash, and pgtide then logs in to the servers by
pass-through (README "Secrets"). RDS IAM: a users-file entry with iam = true logs in to the
servers with RDS IAM auth tokens signed for [aws] region with the machine's AWS credentials,
over TLS only (README "RDS IAM authentication"). health_check_user needs a plaintext password
or iam = true in the users file, or the servers' trust.

Signals:
  SIGHUP           reload the configuration and users file (pool sizes, users, timeouts,
                   limits, hosts and weights, lag bounds, log level, TLS settings and
                   certificates, endpoints: [[endpoint]] tables and the listen shorthands
                   added, changed or removed; and re-read the writer's function catalogs)
                   without dropping the connections of the endpoints that stay; the files
                   (the TLS files too) are also watched and reloaded when they change.
                   unix_socket_dir, admin.listen, log_format and discovery need a restart
  SIGTERM, SIGINT  stop accepting clients, let running transactions finish (up to
                   [proxy] shutdown_timeout), then exit

Admin console: connect to the database "pgtide" as one of [auth] admin_users (stats_users:
SHOW only), e.g. psql -U admin pgtide -c 'SHOW POOLS'; SHOW HELP lists the commands (RELOAD,
PAUSE, RESUME, RECONNECT, KILL_CLIENT, ...).

Flags:
`

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "pgtide.toml", "configuration file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until shutdown (for performance work)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), runUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "pgtide:", err)
		return 1
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "pgtide:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "pgtide:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if err := serve(cfg, stderr, nil, false); err != nil {
		fmt.Fprintln(stderr, "pgtide:", err)
		return 1
	}
	return 0
}

// maxQueuedLog bounds the log lines waiting for a slow log output (see logWriter), in bytes.
const maxQueuedLog = 4 << 20

// serve runs the proxy for cfg until SIGTERM/SIGINT, reloading on SIGHUP and on file changes
// (or, with hangupStops, stopping on SIGHUP too: its terminal is gone). ready, if set, is called
// with the listening proxy.
func serve(cfg *config.Config, logOut io.Writer, ready func(*proxy.Server), hangupStops bool) error {
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Proxy.LogLevel))
	lw := newLogWriter(logOut, maxQueuedLog)
	defer lw.Close() // after the proxy has shut down: its last lines go out
	logger := newLogger(lw, cfg.Proxy.LogFormat, level)

	srv, err := proxy.New(cfg, logger)
	if err != nil {
		return err
	}
	srv.BuildVersion = versionString()
	logger.Info("pgtide listening", "version", versionString(), "endpoints", endpointList(cfg, srv),
		"admin_listen", cfg.Admin.Listen, "pool_mode", cfg.Proxy.PoolMode, "hosts", cfg.Cluster.Hosts,
		"open_files_limit", checkFileLimit(cfg, logger))

	srv.OnReload = func(c *config.Config) { level.Set(parseLevel(c.Proxy.LogLevel)) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Path != "" {
		srv.WatchConfig(cfg.Path, 2*time.Second)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-ctx.Done():
				srv.Shutdown()
				return
			case sig := <-sigs:
				if sig == syscall.SIGHUP && !hangupStops {
					if cfg.Path != "" {
						srv.ReloadFile(cfg.Path)
					}
					continue
				}
				logger.Info("received signal; shutting down", "signal", sig.String())
				srv.Shutdown()
				return
			}
		}
	}()
	if ready != nil {
		ready(srv)
	}
	err = srv.Serve() // returns when Shutdown closes the listener
	cancel()
	<-stopped // Shutdown has finished: transactions ended, pools closed
	return err
}

// checkFileLimit returns the process's limit on open files (the Go runtime has already raised
// the soft limit to the hard one) and warns when it cannot hold max_client_connections clients
// plus the server connections they may need: past it clients wait in the listen backlog (see
// proxy.Server.accept) instead of being served.
func checkFileLimit(cfg *config.Config, logger *slog.Logger) uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	need := uint64(cfg.Proxy.MaxClientConnections) + uint64(cfg.Cluster.MaxServerConnections)*uint64(max(1, len(cfg.Cluster.Hosts))) + 64
	if lim.Cur < need {
		logger.Warn("the open-files limit is below max_client_connections plus server connections; raise it (ulimit -n, LimitNOFILE=) or lower max_client_connections",
			"limit", lim.Cur, "hard_limit", lim.Max, "needed", need)
	}
	return lim.Cur
}

// endpointList names every endpoint of cfg with its route, pool mode and the address srv listens
// on for it (the port the system chose for ":0"), for the startup line: "auto(auto,transaction)=
// 127.0.0.1:6432 analytics(reader,session)=127.0.0.1:6440".
func endpointList(cfg *config.Config, srv *proxy.Server) string {
	names, addrs := srv.EndpointAddrs()
	eps := cfg.Endpoints()
	parts := make([]string, 0, len(names))
	for i, name := range names {
		part := name + "=" + addrs[i].String()
		if i < len(eps) && eps[i].Name == name {
			part = name + "(" + eps[i].Route + "," + eps[i].PoolMode + ")=" + addrs[i].String()
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, " ")
}
