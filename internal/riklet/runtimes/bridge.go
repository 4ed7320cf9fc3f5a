package runtimes

import (
	"context"
	"errors"
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
// network: the built-in podnet (on a static range or with --pod-cidr auto)
// or CNI (bridge_cni.go). Not CNI with --pod-cidr auto (refused elsewhere).
func (c Config) bridgeCapable() bool {
	return c.Network != NetworkCNI || c.PodCIDR != PodCIDRAuto
}

// bridgeMode reports whether this node runs bridge-mode Functions.
func (n *network) bridgeMode() bool { return n.cfg.bridgeCapable() }

// podSubnet returns how the node's pod range becomes known: nil for a
// static --pod-cidr (podnet uses podRange), the fabric's subnet with auto.
func (c Config) podSubnet() (func(context.Context) (netip.Prefix, error), error) {
	if c.PodCIDR != PodCIDRAuto {
		return nil, nil
	}
	if c.fab == nil {
		return nil, errors.New("--pod-cidr auto: the node has no fabric (JoinFabric was not called)")
	}
	return c.fab.Subnet, nil
}

// podPools opens the node's pod address pool once (where the pod runtime
// always kept it) and splits it between pods and bridge-mode Functions.
// With --pod-cidr auto the pool is opened on first use, once the control
// plane gave the node its subnet (lazyPool).
func (n *network) podPools() (pods, functions podnet.Allocator, err error) {
	n.poolOnce.Do(func() {
		cidr, err := n.cfg.podRange()
		if err != nil {
			n.poolErr = err
			return
		}
		subnet, err := n.cfg.podSubnet()
		if err != nil {
			n.poolErr = err
			return
		}
		static := subnet == nil
		if static {
			subnet = func(context.Context) (netip.Prefix, error) { return cidr, nil }
		}
		pool := newLazyPool(filepath.Join(n.cfg.StateDir, "pods", "net"), subnet)
		if static { // known: a bad pool file fails the start, as it always did
			if _, err := pool.open(); err != nil {
				n.poolErr = err
				return
			}
		}
		n.podPool, n.fnPool = bridgenet.SplitPool(pool)
	})
	return n.podPool, n.fnPool, n.poolErr
}

// bridgeNetwork builds the bridge-mode network of Functions: podnet on the
// pods' bridge, range and pool (its own namespaces and veth names), sdn's
// DNAT.
func (n *network) bridgeNetwork(m *sdn.Manager) (*bridgenet.Manager, error) {
	if n.cfg.Network == NetworkCNI {
		return n.cniBridgeNetwork(m)
	}
	_, fnPool, err := n.podPools()
	if err != nil {
		return nil, err
	}
	cidr, err := n.cfg.podRange()
	if err != nil {
		return nil, err
	}
	subnet, err := n.cfg.podSubnet()
	if err != nil {
		return nil, err
	}
	log := n.cfg.Logger.With("component", "bridgenet")
	pods, err := podnet.New(podnet.Config{
		StateDir:   filepath.Join(n.cfg.StateDir, "functions", "bridgenet"),
		CIDR:       cidr,
		Subnet:     subnet,
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
