package main

import (
	"net"
	"os"

	"github.com/BurntSushi/toml"

	"pgtide/internal/config"
)

// writeConfig writes cfg as a TOML file a person can read and edit.
func writeConfig(path string, cfg *config.Config) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("# written by pgtide local; see the README for every setting\n"); err != nil {
		f.Close()
		return err
	}
	if err := toml.NewEncoder(f).Encode(cfg); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func splitAddr(addr string) (host, port string) {
	host, port, _ = net.SplitHostPort(addr)
	return host, port
}
