package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgtide/internal/secret"
)

// valid returns the defaults with the one thing they lack, a host.
func valid() *Config {
	c := Defaults()
	c.Cluster.Hosts = []string{"127.0.0.1:5432"}
	return c
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	err := Defaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "cluster.hosts") {
		t.Fatalf("Defaults().Validate() = %v; want only the missing cluster.hosts", err)
	}
	if strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("Defaults().Validate() reports more than the missing hosts: %v", err)
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("defaults with a host do not validate: %v", err)
	}
	// Defaults returns a fresh value each time: changing one does not change the next.
	c := Defaults()
	c.Proxy.PoolMode = "x"
	if Defaults().Proxy.PoolMode != PoolModeTransaction {
		t.Fatal("Defaults shares state between calls")
	}
}

const fullConfig = `
[proxy]
listen = "0.0.0.0:7432"
writer_listen = "0.0.0.0:7433"
reader_listen = "0.0.0.0:7434"
reader_fallback_to_writer = false
max_replica_lag = "250ms"
max_replica_lag_bytes = 16777216
read_your_writes = "off"
retry_on_failover = false
pool_mode = "session"
max_client_connections = 500
client_login_timeout = "5s"
shutdown_timeout = "1m"
max_message_size = 1048576
max_prepared_statements = 50
pin_policy = "error"
log_format = "json"
log_level = "debug"

[auth]
method = "scram-sha-256"
users_file = "users.toml"

[cluster]
hosts = ["db1.internal:5432", "[::1]:5433"]
pool_size = 10
max_server_connections = 50
budget_mode = "shared"
min_idle = 2
server_lifetime = "30m"
server_idle_timeout = "5m"
server_check_query = "SELECT 1"
server_check_delay = "10s"
server_reset_query = "" # explicitly off, overriding the default
server_connect_timeout = "2s"
query_wait_timeout = "20s"
server_connect_rate = 40
health_check_interval = "100ms"
health_check_timeout = "500ms"
health_check_failures = 2
health_check_user = "monitor"
health_check_database = "admin"
failover_timeout = "10s"
failover_max_waiting = 300
discovery = "aurora"
aurora_template = "{id}.abc123.us-east-1.rds.amazonaws.com:5432"
discovery_interval = "3s"
function_refresh_interval = "2m"

[cluster.weights]
"db1.internal:5432" = 2
`

const fullUsers = `
[[user]]
name = "app"
password = "app secret"

[[user]]
name = "report"
password = "r3p0rt"
`

func TestLoadFull(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "pgtide.toml"), fullConfig)
	writeFile(t, filepath.Join(dir, "users.toml"), fullUsers)

	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		Proxy: Proxy{
			Listen:                     "0.0.0.0:7432",
			WriterListen:               "0.0.0.0:7433",
			ReaderListen:               "0.0.0.0:7434",
			MaxReplicaLag:              Duration{250 * time.Millisecond},
			MaxReplicaLagBytes:         16 << 20,
			ReadYourWrites:             ReadYourWritesOff,
			PoolMode:                   PoolModeSession,
			MaxClientConnections:       500,
			ClientLoginTimeout:         Duration{5 * time.Second},
			ShutdownTimeout:            Duration{time.Minute},
			ClientWriteTimeout:         Duration{time.Minute},
			StatsPeriod:                Duration{time.Minute},
			MaxMessageSize:             1 << 20,
			MessageMemory:              256 << 20,
			MaxPreparedStatements:      50,
			MaxPreparedStatementsBytes: 1 << 20,
			PinPolicy:                  "error",
			LogFormat:                  "json",
			LogLevel:                   "debug",
		},
		TLS:  TLS{ClientTLS: "disable"},
		Auth: Auth{Method: AuthSCRAM, UsersFile: "users.toml"},
		Cluster: Cluster{
			Hosts:                []string{"db1.internal:5432", "[::1]:5433"},
			PoolSize:             10,
			MaxServerConnections: 50,
			SafetyFactor:         0.7,
			ProxyInstances:       1,
			BudgetMode:           BudgetModeShared,
			MinIdle:              2,
			ServerLifetime:       Duration{30 * time.Minute},
			ServerIdleTimeout:    Duration{5 * time.Minute},
			ServerCheckQuery:     "SELECT 1",
			ServerCheckDelay:     Duration{10 * time.Second},
			ServerResetQuery:     "",
			ServerConnectTimeout: Duration{2 * time.Second},
			ServerTLS:            "prefer",
			QueryWaitTimeout:     Duration{20 * time.Second},
			ServerConnectRate:    40,
			Weights:              map[string]int{"db1.internal:5432": 2},
			HealthCheckInterval:  Duration{100 * time.Millisecond},
			HealthCheckTimeout:   Duration{500 * time.Millisecond},
			HealthCheckFailures:  2,
			HealthCheckUser:      "monitor",
			HealthCheckDatabase:  "admin",
			FailoverTimeout:      Duration{10 * time.Second},
			FailoverMaxWaiting:   300,
			Discovery:            DiscoveryAurora,
			AuroraTemplate:       "{id}.abc123.us-east-1.rds.amazonaws.com:5432",
			DiscoveryInterval:    Duration{3 * time.Second},

			FunctionRefreshInterval: Duration{2 * time.Minute},
		},
		Users: Users{
			"app":    {Name: "app", Password: "app secret"},
			"report": {Name: "report", Password: "r3p0rt"},
		},
		Path: path,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
	}
	if p := got.UsersPath(); p != filepath.Join(dir, "users.toml") {
		t.Errorf("UsersPath = %q, want %q", p, filepath.Join(dir, "users.toml"))
	}
}

