package config

import (
	"fmt"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Routes: where an endpoint sends its clients' work.
const (
	RouteAuto   = "auto"   // each transaction where its first request says (transaction mode)
	RouteWriter = "writer" // everything to the cluster's writer
	RouteReader = "reader" // everything to one of the endpoint's readers
)

// Endpoint is one [[endpoint]] table: a listener whose clients' work goes where Route says, on
// the readers Nodes and ExcludeNodes leave it, as Aurora's custom endpoints and RDS Proxy's
// endpoints do. The three [proxy] listen settings are shorthands for endpoints named "auto",
// "writer" and "reader" (see Config.Endpoints).
//
// Nodes and ExcludeNodes filter readers only: writer work (every transaction of a writer
// endpoint, writes on an auto endpoint, a reader endpoint's fallback) always goes to the
// cluster's writer, wherever a failover moves it, so a writer endpoint takes neither.
type Endpoint struct {
	// Name identifies the endpoint in logs, metrics, SHOW CLIENTS and SHOW ENDPOINTS, and across
	// reloads: an endpoint of the same name keeps its clients. Letters, digits, '_', '-', '.'.
	Name string `toml:"name"`
	// Listen is a TCP host:port (as [proxy] listen) or the absolute path of a Unix-domain socket.
	Listen string `toml:"listen"`
	// Route is RouteAuto, RouteWriter or RouteReader.
	Route string `toml:"route"`
	// Nodes, when set, are the only readers the endpoint uses; ExcludeNodes are readers it never
	// uses. Each entry is a host:port or an Aurora instance id (server_id), either of which may be
	// a glob as path.Match takes it ("analytics-*", "10.0.1.*:5432"); see MatchNode.
	Nodes        []string `toml:"nodes"`
	ExcludeNodes []string `toml:"exclude_nodes"`
	// PoolMode is PoolModeSession or PoolModeTransaction; "" takes [proxy] pool_mode. A client
	// keeps the mode it logged in with.
	PoolMode string `toml:"pool_mode"`
	// MaxReplicaLag bounds the lag of the readers the endpoint uses; 0 takes [proxy]
	// max_replica_lag.
	MaxReplicaLag Duration `toml:"max_replica_lag"`
	// ReaderFallbackToWriter sends the endpoint's reader work to the writer when none of its
	// readers can take it; unset takes [proxy] reader_fallback_to_writer. Reads of an auto
	// endpoint always fall back: Config.Endpoints gives it true.
	ReaderFallbackToWriter *bool `toml:"reader_fallback_to_writer"`
	// PoolSize caps the server connections the endpoint's clients hold at once, over every node
	// and pool; further clients wait as for a full pool (query_wait_timeout). 0: no cap beyond
	// the pools'.
	PoolSize int `toml:"pool_size"`
}

// FallbackToWriter is ReaderFallbackToWriter, false when unset (Config.Endpoints sets it).
func (e *Endpoint) FallbackToWriter() bool {
	return e.ReaderFallbackToWriter != nil && *e.ReaderFallbackToWriter
}

// IsUnix reports whether Listen is a Unix-domain socket's path.
func (e *Endpoint) IsUnix() bool { return IsUnixListen(e.Listen) }

// IsUnixListen reports whether a listen setting is a Unix-domain socket's path (it starts with
// '/'), not a TCP address.
func IsUnixListen(listen string) bool { return strings.HasPrefix(listen, "/") }

// Endpoints returns every endpoint c configures, each setting it leaves out taken from [proxy]:
// first the shorthands — proxy.listen as "auto", proxy.writer_listen as "writer",
// proxy.reader_listen as "reader", each with no node filter and no pool_size — then the
// [[endpoint]] tables in file order.
func (c *Config) Endpoints() []Endpoint {
	p := &c.Proxy
	out := make([]Endpoint, 0, 3+len(c.Endpoint))
	for _, s := range []struct{ name, listen string }{
		{RouteAuto, p.Listen}, {RouteWriter, p.WriterListen}, {RouteReader, p.ReaderListen},
	} {
		if s.listen != "" {
			out = append(out, Endpoint{Name: s.name, Listen: s.listen, Route: s.name})
		}
	}
	out = append(out, c.Endpoint...)
	for i := range out {
		e := &out[i]
		if e.PoolMode == "" {
			e.PoolMode = p.PoolMode
		}
		if e.MaxReplicaLag.Duration == 0 {
			e.MaxReplicaLag = p.MaxReplicaLag
		}
		if e.ReaderFallbackToWriter == nil || e.Route == RouteAuto {
			// An auto endpoint's reads always fall back (endpointWarnings): what it does.
			fallback := p.ReaderFallbackToWriter || e.Route == RouteAuto
			e.ReaderFallbackToWriter = &fallback
		}
	}
	return out
}

// MatchNode reports whether a nodes or exclude_nodes entry matches the node at addr (host:port)
// whose Aurora instance id is id ("" when unknown): the entry, a glob as path.Match takes it,
// matches addr or id.
func MatchNode(pattern, addr, id string) bool {
	if pattern == addr || id != "" && pattern == id {
		return true
	}
	if ok, _ := path.Match(pattern, addr); ok {
		return true
	}
	ok, _ := path.Match(pattern, id)
	return ok && id != ""
}

// isInstanceID reports whether a nodes entry names Aurora instances rather than host:port (it
// has no port).
func isInstanceID(pattern string) bool { return !strings.Contains(pattern, ":") }

// mayHaveInstanceIDs reports whether c's nodes can have Aurora instance ids for nodes entries to
// match. A health check finds a node's id only on Aurora (cluster.detect): always with aurora
// discovery, and with static or DNS discovery when the servers answer as Aurora, which pgtide
// takes c to expect when it names an RDS host or sets aurora_template (which also tells the
// health checks the ids). On plain PostgreSQL no node ever has one, so an entry without a port
// would silently match nothing: most likely a port forgotten.
func (c *Config) mayHaveInstanceIDs() bool {
	cl := &c.Cluster
	if cl.Discovery == DiscoveryAurora || cl.AuroraTemplate != "" || isRDSHost(cl.DNSName) {
		return true
	}
	return slices.ContainsFunc(cl.Hosts, isRDSHost)
}

// isRDSHost reports whether hostport names a host in Amazon RDS's domains.
func isRDSHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return strings.HasSuffix(host, ".rds.amazonaws.com") || strings.HasSuffix(host, ".rds.amazonaws.com.cn")
}

