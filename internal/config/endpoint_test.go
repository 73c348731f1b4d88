package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// threeHosts is valid() over a writer and two replicas, the seed's analytics case.
func threeHosts(c *Config) {
	c.Cluster.Hosts = []string{"db-1:5432", "db-2:5432", "db-3:5432"}
}

func TestLoadEndpoints(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "pgtide.toml"), `
[proxy]
pool_mode = "transaction"
max_replica_lag = "200ms"
reader_fallback_to_writer = true
writer_listen = "127.0.0.1:6433"

[cluster]
hosts = ["db-1:5432", "db-2:5432", "db-3:5432"]

[[endpoint]]
name = "analytics"
listen = "127.0.0.1:6440"
route = "reader"
nodes = ["db-3:5432"]
pool_mode = "session"
max_replica_lag = "30s"
reader_fallback_to_writer = false
pool_size = 10

[[endpoint]]
name = "app-reads"
listen = "/run/pgtide/app-reads.sock"
route = "reader"
exclude_nodes = ["db-3:5432"]
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// No proxy.listen in a file with tables: no implicit auto endpoint on 6432.
	if c.Proxy.Listen != "" {
		t.Errorf("proxy.listen = %q, want none beside [[endpoint]] tables", c.Proxy.Listen)
	}
	eps := c.Endpoints()
	var names []string
	for _, e := range eps {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, []string{"writer", "analytics", "app-reads"}) {
		t.Fatalf("endpoints %v", names)
	}
	w, a, r := eps[0], eps[1], eps[2]
	if w.Route != RouteWriter || w.Listen != "127.0.0.1:6433" || w.PoolMode != PoolModeTransaction || w.MaxReplicaLag.Duration != 200*time.Millisecond || !w.FallbackToWriter() {
		t.Errorf("writer shorthand %+v", w)
	}
	if a.Route != RouteReader || a.PoolMode != PoolModeSession || a.MaxReplicaLag.Duration != 30*time.Second || a.FallbackToWriter() || a.PoolSize != 10 || !slices.Equal(a.Nodes, []string{"db-3:5432"}) {
		t.Errorf("analytics %+v", a)
	}
	if !r.IsUnix() || r.PoolMode != PoolModeTransaction || r.MaxReplicaLag.Duration != 200*time.Millisecond || !r.FallbackToWriter() {
		t.Errorf("app-reads %+v", r)
	}
	// Endpoints leaves the tables as the file has them.
	if c.Endpoint[1].PoolMode != "" || c.Endpoint[1].ReaderFallbackToWriter != nil {
		t.Errorf("Endpoints changed the tables: %+v", c.Endpoint[1])
	}
	keys := map[string]string{}
	for _, s := range c.Settings() {
		keys[s.Key] = s.Value
		if strings.HasPrefix(s.Key, "endpoint.") && !s.Reloadable {
			t.Errorf("%s not reloadable", s.Key)
		}
	}
	if keys["endpoint.analytics.nodes"] != "db-3:5432" || keys["endpoint.analytics.pool_mode"] != "session" || keys["endpoint.app-reads.exclude_nodes"] != "db-3:5432" {
		t.Errorf("SHOW CONFIG's endpoint settings: %v", keys)
	}
}

// With proxy.listen written out, the tables come beside the auto endpoint.
func TestLoadEndpointsBesideListen(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "pgtide.toml"), `
[proxy]
listen = "127.0.0.1:6432"
[cluster]
hosts = ["db-1:5432"]
[[endpoint]]
name = "w"
listen = "127.0.0.1:6433"
route = "writer"
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if eps := c.Endpoints(); len(eps) != 2 || eps[0].Name != "auto" || eps[1].Name != "w" {
		t.Fatalf("endpoints %+v", eps)
	}
}

