package proxy

import (
	"net"
	"time"
)

// SetCancelDialer replaces how CancelRequests reach servers, so tests can make their delivery
// slow. Call it before any client cancels.
func (s *Server) SetCancelDialer(dial func(network, addr string) (net.Conn, error)) {
	s.dialServer = dial
}

// SetParkAfter makes idle clients parked after d instead of a second. Call it before any client
// connects.
func (s *Server) SetParkAfter(d time.Duration) { s.env.ParkAfter = d }

// WatchChecks returns how many times s's config watcher has compared the files.
func WatchChecks(s *Server) int64 { return s.watchChecks.Load() }

// JanitorRuns returns how many rounds over the sessions s's janitor has finished.
func JanitorRuns(s *Server) int64 { return s.janitorRuns.Load() }

// Relaying returns how many of s's sessions have a relay goroutine reading their server
// connection now.
func (s *Server) Relaying() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sess := range s.sessions {
		if sess.Relaying() {
			n++
		}
	}
	return n
}
