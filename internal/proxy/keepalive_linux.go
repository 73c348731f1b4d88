package proxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// clientListenConfig is how endpoints listen on TCP: with TCP_NODELAY, and TCP keep-alive as Go
// sets it by default (the first probe after 15 s idle, then one every 15 s, and 9 unanswered end
// the connection), so that a client that vanished without a FIN or RST is noticed. Linux copies
// these options from a listening socket to the sockets it accepts: set once on the listener,
// they cost no system call per connection (Go would make four on each accept).
var clientListenConfig = net.ListenConfig{
	KeepAlive: -1, // nothing set per connection: inherited from the listener
	Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []struct{ level, opt, v int }{
				// As Go sets it on each connection it accepts: pgtide flushes whole answers, and
				// a message written in two pieces must not wait for the client's delayed ACK.
				{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepAliveIdle},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, keepAliveInterval},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
			} {
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	},
}

// Go's defaults for TCP keep-alive (net.KeepAliveConfig): seconds, seconds, probes.
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
)
