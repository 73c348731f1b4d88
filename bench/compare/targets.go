package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgcluster"
)

// Target names, in the order each configuration runs against them.
const (
	nameDirect    = "direct"
	nameHAProxy   = "HAProxy"
	namePgBouncer = "PgBouncer"
	namePgtide    = "pgtide" // its auto endpoint
	nameEvloop    = "evloop"
	// namePgtideWriter is pgtide's writer endpoint (-pgtide-endpoints auto,writer): a second
	// process, so that its CPU is its own.
	namePgtideWriter = "pgtide-writer"
)

// target is one address pgbench connects to: the primary itself or a
// proxy in front of it.
type target struct {
	name string
	addr string   // 127.0.0.1:port
	proc *process // the proxy; nil for direct
}

func (t *target) hostPort() (string, string) {
	host, port, _ := net.SplitHostPort(t.addr)
	return host, port
}

func (t *target) connString() string {
	host, port := t.hostPort()
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=10", host, port)
}

// process is a long-running child (a proxy). Its goroutine owns cmd.Wait;
// done closes when the process has exited, after which waitErr is set.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// startProcess starts cmd with its output in logPath. The child gets its
// own process group so a Ctrl-C in the terminal reaches only us and we stop
// things in order.
func startProcess(name string, cmd *exec.Cmd, logPath string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to stopTimeout, then kills.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls until a client can log in through addr and run a query,
// failing early if the process exits.
func (p *process) waitReady(ctx context.Context, connString string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited during startup (%v)\n--- %s ---\n%s", p.name, p.waitErr, p.logPath, tail(p.logPath, 20))
		}
		last = pingOnce(ctx, connString)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last error: %v)\n--- %s ---\n%s", p.name, ctx.Err(), last, p.logPath, tail(p.logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func pingOnce(ctx context.Context, connString string) error {
	c, err := pgconn.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT 1").ReadAll()
	return err
}

// startCluster starts the primary and loads the pgbench tables into it.
func startCluster(ctx context.Context, scale int) (*pgcluster.Cluster, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		ExtraConf: []string{
			"max_connections = 1200", // direct c=1000 plus both proxies' pools
			"shared_buffers = 128MB",
			"log_min_messages = warning",
		},
	})
	if err != nil {
		return nil, err
	}
	p := c.Primary()
	host, port, _ := net.SplitHostPort(p.Addr())
	cmd := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(scale),
		"-h", host, "-p", port, "-U", "postgres", "postgres")
	cmd.Env = pgcluster.CleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		c.Close()
		return nil, fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	return c, nil
}

// buildPgtide builds ./cmd/pgtide of the module rooted at root into dir.
func buildPgtide(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "pgtide")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgtide")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pgtide: %w\n%s", err, out)
	}
	return bin, nil
}

// startPgtide writes a config mirroring PgBouncer's and runs the proxy with one endpoint: the
// auto endpoint (name namePgtide), which classifies every request to route it, or the writer
// endpoint (namePgtideWriter), which does not. With a single server both send everything to it.
func startPgtide(ctx context.Context, bin, dir, serverAddr string, poolSize int, name string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	listen := fmt.Sprintf("listen = %q", addr)
	if name == namePgtideWriter {
		listen = fmt.Sprintf("listen = \"\"\nwriter_listen = %q", addr)
	}
	conf := fmt.Sprintf(`# written by bench/compare
[proxy]
%s
pool_mode = "transaction"
max_client_connections = 2000
log_level = "warn"

[auth]
method = "trust"

[cluster]
hosts = [%q]
pool_size = %d
max_server_connections = %d
`, listen, serverAddr, poolSize, poolSize)
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return launch(ctx, name, addr, exec.Command(bin, "run", "-c", path), filepath.Join(dir, name+".log"))
}

// launch starts a proxy and waits until a client can log in through addr.
func launch(ctx context.Context, name, addr string, cmd *exec.Cmd, logPath string) (*target, error) {
	p, err := startProcess(name, cmd, logPath)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, addr: addr, proc: p}
	if err := p.waitReady(ctx, t.connString()); err != nil {
		p.stop()
		return nil, err
	}
	return t, nil
}

// startPgBouncer runs PgBouncer in transaction mode with the same pool
// limits as pgtide. PgBouncer refuses to run as root, so as root it runs
// as the postgres OS user, which owns dir.
func startPgBouncer(ctx context.Context, bin, dir, serverAddr string, poolSize int) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	sHost, sPort, _ := net.SplitHostPort(serverAddr)
	userlist := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(userlist, []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return nil, err
	}
	// Connection logging is off because pgtide at log_level warn does not
	// log connections either; with -C it would cost PgBouncer a log line
	// per transaction. max_db_connections mirrors max_server_connections.
	ini := fmt.Sprintf(`; written by bench/compare
[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
listen_backlog = 4096
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_db_connections = %d
max_client_conn = 2000
logfile = %s
log_connections = 0
log_disconnections = 0
admin_users = postgres
`, sHost, sPort, port, userlist, poolSize, poolSize, filepath.Join(dir, "pgbouncer.log"))
	path := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(ini), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, path)
	if os.Geteuid() == 0 {
		cred, err := pgcluster.ServerCredential()
		if err != nil {
			return nil, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Dir = dir
	// The logfile setting gets PgBouncer's own log; stderr catches what it
	// prints before reading the config.
	t, err := launch(ctx, namePgBouncer, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd,
		filepath.Join(dir, "pgbouncer.stderr"))
	if err != nil {
		return nil, fmt.Errorf("%w\n--- pgbouncer.log ---\n%s", err, tail(filepath.Join(dir, "pgbouncer.log"), 20))
	}
	return t, nil
}

// startHAProxy runs HAProxy in TCP mode in front of the server: one server connection per
// client, bytes forwarded and nothing else. It is the reference for what one more hop costs on
// this machine, whatever the proxy does: the floor under every proxy's TPS/direct ratio.
func startHAProxy(ctx context.Context, bin, dir, serverAddr string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// One thread, like PgBouncer; connections beyond maxconn would queue.
	cfg := fmt.Sprintf(`# written by bench/compare
global
    maxconn 4000
    nbthread 1

defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h

listen postgres
    bind %s
    server primary %s
`, addr, serverAddr)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	// -db: stay in the foreground, so that stop reaches it.
	return launch(ctx, nameHAProxy, addr, exec.Command(bin, "-db", "-f", path), filepath.Join(dir, "haproxy.log"))
}

// startEvloop runs the bench/evloop prototype (issue 14's event-loop relay, transaction mode
// only, trust) with the same number of server connections as the poolers.
func startEvloop(ctx context.Context, bin, dir, serverAddr string, poolSize, loops int) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "-listen", addr, "-server", serverAddr,
		"-pool-size", strconv.Itoa(poolSize), "-loops", strconv.Itoa(loops))
	return launch(ctx, nameEvloop, addr, cmd, filepath.Join(dir, "evloop.log"))
}

// freePort asks the kernel for an unused loopback port. Another process
// may take it before ours binds it; the proxy then fails to start and says
// so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n lines of a file, or a note that it is unreadable.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