// A minimal file keeps every default it does not mention.
func TestLoadMinimalKeepsDefaults(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "pgtide.toml"), "[cluster]\nhosts = [\"127.0.0.1:5432\"]\n")
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := valid()
	want.Path = path
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
	}
	if got.UsersPath() != "" {
		t.Errorf("UsersPath = %q without a users file", got.UsersPath())
	}
}

func TestLoadRejects(t *testing.T) {
	const hosts = "[cluster]\nhosts = [\"127.0.0.1:5432\"]\n"
	cases := []struct {
		name    string
		content string
		want    []string // substrings of the error
	}{
		{"unknown key in a table", hosts + "[proxy]\nlisten_adress = \"x\"\n", []string{`unknown setting "proxy.listen_adress"`}},
		{"known key in the wrong table", hosts + "[proxy]\npool_size = 3\n", []string{`"proxy.pool_size"`}},
		{"unknown top-level key", "pool_size = 3\n" + hosts, []string{`unknown setting "pool_size"`}},
		{"unknown table", hosts + "[clusters]\nhosts = []\n", []string{`"clusters`}},
		{"bad duration", hosts + "[proxy]\nclient_login_timeout = \"abc\"\n", []string{"client_login_timeout", "abc"}},
		{"duration as a number", hosts + "[proxy]\nclient_login_timeout = 5\n", []string{"client_login_timeout"}},
		{"wrong type", hosts + "[proxy]\nmax_client_connections = \"ten\"\n", []string{"max_client_connections"}},
		{"syntax error", "[cluster\n", []string{"pgtide.toml"}},
		{"invalid value", hosts + "[proxy]\npool_mode = \"statement\"\n", []string{"pgtide.toml", "proxy.pool_mode", "statement"}},
		{"missing users file", hosts + "[auth]\nmethod = \"md5\"\nusers_file = \"nope.toml\"\n", []string{"nope.toml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "pgtide.toml"), tc.content)
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load accepted it: %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadUsersFilePath(t *testing.T) {
	root := t.TempDir()
	users := "[[user]]\nname = \"app\"\npassword = \"pw\"\n"
	writeFile(t, filepath.Join(root, "etc", "users.toml"), users)
	writeFile(t, filepath.Join(root, "shared", "users.toml"), users)
	abs := filepath.Join(root, "shared", "users.toml")

	cases := []struct {
		name      string
		usersFile string
		wantPath  string
	}{
		{"relative to the config file's directory", "users.toml", filepath.Join(root, "etc", "users.toml")},
		{"relative with ..", "../shared/users.toml", filepath.Join(root, "etc", "..", "shared", "users.toml")},
		{"absolute", abs, abs},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The test's working directory is the package directory, which has no users.toml: a
			// path resolved against it would fail to load.
			path := writeFile(t, filepath.Join(root, "etc", "pgtide.toml"), fmt.Sprintf(
				"[auth]\nmethod = \"md5\"\nusers_file = %q\n[cluster]\nhosts = [\"127.0.0.1:5432\"]\n", tc.usersFile))
			c, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Users["app"].Password != "pw" {
				t.Errorf("users = %v", c.Users)
			}
			if got := c.UsersPath(); got != filepath.Clean(tc.wantPath) {
				t.Errorf("UsersPath = %q, want %q", got, filepath.Clean(tc.wantPath))
			}
		})
	}
	// Built in code, without a file: the path is used as given.
	c := valid()
	c.Auth.UsersFile = "users.toml"
	if got := c.UsersPath(); got != "users.toml" {
		t.Errorf("UsersPath without a config path = %q", got)
	}
}

func TestLoadUsers(t *testing.T) {
	const secret = "hunter2-s3cr3t"
	cases := []struct {
		name    string
		content string
		want    Users
		wantErr []string // substrings of the error
	}{
		{name: "two users", content: fullUsers, want: Users{
			"app":    {Name: "app", Password: "app secret"},
			"report": {Name: "report", Password: "r3p0rt"},
		}},
		{name: "empty file", content: "", want: Users{}},
		{name: "user without password", content: "[[user]]\nname = \"trusting\"\n", want: Users{"trusting": {Name: "trusting"}}},
		{name: "duplicate user", content: "[[user]]\nname = \"app\"\npassword = \"a\"\n[[user]]\nname = \"app\"\npassword = \"b\"\n", wantErr: []string{`user "app" listed twice`}},
		{name: "missing name", content: "[[user]]\nname = \"app\"\npassword = \"a\"\n[[user]]\npassword = \"" + secret + "\"\n", wantErr: []string{"entry 2 has no name"}},
		{name: "unknown key", content: "[[user]]\nname = \"app\"\npasswd = \"" + secret + "\"\n", wantErr: []string{`unknown setting "user.passwd"`}},
		{name: "syntax error: unterminated password", content: "[[user]]\nname = \"app\"\npassword = \"" + secret + "\n", wantErr: []string{"syntax error at line 3"}},
		{name: "syntax error: bare password", content: "[[user]]\nname = \"app\"\npassword = " + secret + "\n", wantErr: []string{"syntax error at line 3"}},
		{name: "syntax error: bad escape in password", content: "[[user]]\nname = \"app\"\npassword = \"" + secret + "\\q\"\n", wantErr: []string{"syntax error at line 3"}},
		{name: "syntax error: junk after password", content: "[[user]]\nname = \"app\"\npassword = \"" + secret + "\" " + secret + "\n", wantErr: []string{"syntax error at line 3"}},
		{name: "syntax error: password with a quote", content: "[[user]]\nname = \"app\"\npassword = \"" + secret + "\"" + secret + "\"\n", wantErr: []string{"syntax error at line 3"}},
		{name: "syntax error: quoted password alone", content: "[[user]]\nname = \"app\"\n\"" + secret + "\"\n", wantErr: []string{"syntax error at line 3"}},
		{name: "syntax error: password as a key", content: "[[user]]\nname = \"app\"\n" + secret + " = \n", wantErr: []string{"syntax error at line 3"}},
		{name: "password of the wrong type", content: "[[user]]\nname = \"app\"\npassword = 271828182845\n", wantErr: []string{"users file"}},
		{name: "invalid UTF-8 in password", content: "[[user]]\nname = \"app\"\npassword = \"" + secret + "\xff\"\n", wantErr: []string{"syntax error"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "users.toml"), tc.content)
			got, err := LoadUsers(path)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadUsers: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("LoadUsers = %v, want %v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadUsers accepted it: %v", got)
			}
			for _, w := range append(tc.wantErr, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, leak := range []string{secret, "hunter2", "s3cr3t", "271828182845"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q shows the password", err)
				}
			}
		})
	}
}

