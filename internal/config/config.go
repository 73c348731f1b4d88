// Package config owns pgtide's configuration: the TOML file's struct, its defaults, loading and the
// validation that checks fields against each other. A *Config is immutable once loaded; a reload
// builds a new one and the proxy swaps it in atomically.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"pgtide/internal/pgtls"
)

// Pool modes.
const (
	PoolModeSession     = "session"
	PoolModeTransaction = "transaction"
)

// Pin policies.
const (
	PinPolicyPin   = "pin"
	PinPolicyError = "error"
)

// Read-your-writes modes.
const (
	ReadYourWritesLSN = "lsn"
	ReadYourWritesOff = "off"
)

// Budget modes: how pgtide processes in front of the same nodes share each node's budget.
const (
	BudgetModeStatic = "static"
	BudgetModeShared = "shared"
)

// Discovery modes.
const (
	DiscoveryAurora = "aurora"
	DiscoveryDNS    = "dns"
)

// Client authentication methods.
const (
	AuthTrust = "trust"
	AuthMD5   = "md5"
	AuthSCRAM = "scram-sha-256"
)

// Config is the whole configuration file. Zero values are replaced by Defaults before validation.
type Config struct {
	Proxy   Proxy   `toml:"proxy"`
	TLS     TLS     `toml:"tls"`
	Auth    Auth    `toml:"auth"`
	Cluster Cluster `toml:"cluster"`
	Admin   Admin   `toml:"admin"`
	AWS     AWS     `toml:"aws"`
	// Endpoint is the [[endpoint]] tables, beside the [proxy] listen shorthands; Endpoints
	// returns them all.
	Endpoint []Endpoint `toml:"endpoint"`

	// Users is loaded from Auth.UsersFile, not from the main file.
	Users Users `toml:"-"`
	// Path is the file this config was loaded from ("" when built in code).
	Path string `toml:"-"`
}

