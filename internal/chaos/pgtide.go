package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// endpoint is one of pgtide's listeners. PgBouncer has one address for all three.
type endpoint int

const (
	endpointAuto endpoint = iota
	endpointWriter
	endpointReader
)

// proxySettings is the part of the proxy's configuration that faults change.
type proxySettings struct {
	Hosts    []string // pgtide: every node; PgBouncer: the primary alone
	PoolSize int      // server connections per pool
}

// liveSettings are a proxy's current settings: set by Run's goroutine (reloads), read by the
// monitor's too.
type liveSettings struct {
	mu sync.Mutex
	s  proxySettings
}

func (l *liveSettings) get() proxySettings {
	l.mu.Lock()
	defer l.mu.Unlock()
	return proxySettings{Hosts: append([]string(nil), l.s.Hosts...), PoolSize: l.s.PoolSize}
}

func (l *liveSettings) set(s proxySettings) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s = s
}

// nodeSample is the proxy's own count of its server connections to one node, and their cap.
type nodeSample struct{ conns, cap int }

// proxy is the process under test. Its methods are called from Run's goroutine only, except
// addr and sample, which are safe while the load and the monitor run.
type proxy interface {
	name() string
	addr(endpoint) string
	// start starts the process (again, after stop) and returns once it serves clients.
	start(ctx context.Context) error
	// stop sends SIGTERM and waits for the process to exit.
	stop() error
	// reload rewrites the configuration with s and sends SIGHUP; it returns once the
	// process says it reloaded.
	reload(ctx context.Context, s proxySettings) error
	settings() proxySettings
	// sample returns the proxy's server connections per node (host:port), or nil when it
	// does not tell (PgBouncer: the monitor counts pg_stat_activity instead).
	sample(ctx context.Context) (map[string]nodeSample, error)
	// crashed says why the process ended without being stopped, or "".
	crashed() string
	logFile() string
	close()
}

// pgtideProxy runs pgtide with all three endpoints in transaction mode and [admin] listen.
type pgtideProxy struct {
	command                     func(args ...string) *exec.Cmd
	dir                         string
	auto, writer, reader, admin string // listen addresses, kept across restarts
	writeTimeout                string // [proxy] client_write_timeout
	cur                         liveSettings
	run                         *child // nil while stopped
	http                        *http.Client
}

