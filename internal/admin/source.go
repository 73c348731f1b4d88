package admin

import (
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"pgtide/internal/cluster"
	"pgtide/internal/config"
	"pgtide/internal/pool"
	"pgtide/internal/router"
	"pgtide/internal/session"
)

// Source is what the admin side reads and acts on; the proxy implements it. Its methods are
// safe for concurrent use.
type Source interface {
	// Config is the configuration in force.
	Config() *config.Config
	Cluster() *cluster.Cluster
	Router() *router.Router
	Pools() *pool.Manager
	// Clients returns a snapshot of every client connection, logging in included.
	Clients() []session.ClientInfo
	// Listening reports whether every configured endpoint accepts clients.
	Listening() bool
	Pins() *session.PinCounter
	Routes() *session.RouteCounter
	Errors() *session.ErrorCounter
	// History is the recent node state changes.
	History() *History
	// Version is pgtide's version, as `pgtide version` prints it.
	Version() string
	// AcceptErrors counts failures to accept a client connection (out of file descriptors, ...).
	AcceptErrors() int64
	// ParkedClients counts the idle clients held without a goroutine (see session's park.go).
	ParkedClients() int
	// ClientCertificate is the certificate pgtide presents to the clients that connect now
	// ([tls] cert_file as last loaded), nil without client TLS.
	ClientCertificate() *x509.Certificate
	// ReloadConfig reloads the configuration file the process was started with, as SIGHUP does
	// (the admin console's RELOAD); an error says why the running configuration was kept.
	ReloadConfig() error
	// KillClient closes at once the connection of the client whose ClientInfo.ID is id (the
	// admin console's KILL_CLIENT); ErrNoSuchClient if there is none.
	KillClient(id uint32) error
}

// ErrNoSuchClient is KillClient's error for an id no client has.
var ErrNoSuchClient = errors.New("no such client")

// Change is one node state change as History keeps it.
type Change struct {
	Time     time.Time
	Node     string
	Up       bool
	Role     cluster.Role
	PrevUp   bool
	PrevRole cluster.Role
	Added    bool
	Removed  bool
	// Failover: a reader became the writer (promotion), as opposed to a node's first check.
	Failover bool
}

// historySize bounds the changes History keeps.
const historySize = 64

// History keeps the last historySize node state changes (up/down, role, topology) and counts
// failovers since start. Safe for concurrent use.
type History struct {
	mu        sync.Mutex
	ring      [historySize]Change // guarded by mu
	next, n   int                 // guarded by mu
	failovers int64               // guarded by mu
	now       func() time.Time
}

// NewHistory returns a History fed by c's events from now on.
func NewHistory(c *cluster.Cluster) *History {
	h := &History{now: time.Now}
	c.Subscribe(h.record)
	return h
}

func (h *History) record(e cluster.Event) {
	if e.Ceiling && !e.Added && !e.Removed && e.Up == e.PrevUp && e.Role == e.PrevRole {
		return // a connection ceiling read, not a state change
	}
	ch := Change{Time: h.now(), Node: e.Node.Addr(), Up: e.Up, Role: e.Role, PrevUp: e.PrevUp, PrevRole: e.PrevRole,
		Added: e.Added, Removed: e.Removed, Failover: e.Role == cluster.RoleWriter && e.PrevRole == cluster.RoleReader}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = ch
	h.next = (h.next + 1) % historySize
	h.n = min(h.n+1, historySize)
	if ch.Failover {
		h.failovers++
	}
}

// Changes returns the kept changes, newest first.
func (h *History) Changes() []Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Change, 0, h.n)
	for i := 1; i <= h.n; i++ {
		out = append(out, h.ring[(h.next-i+historySize)%historySize])
	}
	return out
}

// Failovers returns how many times a reader became the writer since start.
func (h *History) Failovers() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failovers
}
