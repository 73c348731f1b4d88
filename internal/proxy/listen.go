package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"pgtide/internal/evloop"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/router"
)

// listener is where one endpoint accepts clients: its TCP address (and the Unix-domain socket
// unix_socket_dir adds for its port) or its own Unix-domain socket. A reload keeps it for an
// endpoint whose listen setting stays, and may hand it to another endpoint that takes the
// address over (see openListeners); it never closes a socket that stays in use.
type listener struct {
	listen string // the listen setting it was opened for; immutable
	// name is the endpoint it serves; written by New before Serve, then by reloads under
	// Server.mu (a listener another endpoint takes over changes name). Guarded by Server.mu.
	name string
	// ep is the endpoint its clients reach, read by its accept loops at every connection.
	ep    atomic.Pointer[router.Endpoint]
	socks []net.Listener // immutable; the TCP socket first
	// loopSocks are the sockets of socks the event loops accept on (see loopaccept.go), which
	// took them over. Written by startAcceptLocked under Server.mu, once; read by close.
	loopSocks []*evloop.Listener
	// closed: a reload no longer uses it; its accept loops end.
	closed atomic.Bool
}

// close closes its sockets; their accept loops end. It runs under Server.mu, or without it once
// the listener is out of Server.listeners (no one starts it then).
func (l *listener) close() {
	l.closed.Store(true)
	for _, s := range l.socks {
		s.Close()
	}
	for _, s := range l.loopSocks {
		s.Close()
	}
}

// openListeners returns a listener for each endpoint of eps (the configuration's, in order),
// taking from cur (the running ones) what it can: the listener of an endpoint of the same name
// and listen setting, else one another endpoint had on the same setting (not port 0: ":0" asks
// for a new port), else a new one. unused are cur's listeners none of eps took; the caller
// names the kept ones after their new endpoints and closes the unused once the new ones serve. On error the listeners it opened are closed and cur is
// as it was.
func openListeners(cfg *config.Config, eps []config.Endpoint, cur []*listener) (next, unused []*listener, err error) {
	var opened []*listener
	defer func() {
		if err != nil {
			for _, l := range opened {
				l.close()
			}
			next, unused = nil, nil
		}
	}()
	taken := make([]bool, len(cur))
	take := func(match func(*listener) bool) *listener {
		for i, l := range cur {
			if !taken[i] && match(l) {
				taken[i] = true
				return l
			}
		}
		return nil
	}
	next = make([]*listener, len(eps))
	for i, e := range eps {
		next[i] = take(func(l *listener) bool { return l.name == e.Name && l.listen == e.Listen })
	}
	for i, e := range eps {
		if next[i] == nil && !strings.HasSuffix(e.Listen, ":0") {
			next[i] = take(func(l *listener) bool { return l.listen == e.Listen })
		}
	}
	for i, e := range eps {
		if next[i] == nil {
			l, err := openListener(cfg, e)
			if err != nil {
				return nil, nil, err
			}
			opened = append(opened, l)
			next[i] = l
		}
	}
	for i, l := range cur {
		if !taken[i] {
			unused = append(unused, l)
		}
	}
	return next, unused, nil
}

// openListener listens for endpoint e: on its TCP address and, when unix_socket_dir is set, on
// <dir>/.s.PGSQL.<port>; or on its Unix-domain socket.
func openListener(cfg *config.Config, e config.Endpoint) (*listener, error) {
	l := &listener{listen: e.Listen, name: e.Name}
	if e.IsUnix() {
		ln, err := listenUnix(e.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s (endpoint %q): %w", e.Listen, e.Name, err)
		}
		l.socks = []net.Listener{ln}
		return l, nil
	}
	ln, err := clientListenConfig.Listen(context.Background(), "tcp", ListenAddr(e.Listen))
	if err != nil {
		return nil, fmt.Errorf("listen on %s (endpoint %q): %w", e.Listen, e.Name, err)
	}
	l.socks = []net.Listener{ln}
	if cfg.Proxy.UnixSocketDir != "" {
		port := ln.Addr().(*net.TCPAddr).Port
		path := filepath.Join(cfg.Proxy.UnixSocketDir, ".s.PGSQL."+strconv.Itoa(port))
		uln, err := listenUnix(path)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on %s (endpoint %q): %w", path, e.Name, err)
		}
		l.socks = append(l.socks, uln)
	}
	return l, nil
}

// ListenAddr turns a listen address as pgtide's configuration takes it into what net.Listen
// takes: the PgBouncer-style "*:6432" (every address) into ":6432"; other forms ("0.0.0.0:6432",
// "[::]:6432", "127.0.0.1:6432") are Go's already.
func ListenAddr(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "*" {
		return net.JoinHostPort("", port)
	}
	return addr
}

// listenUnix listens on the socket file path, which everyone may connect to (as PostgreSQL's
// default unix_socket_permissions; authentication is pgtide's). A socket file left behind by a
// process that died is replaced; one that a live process answers on is an error.
func listenUnix(path string) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			c.Close()
			return nil, fmt.Errorf("another process listens on %s", path)
		}
		if rerr := os.Remove(path); rerr != nil {
			return nil, err
		}
		ln, err = net.Listen("unix", path)
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o777); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