// portlessEntry says what is wrong with a nodes entry p that has no port, when it cannot be an
// Aurora instance id (an IP address, a host of cluster.hosts, a bare port number) or c's nodes
// cannot have ids (mayHaveInstanceIDs); "" when p may name Aurora instances.
func (c *Config) portlessEntry(p string) string {
	hostOf := func(h string) string { host, _, _ := net.SplitHostPort(h); return host }
	switch {
	case net.ParseIP(strings.Trim(p, "[]")) != nil || strings.EqualFold(p, "localhost") ||
		slices.ContainsFunc(c.Cluster.Hosts, func(h string) bool { return hostOf(h) == p }):
		return fmt.Sprintf("%q has no port: entries are host:port (such as %q), or Aurora instance ids", p, net.JoinHostPort(strings.Trim(p, "[]"), "5432"))
	case isPortNumber(p):
		return fmt.Sprintf("%q has no host: entries are host:port (such as %q), or Aurora instance ids", p, net.JoinHostPort("127.0.0.1", p))
	case !c.mayHaveInstanceIDs():
		return fmt.Sprintf("%q has no port, so it names Aurora instance ids, which nodes have only on Aurora: "+
			"write host:port (such as %q); if the cluster is Aurora, set cluster.aurora_template or discovery = \"aurora\"", p, p+":5432")
	}
	return ""
}

func isPortNumber(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n <= 65535
}

