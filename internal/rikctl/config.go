package rikctl

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// DefaultServer is used when no configuration file says otherwise.
const DefaultServer = "http://127.0.0.1:5000"

// Config is rikctl's configuration file (RIK's format), JSON or YAML:
// {"cluster":{"name":"...","server":"http://127.0.0.1:5000"}}.
type Config struct {
	Cluster Cluster `json:"cluster"`
}

// Cluster names the controller to talk to.
type Cluster struct {
	Name   string `json:"name,omitempty"`
	Server string `json:"server"`
}

// ConfigPath is $RIKCONFIG, or ~/.rik/config.yaml.
func ConfigPath(getenv func(string) string) string {
	if p := getenv("RIKCONFIG"); p != "" {
		return p
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".rik", "config.yaml")
}

// LoadConfig reads the configuration at path. A missing file gives the
// default configuration.
func LoadConfig(path string) (Config, error) {
	cfg := Config{Cluster: Cluster{Server: DefaultServer}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	if len(b) > 1<<20 {
		return Config{}, fmt.Errorf("reading config %s: larger than 1 MiB", path)
	}
	var file Config
	if err := yaml.Unmarshal(b, &file); err != nil { // YAML is a superset of JSON
		return Config{}, fmt.Errorf("parsing config %s: %w", path, err)
	}
	if file.Cluster.Server != "" {
		cfg.Cluster.Server = file.Cluster.Server
	}
	cfg.Cluster.Name = file.Cluster.Name
	if err := checkServer(cfg.Cluster.Server); err != nil {
		return Config{}, fmt.Errorf("config %s: cluster.server: %w", path, err)
	}
	return cfg, nil
}

// checkServer accepts http(s)://host[:port][/path] URLs.
func checkServer(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: must be an http:// or https:// URL", s)
	}
	return nil
}

func normalizeServer(s string) string { return strings.TrimRight(s, "/") }
