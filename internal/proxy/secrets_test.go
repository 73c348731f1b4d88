package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pgtide/internal/config"
	"pgtide/internal/pgcluster"
	"pgtide/internal/secret"
)

// Roles of the secrets cluster: their passwords, and what the server asks of them.
const (
	scramRole = "pt_scram" // scram-sha-256 on the server; the users file has its verifier
	staleRole = "pt_stale" // likewise, but its password was set again after the verifier was copied
	md5Role   = "pt_md5"   // md5 on the server, password stored as an md5 hash; the users file has the hash
)

var secretPasswords = map[string]string{
	scramRole:  "scram pencil",
	staleRole:  "stale pencil",
	md5Role:    "md5 pencil",
	"postgres": "postgres secret",
}

// secretsEnv is a lone primary whose roles need passwords, and a users file with no plaintext
// password but the health check user's, made from what pg_authid holds.
type secretsEnv struct {
	c         *pgcluster.Cluster
	usersFile string
	stored    map[string]string // role → its users-file entry (verifier or md5 hash)
}

// startSecretsEnv starts the cluster for the secrets tests: its own, since the shared one's
// roles have other methods, and pg_hba.conf is written at start.
func startSecretsEnv(t *testing.T) *secretsEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("no test cluster (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		HBA: []string{
			"host all " + scramRole + " 127.0.0.1/32 scram-sha-256",
			"host all " + staleRole + " 127.0.0.1/32 scram-sha-256",
			"host all " + md5Role + " 127.0.0.1/32 md5",
		},
		InitSQL: []string{
			"CREATE ROLE " + scramRole + " LOGIN PASSWORD '" + secretPasswords[scramRole] + "'",
			"CREATE ROLE " + staleRole + " LOGIN PASSWORD '" + secretPasswords[staleRole] + "'",
			"SET password_encryption = 'md5'",
			"CREATE ROLE " + md5Role + " LOGIN PASSWORD '" + secretPasswords[md5Role] + "'",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := &secretsEnv{c: c, stored: map[string]string{}}
	admin := e.superuser(t)
	for _, role := range []string{scramRole, staleRole, md5Role} {
		var v string
		if err := admin.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v); err != nil {
			t.Fatal(err)
		}
		e.stored[role] = v
	}
	if !strings.HasPrefix(e.stored[scramRole], "SCRAM-SHA-256$") || !strings.HasPrefix(e.stored[md5Role], "md5") {
		t.Fatalf("pg_authid holds %q and %q", e.stored[scramRole][:14], e.stored[md5Role][:3])
	}
	if e.stored[md5Role] != secret.MD5Hash(md5Role, secretPasswords[md5Role]) {
		t.Fatal("PostgreSQL's md5 hash is not secret.MD5Hash's")
	}
	// The server asks these roles for a password: a login without one is refused.
	for _, role := range []string{scramRole, md5Role} {
		conn, err := pgx.Connect(ctx, e.c.Primary().ConnString(role, "postgres"))
		if err == nil {
			conn.Close(ctx)
		}
		if pgCode(err) != "28P01" {
			t.Fatalf("%s logs in to the server without a password: %v", role, err)
		}
	}
	// The same password set again: a new salt, so another verifier than the users file's.
	if _, err := admin.Exec(ctx, "ALTER ROLE "+staleRole+" PASSWORD '"+secretPasswords[staleRole]+"'"); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[[user]]\nname = \"postgres\"\npassword = %q\n\n", secretPasswords["postgres"])
	for _, role := range []string{scramRole, staleRole, md5Role} {
		fmt.Fprintf(&b, "[[user]]\nname = %q\npassword = %q\n\n", role, e.stored[role])
	}
	e.usersFile = filepath.Join(t.TempDir(), "users.toml")
	if err := os.WriteFile(e.usersFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{scramRole, staleRole, md5Role} {
		if strings.Contains(b.String(), secretPasswords[role]) {
			t.Fatalf("the users file holds %s's plaintext password", role)
		}
	}
	return e
}

