package session

import (
	"net"
	"time"

	"pgtide/internal/pgtls"
)

// Client states, as PgBouncer's SHOW CLIENTS words them where the concept is the same.
const (
	ClientLogin   = "login"   // connected, not yet authenticated and greeted
	ClientActive  = "active"  // holds a server connection
	ClientWaiting = "waiting" // waits for a server connection
	ClientIdle    = "idle"    // between transactions (transaction mode), holding nothing
)

// ClientInfo describes one client connection at one moment.
type ClientInfo struct {
	// ID is the process ID in the client's BackendKeyData (KILL_CLIENT takes it); Info leaves
	// it 0 (the PID may change at login), the registry of sessions fills it in.
	ID        uint32
	User      string
	Database  string
	Endpoint  string // the name of the endpoint it came through
	Addr      string // the client's address, host:port
	LocalAddr string // pgtide's end: the endpoint's address
	TLS       string // how the client's connection is encrypted (pgtls.Describe), "" in plain text
	State     string // ClientLogin, ClientActive, ClientWaiting or ClientIdle
	Connected time.Time
	// RequestTime is when the client last got a server connection (zero if never).
	RequestTime     time.Time
	ApplicationName string
	Pinned          bool
	// The server connection it holds, when State is ClientActive.
	Node            string
	ServerPID       uint32
	ServerLocalAddr string
	ServerConnected time.Time
	ServerTLS       string // how the server connection is encrypted, "" in plain text
	// ServerCloseNeeded: the server connection will be closed, not reused, when released
	// (RECONNECT, PAUSE, server_lifetime, a role change; see pool.Manager.CloseNeeded).
	ServerCloseNeeded bool
	TxStatus          byte // the server's last ReadyForQuery status: 'I', 'T' or 'E'
}

// Info returns a snapshot of the client. It takes the session's lock briefly; safe from any
// goroutine.
func (s *Session) Info() ClientInfo {
	conn := s.ext.Load().Conn
	ci := ClientInfo{User: s.user, Database: s.database, Endpoint: s.endpoint.Name(),
		Addr: ClientAddr(conn), LocalAddr: localAddr(conn), Connected: time.Unix(0, s.connected)}
	if tc, ok := conn.(*pgtls.Conn); ok { // encrypted by the proxy before the startup packet
		ci.TLS = pgtls.Describe(tc.ConnectionState())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attachedAt != 0 {
		ci.RequestTime = time.Unix(0, s.attachedAt)
	}
	ci.ApplicationName = s.params["application_name"]
	ci.Pinned = s.pinned
	ci.TxStatus = s.txStatus
	switch {
	case !s.loggedIn:
		ci.State = ClientLogin
	case s.server != nil:
		ci.State = ClientActive
		ci.Node = s.server.Key().Node
		ci.ServerPID = s.server.PID
		ci.ServerLocalAddr = s.server.NetConn().LocalAddr().String()
		ci.ServerConnected = s.server.Created()
		ci.ServerTLS = s.server.TLS()
		ci.ServerCloseNeeded = s.env.Pools.CloseNeeded(s.server) // the pool's lock nests inside the session's
	case s.waiting:
		ci.State = ClientWaiting
	default:
		ci.State = ClientIdle
	}
	return ci
}

// ClientAddr is how logs and SHOW CLIENTS name a client's address: host:port for TCP, "unix"
// for a Unix-domain socket (whose peers have no address).
func ClientAddr(conn net.Conn) string {
	switch a := conn.RemoteAddr().(type) {
	case nil:
		return "unix"
	case *net.UnixAddr:
		if a == nil || a.Name == "" || a.Name == "@" {
			return "unix"
		}
		return "unix:" + a.Name
	default:
		return a.String()
	}
}

// localAddr is the endpoint's address a client connected to (a socket path for a Unix-domain
// socket).
func localAddr(conn net.Conn) string {
	if a := conn.LocalAddr(); a != nil {
		return a.String()
	}
	return ""
}
