package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Options configures Start. The zero value is a lone primary.
type Options struct {
	// Replicas is the number of streaming replicas of the primary (0..n).
	Replicas int
	// ExtraConf lines are appended to the primary's postgresql.conf after the
	// package's own settings, so they override them; replicas inherit them
	// through pg_basebackup.
	ExtraConf []string
	// HBA lines are placed before the default lines in pg_hba.conf, e.g.
	// "host all scram_user 127.0.0.1/32 scram-sha-256". The defaults after
	// them trust everything, replication included, on 127.0.0.1/32 and ::1/128.
	HBA []string
	// DataFiles are written into the primary's data directory before it first starts, by name,
	// each mode 0600 and owned by the servers' OS user (as PostgreSQL wants of a key): e.g.
	// "server.crt" and "server.key", PostgreSQL's default ssl_cert_file and ssl_key_file, with
	// ExtraConf "ssl = on". Replicas get them through pg_basebackup.
	DataFiles map[string][]byte
	// InitSQL statements run on the primary as superuser "postgres" in
	// database "postgres" after it starts and before replicas are created, so
	// the replicas get the objects. Errors name the statement by index, never
	// by text, since statements may carry passwords.
	InitSQL []string
	// Logf, if set, receives one line per lifecycle event (e.g. t.Logf).
	Logf func(format string, args ...any)
}

// Cluster is a set of local PostgreSQL servers under one temporary
// directory. It owns the directory and every server process started through
// it until Close.
type Cluster struct {
	run  *runner // immutable after Start
	dir  string
	logf func(format string, args ...any)

	mu        sync.Mutex   // guards the fields below
	nodes     []*Node      // creation order; index 0 is the initial primary
	nextIndex int          // next node name suffix; never reused
	ports     map[int]bool // ports handed out, so two nodes never share one
	closed    bool

	closeOnce sync.Once
	closeErr  error // written once inside closeOnce
}

// Timeouts for waiting on a server. They bound the waits even when the
// caller's context has no deadline.
const (
	readyTimeout     = 15 * time.Second // accepting connections after pg_ctl start -w
	streamingTimeout = 30 * time.Second // replica visible as streaming upstream
	closeTimeout     = 60 * time.Second
	pollInterval     = 50 * time.Millisecond
)