// superuser is a connection to the primary itself as postgres (trusted), closed with the test.
func (e *secretsEnv) superuser(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), e.c.Primary().ConnString("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// proxy starts pgtide in front of the secrets cluster with the users file and method.
func (e *secretsEnv) proxy(t *testing.T, method string, mutate func(*config.Config)) *testProxy {
	t.Helper()
	return startProxy(t, func(c *config.Config) {
		c.Cluster.Hosts = []string{e.c.Primary().Addr()}
		c.Auth.UsersFile = e.usersFile
		c.Auth.Method = method
		c.Auth.AdminUsers = []string{"postgres"}
		if mutate != nil {
			mutate(c)
		}
	})
}

// secretConnString is a connection string for user with password through p, to database postgres.
func secretConnString(p *testProxy, user, password string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres password='%s' sslmode=disable",
		p.Addr().(*net.TCPAddr).Port, user, password)
}

// pgxLogin connects as user through p and returns current_user, or the error.
func pgxLogin(t *testing.T, p *testProxy, user, password string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, secretConnString(p, user, password))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var who string
	err = conn.QueryRow(ctx, "SELECT current_user").Scan(&who)
	return who, err
}

// psqlLogin runs psql as user through p and returns current_user, or psql's error output.
func psqlLogin(t *testing.T, p *testProxy, user, password string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psqlPath(t), "-X", "-A", "-t", "-h", "127.0.0.1",
		"-p", strconv.Itoa(p.Addr().(*net.TCPAddr).Port), "-U", user, "-d", "postgres", "-c", "SELECT current_user")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=20", "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// jdbcProbe is a Java program that logs in through the PostgreSQL JDBC driver once per user and
// password pair of its arguments and prints "user:<current_user>" or "error:<SQLSTATE>" for each.
const jdbcProbe = `import java.sql.*;
public class Probe {
  public static void main(String[] a) throws Exception {
    for (int i = 1; i + 1 < a.length; i += 2) {
      try (Connection c = DriverManager.getConnection(a[0], a[i], a[i + 1]);
           ResultSet r = c.createStatement().executeQuery("SELECT current_user")) {
        r.next();
        System.out.println("user:" + r.getString(1));
      } catch (SQLException e) {
        System.out.println("error:" + e.getSQLState());
      }
    }
  }
}
`