// validateEndpoints checks the endpoints together: names unique, listen addresses that do not
// collide with each other or admin.listen, routes, node entries, per-endpoint settings.
func (c *Config) validateEndpoints(add func(string, ...any)) {
	eps := c.Endpoints()
	if len(eps) == 0 {
		add("at least one endpoint is required: proxy.listen, proxy.writer_listen, proxy.reader_listen or an [[endpoint]] table")
	}
	where := func(i int) string {
		if n := len(eps) - len(c.Endpoint); i < n {
			return map[string]string{RouteAuto: "proxy.listen", RouteWriter: "proxy.writer_listen", RouteReader: "proxy.reader_listen"}[eps[i].Name]
		}
		return fmt.Sprintf("endpoint %q", eps[i].Name)
	}
	names := map[string]string{}
	var addrs []listenAddr
	for i := range eps {
		e := &eps[i]
		w := where(i)
		switch {
		case e.Name == "":
			add("[[endpoint]] #%d: name is required", i-(len(eps)-len(c.Endpoint))+1)
		case !validName(e.Name):
			add("%s: the name may hold only letters, digits, '_', '-' and '.'", w)
		case names[e.Name] != "":
			add("%s: the name is taken by %s (names must be unique)", w, names[e.Name])
		default:
			names[e.Name] = w
		}
		if e.Listen == "" {
			add("%s: listen is required", w)
		} else if a, err := parseListen(e.Listen); err != nil {
			add("%s: listen %q: %v", w, e.Listen, err)
		} else {
			a.owner = w
			addrs = append(addrs, a)
			if !a.unix && c.Proxy.UnixSocketDir != "" && a.port != "0" {
				addrs = append(addrs, listenAddr{unix: true, path: filepath.Join(c.Proxy.UnixSocketDir, ".s.PGSQL."+a.port),
					owner: w + " (its socket in proxy.unix_socket_dir)"})
			}
		}
		switch e.Route {
		case RouteAuto, RouteReader:
		case RouteWriter:
			if len(e.Nodes)+len(e.ExcludeNodes) > 0 {
				add("%s: route = \"writer\" takes no nodes or exclude_nodes: they filter readers, and writer work always goes to the cluster's writer", w)
			}
		case "":
			add("%s: route is required: \"writer\", \"reader\" or \"auto\"", w)
		default:
			add("%s: route %q: must be \"writer\", \"reader\" or \"auto\"", w, e.Route)
		}
		c.validateNodeEntries(add, w, e)
		if e.PoolMode != PoolModeSession && e.PoolMode != PoolModeTransaction && i >= len(eps)-len(c.Endpoint) {
			add("%s: pool_mode %q: must be \"session\" or \"transaction\"", w, e.PoolMode)
		}
		if e.MaxReplicaLag.Duration < 0 {
			add("%s: max_replica_lag must not be negative (unset takes proxy.max_replica_lag)", w)
		}
		if e.PoolSize < 0 {
			add("%s: pool_size must not be negative (0: no cap)", w)
		}
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			add("admin.listen %q: %v", c.Admin.Listen, err)
		} else if a, err := parseListen(c.Admin.Listen); err == nil {
			a.owner = "admin.listen"
			addrs = append(addrs, a)
		}
	}
	for i := range addrs {
		for j := range i {
			if addrs[i].collides(addrs[j]) {
				add("%s and %s listen on the same address (%s)", addrs[j].owner, addrs[i].owner, addrs[i])
			}
		}
	}
}

// validateNodeEntries checks e's nodes and exclude_nodes: valid globs, and, with the static
// topology, host:port entries that match a host and a filter that leaves the endpoint a node.
func (c *Config) validateNodeEntries(add func(string, ...any), w string, e *Endpoint) {
	static := c.Cluster.Discovery == ""
	if e.Nodes != nil && len(e.Nodes) == 0 {
		add("%s: nodes = [] leaves the endpoint no reader: leave nodes out for all of them", w)
	}
	for _, l := range []struct {
		key     string
		entries []string
	}{{"nodes", e.Nodes}, {"exclude_nodes", e.ExcludeNodes}} {
		for _, p := range l.entries {
			if p == "" {
				add("%s: %s: empty entry", w, l.key)
				continue
			}
			if _, err := path.Match(p, ""); err != nil {
				add("%s: %s: %q is not a valid glob: %v", w, l.key, p, err)
				continue
			}
			if isInstanceID(p) {
				if msg := c.portlessEntry(p); msg != "" {
					add("%s: %s: %s", w, l.key, msg)
					continue
				}
			}
			if static && !isInstanceID(p) && !slices.ContainsFunc(c.Cluster.Hosts, func(h string) bool { return MatchNode(p, h, "") }) {
				add("%s: %s: %q matches none of cluster.hosts", w, l.key, p)
			}
		}
	}
	if !static || len(e.Nodes) == 0 || slices.ContainsFunc(e.Nodes, isInstanceID) || slices.ContainsFunc(e.ExcludeNodes, isInstanceID) {
		return // which nodes it leaves is known only once discovery or the health checks run
	}
	left := slices.ContainsFunc(c.Cluster.Hosts, func(h string) bool {
		in := slices.ContainsFunc(e.Nodes, func(p string) bool { return MatchNode(p, h, "") })
		out := slices.ContainsFunc(e.ExcludeNodes, func(p string) bool { return MatchNode(p, h, "") })
		return in && !out
	})
	if !left {
		add("%s: nodes and exclude_nodes leave none of cluster.hosts", w)
	}
}