// Proxy configures the client-facing side.
type Proxy struct {
	// Listen is the automatic endpoint, named "auto": in transaction mode each transaction goes
	// to a reader when its first request is provably read-only, to the writer otherwise; in
	// session mode every session goes to the writer. "" disables it; so does leaving it out of a
	// file that has [[endpoint]] tables. Reloadable, as every endpoint (see Endpoint).
	Listen string `toml:"listen"`
	// WriterListen is the endpoint named "writer": everything to the writer, like Aurora's
	// cluster endpoint. Optional.
	WriterListen string `toml:"writer_listen"`
	// ReaderListen is the endpoint named "reader": clients' work spread over the healthy
	// readers, like Aurora's reader endpoint. Optional.
	ReaderListen string `toml:"reader_listen"`
	// UnixSocketDir, when set, makes each endpoint also listen on the Unix-domain socket
	// <dir>/.s.PGSQL.<port> (its TCP port), where libpq clients look for it with -h <dir>
	// -p <port>. "" (the default): TCP only. Changes need a restart.
	UnixSocketDir string `toml:"unix_socket_dir"`
	// ReaderFallbackToWriter sends reader-endpoint work to the writer when no reader is healthy;
	// otherwise such work gets an error.
	ReaderFallbackToWriter bool `toml:"reader_fallback_to_writer"`
	// MaxReplicaLag keeps reads off a replica whose replay is further behind its writer than
	// this (time, as the health checks measure it); it gets reads again once back under half of
	// it. With no replica under the bounds reads go to the writer. The seeds' alarm threshold.
	MaxReplicaLag Duration `toml:"max_replica_lag"`
	// MaxReplicaLagBytes is the same bound in bytes of WAL (writer's position minus the
	// replica's replay position); 0 means no bound.
	MaxReplicaLagBytes int64 `toml:"max_replica_lag_bytes"`
	// ReadYourWrites is "lsn" (after a client's transaction that may have written ends, its
	// reads go only to replicas that have replayed the writer's position at that moment, or to
	// the writer) or "off".
	ReadYourWrites string `toml:"read_your_writes"`
	// RetryOnFailover re-runs, once and without the client seeing anything, a transaction-mode
	// request outside a transaction block whose server connection ended before the server
	// answered it, when the server's reply proves it did not commit (a fast shutdown or a
	// terminated backend: FATAL 57P01) or it only reads (then also after a crash or a lost
	// connection); see package session. Reloadable.
	RetryOnFailover bool `toml:"retry_on_failover"`
	// PoolMode is "session" (a client keeps one server connection for its whole life) or
	// "transaction" (a server connection is lent per transaction).
	PoolMode string `toml:"pool_mode"`
	// MaxClientConnections caps concurrent client connections; the next one is refused with
	// SQLSTATE 53300.
	MaxClientConnections int `toml:"max_client_connections"`
	// ClientLoginTimeout bounds the time from TCP accept to the end of authentication.
	ClientLoginTimeout Duration `toml:"client_login_timeout"`
	// ShutdownTimeout bounds how long SIGTERM/SIGINT waits for running transactions to finish.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// Client timeouts, checked about every second (0 turns each off): ClientIdleTimeout closes
	// a client that sent nothing for this long outside a transaction (FATAL 57P05);
	// IdleTransactionTimeout one idle this long inside a transaction, which holds a server
	// connection (FATAL 25P03, rolled back); QueryTimeout one whose request has gone unanswered
	// this long (FATAL 57014; use a server-side statement_timeout a little below it);
	// ClientWriteTimeout one that has not read what pgtide sends it for this long (it stopped
	// reading its results while holding a server connection).
	ClientIdleTimeout      Duration `toml:"client_idle_timeout"`
	IdleTransactionTimeout Duration `toml:"idle_transaction_timeout"`
	QueryTimeout           Duration `toml:"query_timeout"`
	ClientWriteTimeout     Duration `toml:"client_write_timeout"`
	// MaxMessageSize caps the length of any protocol message, from clients or servers, in bytes.
	MaxMessageSize int `toml:"max_message_size"`
	// MessageMemory bounds, in bytes, the memory all clients' large messages take together:
	// a Query or Parse longer than the 8 KiB client buffer is read whole (to be inspected) only
	// once its size is free here; until then the client waits (up to query_wait_timeout, then
	// ERROR 53200), holding no server connection. Other messages are streamed.
	MessageMemory int64 `toml:"message_memory"`
	// MaxPreparedStatements caps the protocol-level prepared statements pgtide keeps on each
	// server connection in transaction mode (least recently used ones are closed); 0 turns the
	// translation of named statements off, so they only work in session mode or when pinned.
	MaxPreparedStatements int `toml:"max_prepared_statements"`
	// MaxPreparedStatementsBytes caps the same cache by the statements' text, in bytes per
	// server connection (least recently used ones are closed); 0: no byte cap. A statement
	// larger than the cap is still prepared, alone.
	MaxPreparedStatementsBytes int `toml:"max_prepared_statements_bytes"`
	// PinPolicy says what happens when a transaction-mode client creates session state pgtide
	// cannot move between server connections: "pin" keeps its server connection until it
	// disconnects; "error" refuses the statement.
	PinPolicy string `toml:"pin_policy"`
	// StatsPeriod is how often a line per busy pool logs its rates (transactions, queries and
	// bytes per second, average query time and wait), as PgBouncer's stats_period; 0 turns it off.
	StatsPeriod Duration `toml:"stats_period"`
	// LogFormat is "text" or "json"; LogLevel is "debug", "info", "warn" or "error".
	LogFormat string `toml:"log_format"`
	LogLevel  string `toml:"log_level"`
}