// Load reports a users file's errors without the password too.
func TestLoadUsersErrorHidesPassword(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "users.toml"), "[[user]]\nname = \"app\"\npassword = \"top secret\n")
	path := writeFile(t, filepath.Join(dir, "pgtide.toml"),
		"[auth]\nmethod = \"scram-sha-256\"\nusers_file = \"users.toml\"\n[cluster]\nhosts = [\"h:5432\"]\n")
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load accepted a broken users file")
	}
	if strings.Contains(err.Error(), "top secret") {
		t.Fatalf("error %q shows the password", err)
	}
	if !strings.Contains(err.Error(), "users.toml") {
		t.Fatalf("error %q does not name the users file", err)
	}
}

// validateCase is a change to a valid config and what Validate says of it.
type validateCase struct {
	name   string
	change func(c *Config)
	want   string // "" for valid; otherwise a substring of the error, naming the field
}

func TestValidate(t *testing.T) {
	cases := []validateCase{
		{"defaults with a host", func(c *Config) {}, ""},
		{"session mode", func(c *Config) { c.Proxy.PoolMode = PoolModeSession }, ""},
		{"md5 with a users file", func(c *Config) { c.Auth = Auth{Method: AuthMD5, UsersFile: "u.toml"} }, ""},
		{"scram with a users file", func(c *Config) { c.Auth = Auth{Method: AuthSCRAM, UsersFile: "u.toml"} }, ""},
		{"trust with a users file", func(c *Config) { c.Auth.UsersFile = "u.toml" }, ""},
		{"IPv6 and named hosts", func(c *Config) { c.Cluster.Hosts = []string{"[::1]:5432", "db-2.internal:65535"} }, ""},
		{"min_idle = pool_size", func(c *Config) { c.Cluster.MinIdle = c.Cluster.PoolSize }, ""},
		{"query_wait_timeout = server_connect_timeout", func(c *Config) { c.Cluster.QueryWaitTimeout = c.Cluster.ServerConnectTimeout }, ""},
		{"smallest max_message_size", func(c *Config) { c.Proxy.MaxMessageSize = 8192 }, ""},
		{"largest max_message_size", func(c *Config) { c.Proxy.MaxMessageSize = 1 << 30; c.Proxy.MessageMemory = 1 << 30 }, ""},
		{"message_memory below max_message_size", func(c *Config) { c.Proxy.MessageMemory = 1 << 20 }, "message_memory 1048576 must be at least max_message_size"},
		{"negative query_timeout", func(c *Config) { c.Proxy.QueryTimeout.Duration = -time.Second }, "proxy.query_timeout must not be negative"},
		{"zero shutdown_timeout and check delay", func(c *Config) { c.Proxy.ShutdownTimeout.Duration = 0; c.Cluster.ServerCheckDelay.Duration = 0 }, ""},
		{"no check or reset query", func(c *Config) { c.Cluster.ServerCheckQuery = ""; c.Cluster.ServerResetQuery = "" }, ""},
		{"every log level", func(c *Config) { c.Proxy.LogLevel = "warn" }, ""},

		{"listen without port", func(c *Config) { c.Proxy.Listen = "127.0.0.1" }, "proxy.listen"},
		{"pool_mode", func(c *Config) { c.Proxy.PoolMode = "statement" }, "proxy.pool_mode"},
		{"pool_mode empty", func(c *Config) { c.Proxy.PoolMode = "" }, "proxy.pool_mode"},
		{"max_client_connections", func(c *Config) { c.Proxy.MaxClientConnections = 0 }, "proxy.max_client_connections"},
		{"client_login_timeout zero", func(c *Config) { c.Proxy.ClientLoginTimeout.Duration = 0 }, "proxy.client_login_timeout"},
		{"client_login_timeout negative", func(c *Config) { c.Proxy.ClientLoginTimeout.Duration = -time.Second }, "proxy.client_login_timeout"},
		{"shutdown_timeout negative", func(c *Config) { c.Proxy.ShutdownTimeout.Duration = -time.Second }, "proxy.shutdown_timeout"},
		{"max_message_size too small", func(c *Config) { c.Proxy.MaxMessageSize = 8191 }, "proxy.max_message_size"},
		{"max_message_size too large", func(c *Config) { c.Proxy.MaxMessageSize = 1<<30 + 1 }, "proxy.max_message_size"},
		{"max_message_size zero", func(c *Config) { c.Proxy.MaxMessageSize = 0 }, "proxy.max_message_size"},
		{"negative max_prepared_statements", func(c *Config) { c.Proxy.MaxPreparedStatements = -1 }, "proxy.max_prepared_statements"},
		{"unknown pin_policy", func(c *Config) { c.Proxy.PinPolicy = "ignore" }, "proxy.pin_policy"},
		{"zero safety_factor", func(c *Config) { c.Cluster.SafetyFactor = 0 }, "cluster.safety_factor"},
		{"safety_factor over 1", func(c *Config) { c.Cluster.SafetyFactor = 1.2 }, "cluster.safety_factor"},
		{"zero proxy_instances", func(c *Config) { c.Cluster.ProxyInstances = 0 }, "cluster.proxy_instances"},
		{"unknown budget_mode", func(c *Config) { c.Cluster.BudgetMode = "dynamic" }, "cluster.budget_mode"},
		{"zero max_replica_lag", func(c *Config) { c.Proxy.MaxReplicaLag.Duration = 0 }, "proxy.max_replica_lag"},
		{"negative max_replica_lag_bytes", func(c *Config) { c.Proxy.MaxReplicaLagBytes = -1 }, "proxy.max_replica_lag_bytes"},
		{"unknown read_your_writes", func(c *Config) { c.Proxy.ReadYourWrites = "always" }, "proxy.read_your_writes"},
		{"no listener", func(c *Config) { c.Proxy.Listen = "" }, "proxy.listen, proxy.writer_listen"},
		{"same listener twice", func(c *Config) { c.Proxy.WriterListen = c.Proxy.Listen }, "proxy.writer_listen"},
		{"bad reader_listen", func(c *Config) { c.Proxy.ReaderListen = "nope" }, "proxy.reader_listen"},
		{"weight of unknown host", func(c *Config) { c.Cluster.Weights = map[string]int{"other:1": 2} }, "cluster.weights"},
		{"zero weight", func(c *Config) { c.Cluster.Weights = map[string]int{c.Cluster.Hosts[0]: 0} }, "cluster.weights"},
		{"aurora without template", func(c *Config) { c.Cluster.Discovery = "aurora" }, "cluster.aurora_template"},
		{"dns without name", func(c *Config) { c.Cluster.Discovery = "dns" }, "cluster.dns_name"},
		{"unknown discovery", func(c *Config) { c.Cluster.Discovery = "consul" }, "cluster.discovery"},
		{"zero health_check_interval", func(c *Config) { c.Cluster.HealthCheckInterval.Duration = 0 }, "cluster.health_check_interval"},
		{"zero function_refresh_interval", func(c *Config) { c.Cluster.FunctionRefreshInterval.Duration = 0 }, "cluster.function_refresh_interval"},
		{"zero health_check_failures", func(c *Config) { c.Cluster.HealthCheckFailures = 0 }, "cluster.health_check_failures"},
		{"zero failover_timeout", func(c *Config) { c.Cluster.FailoverTimeout.Duration = 0 }, "cluster.failover_timeout"},
		{"zero server_connect_rate", func(c *Config) { c.Cluster.ServerConnectRate = 0 }, "cluster.server_connect_rate"},
		{"log_format", func(c *Config) { c.Proxy.LogFormat = "logfmt" }, "proxy.log_format"},
		{"log_level", func(c *Config) { c.Proxy.LogLevel = "trace" }, "proxy.log_level"},
		{"auth method", func(c *Config) { c.Auth.Method = "password" }, "auth.method"},
		{"auth method empty", func(c *Config) { c.Auth.Method = "" }, "auth.method"},
		{"md5 without users_file", func(c *Config) { c.Auth.Method = AuthMD5 }, "auth.users_file"},
		{"scram without users_file", func(c *Config) { c.Auth.Method = AuthSCRAM }, "auth.users_file"},
		{"hosts empty", func(c *Config) { c.Cluster.Hosts = nil }, "cluster.hosts"},
		{"host without port", func(c *Config) { c.Cluster.Hosts = []string{"db1"} }, "cluster.hosts"},
		{"host without host", func(c *Config) { c.Cluster.Hosts = []string{":5432"} }, "cluster.hosts"},
		{"port 0", func(c *Config) { c.Cluster.Hosts = []string{"db1:0"} }, "cluster.hosts"},
		{"port 65536", func(c *Config) { c.Cluster.Hosts = []string{"db1:65536"} }, "cluster.hosts"},
		{"port not a number", func(c *Config) { c.Cluster.Hosts = []string{"db1:pg"} }, "cluster.hosts"},
		{"bad port after a good host", func(c *Config) { c.Cluster.Hosts = []string{"db1:5432", "db2:-1"} }, `"db2:-1"`},
		{"pool_size 0", func(c *Config) { c.Cluster.PoolSize = 0 }, "cluster.pool_size"},
		{"max_server_connections 0", func(c *Config) { c.Cluster.MaxServerConnections = 0 }, "cluster.max_server_connections"},
		{"min_idle > pool_size", func(c *Config) { c.Cluster.MinIdle = c.Cluster.PoolSize + 1 }, "cluster.min_idle"},
		{"min_idle negative", func(c *Config) { c.Cluster.MinIdle = -1 }, "cluster.min_idle"},
		{"min_idle > max_server_connections", func(c *Config) {
			c.Cluster.PoolSize, c.Cluster.MaxServerConnections, c.Cluster.MinIdle = 20, 5, 10
		}, "max_server_connections"},
		{"server_lifetime negative", func(c *Config) { c.Cluster.ServerLifetime.Duration = -time.Minute }, "cluster.server_lifetime"},
		{"server_lifetime zero", func(c *Config) { c.Cluster.ServerLifetime.Duration = 0 }, "cluster.server_lifetime"},
		{"server_idle_timeout negative", func(c *Config) { c.Cluster.ServerIdleTimeout.Duration = -time.Minute }, "cluster.server_idle_timeout"},
		{"server_check_delay negative", func(c *Config) { c.Cluster.ServerCheckDelay.Duration = -time.Second }, "cluster.server_check_delay"},
		{"server_connect_timeout negative", func(c *Config) { c.Cluster.ServerConnectTimeout.Duration = -time.Second }, "cluster.server_connect_timeout"},
		{"query_wait_timeout negative", func(c *Config) { c.Cluster.QueryWaitTimeout.Duration = -time.Second }, "cluster.query_wait_timeout"},
		{"query_wait_timeout < server_connect_timeout", func(c *Config) {
			c.Cluster.ServerConnectTimeout.Duration = 10 * time.Second
			c.Cluster.QueryWaitTimeout.Duration = 9 * time.Second
		}, "cluster.query_wait_timeout (9s) must be at least server_connect_timeout (10s)"},
	}
	checkValidate(t, cases)
}