// endpointWarnings are the endpoints' settings that are valid but have no effect, so were
// probably meant otherwise.
func (c *Config) endpointWarnings() []string {
	var out []string
	for _, e := range c.Endpoint {
		switch e.Route {
		case RouteAuto:
			if e.ReaderFallbackToWriter != nil && !*e.ReaderFallbackToWriter {
				out = append(out, fmt.Sprintf("endpoint %q: reader_fallback_to_writer = false has no effect on route = \"auto\": "+
					"its reads always go to the writer when none of its readers can take them (route = \"reader\" refuses them instead)", e.Name))
			}
		case RouteWriter:
			var set []string
			if e.MaxReplicaLag.Duration != 0 {
				set = append(set, "max_replica_lag")
			}
			if e.ReaderFallbackToWriter != nil {
				set = append(set, "reader_fallback_to_writer")
			}
			if len(set) > 0 {
				out = append(out, fmt.Sprintf("endpoint %q: %s has no effect on route = \"writer\": it uses no readers", e.Name, strings.Join(set, " and ")))
			}
		}
	}
	return out
}

func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// listenAddr is a listen setting, parsed to compare it with the others.
type listenAddr struct {
	unix       bool
	path       string // unix
	host, port string // TCP; host "" is every address
	owner      string // the setting, for the error
}

func parseListen(s string) (listenAddr, error) {
	if IsUnixListen(s) {
		return listenAddr{unix: true, path: filepath.Clean(s)}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return listenAddr{}, fmt.Errorf("neither host:port nor an absolute socket path: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return listenAddr{}, fmt.Errorf("invalid port %q", port)
	}
	switch host {
	case "*", "0.0.0.0", "::":
		host = ""
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String() // one spelling per address
	}
	return listenAddr{host: host, port: port}, nil
}

// collides reports whether a and b cannot both listen: the same socket path, or the same TCP
// port (other than 0, a port of the system's choosing) on the same host, on every address, or on
// "localhost" and a loopback address (which it resolves to; other names are not resolved).
func (a listenAddr) collides(b listenAddr) bool {
	if a.unix || b.unix {
		return a.unix && b.unix && a.path == b.path
	}
	if a.port != b.port || a.port == "0" {
		return false
	}
	return a.host == b.host || a.host == "" || b.host == "" || a.isLoopback() && b.isLoopback() && (a.isLocalhost() || b.isLocalhost())
}

// isLocalhost reports whether a's host is the name "localhost".
func (a listenAddr) isLocalhost() bool {
	return strings.EqualFold(strings.TrimSuffix(a.host, "."), "localhost")
}

// isLoopback reports whether a's host is "localhost" or a loopback address.
func (a listenAddr) isLoopback() bool {
	if a.isLocalhost() {
		return true
	}
	ip := net.ParseIP(a.host)
	return ip != nil && ip.IsLoopback()
}

func (a listenAddr) String() string {
	if a.unix {
		return a.path
	}
	return net.JoinHostPort(a.host, a.port)
}

// endpointSettings lists the [[endpoint]] tables' settings for SHOW CONFIG, as
// "endpoint.<name>.<key>", all reloadable.
func (c *Config) endpointSettings() []Setting {
	var out []Setting
	for _, e := range c.Endpoint {
		pre := "endpoint." + e.Name + "."
		fallback := ""
		if e.ReaderFallbackToWriter != nil {
			fallback = strconv.FormatBool(*e.ReaderFallbackToWriter)
		}
		lag := ""
		if e.MaxReplicaLag.Duration != 0 {
			lag = e.MaxReplicaLag.Duration.String()
		}
		for _, kv := range [][2]string{
			{"listen", e.Listen}, {"route", e.Route}, {"nodes", strings.Join(e.Nodes, ",")},
			{"exclude_nodes", strings.Join(e.ExcludeNodes, ",")}, {"pool_mode", e.PoolMode},
			{"max_replica_lag", lag}, {"reader_fallback_to_writer", fallback}, {"pool_size", strconv.Itoa(e.PoolSize)},
		} {
			out = append(out, Setting{Key: pre + kv[0], Value: kv[1], Reloadable: true})
		}
	}
	return out
}