// Start creates a primary and opts.Replicas streaming replicas and waits
// until all of them are up and the replicas stream. On error everything
// already started is stopped and the temporary directory removed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("pgcluster: the number of replicas must be 0 or more, not %d", opts.Replicas)
	}
	dir, err := os.MkdirTemp(os.TempDir(), "pgcluster-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	err = writeOwner(dir) // before anything runs in it: RemoveOrphans knows whose it is
	var r *runner
	if err == nil {
		r, err = newRunner(dir)
	}
	if err == nil {
		err = r.chown(dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &Cluster{run: r, dir: dir, logf: opts.Logf, ports: map[int]bool{}}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if err := c.start(ctx, opts); err != nil {
		if cerr := c.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, opts Options) error {
	c.logf("pgcluster: cluster in %s, binaries from %s", c.dir, c.run.binDir)
	p, err := c.newNode()
	if err != nil {
		return err
	}
	// Registered before it runs, so Close stops it whatever fails below.
	c.mu.Lock()
	c.nodes = append(c.nodes, p)
	c.mu.Unlock()

	if _, err := c.run.run(ctx, "initdb", "-D", p.dataDir, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := writeBaseConf(c.run, p.dataDir, opts.ExtraConf); err != nil {
		return fmt.Errorf("pgcluster: write postgresql.conf: %w", err)
	}
	if err := writeHBA(c.run, p.dataDir, opts.HBA); err != nil {
		return fmt.Errorf("pgcluster: write pg_hba.conf: %w", err)
	}
	for name, data := range opts.DataFiles {
		if err := c.run.writeFile(filepath.Join(p.dataDir, name), data); err != nil {
			return fmt.Errorf("pgcluster: Options.DataFiles: %w", err)
		}
	}
	if err := p.writeNodeConf(nil); err != nil {
		return err
	}
	p.opMu.Lock()
	err = p.startLocked(ctx, true)
	p.opMu.Unlock()
	if err != nil {
		return err
	}
	if err := p.execSQL(ctx, opts.InitSQL...); err != nil {
		return fmt.Errorf("%w (Options.InitSQL)", err)
	}
	for range opts.Replicas {
		if _, err := c.AddReplica(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// newNode reserves a name and a port for a node whose data directory does
// not exist yet.
func (c *Cluster) newNode() (*Node, error) {
	port, err := c.freePort()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("pgcluster: cluster is closed")
	}
	name := fmt.Sprintf("node%d", c.nextIndex)
	c.nextIndex++
	n := &Node{
		c:       c,
		name:    name,
		dataDir: filepath.Join(c.dir, name),
		logFile: filepath.Join(c.dir, name+".log"),
	}
	n.port.Store(int32(port))
	return n, nil
}

// freePort asks the kernel for an unused loopback port. Another process may
// take it before postgres binds it; the first start of a node retries with a
// new port when that happens.
func (c *Cluster) freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pgcluster: pick a port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		c.mu.Lock()
		taken := c.ports[port]
		c.ports[port] = true
		c.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, errors.New("pgcluster: no free loopback port")
}

// Nodes returns all nodes in creation order: index 0 is the initial primary,
// then the replicas. The order says nothing about current roles; ask
// IsInRecovery for that.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Primary returns the initial primary, Nodes()[0], whatever its role now.
func (c *Cluster) Primary() *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[0]
}

// Replicas returns Nodes()[1:]: every node created as a replica, in order.
func (c *Cluster) Replicas() []*Node {
	return c.Nodes()[1:]
}

// Dir returns the temporary directory holding the data directories and logs.
// It is removed by Close.
func (c *Cluster) Dir() string { return c.dir }

// AddReplica creates a new node with pg_basebackup -R from the running node
// from (primary or replica: a replica makes it a cascading one), starts it
// and waits until it streams from from. On error the new node is stopped
// and its data directory removed; the cluster is otherwise unchanged.
func (c *Cluster) AddReplica(ctx context.Context, from *Node) (*Node, error) {
	if from == nil || from.c != c {
		return nil, errors.New("pgcluster: AddReplica: from must be a node of this cluster")
	}
	if !from.Running() {
		return nil, fmt.Errorf("pgcluster: AddReplica: %s is not running", from.name)
	}
	n, err := c.newNode()
	if err != nil {
		return nil, err
	}
	if err := c.addReplica(ctx, from, n); err != nil {
		n.discard()
		return nil, err
	}
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.nodes = append(c.nodes, n)
	}
	c.mu.Unlock()
	if closed {
		// Close ran meanwhile and did not see this node; do not leave its
		// server behind.
		n.discard()
		return nil, errors.New("pgcluster: cluster closed while adding a replica")
	}
	return n, nil
}

func (c *Cluster) addReplica(ctx context.Context, from, n *Node) error {
	c.logf("pgcluster: %s: base backup from %s", n.name, from.name)
	if _, err := c.run.run(ctx, "pg_basebackup", "-h", from.Host(), "-p", fmt.Sprint(from.Port()),
		"-U", "postgres", "-D", n.dataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", n.name, err)
	}
	if err := n.writeNodeConf(from); err != nil {
		return err
	}
	n.opMu.Lock()
	err := n.startLocked(ctx, true)
	n.opMu.Unlock()
	if err != nil {
		return err
	}
	return n.waitStreaming(ctx, from)
}

// Close stops every node immediately and removes the temporary directory.
// It is safe to call more than once and concurrently; later calls return the
// first call's result.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		nodes := append([]*Node(nil), c.nodes...)
		c.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		var errs []error
		for _, n := range nodes {
			n.opMu.Lock()
			errs = append(errs, n.stopLocked(ctx, "immediate"))
			n.opMu.Unlock()
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: remove %s: %w", c.dir, err))
		}
		c.closeErr = errors.Join(errs...)
		c.logf("pgcluster: cluster in %s closed", c.dir)
	})
	return c.closeErr
}
