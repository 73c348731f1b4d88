package proxy

import (
	"time"

	"pgtide/internal/cluster"
	"pgtide/internal/config"
)

// shareBudgets hands every reading of a node's client backends to the pools, whose headroom gate
// uses them in budget_mode = "shared" (see package pool), and has every health check read them in
// that mode (Reload switches it).
func (s *Server) shareBudgets(cfg *config.Config) {
	s.cluster.SetBackendsEveryCheck(cfg.Cluster.BudgetMode == config.BudgetModeShared)
	s.cluster.SubscribeBackends(func(n *cluster.Node, backends int, at time.Time) {
		s.pools.SetNodeBackends(n.Addr(), backends, at)
	})
}
