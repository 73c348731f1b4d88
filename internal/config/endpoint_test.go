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
		{"instance ids without discovery (Aurora found by the health checks)", with(reader("a", "127.0.0.1:6440", []string{"analytics-1"}, nil)), ""},
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

// An instance id without Aurora discovery is allowed but warned about.
func TestEndpointWarnings(t *testing.T) {
	c := valid()
	c.Endpoint = []Endpoint{{Name: "a", Listen: "127.0.0.1:6440", Route: RouteReader, Nodes: []string{"analytics-*"}}}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], `"analytics-*" has no port`) {
		t.Errorf("warnings %q", w)
	}
	c.Cluster.Discovery, c.Cluster.AuroraTemplate = DiscoveryAurora, "{id}:5432"
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings with aurora discovery: %q", w)
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