// Auth configures client authentication.
type Auth struct {
	// Method is how clients prove who they are: "trust", "md5" or "scram-sha-256".
	Method string `toml:"method"`
	// UsersFile lists users and passwords (relative paths are relative to the config file). The same
	// password logs pgtide in to the server (an iam user's logs in with an RDS IAM auth token
	// instead: see User.IAM). Optional with trust. A password may be the plaintext, an md5 hash
	// or a SCRAM verifier as pg_authid holds them (User.Password).
	UsersFile string `toml:"users_file"`
	// AdminUsers may use the admin console: connecting to the virtual database "pgtide" (or
	// "pgbouncer") gives SHOW, RELOAD, PAUSE and the other PgBouncer-style commands instead of a
	// server. They authenticate as any user does (method, users file); anyone else is refused.
	AdminUsers []string `toml:"admin_users"`
	// StatsUsers may use the admin console for its SHOW commands only (as PgBouncer's
	// stats_users); the commands that change anything need AdminUsers.
	StatsUsers []string `toml:"stats_users"`
}

// Admin configures the HTTP listener of the operators' view.
type Admin struct {
	// Listen is the HTTP address (host:port) of /metrics (Prometheus), /healthz, /readyz, the
	// status page (/) and /status.json; "" (the default) turns it off. It shows the topology
	// and every client's address, not secrets: bind it to a private address. Changes on restart.
	Listen string `toml:"listen"`
}