// checkValidate runs Validate on each case.
func checkValidate(t *testing.T, cases []validateCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// Validate reports every problem at once, not just the first.
func TestValidateReportsAll(t *testing.T) {
	c := valid()
	c.Proxy.PoolMode = "statement"
	c.Proxy.LogLevel = "trace"
	c.Cluster.PoolSize = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted three errors")
	}
	for _, f := range []string{"proxy.pool_mode", "proxy.log_level", "cluster.pool_size"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %s", err, f)
		}
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n < 3 {
		t.Errorf("Validate joined %d errors, want at least 3", n)
	}
}

func TestDuration(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"250ms", 250 * time.Millisecond, false},
		{"30s", 30 * time.Second, false},
		{"1h2m3s", time.Hour + 2*time.Minute + 3*time.Second, false},
		{"0", 0, false},
		{"-5s", -5 * time.Second, false}, // parses; Validate rejects it where it matters
		{"abc", 0, true},
		{"", 0, true},
		{"10", 0, true}, // a unit is required
		{"5 s", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			d := Duration{time.Minute}
			err := d.UnmarshalText([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("UnmarshalText(%q) = %v, want an error", tc.in, d)
				}
				if d.Duration != time.Minute {
					t.Fatalf("a failed UnmarshalText changed the value to %v", d)
				}
				return
			}
			if err != nil || d.Duration != tc.want {
				t.Fatalf("UnmarshalText(%q) = %v, %v; want %v", tc.in, d.Duration, err, tc.want)
			}
			text, err := d.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			var back Duration
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Fatalf("MarshalText %q reads back as %v, %v", text, back, err)
			}
		})
	}
}

