package runtimes

import (
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
	pods, err := cni.New(cni.Config{ConfDir: n.cfg.CNIConfDir, BinDir: n.cfg.CNIBinDir,
		StateDir: filepath.Join(n.cfg.StateDir, "functions", "cni"), ReservedPorts: n.cfg.ReservedPorts,
		Logger: log.With("component", "cni")})
	if err != nil {
		return nil, err
	}
	return bridgenet.New(bridgenet.Config{Pods: pods, Ports: m, CNI: pods, Logger: log})
}
