package proxy

import (
	"slices"
	"sync"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/router"
	"pgtide/internal/session"
)

// Endpoints at reload. A reload opens the listeners of the new configuration first (see
// openListeners: kept where the endpoint and its listen setting stay, so no client of an
// endpoint that stays sees anything), and is refused whole if one cannot be opened. Once the
// new configuration is in force, applyEndpoints gives the router the new endpoints (an endpoint
// that keeps its name keeps its state: its clients, its lease count), binds the listeners to
// them, starts accepting on the new ones and closes the ones no longer used; the clients of a
// removed endpoint finish their transactions and are ended at their next transaction boundary,
// as at shutdown, with a FATAL 57P01 that says why; those still in a transaction after
// shutdown_timeout are closed (killDrained), as Shutdown closes its own.

// endpointRemoved is what a removed endpoint's clients read when they are ended.
func endpointRemoved(ep *router.Endpoint) string {
	return "its endpoint \"" + ep.Name() + "\" was removed from pgtide's configuration"
}

// applyEndpoints makes cfg's endpoints the running ones, served by next (openListeners' answer
// for cfg); unused are the running listeners next does not keep. Requires reloadMu.
func (s *Server) applyEndpoints(cfg *config.Config, next, unused []*listener) {
	eps, removed := s.router.SetEndpoints(cfg)
	s.router.CheckEntries()
	for i, ep := range eps {
		next[i].ep.Store(ep)
	}
	s.mu.Lock()
	old := s.listeners
	was := map[string]string{} // endpoint name → its listen setting before the reload
	for _, l := range old {
		was[l.name] = l.listen
	}
	s.listeners = next
	for i, ep := range eps {
		next[i].name = ep.Name()
	}
	var started []*listener
	for _, l := range next {
		switch {
		case slices.Contains(old, l):
		case s.closing:
			l.close() // Shutdown already closed the running ones
		case s.serving:
			s.startAcceptLocked(l)
			started = append(started, l)
		}
	}
	var drain []*session.Session
	if len(removed) > 0 {
		for _, sess := range s.sessions {
			if sess.Endpoint().Removed() {
				drain = append(drain, sess)
			}
		}
	}
	if len(drain) > 0 && !s.closing { // a Shutdown under way bounds them itself
		timeout := cfg.Proxy.ShutdownTimeout.Duration
		s.bg.Go(func() { s.killDrained(drain, timeout) })
	}
	s.mu.Unlock()
	for _, l := range unused {
		l.close()
		s.logger.Info("reload: stopped listening", "listen", l.listen, "addr", l.socks[0].Addr().String(), "was_endpoint", l.name)
	}
	for _, l := range started {
		if prev, ok := was[l.name]; ok {
			s.logger.Info("reload: endpoint moved: listening on its new address; its clients stay", "endpoint", l.name,
				"listen", l.listen, "addr", l.socks[0].Addr().String(), "was", prev)
		} else {
			s.logger.Info("reload: endpoint listening", "endpoint", l.name, "listen", l.listen, "addr", l.socks[0].Addr().String())
		}
	}
	for _, ep := range removed {
		s.logger.Info("reload: endpoint removed: no new clients; its clients end at their next transaction boundary",
			"endpoint", ep.Name(), "clients", countOf(drain, ep))
	}
	for _, sess := range drain {
		sess.Drain(endpointRemoved(sess.Endpoint()))
	}
}

// killDrained closes, after timeout (shutdown_timeout), the sessions of drain (clients of
// removed endpoints) still connected: still in a transaction, as Shutdown closes its own; a
// client idle in a transaction must not keep a removed endpoint's clients, and their server
// connections, for ever. It returns at once when the server shuts down, which bounds them too.
func (s *Server) killDrained(drain []*session.Session, timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.closed:
		return
	case <-t.C:
	}
	s.mu.Lock()
	var left []*session.Session
	for _, sess := range drain {
		if s.sessions[keyOf(sess)] == sess {
			left = append(left, sess)
		}
	}
	s.mu.Unlock()
	if len(left) == 0 {
		return
	}
	var killed sync.WaitGroup
	for _, sess := range left {
		killed.Go(func() { sess.Kill(s.dialServer) }) // each may wait for its cancel's delivery
	}
	killed.Wait()
	s.logger.Warn("reload: shutdown_timeout passed: closed the removed endpoints' clients still in a transaction",
		"clients", len(left), "shutdown_timeout", timeout)
}

func countOf(sessions []*session.Session, ep *router.Endpoint) int {
	n := 0
	for _, sess := range sessions {
		if sess.Endpoint() == ep {
			n++
		}
	}
	return n
}
