package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/router"
)

// openListeners listens on every configured endpoint: its TCP address, and its Unix-domain
// socket in unix_socket_dir when that is set. The TCP listeners come first, in endpoint order.
// On error nothing stays open.
func openListeners(cfg *config.Config) (listeners []listener, err error) {
	defer func() {
		if err != nil {
			for _, l := range listeners {
				l.ln.Close()
			}
			listeners = nil
		}
	}()
	for _, l := range []struct {
		ep   router.Endpoint
		addr string
	}{{router.Auto, cfg.Proxy.Listen}, {router.Writer, cfg.Proxy.WriterListen}, {router.Reader, cfg.Proxy.ReaderListen}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", ListenAddr(l.addr))
		if err != nil {
			return listeners, fmt.Errorf("listen on %s (%s endpoint): %w", l.addr, l.ep, err)
		}
		listeners = append(listeners, listener{ep: l.ep, ln: ln})
	}
	if cfg.Proxy.UnixSocketDir == "" {
		return listeners, nil
	}
	for _, l := range listeners[:len(listeners):len(listeners)] {
		port := l.ln.Addr().(*net.TCPAddr).Port
		path := filepath.Join(cfg.Proxy.UnixSocketDir, ".s.PGSQL."+strconv.Itoa(port))
		ln, err := listenUnix(path)
		if err != nil {
			return listeners, fmt.Errorf("listen on %s (%s endpoint): %w", path, l.ep, err)
		}
		listeners = append(listeners, listener{ep: l.ep, ln: ln})
	}
	return listeners, nil
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
