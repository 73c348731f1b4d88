package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"pgtide/internal/pgcluster"
)

// bouncerProxy runs PgBouncer in transaction mode in front of the primary: one address serves
// every endpoint. PgBouncer has no failover and no list of hosts; it knows one server per
// database. As root it runs as the postgres OS user, since it refuses to run as root.
type bouncerProxy struct {
	bin    string
	dir    string
	listen string              // host:port of its one listener
	cred   *syscall.Credential // nil: as this process
	cur    liveSettings
	run    *child
}

func newBouncer(bin, dir string, s proxySettings) (*bouncerProxy, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("pgbouncer"); err != nil {
			return nil, fmt.Errorf("pgbouncer: %w (scripts/ensure-postgres.sh --pgbouncer installs it)", err)
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b := &bouncerProxy{bin: bin, dir: dir, listen: addr}
	b.cur.set(s)
	if b.cred, err = pgcluster.ServerCredential(); err != nil {
		return nil, err
	}
	if b.cred != nil {
		if err := os.Chown(dir, int(b.cred.Uid), int(b.cred.Gid)); err != nil {
			return nil, err
		}
	}
	return b, b.writeConfig()
}

func (b *bouncerProxy) name() string            { return "PgBouncer" }
func (b *bouncerProxy) addr(endpoint) string    { return b.listen }
func (b *bouncerProxy) logFile() string         { return filepath.Join(b.dir, "pgbouncer.log") }
func (b *bouncerProxy) configPath() string      { return filepath.Join(b.dir, "pgbouncer.ini") }
func (b *bouncerProxy) settings() proxySettings { return b.cur.get() }

// writeConfig writes pgbouncer.ini: Debian's defaults but for what the suite needs (trust, a
// port, room for the 1,000-client storm) and the pool limits pgtide gets (pool_size per pool,
// max_server_connections' 100 per node).
func (b *bouncerProxy) writeConfig() error {
	s := b.cur.get()
	host, port := splitHostPort(s.Hosts[0])
	lhost, lport := splitHostPort(b.listen)
	ini := fmt.Sprintf(`; written by the chaos suite (internal/chaos)
[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = %s
listen_port = %s
listen_backlog = 4096
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_db_connections = 100
max_client_conn = 2000
logfile = %s
`, host, port, lhost, lport, filepath.Join(b.dir, "userlist.txt"), s.PoolSize, b.logFile())
	files := map[string]string{b.configPath(): ini, filepath.Join(b.dir, "userlist.txt"): fmt.Sprintf("%q \"\"\n", clientUser)}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *bouncerProxy) start(ctx context.Context) error {
	if b.run != nil && !b.run.exited() {
		return errors.New("pgbouncer is already running")
	}
	cmd := exec.Command(b.bin, b.configPath())
	cmd.Dir = b.dir
	if b.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
	}
	run, err := startChild(cmd, filepath.Join(b.dir, "pgbouncer.stderr"))
	if err != nil {
		return err
	}
	b.run = run
	err = waitFor(ctx, 30*time.Second, "pgbouncer", func(ctx context.Context) error {
		if run.exited() {
			return fmt.Errorf("pgbouncer exited (%v): %s", run.waitErr, tailLines(filepath.Join(b.dir, "pgbouncer.stderr"), 5))
		}
		conn, err := pgconn.Connect(ctx, clientConnString(b.listen, "chaos-ready"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
		return err
	})
	if err != nil {
		return fmt.Errorf("%w\n--- %s ---\n%s", err, b.logFile(), tailLines(b.logFile(), 20))
	}
	return nil
}

// stop sends SIGINT, PgBouncer's safe shutdown (PAUSE, then SHUTDOWN: running transactions
// finish first), which is what its systemd unit sends; its SIGTERM is an immediate shutdown.
func (b *bouncerProxy) stop() error {
	if b.run == nil {
		return nil
	}
	run := b.run
	b.run = nil
	if err := run.signal(syscall.SIGINT); err != nil {
		return err
	}
	select {
	case <-run.done:
		return nil
	case <-time.After(time.Minute):
		run.kill()
		return errors.New("pgbouncer did not exit within 1m of SIGINT; killed")
	}
}

func (b *bouncerProxy) reload(ctx context.Context, s proxySettings) error {
	b.cur.set(s)
	return sighup(ctx, b.run, b.writeConfig, b.logFile(), "got SIGHUP")
}

func (b *bouncerProxy) sample(context.Context) (map[string]nodeSample, error) { return nil, nil }

func (b *bouncerProxy) crashed() string { return crashedChild(b.run, b.logFile()) }

func (b *bouncerProxy) close() {
	if b.run != nil {
		b.run.kill()
		b.run = nil
	}
}