func TestUserStringHidesPassword(t *testing.T) {
	u := User{Name: "app", Password: "s3cr3t-pw"}
	users := Users{"app": u}
	for _, s := range []string{
		u.String(),
		fmt.Sprint(u),
		fmt.Sprintf("%v %+v %s %q", u, u, u, u),
		fmt.Sprintf("%#v", u),
		fmt.Sprint(users),
		fmt.Sprintf("%+v", users),
		fmt.Sprintf("%v", []User{u}),
		fmt.Errorf("login as %v failed", u).Error(),
		errors.New(u.String()).Error(),
	} {
		if strings.Contains(s, "s3cr3t") {
			t.Errorf("%q shows the password", s)
		}
		if !strings.Contains(s, "app") {
			t.Errorf("%q does not name the user", s)
		}
	}
}

// TestUsersPasswords: with md5 or scram-sha-256 every user needs a password (trust needs none);
// a malformed SCRAM verifier is an error; a stored form that cannot serve the method, a verifier
// with trust, and a hashed health_check_user are valid but warned about; no message shows the
// secret.
func TestUsersPasswords(t *testing.T) {
	verifier := secret.NewVerifier("pencil", []byte("salt"), 4096).Encode()
	md5 := secret.MD5Hash("app", "pencil")
	for _, tc := range []struct {
		method  string
		users   Users
		err     string
		warning string
	}{
		{AuthSCRAM, Users{"app": {Name: "app"}}, `user "app" has no password`, ""},
		{AuthMD5, Users{"app": {Name: "app", Password: "x"}, "b": {Name: "b"}}, `user "b" has no password`, ""},
		{AuthTrust, Users{"app": {Name: "app"}}, "", ""},
		{AuthSCRAM, Users{"app": {Name: "app", Password: md5}}, "", `user "app" has an md5 hash, which cannot serve auth.method = "scram-sha-256"`},
		{AuthMD5, Users{"app": {Name: "app", Password: md5}}, "", ""},
		{AuthSCRAM, Users{"app": {Name: "app", Password: verifier}}, "", ""},
		{AuthMD5, Users{"app": {Name: "app", Password: verifier}}, "", ""},
		{AuthTrust, Users{"app": {Name: "app", Password: verifier}}, "", `user "app" has a SCRAM verifier, but with auth.method = "trust"`},
		{AuthSCRAM, Users{"postgres": {Name: "postgres", Password: verifier}}, "", `cluster.health_check_user "postgres" has a SCRAM-SHA-256 verifier`},
		{AuthSCRAM, Users{"app": {Name: "app", Password: "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"}},
			`the password of user "app" starts with "SCRAM-SHA-256$" but is not a valid SCRAM-SHA-256 verifier: StoredKey is not base64 of 32 bytes`, ""},
		{AuthTrust, Users{"app": {Name: "app", Password: "SCRAM-SHA-256$4096:c2FsdA=="}}, `user "app" starts with "SCRAM-SHA-256$" but is not`, ""},
		{AuthSCRAM, Users{"app": {Name: "app", Password: "md5 but just a password"}}, "", ""},
	} {
		c := Defaults()
		c.Cluster.Hosts = []string{"127.0.0.1:5432"}
		c.Auth.Method = tc.method
		c.Auth.UsersFile = "users.toml"
		c.Users = tc.users
		err := c.Validate()
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s %v: Validate = %v, want %q", tc.method, tc.users, err, tc.err)
		}
		// A health_check_user without an entry is TestHealthCheckUserWarnings's.
		w := strings.Join(slices.DeleteFunc(c.Warnings(), func(w string) bool { return strings.Contains(w, "has no entry") }), "\n")
		if (w == "") != (tc.warning == "") || !strings.Contains(w, tc.warning) {
			t.Errorf("%s %v: Warnings = %q, want %q", tc.method, tc.users, w, tc.warning)
		}
		for _, secret := range []string{md5[3:], verifier[20:], "c3RvcmVk"} {
			if strings.Contains(w, secret) || err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("a message shows the secret: %s %v", w, err)
			}
		}
	}
}