func TestValidateEndpoints(t *testing.T) {
	ep := func(name, listen, route string) Endpoint { return Endpoint{Name: name, Listen: listen, Route: route} }
	with := func(eps ...Endpoint) func(*Config) {
		return func(c *Config) {
			threeHosts(c)
			c.Endpoint = eps
		}
	}
	reader := func(name, listen string, nodes, exclude []string) Endpoint {
		e := ep(name, listen, RouteReader)
		e.Nodes, e.ExcludeNodes = nodes, exclude
		return e
	}
	aurora := func(eps ...Endpoint) func(*Config) {
		return func(c *Config) {
			with(eps...)(c)
			c.Cluster.Discovery = DiscoveryAurora
			c.Cluster.AuroraTemplate = "{id}.cluster-abc.us-east-1.rds.amazonaws.com:5432"
		}
	}
	cases := []validateCase{
		{"the analytics case", with(reader("analytics", "127.0.0.1:6440", []string{"db-3:5432"}, nil),
			reader("app", "127.0.0.1:6441", nil, []string{"db-3:5432"})), ""},
		{"only tables", func(c *Config) {
			with(ep("rw", "127.0.0.1:6440", RouteWriter))(c)
			c.Proxy.Listen = ""
		}, ""},
		{"a Unix socket", with(ep("local", "/run/pgtide/local.sock", RouteAuto)), ""},
		{"host globs", with(reader("r", "127.0.0.1:6440", []string{"db-*:5432"}, []string{"db-1:*"})), ""},
		{"instance-id globs", aurora(reader("analytics", "127.0.0.1:6440", []string{"analytics-*"}, nil),
			reader("app", "127.0.0.1:6441", nil, []string{"analytics-*"})), ""},
		{"instance ids with static RDS hosts (Aurora found by the health checks)", func(c *Config) {
			with(reader("a", "127.0.0.1:6440", []string{"analytics-1"}, nil))(c)
			c.Cluster.Hosts = []string{"app-1.abc.us-east-1.rds.amazonaws.com:5432", "analytics-1.abc.us-east-1.rds.amazonaws.com:5432"}
		}, ""},
		{"instance ids with aurora_template and static hosts", func(c *Config) {
			with(reader("a", "127.0.0.1:6440", []string{"analytics-1"}, nil))(c)
			c.Cluster.AuroraTemplate = "{id}.internal:5432"
		}, ""},
		{"instance ids on plain PostgreSQL", with(reader("a", "127.0.0.1:6440", []string{"analytics-1"}, nil)),
			`endpoint "a": nodes: "analytics-1" has no port, so it names Aurora instance ids, which nodes have only on Aurora: write host:port (such as "analytics-1:5432")`},
		{"a port without its host", with(reader("a", "127.0.0.1:6440", nil, []string{"44087"})),
			`endpoint "a": exclude_nodes: "44087" has no host: entries are host:port (such as "127.0.0.1:44087")`},
		{"an IP address without its port", with(reader("a", "127.0.0.1:6440", []string{"127.0.0.1"}, nil)),
			`endpoint "a": nodes: "127.0.0.1" has no port: entries are host:port (such as "127.0.0.1:5432")`},
		{"an IP address without its port, on Aurora", aurora(reader("a", "127.0.0.1:6440", []string{"10.0.1.7"}, nil)),
			`"10.0.1.7" has no port`},
		{"a host of cluster.hosts without its port", with(reader("a", "127.0.0.1:6440", []string{"db-3"}, nil)),
			`endpoint "a": nodes: "db-3" has no port: entries are host:port (such as "db-3:5432")`},
		{"localhost without its port", with(reader("a", "127.0.0.1:6440", []string{"localhost"}, nil)), `"localhost" has no port`},
		{"nodes = []", with(reader("a", "127.0.0.1:6440", []string{}, nil)), `endpoint "a": nodes = [] leaves the endpoint no reader: leave nodes out`},
		{"localhost beside 127.0.0.1", with(ep("a", "localhost:6440", RouteAuto), ep("b", "127.0.0.1:6440", RouteReader)),
			`endpoint "a" and endpoint "b" listen on the same address (127.0.0.1:6440)`},
		{"localhost beside ::1", with(ep("a", "[::1]:6440", RouteAuto), ep("b", "LOCALHOST:6440", RouteReader)), `listen on the same address`},
		{"two spellings of one IPv6 address", with(ep("a", "[::1]:6440", RouteAuto), ep("b", "[0:0::1]:6440", RouteReader)), `listen on the same address`},
		{"127.0.0.1 beside ::1", with(ep("a", "[::1]:6440", RouteAuto), ep("b", "127.0.0.1:6440", RouteReader)), ""},
		{"localhost beside another address", with(ep("a", "localhost:6440", RouteAuto), ep("b", "10.0.0.1:6440", RouteReader)), ""},
		{"port 0 twice", func(c *Config) {
			with(ep("a", "127.0.0.1:0", RouteAuto), ep("b", "127.0.0.1:0", RouteReader))(c)
			c.Proxy.Listen = "127.0.0.1:0"
		}, ""},
		{"session and transaction beside each other", func(c *Config) {
			e := ep("s", "127.0.0.1:6440", RouteWriter)
			e.PoolMode = PoolModeSession
			with(e)(c)
		}, ""},

		{"no name", with(ep("", "127.0.0.1:6440", RouteAuto)), "[[endpoint]] #1: name is required"},
		{"bad name", with(ep("a b", "127.0.0.1:6440", RouteAuto)), `endpoint "a b": the name may hold only`},
		{"duplicate names", with(ep("a", "127.0.0.1:6440", RouteAuto), ep("a", "127.0.0.1:6441", RouteAuto)),
			`endpoint "a": the name is taken by endpoint "a"`},
		{"a shorthand's name", with(ep("auto", "127.0.0.1:6440", RouteAuto)), `endpoint "auto": the name is taken by proxy.listen`},
		{"no listen", with(ep("a", "", RouteAuto)), `endpoint "a": listen is required`},
		{"listen without port", with(ep("a", "127.0.0.1", RouteAuto)), `endpoint "a": listen "127.0.0.1"`},
		{"relative socket path", with(ep("a", "run/a.sock", RouteAuto)), `endpoint "a": listen "run/a.sock"`},
		{"collides with proxy.listen", with(ep("a", "127.0.0.1:6432", RouteAuto)), `proxy.listen and endpoint "a" listen on the same address`},
		{"collides on every address", with(ep("a", "*:6432", RouteAuto)), `proxy.listen and endpoint "a" listen on the same address`},
		{"collides with admin.listen", func(c *Config) {
			with(ep("a", "0.0.0.0:9187", RouteAuto))(c)
			c.Admin.Listen = "127.0.0.1:9187"
		}, `endpoint "a" and admin.listen listen on the same address`},
		{"same socket twice", with(ep("a", "/run/a.sock", RouteAuto), ep("b", "/run/./a.sock", RouteReader)),
			`endpoint "a" and endpoint "b" listen on the same address (/run/a.sock)`},
		{"socket where unix_socket_dir puts one", func(c *Config) {
			with(ep("a", "/run/pgtide/.s.PGSQL.6432", RouteAuto))(c)
			c.Proxy.UnixSocketDir = "/run/pgtide"
		}, "(its socket in proxy.unix_socket_dir) and endpoint \"a\""},
		{"no route", with(ep("a", "127.0.0.1:6440", "")), `endpoint "a": route is required`},
		{"unknown route", with(ep("a", "127.0.0.1:6440", "replica")), `endpoint "a": route "replica"`},
		{"nodes on a writer endpoint", func(c *Config) {
			e := ep("w", "127.0.0.1:6440", RouteWriter)
			e.Nodes = []string{"db-1:5432"}
			with(e)(c)
		}, `endpoint "w": route = "writer" takes no nodes`},
		{"bad glob", with(reader("r", "127.0.0.1:6440", []string{"db-[:5432"}, nil)), `"db-[:5432" is not a valid glob`},
		{"bad glob among excludes", aurora(reader("r", "127.0.0.1:6440", nil, []string{"an[alytics"})), `exclude_nodes: "an[alytics" is not a valid glob`},
		{"empty entry", with(reader("r", "127.0.0.1:6440", []string{""}, nil)), `endpoint "r": nodes: empty entry`},
		{"unknown host", with(reader("r", "127.0.0.1:6440", []string{"db-9:5432"}, nil)), `"db-9:5432" matches none of cluster.hosts`},
		{"filter leaves nothing", with(reader("r", "127.0.0.1:6440", []string{"db-2:5432"}, []string{"db-*:5432"})),
			`endpoint "r": nodes and exclude_nodes leave none of cluster.hosts`},
		{"pool_mode", func(c *Config) {
			e := ep("a", "127.0.0.1:6440", RouteAuto)
			e.PoolMode = "statement"
			with(e)(c)
		}, `endpoint "a": pool_mode "statement"`},
		{"negative max_replica_lag", func(c *Config) {
			e := ep("a", "127.0.0.1:6440", RouteAuto)
			e.MaxReplicaLag.Duration = -time.Second
			with(e)(c)
		}, `endpoint "a": max_replica_lag must not be negative`},
		{"negative pool_size", func(c *Config) {
			e := ep("a", "127.0.0.1:6440", RouteAuto)
			e.PoolSize = -1
			with(e)(c)
		}, `endpoint "a": pool_size must not be negative`},
		{"no endpoint at all", func(c *Config) { c.Proxy.Listen = "" }, "at least one endpoint is required"},
	}
	checkValidate(t, cases)
}

