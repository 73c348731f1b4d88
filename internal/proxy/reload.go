package proxy

import (
	"context"
	"maps"
	"os"
	"slices"
	"time"

	"pgtide/internal/config"
)

// Reload applies a new configuration without dropping connections: pool sizes, timeouts, users,
// limits and cluster.hosts (and weights) take effect for the next decision each makes. The
// listen addresses need a restart and keep their running values, with a warning. pool_mode
// applies to clients that connect after the reload. The function catalogs are read again, so a
// reload also makes newly created functions known.
func (s *Server) Reload(next *config.Config) {
	cur := s.cfg.Load()
	if next.Proxy.Listen != cur.Proxy.Listen {
		s.logger.Warn("reload: proxy.listen changes only on restart", "running", cur.Proxy.Listen, "configured", next.Proxy.Listen)
		next.Proxy.Listen = cur.Proxy.Listen
	}
	if next.Proxy.WriterListen != cur.Proxy.WriterListen || next.Proxy.ReaderListen != cur.Proxy.ReaderListen {
		s.logger.Warn("reload: proxy.writer_listen and proxy.reader_listen change only on restart")
		next.Proxy.WriterListen, next.Proxy.ReaderListen = cur.Proxy.WriterListen, cur.Proxy.ReaderListen
	}
	s.cfg.Store(next)
	// A host added starts receiving work once its first check passes; a removed one drains:
	// no new work, its connections closed as they come back.
	if !slices.Equal(next.Cluster.Hosts, cur.Cluster.Hosts) || !maps.Equal(next.Cluster.Weights, cur.Cluster.Weights) {
		s.cluster.SetHosts(ClusterConfig(next).Hosts)
	}
	s.pools.SetSettings(PoolSettings(next))
	for _, n := range s.cluster.Nodes() { // safety_factor or proxy_instances may have changed
		s.applyBudget(n, next)
	}
	s.cluster.SetBackendsEveryCheck(next.Cluster.BudgetMode == config.BudgetModeShared)
	s.cluster.RefreshFunctions()
	if s.OnReload != nil {
		s.OnReload(next)
	}
	s.logger.Info("configuration reloaded", "pool_size", next.Cluster.PoolSize,
		"max_server_connections", next.Cluster.MaxServerConnections, "users", len(next.Users))
}

// ReloadFile loads path and applies it; a config that does not load or validate is logged and
// the running one kept.
func (s *Server) ReloadFile(path string) error {
	next, err := config.Load(path)
	if err != nil {
		s.logger.Error("reload failed; keeping the running configuration", "err", err)
		return err
	}
	s.Reload(next)
	return nil
}

// WatchConfig reloads path whenever it or its users file changes (size or modification time),
// checking every interval until ctx is done.
// Changes made after the running configuration was loaded and before the watch started count.
func (s *Server) WatchConfig(ctx context.Context, path string, interval time.Duration) {
	stamp := func() [2]fileStamp {
		return [2]fileStamp{stampOf(path), stampOf(s.cfg.Load().UsersPath())}
	}
	last := s.cfgStamps
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := stamp(); now != last {
			last = now
			s.logger.Info("configuration file changed; reloading", "path", path)
			s.ReloadFile(path)
			last = stamp() // the users file may have moved
		}
	}
}

type fileStamp struct {
	size  int64
	mtime time.Time
}

func stampOf(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.Size(), fi.ModTime()}
}

// configStamps stamps the files c was loaded from.
func configStamps(c *config.Config) [2]fileStamp {
	return [2]fileStamp{stampOf(c.Path), stampOf(c.UsersPath())}
}