// TestHealthCheckUserWarnings: a health_check_user without a users-file entry is warned about
// unless clients are trusted (then nothing is expected of the users file); an iam one is not
// warned about for its stored password, which its checks never send.
func TestHealthCheckUserWarnings(t *testing.T) {
	verifier := secret.NewVerifier("pencil", []byte("salt"), 4096).Encode()
	for _, tc := range []struct {
		name    string
		method  string
		users   Users
		warning string // "" for none about the health check
	}{
		{"missing", AuthSCRAM, Users{"app": {Name: "app", Password: "x"}}, `cluster.health_check_user "postgres" has no entry`},
		{"missing with md5", AuthMD5, Users{"app": {Name: "app", Password: "x"}}, `the servers must trust that user`},
		{"missing with trust", AuthTrust, nil, ""},
		{"plaintext", AuthSCRAM, Users{"postgres": {Name: "postgres", Password: "x"}}, ""},
		{"iam with a verifier", AuthSCRAM, Users{"postgres": {Name: "postgres", Password: verifier, IAM: true}}, ""},
	} {
		c := valid()
		c.Auth.Method = tc.method
		c.Users = tc.users
		var got []string
		for _, w := range c.Warnings() {
			if strings.Contains(w, "health_check_user") {
				got = append(got, w)
			}
		}
		if w := strings.Join(got, "\n"); (w == "") != (tc.warning == "") || !strings.Contains(w, tc.warning) {
			t.Errorf("%s: warnings %q, want %q", tc.name, w, tc.warning)
		}
	}
}