// Settings that have no effect where they are written are warned about.
func TestEndpointWarnings(t *testing.T) {
	off, on := false, true
	for _, tc := range []struct {
		name string
		e    Endpoint
		want string // "" for no warning
	}{
		{"fallback off on auto", Endpoint{Route: RouteAuto, ReaderFallbackToWriter: &off},
			`endpoint "e": reader_fallback_to_writer = false has no effect on route = "auto"`},
		{"fallback on on auto", Endpoint{Route: RouteAuto, ReaderFallbackToWriter: &on}, ""},
		{"lag bound on writer", Endpoint{Route: RouteWriter, MaxReplicaLag: Duration{time.Second}},
			`endpoint "e": max_replica_lag has no effect on route = "writer": it uses no readers`},
		{"both on writer", Endpoint{Route: RouteWriter, MaxReplicaLag: Duration{time.Second}, ReaderFallbackToWriter: &off},
			`max_replica_lag and reader_fallback_to_writer has no effect on route = "writer"`},
		{"a reader's own settings", Endpoint{Route: RouteReader, MaxReplicaLag: Duration{time.Second}, ReaderFallbackToWriter: &off}, ""},
		{"instance ids on Aurora", Endpoint{Route: RouteReader, Nodes: []string{"analytics-*"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			c.Cluster.Discovery, c.Cluster.AuroraTemplate = DiscoveryAurora, "{id}:5432"
			tc.e.Name, tc.e.Listen = "e", "127.0.0.1:6440"
			c.Endpoint = []Endpoint{tc.e}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			w := c.Warnings()
			if tc.want == "" && len(w) != 0 || tc.want != "" && (len(w) != 1 || !strings.Contains(w[0], tc.want)) {
				t.Errorf("warnings %q, want %q", w, tc.want)
			}
		})
	}
	// An auto endpoint's fallback in force is on, whatever it says.
	c := valid()
	c.Endpoint = []Endpoint{{Name: "e", Listen: "127.0.0.1:6440", Route: RouteAuto, ReaderFallbackToWriter: &off}}
	if e := c.Endpoints()[1]; !e.FallbackToWriter() {
		t.Errorf("auto endpoint's fallback in force: %+v", e)
	}
}

// nodes = [] in a file is an empty list, not a missing one: Validate refuses it.
func TestLoadEmptyNodes(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "pgtide.toml"), `
[cluster]
hosts = ["db-1:5432"]
[[endpoint]]
name = "r"
listen = "127.0.0.1:6440"
route = "reader"
nodes = []
`)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "nodes = []") {
		t.Fatalf("Load: %v", err)
	}
}

