package proxy

import "net"

// SetCancelDialer replaces how CancelRequests reach servers, so tests can make their delivery
// slow. Call it before any client cancels.
func (s *Server) SetCancelDialer(dial func(network, addr string) (net.Conn, error)) {
	s.dialServer = dial
}