// TestPermissionWarnings: a key file others may read (PostgreSQL's rule for its own) and a users
// file with secrets readable by everyone are warned about; private ones are not.
func TestPermissionWarnings(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, filepath.Join(dir, "pgtide.key"), "key")
	users := writeFile(t, filepath.Join(dir, "users.toml"), "")
	for _, tc := range []struct {
		keyMode, usersMode os.FileMode
		secrets            bool
		want               []string
	}{
		{0o600, 0o600, true, nil},
		{0o400, 0o640, true, nil},
		{0o640, 0o600, true, []string{"tls.key_file " + key + " has mode 0640"}},
		{0o644, 0o644, true, []string{"tls.key_file " + key + " has mode 0644", "auth.users_file " + users + " has mode 0644"}},
		{0o600, 0o644, false, nil}, // no secret in it
	} {
		os.Chmod(key, tc.keyMode)
		os.Chmod(users, tc.usersMode)
		c := valid()
		c.TLS.CertFile, c.TLS.KeyFile = filepath.Join(dir, "pgtide.crt"), key
		c.Auth.Method, c.Auth.UsersFile = AuthTrust, users
		c.Users = Users{"app": {Name: "app"}}
		if tc.secrets {
			c.Users["app"] = User{Name: "app", Password: "pencil"}
		}
		got := c.permissionWarnings()
		if len(got) != len(tc.want) {
			t.Errorf("key %04o, users %04o: warnings %q, want %q", tc.keyMode, tc.usersMode, got, tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) || strings.Contains(got[i], "pencil") {
				t.Errorf("key %04o, users %04o: warning %q, want %q", tc.keyMode, tc.usersMode, got[i], w)
			}
		}
	}
}