func TestMatchNode(t *testing.T) {
	for _, tc := range []struct {
		pattern, addr, id string
		want              bool
	}{
		{"db-3:5432", "db-3:5432", "", true},
		{"db-3:5432", "db-30:5432", "", false},
		{"db-*:5432", "db-30:5432", "", true},
		{"10.0.1.*:5432", "10.0.1.7:5432", "", true},
		{"10.0.1.*:5432", "10.0.2.7:5432", "", false},
		{"analytics-1", "analytics-1.abc.us-east-1.rds.amazonaws.com:5432", "analytics-1", true},
		{"analytics-*", "analytics-2.abc.us-east-1.rds.amazonaws.com:5432", "analytics-2", true},
		{"analytics-*", "app-1.abc.us-east-1.rds.amazonaws.com:5432", "app-1", false},
		{"analytics-?", "x:1", "analytics-12", false},
		{"analytics-[12]", "x:1", "analytics-2", true},
		{"analytics-*", "x:1", "", false}, // id not known (yet): no match
		{"*", "x:1", "", true},            // everything, by its address
		{"", "x:1", "", false},
		{"[", "x:1", "[", true}, // a bad glob matches only itself (Validate refuses it anyway)
	} {
		if got := MatchNode(tc.pattern, tc.addr, tc.id); got != tc.want {
			t.Errorf("MatchNode(%q, %q, %q) = %v, want %v", tc.pattern, tc.addr, tc.id, got, tc.want)
		}
	}
}