// Cluster configures the servers and the pools of server connections to them.
type Cluster struct {
	// Hosts lists the PostgreSQL servers as host:port. The first one is the server.
	Hosts []string `toml:"hosts"`
	// PoolSize caps server connections per (node, database, user) pool. When a node's pools
	// cannot all fit its budget (pools × PoolSize, or pools × MinIdle, over it), a warning says
	// so once per change: clients will wait for server connections when the pools are busy.
	PoolSize int `toml:"pool_size"`
	// MaxServerConnections caps server connections per node across all pools. Never crossed.
	// Each node's own budget (SafetyFactor) usually caps lower; this stays a hard cap above it.
	MaxServerConnections int `toml:"max_server_connections"`
	// SafetyFactor sets each node's budget of server connections from the ceiling its health
	// check reads: floor((max_connections − superuser_reserved_connections −
	// reserved_connections) × SafetyFactor) (seed 003's 0.7 rule), shared as BudgetMode says.
	SafetyFactor float64 `toml:"safety_factor"`
	// ProxyInstances is how many pgtide processes share the nodes. In static mode each takes
	// 1/N of every node's budget; in shared mode it bounds what each takes of the headroom one
	// reading shows (see BudgetMode).
	ProxyInstances int `toml:"proxy_instances"`
	// BudgetMode is how the pgtide processes in front of a node share its budget. "static":
	// each holds at most budget / ProxyInstances server connections there. "shared": each may
	// hold up to the whole budget, but opens a new server connection only while the node's
	// client backends — everyone's: other pgtide processes, other clients, pgtide's health
	// checks — are under the budget, as its health check reads them from pg_stat_activity at
	// every check; otherwise clients wait, as for a full pool, up to QueryWaitTimeout. It never
	// closes a connection because of others' use. The rule and its worst case (the node's
	// backends at the budget + ProxyInstances − 1, when no one else opens connections between
	// two checks) are in the README (budget_mode) and in package pool (the headroom gate).
	BudgetMode string `toml:"budget_mode"`
	// MinIdle is the number of idle server connections kept open per pool once the pool exists.
	MinIdle int `toml:"min_idle"`
	// ServerLifetime closes a server connection that has been open this long, when it is next idle.
	ServerLifetime Duration `toml:"server_lifetime"`
	// ServerIdleTimeout closes a server connection idle this long (down to MinIdle).
	ServerIdleTimeout Duration `toml:"server_idle_timeout"`
	// ServerCheckQuery runs on a server connection idle longer than ServerCheckDelay before it is
	// handed to a client; "" disables the check.
	ServerCheckQuery string   `toml:"server_check_query"`
	ServerCheckDelay Duration `toml:"server_check_delay"`
	// ServerResetQuery runs in session mode before a server connection is reused by another
	// client; "" disables it.
	ServerResetQuery string `toml:"server_reset_query"`
	// ServerConnectTimeout bounds dialing and logging in to a server.
	ServerConnectTimeout Duration `toml:"server_connect_timeout"`
	// ServerTLS is how pgtide speaks TLS to the servers, as libpq's sslmode (see package pgtls):
	// "disable", "prefer" (the default: TLS when the server offers it), "require" (TLS, the
	// certificate checked only against ServerCAFile when that is set), "verify-ca" (the
	// certificate chains to ServerCAFile) or "verify-full" (and names the host of the node's
	// host:port). It applies to pooled connections, health checks, discovery and cancel requests.
	// A reload applies it to connections opened after it.
	ServerTLS string `toml:"server_tls"`
	// ServerCAFile is a PEM file of the CAs the servers' certificates must chain to (for Aurora
	// and RDS, the RDS CA bundle). Relative to the config file's directory.
	ServerCAFile string `toml:"server_ca_file"`
	// QueryWaitTimeout bounds how long a client waits for a server connection; then it gets an
	// ErrorResponse (SQLSTATE 53300) instead of hanging.
	QueryWaitTimeout Duration `toml:"query_wait_timeout"`
	// ServerConnectRate caps new server connections per second per node (bursts of a tenth of
	// it, with jitter), so a failover or a recovered node is not met by a reconnection storm.
	ServerConnectRate int `toml:"server_connect_rate"`

	// Weights gives hosts a relative share of reader work (host:port → weight, default 1).
	Weights map[string]int `toml:"weights"`
	// Health checks: every node's role comes from SELECT pg_is_in_recovery() every
	// HealthCheckInterval, each check bounded by HealthCheckTimeout; a node is down after
	// HealthCheckFailures misses in a row and up again after one success. The check logs in as
	// HealthCheckUser (password from the users file: a plaintext one, or none if the servers trust
	// it) to HealthCheckDatabase.
	HealthCheckInterval Duration `toml:"health_check_interval"`
	HealthCheckTimeout  Duration `toml:"health_check_timeout"`
	HealthCheckFailures int      `toml:"health_check_failures"`
	HealthCheckUser     string   `toml:"health_check_user"`
	HealthCheckDatabase string   `toml:"health_check_database"`
	// FailoverTimeout bounds how long writer-bound work waits for a writer (during a failover)
	// before it gets an error; FailoverMaxWaiting bounds how many clients may wait at once.
	FailoverTimeout    Duration `toml:"failover_timeout"`
	FailoverMaxWaiting int      `toml:"failover_max_waiting"`
	// Discovery finds the nodes beyond the static hosts: "" (none), "aurora" (read
	// aurora_replica_status() on any reachable node; AuroraTemplate turns a server_id into
	// host:port, e.g. "{id}.abc123.us-east-1.rds.amazonaws.com:5432") or "dns" (every address
	// DNSName, host:port, resolves to is a node). Refreshed every DiscoveryInterval.
	Discovery         string   `toml:"discovery"`
	AuroraTemplate    string   `toml:"aurora_template"`
	DNSName           string   `toml:"dns_name"`
	DiscoveryInterval Duration `toml:"discovery_interval"`
	// FunctionRefreshInterval is how often the catalog of functions of each database clients use
	// is read again from the writer (as HealthCheckUser), so that calls of volatile user functions
	// go to the writer; a configuration reload refreshes it too.
	FunctionRefreshInterval Duration `toml:"function_refresh_interval"`
}

