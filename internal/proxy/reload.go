package proxy

import (
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"pgtide/internal/config"
)

// Reload applies a new configuration without dropping connections: pool sizes, timeouts, users,
// limits and cluster.hosts (and weights) take effect for the next decision each makes. Endpoints
// are added, changed and removed (see endpoints.go): a new listen address is listened on before
// the old one closes, and a configuration whose listeners cannot all be opened is not applied.
// unix_socket_dir, admin.listen, log_format and discovery need a restart and keep their running
// values, with a warning. pool_mode and an endpoint's route apply to clients that connect after
// the reload, and the TLS settings (whose files are read again) to connections opened after it. The function catalogs are read again, so a reload also
// makes newly created functions known. A configuration whose TLS files do not load is logged and
// not applied. Reloads are serialized with ReloadFile's.
func (s *Server) Reload(next *config.Config) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.reloadLocked(next)
}

// reloadLocked is Reload; it returns why next was not applied. Requires reloadMu.
func (s *Server) reloadLocked(next *config.Config) error {
	tls, err := loadTLS(next)
	if err != nil {
		s.logger.Error("reload failed; keeping the running configuration", "err", err)
		return err
	}
	cur := s.cfg.Load()
	for _, c := range config.KeepRestartOnly(cur, next) {
		s.logger.Warn("reload: this setting changes only on restart; the running value stays",
			"setting", c.Key, "running", c.Value, "configured", c.Default)
	}
	s.mu.Lock()
	running := s.listeners
	s.mu.Unlock()
	listeners, unused, err := openListeners(next, next.Endpoints(), running)
	if err != nil {
		s.logger.Error("reload failed; keeping the running configuration", "err", err)
		return err
	}
	s.cfg.Store(next)
	s.applyEndpoints(next, listeners, unused)
	s.applyTLSLocked(tls, next)
	// The health checks' settings and login (a password fixed or rotated in the users file,
	// server_tls), discovery's and the function catalogs' take effect at their next round.
	s.cluster.SetConfig(s.clusterConfig(next))
	// A host added starts receiving work once its first check passes; a removed one drains:
	// no new work, its connections closed as they come back.
	if !slices.Equal(next.Cluster.Hosts, cur.Cluster.Hosts) || !maps.Equal(next.Cluster.Weights, cur.Cluster.Weights) {
		s.cluster.SetHosts(ClusterConfig(next).Hosts)
	}
	s.pools.SetSettings(PoolSettings(next))
	s.env.Memory.SetCapacity(next.Proxy.MessageMemory)
	for _, n := range s.cluster.Nodes() { // safety_factor or proxy_instances may have changed
		s.applyBudget(n, next)
	}
	s.cluster.SetBackendsEveryCheck(next.Cluster.BudgetMode == config.BudgetModeShared)
	s.cluster.RefreshFunctions()
	if s.OnReload != nil {
		s.OnReload(next)
	}
	warnConfig(s.logger, next)
	s.logger.Info("configuration reloaded", "pool_size", next.Cluster.PoolSize,
		"max_server_connections", next.Cluster.MaxServerConnections, "users", len(next.Users), "endpoints", len(listeners))
	return nil
}

// ReloadFile loads path and applies it; a config that does not load or validate, or whose TLS
// files do not load, is logged and the running one kept. Reloads are serialized (SIGHUP, the file watcher, the admin console's
// RELOAD), so the configuration in force is always the one loaded last.
func (s *Server) ReloadFile(path string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.reloadFileLocked(path)
}

// reloadFileLocked is ReloadFile. Requires reloadMu.
func (s *Server) reloadFileLocked(path string) error {
	// Stamped before reading: an edit made while loading is seen by the watcher afterwards.
	stamps := [2]fileStamp{stampOf(path), stampOf(s.cfg.Load().UsersPath())}
	next, err := config.Load(path)
	// The stamps of what was read, even if it did not load: the watcher retries once the file
	// changes again, not at every tick.
	s.cfgStamps = stamps
	if err != nil {
		s.logger.Error("reload failed; keeping the running configuration", "err", err)
		return err
	}
	if users := stampOf(next.UsersPath()); users != stamps[1] {
		s.cfgStamps[1] = users // the users file moved with this reload
	}
	return s.reloadLocked(next)
}

// WatchConfig makes the Server reload path whenever it or its users file changes (size or
// modification time), checking every interval until Shutdown. A change already applied by
// another reload (a SIGHUP after the edit) is not applied twice; changes made after the running
// configuration was loaded and before the watch started count. Call it at most once.
func (s *Server) WatchConfig(path string, interval time.Duration) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.closed:
				return
			case <-t.C:
			}
			s.reloadIfChanged(path)
		}
	}()
}

// reloadIfChanged reloads path if it or the users file differ from what was last read.
func (s *Server) reloadIfChanged(path string) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	defer s.watchChecks.Add(1)
	now := [2]fileStamp{stampOf(path), stampOf(s.cfg.Load().UsersPath())}
	if now == s.cfgStamps {
		return
	}
	changed := path
	if now[0] == s.cfgStamps[0] {
		changed = s.cfg.Load().UsersPath()
	}
	s.logger.Info("configuration file changed; reloading", "path", changed)
	s.reloadFileLocked(path)
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

// warnConfig logs what is valid in c but probably not meant (config.Config.Warnings).
func warnConfig(logger *slog.Logger, c *config.Config) {
	for _, w := range c.Warnings() {
		logger.Warn(w)
	}
}