// jdbcLogins logs in through p with the PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java,
// which make test-deps installs) for each user/password pair and returns one result per pair as
// jdbcProbe prints it. It skips the test when Java or the driver is missing.
func jdbcLogins(t *testing.T, p *testProxy, pairs ...string) []string {
	t.Helper()
	java, err := exec.LookPath("java")
	const jar = "/usr/share/java/postgresql.jar"
	if _, jerr := os.Stat(jar); err != nil || jerr != nil {
		t.Skip("no java or no " + jar + " (apt-get install default-jdk-headless libpostgresql-jdbc-java)")
	}
	src := filepath.Join(t.TempDir(), "Probe.java")
	if err := os.WriteFile(src, []byte(jdbcProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%d/postgres?sslmode=disable&connectTimeout=20", p.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, java, append([]string{"-cp", jar, src, url}, pairs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("java: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(pairs)/2 {
		t.Fatalf("java printed %q", out)
	}
	return lines
}

// TestSecrets: users-file entries that are PostgreSQL's SCRAM verifiers and md5 hashes, copied
// from pg_authid, authenticate real clients (psql, pgx, JDBC), and pgtide logs in to the server
// with them by pass-through; where pass-through cannot work, the failure says why; no secret
// shows in the log, the admin console or the status page.
func TestSecrets(t *testing.T) {
	e := startSecretsEnv(t)

	t.Run("clients", func(t *testing.T) {
		// Session mode: each client's login dials its own server connection by pass-through.
		for _, tc := range []struct {
			method string
			users  []string // log in with their passwords
		}{
			{config.AuthSCRAM, []string{scramRole}},
			{config.AuthMD5, []string{md5Role, scramRole}}, // a verifier turns md5 into SCRAM
		} {
			t.Run(tc.method, func(t *testing.T) {
				p := e.proxy(t, tc.method, nil)
				var pairs []string
				for _, user := range tc.users {
					pw := secretPasswords[user]
					for name, login := range map[string]func(*testing.T, *testProxy, string, string) (string, error){"pgx": pgxLogin, "psql": psqlLogin} {
						if who, err := login(t, p, user, pw); err != nil || who != user {
							t.Fatalf("%s as %s: %q, %v", name, user, who, err)
						}
					}
					if _, err := pgxLogin(t, p, user, "wrong"); pgCode(err) != "28P01" {
						t.Fatalf("%s with a wrong password: %v", user, err)
					}
					pairs = append(pairs, user, pw, user, "wrong")
				}
				for i, got := range jdbcLogins(t, p, pairs...) {
					want := "user:" + pairs[2*i]
					if pairs[2*i+1] == "wrong" {
						want = "error:28P01"
					}
					if got != want {
						t.Fatalf("JDBC as %s/%s: %s, want %s", pairs[2*i], pairs[2*i+1], got, want)
					}
				}
			})
		}
	})

	t.Run("md5 hash refused for SCRAM", func(t *testing.T) {
		// As PostgreSQL: an md5 hash cannot serve SCRAM. The client gets 28P01; the log says why.
		p := e.proxy(t, config.AuthSCRAM, nil)
		if _, err := pgxLogin(t, p, md5Role, secretPasswords[md5Role]); pgCode(err) != "28P01" {
			t.Fatalf("got %v", err)
		}
		if len(p.logged("level=WARN", "cannot serve SCRAM", "user="+md5Role)) == 0 {
			t.Fatal("no warning names the cause")
		}
		if len(p.logged("level=WARN", "has an md5 hash, which cannot serve")) == 0 {
			t.Fatal("no warning at start")
		}
	})

	t.Run("pass-through", func(t *testing.T) {
		p := e.proxy(t, config.AuthSCRAM, func(c *config.Config) {
			c.Proxy.PoolMode = config.PoolModeTransaction
			c.Cluster.MinIdle = 2
			c.Admin.Listen = "127.0.0.1:0"
		})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		admin := e.superuser(t)
		backends := func(since time.Time) int {
			var n int
			if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_start > $2",
				scramRole, since).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}

		// New server connections dialled while clients are logged in: four transactions at once
		// need four, each opened with the keys the first login proved.
		conns := openTransactions(t, ctx, p, scramRole, 4)
		for _, c := range conns {
			if _, err := c.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			c.Close(ctx)
		}

		// Later, with no client of the user left: RECONNECT closes the server connections and
		// min_idle opens new ones, which only the kept keys can log in.
		var before time.Time
		if err := admin.QueryRow(ctx, "SELECT now()").Scan(&before); err != nil {
			t.Fatal(err)
		}
		console, err := pgx.Connect(ctx, strings.Replace(secretConnString(p, "postgres", secretPasswords["postgres"]),
			"dbname=postgres", "dbname=pgtide", 1)+" default_query_exec_mode=simple_protocol")
		if err != nil {
			t.Fatal(err)
		}
		defer console.Close(ctx)
		if _, err := console.Exec(ctx, "RECONNECT postgres"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "min_idle connections dialled after RECONNECT", func() bool { return backends(before) >= 2 })

		// The stale role's verifier on the server is no longer the users file's: the client
		// authenticates with pgtide, but pgtide cannot log in, and both the client and the log say
		// why.
		_, err = pgxLogin(t, p, staleRole, secretPasswords[staleRole])
		if pgCode(err) != "08004" || !strings.Contains(err.Error(), "salt or iteration count") {
			t.Fatalf("stale verifier: %v", err)
		}
		if len(p.logged("level=WARN", "pass-through", "salt or iteration count", "user="+staleRole)) == 0 {
			t.Fatal("no warning names the stale verifier")
		}

		// Nothing of a secret in the log, the console's listings or the HTTP pages.
		var shown strings.Builder
		for _, cmd := range []string{"SHOW CONFIG", "SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "SHOW DATABASES", "SHOW NODES", "SHOW STATS"} {
			res, err := console.PgConn().Exec(ctx, cmd).ReadAll()
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			for _, r := range res {
				for _, row := range r.Rows {
					for _, v := range row {
						shown.Write(v)
						shown.WriteByte('\n')
					}
				}
			}
		}
		if !strings.Contains(shown.String(), "auth.users_file") {
			t.Fatalf("SHOW CONFIG lists no users_file:\n%s", shown.String())
		}
		for _, path := range []string{"/status.json", "/", "/metrics"} {
			resp, err := http.Get("http://" + p.AdminAddr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			shown.Write(body)
		}
		p.log.mu.Lock()
		shown.WriteString(strings.Join(p.log.lines, "\n"))
		p.log.mu.Unlock()
		checkNoSecrets(t, shown.String(), e)
	})

	t.Run("md5 pass-through", func(t *testing.T) {
		p := e.proxy(t, config.AuthMD5, func(c *config.Config) { c.Proxy.PoolMode = config.PoolModeTransaction })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		openTransactions(t, ctx, p, md5Role, 3)
	})

	t.Run("trust: no keys", func(t *testing.T) {
		// With trust, clients prove nothing: an md5 hash still answers an md5 server, but a
		// verifier gives no keys, and the client and the log are told so.
		p := e.proxy(t, config.AuthTrust, nil)
		if who, err := pgxLogin(t, p, md5Role, ""); err != nil || who != md5Role {
			t.Fatalf("md5 hash with trust: %q, %v", who, err)
		}
		_, err := pgxLogin(t, p, scramRole, "")
		if pgCode(err) != "08004" || !strings.Contains(err.Error(), "no client of this user has logged in with SCRAM") {
			t.Fatalf("verifier with trust: %v", err)
		}
		if len(p.logged("level=WARN", "pass-through", "no client of this user", "user="+scramRole)) == 0 {
			t.Fatal("no warning says the keys are missing")
		}
		if len(p.logged("level=WARN", "has a SCRAM verifier, but with auth.method")) == 0 {
			t.Fatal("no warning at start")
		}
		checkNoSecrets(t, strings.Join(p.logged(), "\n"), e)
	})
}

// openTransactions connects n clients as user through p (transaction mode) and opens a
// transaction on each, which checks that they hold n distinct server connections. The clients
// are closed with the test.
func openTransactions(t *testing.T, ctx context.Context, p *testProxy, user string, n int) []*pgx.Conn {
	t.Helper()
	var conns []*pgx.Conn
	pids := map[uint32]bool{}
	for range n {
		c, err := pgx.Connect(ctx, secretConnString(p, user, secretPasswords[user]))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		conns = append(conns, c)
		var pid uint32
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids[pid] = true
	}
	if len(pids) != n {
		t.Fatalf("%d server connections for %d open transactions", len(pids), n)
	}
	return conns
}

// key32 matches 32 bytes in base64, the size of every SCRAM key, proof and signature.
var key32 = regexp.MustCompile(`[A-Za-z0-9+/]{43}=`)

// checkNoSecrets fails if text holds a password, a stored verifier or hash or any part of one, or
// anything shaped like a SCRAM key or proof.
func checkNoSecrets(t *testing.T, text string, e *secretsEnv) {
	t.Helper()
	needles := []string{}
	for _, pw := range secretPasswords {
		needles = append(needles, pw)
	}
	for _, s := range e.stored {
		needles = append(needles, s)
		if strings.HasPrefix(s, "SCRAM-SHA-256$") { // its salt, StoredKey and ServerKey
			needles = append(needles, strings.Split(strings.ReplaceAll(s, "$", ":"), ":")[2:]...)
		} else {
			needles = append(needles, s[3:])
		}
	}
	for _, n := range needles {
		if i := strings.Index(text, n); i >= 0 {
			t.Fatalf("a secret shows: ...%s...", text[max(0, i-80):i])
		}
	}
	if m := key32.FindString(text); m != "" {
		t.Fatalf("something shaped like a SCRAM key or proof shows: %s", m)
	}
}