// Duration is a time.Duration written in TOML as a string such as "250ms" or "30s".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults returns a configuration with every default filled in and no hosts.
func Defaults() *Config {
	return &Config{
		Proxy: Proxy{
			Listen:                     "127.0.0.1:6432",
			ReaderFallbackToWriter:     true,
			MaxReplicaLag:              Duration{100 * time.Millisecond},
			ReadYourWrites:             ReadYourWritesLSN,
			RetryOnFailover:            true,
			PoolMode:                   PoolModeTransaction,
			MaxClientConnections:       10000,
			ClientLoginTimeout:         Duration{15 * time.Second},
			ShutdownTimeout:            Duration{30 * time.Second},
			ClientWriteTimeout:         Duration{time.Minute},
			MaxMessageSize:             64 << 20,
			MessageMemory:              256 << 20,
			MaxPreparedStatements:      200,
			MaxPreparedStatementsBytes: 1 << 20,
			PinPolicy:                  PinPolicyPin,
			StatsPeriod:                Duration{time.Minute},
			LogFormat:                  "text",
			LogLevel:                   "info",
		},
		TLS:  TLS{ClientTLS: string(pgtls.Disable)},
		Auth: Auth{Method: AuthTrust},
		Cluster: Cluster{
			PoolSize:             20,
			MaxServerConnections: 100,
			SafetyFactor:         0.7,
			ProxyInstances:       1,
			BudgetMode:           BudgetModeStatic,
			ServerLifetime:       Duration{time.Hour},
			ServerIdleTimeout:    Duration{10 * time.Minute},
			ServerCheckQuery:     "select 1",
			ServerCheckDelay:     Duration{30 * time.Second},
			ServerResetQuery:     "DISCARD ALL",
			ServerConnectTimeout: Duration{5 * time.Second},
			ServerTLS:            string(pgtls.Prefer),
			QueryWaitTimeout:     Duration{30 * time.Second},
			ServerConnectRate:    100,
			HealthCheckInterval:  Duration{250 * time.Millisecond},
			HealthCheckTimeout:   Duration{time.Second},
			HealthCheckFailures:  3,
			HealthCheckUser:      "postgres",
			HealthCheckDatabase:  "postgres",
			FailoverTimeout:      Duration{30 * time.Second},
			FailoverMaxWaiting:   10000,
			DiscoveryInterval:    Duration{5 * time.Second},

			FunctionRefreshInterval: Duration{time.Minute},
		},
	}
}

// Load reads the config file at path (and its users file), applies defaults and validates it.
func Load(path string) (*Config, error) {
	c := Defaults()
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("config %s: unknown setting %q", path, und[0].String())
	}
	c.Path = path
	c.TLS.defaultClientTLS(md)
	if len(c.Endpoint) > 0 && !md.IsDefined("proxy", "listen") {
		c.Proxy.Listen = "" // no implicit auto endpoint beside the tables
	}
	if c.Auth.UsersFile != "" {
		users, err := LoadUsers(c.resolve(c.Auth.UsersFile))
		if err != nil {
			return nil, err
		}
		c.Users = users
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// UsersPath is the users file's path as the process opens it.
func (c *Config) UsersPath() string {
	if c.Auth.UsersFile == "" {
		return ""
	}
	return c.resolve(c.Auth.UsersFile)
}

// FilePath is the path of a file the configuration names (users_file, the TLS files) as the
// process opens it: relative to the config file's directory, "" for "".
func (c *Config) FilePath(p string) string {
	if p == "" {
		return ""
	}
	return c.resolve(p)
}

func (c *Config) resolve(p string) string {
	if c.Path == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.Path), p)
}

