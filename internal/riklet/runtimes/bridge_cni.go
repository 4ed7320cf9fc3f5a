package runtimes

import (
	"log/slog"
	"path/filepath"

	"github.com/rik-org/rik/internal/riklet/bridgenet"
	"github.com/rik-org/rik/internal/riklet/cni"
	"github.com/rik-org/rik/internal/riklet/sdn"
)

// cniBridgeNetwork builds the bridge-mode network of Functions on a CNI
// node: each Function's namespace and veth come from the pods' CNI
// configuration (ADD; CHECK when a restarted riklet adopts it; DEL), run
// by a cni.Manager of its own under <state>/functions/cni, so that pods
// and Functions never remove each other's attachments when they recover.
// Host ports go through sdn's DNAT as for every other Function, not
// portmap: one policy (reserved and protected ports, 127.0.0.1, hairpin)
// for all of rik's Functions, and rules that need no CHECK.
func (n *network) cniBridgeNetwork(m *sdn.Manager) (*bridgenet.Manager, error) {
	log := n.cfg.Logger.With("component", "bridgenet")
	pods, err := n.cfg.cniManager(filepath.Join(n.cfg.StateDir, "functions", "cni"), n.cfg.Logger.With("runtime", "function"))
	if err != nil {
		return nil, err
	}
	return bridgenet.New(bridgenet.Config{Pods: pods, Ports: m, CNI: pods, Logger: log})
}

// cniManager runs the node's CNI configuration with its state in stateDir.
func (c Config) cniManager(stateDir string, log *slog.Logger) (*cni.Manager, error) {
	return cni.New(cni.Config{ConfDir: c.CNIConfDir, BinDir: c.CNIBinDir, StateDir: stateDir,
		ReservedPorts: c.ReservedPorts, Logger: log.With("component", "cni")})
}
