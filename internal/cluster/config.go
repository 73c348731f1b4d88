package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"pgtide/internal/pgtls"
)

// Host is one configured (or discovered) node.
type Host struct {
	Addr   string // host:port
	Weight int    // relative share of reads; 0 means 1
}

// Config configures a Cluster. Zero durations and counts take the defaults
// named on each field. Call Validate before New: New does not refuse a bad
// Config (it has no error to return) but logs what it cannot use.
type Config struct {
	// Hosts are the nodes without discovery. With discovery they are the
	// first nodes, until the first successful discovery replaces them; the
	// seeds aurora discovery reaches the cluster through when no current
	// node answers; and the weights of discovered nodes at their addresses.
	Hosts               []Host
	HealthCheckInterval time.Duration // default 250ms
	HealthCheckTimeout  time.Duration // default 1s (connect + query)
	HealthCheckFailures int           // misses in a row before down; default 3
	// User, Password and Database are the health check's (and discovery's)
	// login. Database defaults to "postgres". The password is never logged.
	User, Password, Database string
	Discovery                string // "" (static hosts), "aurora", "dns"
	// AuroraTemplate is where an Aurora instance is, e.g.
	// "{id}.abc123.us-east-1.rds.amazonaws.com:5432", {id} its server_id:
	// how aurora discovery makes nodes, and how a health check on Aurora
	// finds its node's row in aurora_replica_status(), in any discovery mode.
	AuroraTemplate    string
	DNSName           string        // host:port whose A/AAAA records are the nodes (dns discovery)
	DiscoveryInterval time.Duration // default 5s
	// FunctionRefreshInterval is how often each database's function catalog
	// (Functions) is read again from the writer; default 60s.
	FunctionRefreshInterval time.Duration
	// TLS is server_tls for health-check, discovery and catalog connections
	// (nil: plain text). A connection opened with another one is reopened.
	TLS *pgtls.ServerTLS

	// Injectable for tests:
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer
	Resolver interface {
		LookupHost(ctx context.Context, host string) ([]string, error)
	} // nil: net.DefaultResolver
	Now func() time.Time // nil: time.Now

	// IAM makes the health check's (and discovery's) login present an RDS IAM auth token for
	// each node, from Token, instead of Password (health_check_user has iam = true): only over
	// TLS, refused before the startup message otherwise, and only as a cleartext password (see
	// useIAMToken).
	IAM bool
	// Token returns the RDS IAM auth token of user for node ("host:port"); required with IAM.
	// Injected like Dial: SetConfig keeps the one New was given. Never logged.
	Token func(ctx context.Context, node, user string) (string, error)
}

// Discovery modes.
const (
	DiscoveryStatic = ""
	DiscoveryAurora = "aurora"
	DiscoveryDNS    = "dns"
)

const (
	defaultHealthCheckInterval = 250 * time.Millisecond
	defaultHealthCheckTimeout  = time.Second
	defaultHealthCheckFailures = 3
	defaultDatabase            = "postgres"
	defaultDiscoveryInterval   = 5 * time.Second
	defaultFunctionRefresh     = time.Minute
)

// withDefaults returns cfg with every unset field at its default.
func (cfg Config) withDefaults() Config {
	if cfg.HealthCheckInterval <= 0 {
		cfg.HealthCheckInterval = defaultHealthCheckInterval
	}
	if cfg.HealthCheckTimeout <= 0 {
		cfg.HealthCheckTimeout = defaultHealthCheckTimeout
	}
	if cfg.HealthCheckFailures <= 0 {
		cfg.HealthCheckFailures = defaultHealthCheckFailures
	}
	if cfg.Database == "" {
		cfg.Database = defaultDatabase
	}
	if cfg.DiscoveryInterval <= 0 {
		cfg.DiscoveryInterval = defaultDiscoveryInterval
	}
	if cfg.FunctionRefreshInterval <= 0 {
		cfg.FunctionRefreshInterval = defaultFunctionRefresh
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Hosts = append([]Host(nil), cfg.Hosts...) // the caller may reuse its slice
	return cfg
}

// Validate checks the fields together: the discovery mode against the
// fields it needs, addresses, and that no duration or count is negative.
// It never mentions the password.
func (cfg Config) Validate() error {
	var errs []error
	for i, h := range cfg.Hosts {
		if err := checkAddr(h.Addr); err != nil {
			errs = append(errs, fmt.Errorf("hosts[%d]: %w", i, err))
		}
		if h.Weight < 0 {
			errs = append(errs, fmt.Errorf("hosts[%d] (%s): weight must be >= 0, got %d", i, h.Addr, h.Weight))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"health check interval", cfg.HealthCheckInterval},
		{"health check timeout", cfg.HealthCheckTimeout},
		{"discovery interval", cfg.DiscoveryInterval},
		{"function refresh interval", cfg.FunctionRefreshInterval},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must be >= 0, got %v", d.name, d.v))
		}
	}
	if cfg.IAM && cfg.Token == nil {
		errs = append(errs, errors.New("an IAM login needs a Token function"))
	}
	if cfg.HealthCheckFailures < 0 {
		errs = append(errs, fmt.Errorf("health check failures must be >= 0, got %d", cfg.HealthCheckFailures))
	}
	switch cfg.Discovery {
	case DiscoveryStatic:
		if len(cfg.Hosts) == 0 {
			errs = append(errs, errors.New("no hosts configured"))
		}
	case DiscoveryAurora:
		if len(cfg.Hosts) == 0 {
			errs = append(errs, errors.New("aurora discovery needs at least one host to reach the cluster through"))
		}
		if !strings.Contains(cfg.AuroraTemplate, "{id}") {
			errs = append(errs, fmt.Errorf("aurora discovery needs a template with {id}, got %q", cfg.AuroraTemplate))
		} else if err := checkAddr(strings.ReplaceAll(cfg.AuroraTemplate, "{id}", "x")); err != nil {
			errs = append(errs, fmt.Errorf("aurora template: %w", err))
		}
	case DiscoveryDNS:
		if err := checkAddr(cfg.DNSName); err != nil {
			errs = append(errs, fmt.Errorf("dns discovery name: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown discovery %q (want \"\", %q or %q)", cfg.Discovery, DiscoveryAurora, DiscoveryDNS))
	}
	return errors.Join(errs...)
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port: %w", addr, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("address %q: want host:port", addr)
	}
	return nil
}

// normWeight maps a configured weight to the one nodes report: 0 (unset)
// and nonsense become 1.
func normWeight(w int) int32 {
	if w <= 0 {
		return 1
	}
	if w > 1<<20 {
		return 1 << 20
	}
	return int32(w)
}