// Validate checks every field and the fields against each other.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	p := &c.Proxy
	c.validateEndpoints(add)
	if p.UnixSocketDir != "" && !filepath.IsAbs(p.UnixSocketDir) {
		add("proxy.unix_socket_dir %q must be an absolute path", p.UnixSocketDir)
	}
	if p.PoolMode != PoolModeSession && p.PoolMode != PoolModeTransaction {
		add("proxy.pool_mode %q: must be \"session\" or \"transaction\"", p.PoolMode)
	}
	if p.MaxClientConnections < 1 {
		add("proxy.max_client_connections must be at least 1")
	}
	if p.ClientLoginTimeout.Duration <= 0 {
		add("proxy.client_login_timeout must be positive")
	}
	if p.ShutdownTimeout.Duration < 0 {
		add("proxy.shutdown_timeout must not be negative")
	}
	for _, t := range []struct {
		name string
		d    Duration
	}{{"client_idle_timeout", p.ClientIdleTimeout}, {"idle_transaction_timeout", p.IdleTransactionTimeout},
		{"query_timeout", p.QueryTimeout}, {"client_write_timeout", p.ClientWriteTimeout}} {
		if t.d.Duration < 0 {
			add("proxy.%s must not be negative (0 turns it off)", t.name)
		}
	}
	if p.MaxMessageSize < 8192 || p.MaxMessageSize > 1<<30 {
		add("proxy.max_message_size %d: must be between 8192 and 1073741824 bytes", p.MaxMessageSize)
	}
	if p.StatsPeriod.Duration < 0 {
		add("proxy.stats_period must not be negative (0 turns it off)")
	}
	if p.MessageMemory < int64(p.MaxMessageSize) {
		add("proxy.message_memory %d must be at least max_message_size (%d)", p.MessageMemory, p.MaxMessageSize)
	}
	if p.MaxPreparedStatements < 0 {
		add("proxy.max_prepared_statements must not be negative")
	}
	if p.MaxPreparedStatementsBytes < 0 {
		add("proxy.max_prepared_statements_bytes must not be negative (0: no byte cap)")
	}
	if p.MaxReplicaLag.Duration <= 0 {
		add("proxy.max_replica_lag must be positive")
	}
	if p.MaxReplicaLagBytes < 0 {
		add("proxy.max_replica_lag_bytes must not be negative (0: no bound)")
	}
	if p.ReadYourWrites != ReadYourWritesLSN && p.ReadYourWrites != ReadYourWritesOff {
		add("proxy.read_your_writes %q: must be \"lsn\" or \"off\"", p.ReadYourWrites)
	}
	if p.PinPolicy != PinPolicyPin && p.PinPolicy != PinPolicyError {
		add("proxy.pin_policy %q: must be \"pin\" or \"error\"", p.PinPolicy)
	}
	if p.LogFormat != "text" && p.LogFormat != "json" {
		add("proxy.log_format %q: must be \"text\" or \"json\"", p.LogFormat)
	}
	switch p.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("proxy.log_level %q: must be debug, info, warn or error", p.LogLevel)
	}

	for _, l := range []struct {
		name  string
		users []string
	}{{"auth.admin_users", c.Auth.AdminUsers}, {"auth.stats_users", c.Auth.StatsUsers}} {
		if slices.Contains(l.users, "") {
			add("%s: empty user name", l.name)
		}
	}

	switch c.Auth.Method {
	case AuthTrust:
	case AuthMD5, AuthSCRAM:
		if c.Auth.UsersFile == "" {
			add("auth.users_file is required with auth.method = %q", c.Auth.Method)
		}
		for _, name := range slices.Sorted(maps.Keys(c.Users)) {
			if c.Users[name].Password == "" {
				add("users file: user %q has no password; every user needs one with auth.method = %q", name, c.Auth.Method)
			}
		}
	default:
		add("auth.method %q: must be trust, md5 or scram-sha-256", c.Auth.Method)
	}
	errs = append(errs, c.secretErrors()...)

	cl := &c.Cluster
	if cl.SafetyFactor <= 0 || cl.SafetyFactor > 1 {
		add("cluster.safety_factor %g: must be more than 0 and at most 1", cl.SafetyFactor)
	}
	if cl.ProxyInstances < 1 {
		add("cluster.proxy_instances must be at least 1")
	}
	if cl.BudgetMode != BudgetModeStatic && cl.BudgetMode != BudgetModeShared {
		add("cluster.budget_mode %q: must be \"static\" or \"shared\"", cl.BudgetMode)
	}
	if len(cl.Hosts) == 0 && cl.Discovery != DiscoveryDNS {
		add("cluster.hosts: at least one host:port is required")
	}
	for _, h := range cl.Hosts {
		if err := checkHostPort(h); err != nil {
			add("cluster.hosts: %v", err)
		}
	}
	for h, w := range cl.Weights {
		if w < 1 {
			add("cluster.weights: %q has weight %d; weights must be at least 1", h, w)
		}
		if cl.Discovery == "" && !slices.Contains(cl.Hosts, h) {
			add("cluster.weights: %q is not one of cluster.hosts", h)
		}
	}
	switch cl.Discovery {
	case "":
	case DiscoveryAurora:
		if !strings.Contains(cl.AuroraTemplate, "{id}") {
			add("cluster.aurora_template %q must contain {id} (discovery = \"aurora\")", cl.AuroraTemplate)
		}
	case DiscoveryDNS:
		if err := checkHostPort(cl.DNSName); err != nil {
			add("cluster.dns_name (discovery = \"dns\"): %v", err)
		}
	default:
		add("cluster.discovery %q: must be \"\", \"aurora\" or \"dns\"", cl.Discovery)
	}
	if cl.Discovery != "" && cl.DiscoveryInterval.Duration <= 0 {
		add("cluster.discovery_interval must be positive")
	}
	if cl.HealthCheckInterval.Duration <= 0 {
		add("cluster.health_check_interval must be positive")
	}
	if cl.FunctionRefreshInterval.Duration <= 0 {
		add("cluster.function_refresh_interval must be positive")
	}
	if cl.HealthCheckTimeout.Duration <= 0 {
		add("cluster.health_check_timeout must be positive")
	}
	if cl.HealthCheckFailures < 1 {
		add("cluster.health_check_failures must be at least 1")
	}
	if cl.HealthCheckUser == "" {
		add("cluster.health_check_user is required")
	}
	if cl.FailoverTimeout.Duration <= 0 {
		add("cluster.failover_timeout must be positive")
	}
	if cl.FailoverMaxWaiting < 1 {
		add("cluster.failover_max_waiting must be at least 1")
	}
	if cl.ServerConnectRate < 1 {
		add("cluster.server_connect_rate must be at least 1")
	}
	if cl.PoolSize < 1 {
		add("cluster.pool_size must be at least 1")
	}
	if cl.MaxServerConnections < 1 {
		add("cluster.max_server_connections must be at least 1")
	}
	if cl.MinIdle < 0 || cl.MinIdle > cl.PoolSize {
		add("cluster.min_idle %d: must be between 0 and pool_size (%d)", cl.MinIdle, cl.PoolSize)
	}
	if cl.MinIdle > cl.MaxServerConnections {
		add("cluster.min_idle %d: must not exceed max_server_connections (%d)", cl.MinIdle, cl.MaxServerConnections)
	}
	if cl.ServerLifetime.Duration <= 0 {
		add("cluster.server_lifetime must be positive")
	}
	if cl.ServerIdleTimeout.Duration <= 0 {
		add("cluster.server_idle_timeout must be positive")
	}
	if cl.ServerCheckDelay.Duration < 0 {
		add("cluster.server_check_delay must not be negative")
	}
	if cl.ServerConnectTimeout.Duration <= 0 {
		add("cluster.server_connect_timeout must be positive")
	}
	if cl.QueryWaitTimeout.Duration <= 0 {
		add("cluster.query_wait_timeout must be positive")
	}
	c.validateTLS(add)
	if cl.QueryWaitTimeout.Duration < cl.ServerConnectTimeout.Duration {
		add("cluster.query_wait_timeout (%s) must be at least server_connect_timeout (%s)",
			cl.QueryWaitTimeout.Duration, cl.ServerConnectTimeout.Duration)
	}
	errs = append(errs, c.validateIAM()...)
	return errors.Join(errs...)
}

// Warnings returns what is valid but probably not what the operator meant, for the log at start
// and at each reload.
func (c *Config) Warnings() []string {
	var out []string
	out = append(out, c.secretWarnings()...)
	out = append(out, c.endpointWarnings()...)
	out = append(out, c.permissionWarnings()...)
	return out
}

func checkHostPort(h string) error {
	host, port, err := net.SplitHostPort(h)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", h)
	}
	return nil
}
