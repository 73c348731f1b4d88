package proxy

import (
	"slices"

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
// as at shutdown, with a FATAL 57P01 that says why.

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
	s.mu.Unlock()
	for _, l := range unused {
		l.close()
	}
	for _, l := range started {
		s.logger.Info("reload: endpoint listening", "endpoint", l.name, "listen", l.listen, "addr", l.socks[0].Addr().String())
	}
	for _, ep := range removed {
		s.logger.Info("reload: endpoint removed: no new clients; its clients end at their next transaction boundary",
			"endpoint", ep.Name(), "clients", countOf(drain, ep))
	}
	for _, sess := range drain {
		sess.Drain(endpointRemoved(sess.Endpoint()))
	}
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