func newPgtide(command func(args ...string) *exec.Cmd, dir string, s proxySettings, writeTimeout time.Duration) (*pgtideProxy, error) {
	p := &pgtideProxy{command: command, dir: dir, writeTimeout: writeTimeout.String(),
		http: &http.Client{Timeout: 2 * time.Second}}
	p.cur.set(s)
	for _, a := range []*string{&p.auto, &p.writer, &p.reader, &p.admin} {
		var err error
		if *a, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	return p, p.writeConfig()
}

func (p *pgtideProxy) name() string { return "pgtide" }

func (p *pgtideProxy) addr(e endpoint) string {
	return [...]string{p.auto, p.writer, p.reader}[e]
}

func (p *pgtideProxy) configPath() string      { return filepath.Join(p.dir, "pgtide.toml") }
func (p *pgtideProxy) logFile() string         { return filepath.Join(p.dir, "pgtide.log") }
func (p *pgtideProxy) settings() proxySettings { return p.cur.get() }

func (p *pgtideProxy) writeConfig() error {
	s := p.cur.get()
	hosts := make([]string, len(s.Hosts))
	for i, h := range s.Hosts {
		hosts[i] = strconv.Quote(h)
	}
	conf := fmt.Sprintf(`# written by the chaos suite (internal/chaos)
[proxy]
listen = %q
writer_listen = %q
reader_listen = %q
pool_mode = "transaction"
client_write_timeout = %q

[auth]
method = "trust"

[cluster]
hosts = [%s]
pool_size = %d

[admin]
listen = %q
`, p.auto, p.writer, p.reader, p.writeTimeout, strings.Join(hosts, ", "), s.PoolSize, p.admin)
	return os.WriteFile(p.configPath(), []byte(conf), 0o644)
}

func (p *pgtideProxy) start(ctx context.Context) error {
	if p.run != nil && !p.run.exited() {
		return errors.New("pgtide is already running")
	}
	run, err := startChild(p.command("run", "-c", p.configPath()), p.logFile())
	if err != nil {
		return err
	}
	p.run = run
	// Ready: every endpoint accepts clients and a writer is known.
	err = waitFor(ctx, 30*time.Second, "pgtide /readyz", func(ctx context.Context) error {
		if run.exited() {
			return fmt.Errorf("pgtide exited (%v)", run.waitErr)
		}
		return p.get(ctx, "/readyz", nil)
	})
	if err != nil {
		return fmt.Errorf("%w\n--- %s ---\n%s", err, p.logFile(), tailLines(p.logFile(), 20))
	}
	return nil
}

func (p *pgtideProxy) stop() error {
	if p.run == nil {
		return nil
	}
	err := p.run.terminate(time.Minute)
	p.run = nil
	if err != nil {
		return fmt.Errorf("pgtide after SIGTERM: %w", err)
	}
	return nil
}

func (p *pgtideProxy) reload(ctx context.Context, s proxySettings) error {
	p.cur.set(s)
	return sighup(ctx, p.run, p.writeConfig, p.logFile(), "configuration reloaded")
}

// sample reads pgtide_node_server_connections (summed over states) and
// pgtide_node_budget_connections from /metrics; the cap is the lower of the budget and
// pool_size.
func (p *pgtideProxy) sample(ctx context.Context) (map[string]nodeSample, error) {
	out := map[string]nodeSample{}
	err := p.get(ctx, "/metrics", func(body io.Reader) error {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			isConns := strings.HasPrefix(line, "pgtide_node_server_connections{")
			if !isConns && !strings.HasPrefix(line, "pgtide_node_budget_connections{") {
				continue
			}
			node, value, ok := nodeAndValue(line)
			if !ok {
				continue
			}
			s := out[node]
			if isConns {
				s.conns += value
			} else {
				s.cap = value
			}
			out[node] = s
		}
		return sc.Err()
	})
	// The suite's clients are one database and one user: one pool per node, so pool_size
	// caps a node as much as its budget does.
	pool := p.cur.get().PoolSize
	for node, s := range out {
		s.cap = min(s.cap, pool)
		out[node] = s
	}
	return out, err
}

// nodeAndValue splits a Prometheus text line `name{...,node="X",...} V` into X and V.
func nodeAndValue(line string) (string, int, bool) {
	_, rest, ok := strings.Cut(line, `node="`)
	if !ok {
		return "", 0, false
	}
	node, rest, ok := strings.Cut(rest, `"`)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, ' ')
	v, err := strconv.ParseFloat(rest[i+1:], 64)
	return node, int(v), err == nil
}

// get fetches path from [admin] listen and hands a 200 answer's body to read.
func (p *pgtideProxy) get(ctx context.Context, path string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	if read == nil {
		return nil
	}
	return read(resp.Body)
}

func (p *pgtideProxy) crashed() string { return crashedChild(p.run, p.logFile()) }

func (p *pgtideProxy) close() {
	p.http.CloseIdleConnections()
	if p.run != nil {
		p.run.kill()
		p.run = nil
	}
}

// sighup rewrites a proxy's configuration with write, sends run SIGHUP and waits until the
// proxy's log at logPath says said once more than before.
func sighup(ctx context.Context, run *child, write func() error, logPath, said string) error {
	before := strings.Count(readFile(logPath), said)
	if err := write(); err != nil {
		return err
	}
	if run == nil {
		return errors.New("the proxy is not running")
	}
	if err := run.signal(syscall.SIGHUP); err != nil {
		return err
	}
	return waitFor(ctx, 10*time.Second, "reload", func(context.Context) error {
		if strings.Count(readFile(logPath), said) > before {
			return nil
		}
		return fmt.Errorf("no %q in %s", said, logPath)
	})
}

// crashedChild says why run ended on its own, or "" while it runs (or was stopped: nil).
func crashedChild(run *child, logPath string) string {
	if run == nil || !run.exited() {
		return ""
	}
	return fmt.Sprintf("exited on its own (%v); last lines of %s:\n%s", run.waitErr, logPath, tailLines(logPath, 10))
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
