package runtimes

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/rik-org/rik/internal/riklet/bridgenet"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/sdn"
	"github.com/rik-org/rik/internal/workload"
)

// functionVethPrefix names the host-side veths of bridge-mode Functions
// ("rikp" is the pods').
const functionVethPrefix = "rikf"

// validFunctionNetwork checks --function-network.
func validFunctionNetwork(mode string) error {
	switch mode {
	case "", workload.NetworkNAT, workload.NetworkBridge:
		return nil
	}
	return fmt.Errorf("--function-network %q: want %s or %s", mode, workload.NetworkNAT, workload.NetworkBridge)
}

// bridgeCapable reports whether Functions can join this node's pod
// network: built-in podnet on a static range, or CNI (bridge_cni.go). Not
// yet with --pod-cidr auto (the range is known only once the control plane
// allocated it).
func (c Config) bridgeCapable() bool {
	return c.PodCIDR != PodCIDRAuto
}

// bridgeMode reports whether this node runs bridge-mode Functions.
func (n *network) bridgeMode() bool { return n.cfg.bridgeCapable() }

// podPools opens the node's pod address pool once (where the pod runtime
// always kept it) and splits it between pods and bridge-mode Functions.
func (n *network) podPools() (pods, functions podnet.Allocator, err error) {
	n.poolOnce.Do(func() {
		cidr, err := netip.ParsePrefix(n.cfg.PodCIDR)
		if err != nil {
			n.poolErr = fmt.Errorf("--pod-cidr: %w", err)
			return
		}
		pool, err := podnet.OpenPool(filepath.Join(n.cfg.StateDir, "pods", "net"), cidr)
		if err != nil {
			n.poolErr = err
			return
		}
		n.podPool, n.fnPool = bridgenet.SplitPool(pool)
	})
	return n.podPool, n.fnPool, n.poolErr
}

// bridgeNetwork builds the bridge-mode network of Functions: podnet on the
// pods' bridge and pool (its own namespaces and veth names), sdn's DNAT.
func (n *network) bridgeNetwork(m *sdn.Manager) (*bridgenet.Manager, error) {
	if n.cfg.Network == NetworkCNI {
		return n.cniBridgeNetwork(m)
	}
	_, fnPool, err := n.podPools()
	if err != nil {
		return nil, err
	}
	cidr, err := netip.ParsePrefix(n.cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("--pod-cidr: %w", err)
	}
	log := n.cfg.Logger.With("component", "bridgenet")
	pods, err := podnet.New(podnet.Config{
		StateDir:   filepath.Join(n.cfg.StateDir, "functions", "bridgenet"),
		CIDR:       cidr,
		Bridge:     n.cfg.Bridge,
		IPAM:       fnPool,
		VethPrefix: functionVethPrefix,
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	return bridgenet.New(bridgenet.Config{Pods: pods, Ports: m, Logger: log})
}
