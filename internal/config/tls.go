package config

import (
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"pgtide/internal/pgtls"
)

// TLS configures TLS towards clients (PgBouncer's client_tls_* settings). Every setting is
// reloadable: a reload, or a change of the files themselves (watched every second), applies to
// the clients that connect afterwards, while the connected ones keep theirs.
type TLS struct {
	// CertFile and KeyFile are PEM files of the certificate (with its chain) pgtide presents to
	// clients and its private key. Relative to the config file's directory.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// CAFile is a PEM file of the CAs client certificates must chain to. When set, clients are
	// asked for a certificate, and one presented must chain to it.
	CAFile string `toml:"ca_file"`
	// ClientTLS is "disable" (SSLRequests answered 'N'), "allow" (TLS for the clients that ask),
	// "require" (plain-text TCP clients refused as PostgreSQL's pg_hba hostssl refuses them;
	// Unix-domain sockets are never encrypted and not refused), "verify-ca" (require, and a client
	// certificate chaining to CAFile) or "verify-full" (verify-ca, and the certificate's common
	// name is the user name, as PostgreSQL's clientcert=verify-full). Default: "allow" when
	// cert_file is set, "disable" otherwise.
	ClientTLS string `toml:"client_tls"`
}

// defaultClientTLS makes client_tls its default (DefaultClientTLS) when the file sets none.
func (t *TLS) defaultClientTLS(md toml.MetaData) {
	if !md.IsDefined("tls", "client_tls") {
		t.ClientTLS = t.DefaultClientTLS()
	}
}

// DefaultClientTLS is client_tls's default with t's files: "allow" when cert_file is set,
// "disable" otherwise.
func (t *TLS) DefaultClientTLS() string {
	if t.CertFile != "" {
		return string(pgtls.Allow)
	}
	return string(pgtls.Disable)
}

// validateTLS checks the [tls] section and the cluster's server_tls settings together. The files
// are read when the proxy starts or reloads, not here.
func (c *Config) validateTLS(add func(format string, args ...any)) {
	t := &c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		add("tls.cert_file and tls.key_file must be set together")
	}
	client := pgtls.Mode(t.ClientTLS)
	switch {
	case !slices.Contains(pgtls.ClientModes, client):
		add("tls.client_tls %q: must be %s", t.ClientTLS, modeList(pgtls.ClientModes))
	case client != pgtls.Disable && t.CertFile == "":
		add("tls.client_tls = %q needs tls.cert_file and tls.key_file (the certificate pgtide presents)", t.ClientTLS)
	case client.Verifies() && t.CAFile == "":
		add("tls.client_tls = %q needs tls.ca_file (the CA that signs client certificates)", t.ClientTLS)
	}
	if t.CAFile != "" && t.CertFile == "" {
		add("tls.ca_file needs tls.cert_file and tls.key_file: client certificates are checked only over TLS")
	}
	cl := &c.Cluster
	server := pgtls.Mode(cl.ServerTLS)
	switch {
	case !slices.Contains(pgtls.ServerModes, server):
		add("cluster.server_tls %q: must be %s", cl.ServerTLS, modeList(pgtls.ServerModes))
	case server.Verifies() && cl.ServerCAFile == "":
		add("cluster.server_tls = %q needs cluster.server_ca_file (the CA bundle the servers' certificates chain to)", cl.ServerTLS)
	}
}

// modeList is `"a", "b" or "c"`.
func modeList(modes []pgtls.Mode) string {
	q := make([]string, len(modes))
	for i, m := range modes {
		q[i] = `"` + string(m) + `"`
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
