package pgcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// baseConf is appended to the primary's postgresql.conf; replicas inherit it
// through pg_basebackup. Per-node settings (port, cluster_name,
// primary_conninfo) live in postgresql.auto.conf instead, which is read after
// postgresql.conf and which we rewrite whenever a node's role changes.
var baseConf = []string{
	"listen_addresses = '127.0.0.1'",
	// No unix sockets: nothing to clean up, and no clash with a system
	// cluster's /var/run/postgresql.
	"unix_socket_directories = ''",
	"max_connections = 200",
	"shared_buffers = 32MB",
	"wal_level = replica",
	"max_wal_senders = 10",
	"wal_keep_size = 256MB",
	"hot_standby = on",
	"hot_standby_feedback = on",
	// pg_rewind (Follow after a divergence) needs hint-bit changes in the
	// WAL; it also needs full_page_writes, so that stays at its default on.
	"wal_log_hints = on",
	// Throwaway data: durability costs test time and buys nothing.
	"fsync = off",
	// Replicas retry a lost upstream sooner than the 5s default, which keeps
	// failover tests short.
	"wal_retrieve_retry_interval = '1s'",
	"logging_collector = off",
}

func writeBaseConf(r *runner, dataDir string, extra []string) error {
	var b strings.Builder
	b.WriteString("\n# pgcluster: settings for a throwaway local cluster\n")
	for _, l := range baseConf {
		b.WriteString(l + "\n")
	}
	if len(extra) > 0 {
		// Last occurrence wins in postgresql.conf, so these override the
		// lines above.
		b.WriteString("# pgcluster: Options.ExtraConf\n")
		for _, l := range extra {
			b.WriteString(l + "\n")
		}
	}
	return appendFile(r, filepath.Join(dataDir, "postgresql.conf"), b.String())
}

func appendFile(r *runner, path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return r.chown(path)
}

// writeHBA replaces pg_hba.conf: the caller's lines first, so they win for
// the users and addresses they name, then trust for everything on loopback.
func writeHBA(r *runner, dataDir string, hba []string) error {
	var b strings.Builder
	if len(hba) > 0 {
		b.WriteString("# pgcluster: Options.HBA\n")
		for _, l := range hba {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString(`# pgcluster: defaults
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    all          all   ::1/128       trust
host    replication  all   127.0.0.1/32  trust
host    replication  all   ::1/128       trust
`)
	return r.writeFile(filepath.Join(dataDir, "pg_hba.conf"), []byte(b.String()))
}

// setAutoConf sets settings in postgresql.auto.conf the way ALTER SYSTEM
// would: earlier lines for the same names are dropped, new ones appended.
// It must only run while the node is stopped.
func setAutoConf(r *runner, dataDir string, settings [][2]string) error {
	path := filepath.Join(dataDir, "postgresql.auto.conf")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	drop := make(map[string]bool, len(settings))
	for _, s := range settings {
		drop[strings.ToLower(s[0])] = true
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		name, _, ok := strings.Cut(line, "=")
		if ok && drop[strings.ToLower(strings.TrimSpace(name))] {
			continue
		}
		if line != "" {
			b.WriteString(line + "\n")
		}
	}
	for _, s := range settings {
		fmt.Fprintf(&b, "%s = '%s'\n", s[0], strings.ReplaceAll(s[1], "'", "''"))
	}
	return r.writeFile(path, []byte(b.String()))
}

// tailFile returns at most the last n lines of path, read from its last
// 16 KiB; it is for error messages, so a read failure is reported inline.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	const max = 16 << 10
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(buf, off)
	lines := strings.Split(strings.TrimRight(string(buf[:k]), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readFrom returns the content of path from byte offset off on (for
// inspecting what one start attempt logged).
func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() <= off {
		return ""
	}
	buf := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(buf, off)
	return string(buf[:k])
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
