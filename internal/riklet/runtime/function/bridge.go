package function

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/bridgenet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// BridgeNetwork puts Functions on the pod network (network mode bridge,
// package bridgenet): a pod's namespace and veth, bridged there with the
// VM's TAP, and a DHCP server in it answering the guest's MAC.
type BridgeNetwork interface {
	Setup(ctx context.Context, req bridgenet.Request) (bridgenet.Net, error)
	// Adopt starts again the DHCP server of a VM found running.
	Adopt(id string, n bridgenet.Net) error
	Teardown(ctx context.Context, id string) error
	Reconcile(ctx context.Context, owned []string) error
	// Close stops the DHCP servers; the networks stay for Adopt.
	Close()
}

// networkMode is fn's network mode, the node's default when it names none.
func (r *Runtime) networkMode(fn *workload.Function) string {
	if fn.Network != "" {
		return fn.Network
	}
	if r.cfg.NetworkMode != "" {
		return r.cfg.NetworkMode
	}
	return workload.NetworkNAT
}

// setupBridge gives inst its bridge-mode network. The guest's address,
// gateway, DNS and hostname reach it by DHCP, not on its command line.
func (r *Runtime) setupBridge(ctx context.Context, id, name string, ports []workload.PortMapping) (NetConfig, error) {
	if r.cfg.BridgeNetwork == nil {
		return NetConfig{}, errors.New("spec.function.network: bridge: this node has no bridge network")
	}
	mac := macFor(id)
	n, err := r.cfg.BridgeNetwork.Setup(ctx, bridgenet.Request{ID: id, Hostname: name, MAC: mac, Ports: ports})
	if err != nil {
		return NetConfig{}, fmt.Errorf("setting up bridge network of %s: %w", id, err)
	}
	return NetConfig{
		Mode: workload.NetworkBridge, Tap: n.Tap, Netns: n.Netns,
		GuestIP: n.Lease.IP.Addr(), TapIP: n.Lease.Gateway, PrefixLen: n.Lease.IP.Bits(),
		MAC: mac, Ports: ports, Bridge: &n,
	}, nil
}

// bootNet is what the guest's command line says of its network: nothing
// in bridge mode (rik-init then asks DHCP), else the address, gateway,
// DNS and hostname.
func bootNet(name string, nc NetConfig, dns []netip.Addr) (string, NetConfig, []netip.Addr) {
	if nc.Mode == workload.NetworkBridge {
		return "", NetConfig{}, nil
	}
	return name, nc, dns
}

// vmmNetns says where the VMM finds its TAP: in bridge mode the TAP is in
// the Function's namespace and the VMM gets it as a file descriptor
// without entering it (tapNetns); else in the namespace of nc, if any.
func vmmNetns(nc NetConfig) (netns, tapNetns string) {
	if nc.Mode == workload.NetworkBridge {
		return "", nc.Netns
	}
	return nc.Netns, ""
}

// teardownBridge removes id's bridge-mode network, if any.
func (r *Runtime) teardownBridge(ctx context.Context, id string) error {
	if r.cfg.BridgeNetwork == nil {
		return nil
	}
	if err := r.cfg.BridgeNetwork.Teardown(ctx, id); err != nil {
		return fmt.Errorf("tearing down bridge network of %s: %w", id, err)
	}
	return nil
}

// adoptVM adopts VM s, found running: its status, or, when its bridge
// network fails (a CNI CHECK), it is killed and reported failed. An error
// is one of killing it.
func (r *Runtime) adoptVM(ctx context.Context, s vmState) (runtime.Status, error) {
	if r.adoptBridge(s) == nil {
		return runningStatus(s), nil
	}
	return runtime.Status{InstanceID: s.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonNetworkFailed,
		Message: "the vm's bridge network failed its check after the riklet restarted"}, r.kill(ctx, s)
}

// adoptBridge checks the network of a bridge-mode VM found running and
// restarts its DHCP server; an error says the VM cannot be adopted.
func (r *Runtime) adoptBridge(s vmState) error {
	if r.cfg.BridgeNetwork == nil || s.Net.Bridge == nil {
		return nil
	}
	if err := r.cfg.BridgeNetwork.Adopt(s.ID, *s.Net.Bridge); err != nil {
		r.log.Warn("not adopting function: its bridge network failed", "instance", s.ID, "err", err)
		return err
	}
	return nil
}
