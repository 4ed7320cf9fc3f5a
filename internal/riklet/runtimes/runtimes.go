// Package runtimes wires the node's real runtimes (pods with runc,
// functions with a VMM) and the SDN they share into riklet runtime
// factories. cmd/riklet and `rik dev` both use it.
package runtimes

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/cni"
	"github.com/rik-org/rik/internal/riklet/fabric"
	"github.com/rik-org/rik/internal/riklet/hostinfo"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/rootfs"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/function"
	"github.com/rik-org/rik/internal/riklet/runtime/pod"
	"github.com/rik-org/rik/internal/riklet/sdn"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/workload"
)

// Config selects and configures the runtimes of a node.
type Config struct {
	StateDir string

	Pods               bool   // offer the pod runtime (needs root and runc)
	RuncBinary         string // default "runc"
	PodCIDR            string // default 10.63.0.0/16; "auto": the subnet the control plane allocates (fabric)
	ClusterCIDR        string // every node's pod subnet is in it (auto): not masqueraded; default 10.63.0.0/16
	FabricMode         string // auto (direct routes on one segment, else VXLAN) or vxlan
	NodeIP             string // the node address registered and used by the fabric; "": the host's first
	Network            string // pods' network: builtin (podnet) or cni
	CNIConfDir         string // --network cni: network configuration directory
	CNIBinDir          string // --network cni: plugin directory
	Bridge             string // default rik0
	CgroupParent       string // cgroup under which pods live, default rik/pods; unique per riklet sharing a machine (each in its own network namespace)
	InsecureRegistries list   // host:port reached over plain HTTP

	VMM           string // auto|qemu|firecracker
	KernelPath    string // "" = functions not offered
	KernelModules string // lib/modules/<version> of a distro kernel
	InitBinary    string // static rik-init; "" = next to the executable, then PATH
	FunctionCIDR  string // default 10.62.0.0/16
	// FunctionNetwork is the default network mode of Functions: nat (a
	// /30 each, RIK's) or bridge (on the pod network, address by DHCP).
	FunctionNetwork string

	Firewall string // auto|nftables|iptables: where port mappings and guards live

	// What the node admits, checked again here whatever the controller
	// said: where rootfs come from, which host ports are never mapped.
	RootfsDirs        list  // file:// rootfs only under these; nil: /var/lib/rik/rootfs
	AllowPrivateFetch bool  // http(s) rootfs from loopback and the node's own addresses too
	ReservedPorts     []int // never mapped, besides ports < 1024 and rik's; nil: 22

	Sandbox // privileged pods, VM uids, protected ports (sandbox.go)

	Logger *slog.Logger

	fab *fabric.Fabric // set by JoinFabric when PodCIDR is auto
}

// Values of --network.
const (
	NetworkBuiltin = "builtin"
	NetworkCNI     = "cni"
)

// PodCIDRAuto is the --pod-cidr value asking for the subnet the control
// plane allocates.
const PodCIDRAuto = "auto"

// list is a repeatable or comma-separated flag.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// RegisterFlags adds the runtime flags to fs, with their defaults. The
// default of --kernel-path is the value c already holds (`rik dev` sets
// KernelAuto).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.Pods, "pods", true, "offer the pod runtime (runc)")
	fs.StringVar(&c.RuncBinary, "runc", "runc", "runc binary")
	fs.StringVar(&c.PodCIDR, "pod-cidr", sdn.DefaultPodCIDR.String(), "address range of this node's pods, or auto: the subnet the controller allocates this node out of the cluster's, with routes to every other node's (the fleet network)")
	fs.StringVar(&c.ClusterCIDR, "cluster-cidr", sdn.DefaultPodCIDR.String(), "with --pod-cidr auto: the range of every node's pod subnet (traffic inside it is routed, never masqueraded); must match the controller's")
	fs.StringVar(&c.FabricMode, "fabric", string(fabric.ModeAuto), "with --pod-cidr auto: how other nodes' pods are reached: auto (a direct route to a node on one of this node's networks, VXLAN to the others) or vxlan (always)")
	fs.StringVar(&c.Network, "network", NetworkBuiltin, "pods' network: builtin (rik's bridge and addresses) or cni (the first configuration of --cni-conf-dir, run by libcni; its portmap plugin publishes the pods' node ports)")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", cni.DefaultConfDir, "with --network cni: CNI network configuration directory")
	fs.StringVar(&c.CNIBinDir, "cni-bin-dir", cni.DefaultBinDir, "with --network cni: CNI plugin directory")
	fs.StringVar(&c.NodeIP, "node-ip", "", "the node's address, registered and used to reach its pods from other nodes (default: the first IPv4 address of the host's interfaces)")
	fs.StringVar(&c.Bridge, "bridge", sdn.DefaultPodBridge, "bridge the pods are attached to")
	fs.StringVar(&c.CgroupParent, "cgroup-parent", "rik/pods", "cgroup the pods live under (riklets in separate network namespaces of one machine each need their own)")
	fs.Var(&c.InsecureRegistries, "insecure-registry", "registry host:port reached over plain HTTP (repeatable)")
	fs.StringVar(&c.VMM, "vmm", "auto", "microVM monitor for functions: auto, qemu or firecracker")
	fs.StringVar(&c.KernelPath, "kernel-path", c.KernelPath, "guest kernel for functions (bzImage or vmlinux); empty: no functions on this node; "+
		KernelAuto+": the newest one fetched into "+strings.Join(vmm.DefaultKernelDirs, " or ")+" (test/kernel/fetch.sh DIR)")
	fs.StringVar(&c.KernelModules, "kernel-modules", "", "lib/modules/<version> directory of a distro guest kernel (virtio as modules)")
	fs.StringVar(&c.InitBinary, "init-binary", "", "static rik-init for the guest (default: next to this executable, then PATH)")
	fs.StringVar(&c.FunctionCIDR, "function-cidr", sdn.DefaultFunctionPool.String(), "address pool of this node's functions (one /30 each)")
	fs.StringVar(&c.FunctionNetwork, "function-network", workload.NetworkNAT, "default network mode of functions: nat (a /30 each, reached through host ports) or bridge (on the pod network, address by DHCP); spec.function.network overrides it")
	fs.StringVar(&c.Firewall, "firewall", sdn.FirewallAuto, "firewall backend for port mappings and guards: auto (nftables when the kernel can, else iptables), nftables or iptables")
	c.registerAdmissionFlags(fs)
	c.Sandbox.registerFlags(fs)
}

// registerAdmissionFlags adds the node's admission flags. The default of
// --allow-private-fetch is the value c already holds (`rik dev` sets it).
func (c *Config) registerAdmissionFlags(fs *flag.FlagSet) {
	fs.Var(&c.RootfsDirs, "rootfs-dir", "directory a file:// rootfs may be under, opened without following links out of it (repeatable; default "+workload.DefaultRootfsDir+")")
	fs.BoolVar(&c.AllowPrivateFetch, "allow-private-fetch", c.AllowPrivateFetch,
		"fetch http(s) rootfs from loopback and this node's own addresses too (link-local and metadata addresses stay refused)")
	fs.Func("reserved-ports", "host ports never mapped, besides those below 1024 and rik's 4995, 4996, 5000 (comma-separated; default 22)",
		func(v string) error {
			ports, err := workload.ParsePortList(v)
			c.ReservedPorts = append([]int{}, ports...) // "" clears the default
			return err
		})
}

// Validate checks the values of the flags, so that a typo fails at start
// instead of leaving the node without the runtime it was meant to offer.
func (c Config) Validate() error {
	pods, err := c.podRange()
	if err != nil {
		return err
	}
	switch c.Network {
	case "", NetworkBuiltin:
	case NetworkCNI:
		if c.PodCIDR == PodCIDRAuto {
			return errors.New("--pod-cidr auto: with --network builtin only (a CNI configuration gives the addresses)")
		}
	default:
		return fmt.Errorf("--network %q: want builtin or cni", c.Network)
	}
	if _, err := fabric.ParseMode(c.FabricMode); err != nil {
		return fmt.Errorf("--fabric: %w", err)
	}
	if c.NodeIP != "" {
		if a, err := netip.ParseAddr(c.NodeIP); err != nil || !a.Is4() {
			return fmt.Errorf("--node-ip %q: want an IPv4 address", c.NodeIP)
		}
	}
	fns, err := netip.ParsePrefix(c.FunctionCIDR)
	if err != nil {
		return fmt.Errorf("--function-cidr: %w", err)
	}
	if !pods.Addr().Is4() || !fns.Addr().Is4() {
		return fmt.Errorf("--pod-cidr %s, --function-cidr %s: want IPv4 prefixes", pods, fns)
	}
	if pods.Overlaps(fns) {
		return fmt.Errorf("--pod-cidr %s overlaps --function-cidr %s", pods, fns)
	}
	for _, d := range c.RootfsDirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("--rootfs-dir %q: want an absolute path", d)
		}
	}
	switch c.VMM {
	case "", "auto", "qemu", "firecracker":
	default:
		return fmt.Errorf("--vmm %q: want auto, qemu or firecracker", c.VMM)
	}
	if err := validFunctionNetwork(c.FunctionNetwork); err != nil {
		return err
	}
	if c.FunctionNetwork == workload.NetworkBridge && !c.bridgeCapable() {
		return fmt.Errorf("--function-network bridge: not with --network cni on --pod-cidr auto")
	}
	if _, err := sdn.ParseFirewall(c.Firewall); err != nil {
		return fmt.Errorf("--firewall %q: want auto, nftables or iptables", c.Firewall)
	}
	if err := c.Sandbox.validate(); err != nil {
		return err
	}
	return checkCgroupParent(c.CgroupParent)
}

// podRange is the range of the node's pods: --pod-cidr, or with auto the
// cluster's (--cluster-cidr), which the node's subnet will be in.
func (c Config) podRange() (netip.Prefix, error) {
	if c.PodCIDR != PodCIDRAuto {
		p, err := netip.ParsePrefix(c.PodCIDR)
		if err != nil {
			return p, fmt.Errorf("--pod-cidr: %w", err)
		}
		return p, nil
	}
	cidr := c.ClusterCIDR
	if cidr == "" {
		cidr = sdn.DefaultPodCIDR.String()
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return p, fmt.Errorf("--cluster-cidr: %w", err)
	}
	return p, nil
}

// JoinFabric makes the node's fabric when --pod-cidr is auto (nothing
// otherwise): the pods take their addresses from the subnet the control
// plane allocates node name, and rc receives the network maps. Call it
// before Factories.
func (c *Config) JoinFabric(name string, rc *riklet.Config) error {
	if c.PodCIDR != PodCIDRAuto {
		return nil
	}
	mode, err := fabric.ParseMode(c.FabricMode)
	if err != nil {
		return fmt.Errorf("--fabric: %w", err)
	}
	host, err := fabric.NewNetlinkHost("")
	if err != nil {
		return err
	}
	nodeIP := c.NodeIP
	addr := func() netip.Addr {
		a, _ := netip.ParseAddr(cmp.Or(nodeIP, hostinfo.Address()))
		return a
	}
	f, err := fabric.New(fabric.Config{StateDir: c.StateDir, Name: name, Addr: addr, Mode: mode, Host: host,
		Logger: c.Logger.With("component", "fabric")})
	if err != nil {
		host.Close()
		return err
	}
	c.fab = f
	rc.Network, rc.NodeAddress = f, nodeIP
	return nil
}

// Factories returns the runtime factories the configuration asks for.
// Both runtimes share one SDN manager, created by whichever starts first.
func Factories(cfg Config) []riklet.RuntimeFactory {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &network{cfg: cfg}
	var fs []riklet.RuntimeFactory
	if cfg.Pods {
		fs = append(fs, func(ctx context.Context, report runtime.Reporter) (runtime.Runtime, error) {
			m, err := n.manager(ctx)
			if err != nil {
				return nil, err
			}
			cidr, err := cfg.podRange()
			if err != nil {
				return nil, err
			}
			subnet, err := cfg.podSubnet()
			if err != nil {
				return nil, err
			}
			if err := checkCgroupParent(cfg.CgroupParent); err != nil {
				return nil, err
			}
			var podPool podnet.Allocator // shared with bridge-mode Functions when the range is static
			if n.bridgeMode() && cfg.Network != NetworkCNI {
				if podPool, _, err = n.podPools(); err != nil {
					return nil, err
				}
			}
			pc := pod.Config{
				StateDir:   filepath.Join(cfg.StateDir, "pods"),
				RuncBinary: cfg.RuncBinary,
				PodCIDR:    cidr,
				PodSubnet:  subnet,
				Bridge:     cfg.Bridge,
				CgroupDir:  cfg.CgroupParent,
				ImageOpts:  image.Options{Insecure: cfg.InsecureRegistries, Logger: cfg.Logger.With("runtime", "pod")},
				Exposer:    m,
				IPAM:       podPool,
				Logger:     cfg.Logger.With("runtime", "pod"),

				AllowPrivileged: cfg.AllowPrivileged,
			}
			if cfg.Network == NetworkCNI {
				cn, err := cfg.cniManager(filepath.Join(cfg.StateDir, "pods", "cni"), cfg.Logger)
				if err != nil {
					return nil, err
				}
				pc.Network, pc.Exposer = cn, nil // portmap publishes the ports
			}
			rt, err := pod.New(ctx, pc, report)
			if err != nil {
				return nil, err
			}
			return podRuntime{rt, m}, nil
		})
	}
	if cfg.KernelPath != "" {
		fs = append(fs, func(ctx context.Context, report runtime.Reporter) (runtime.Runtime, error) {
			m, err := n.manager(ctx)
			if err != nil {
				return nil, err
			}
			var bridge function.BridgeNetwork // nil: bridge-mode Functions fail with a clear reason
			if n.bridgeMode() {
				b, err := n.bridgeNetwork(m)
				if err != nil {
					return nil, err
				}
				bridge = b
			}
			fc := function.Config{
				StateDir:         filepath.Join(cfg.StateDir, "functions"),
				VMM:              cfg.VMM,
				KernelPath:       cfg.KernelPath,
				KernelModulesDir: cfg.KernelModules,
				InitBinary:       cfg.InitBinary,
				Fetch:            rootfs.FetchPolicy{Dirs: cfg.RootfsDirs, AllowPrivate: cfg.AllowPrivateFetch},
				Network:          functionNetwork{m},
				BridgeNetwork:    bridge,
				NetworkMode:      cfg.FunctionNetwork,
				Logger:           cfg.Logger.With("runtime", "function"),
			}
			if err := cfg.Sandbox.functionSandbox(&fc, cfg.CgroupParent); err != nil {
				return nil, err
			}
			return function.New(ctx, fc, report)
		})
	}
	return fs
}

// Uninstall removes what the node's runtimes put on the host's network:
// rik's nftables table, its iptables jumps and chains (whichever
// --firewall was used), its TAPs and SDN state (sdn.Uninstall),
// and the pod bridge when no pod is attached (podnet.RemoveBridge). It
// stops nothing: the caller makes sure no instance runs any more. It is
// idempotent.
func Uninstall(ctx context.Context, cfg Config) error {
	return errors.Join(uninstall(ctx, cfg, sdn.Uninstall, podnet.RemoveBridge), removeFabric())
}

// removeFabric removes the routes to other nodes and the VXLAN device.
func removeFabric() error {
	h, err := fabric.NewNetlinkHost("")
	if err != nil {
		return err
	}
	defer h.Close()
	if err := fabric.Uninstall(h); err != nil {
		return fmt.Errorf("uninstalling the node's network: %w", err)
	}
	return nil
}

// uninstall is Uninstall over the given removers.
func uninstall(ctx context.Context, cfg Config,
	network func(context.Context, sdn.Config) error, bridge func(context.Context, podnet.Config) error) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("component", "uninstall")
	err := errors.Join(
		network(ctx, sdn.Config{StateDir: cfg.StateDir, PodBridge: cfg.Bridge, Logger: log}),
		bridge(ctx, podnet.Config{Bridge: cfg.Bridge, Logger: log}),
	)
	if err != nil {
		return fmt.Errorf("uninstalling the node's network: %w", err)
	}
	return nil
}

// network creates the node's SDN manager once.
type network struct {
	cfg  Config
	once sync.Once
	m    *sdn.Manager
	err  error

	poolOnce sync.Once // podPools (bridge.go)
	podPool  podnet.Allocator
	fnPool   podnet.Allocator
	poolErr  error
}

func (n *network) manager(ctx context.Context) (*sdn.Manager, error) {
	n.once.Do(func() {
		fp, err := netip.ParsePrefix(n.cfg.FunctionCIDR)
		if err != nil {
			n.err = fmt.Errorf("--function-cidr: %w", err)
			return
		}
		pp, err := n.cfg.podRange()
		if err != nil {
			n.err = err
			return
		}
		bridge := n.cfg.Bridge
		if n.cfg.Network == NetworkCNI { // pods are on the CNI bridge: guard that one
			bridge = cmp.Or(cni.BridgeName(n.cfg.CNIConfDir), bridge)
		}
		n.m, n.err = sdn.New(ctx, sdn.Config{
			FunctionPool:   fp,
			PodCIDR:        pp,
			PodBridge:      bridge,
			StateDir:       n.cfg.StateDir,
			ReservedPorts:  n.cfg.ReservedPorts,
			ProtectedPorts: n.cfg.ProtectedPorts,
			Firewall:       n.cfg.Firewall,
			Logger:         n.cfg.Logger.With("component", "sdn"),
		})
	})
	return n.m, n.err
}

// functionNetwork adapts the SDN manager to what the function runtime needs.
type functionNetwork struct{ m *sdn.Manager }

func (f functionNetwork) Setup(ctx context.Context, id string, ports []workload.PortMapping) (function.NetConfig, error) {
	fn, err := f.m.SetupFunction(ctx, id, ports)
	if err != nil {
		return function.NetConfig{}, err
	}
	return function.NetConfig{
		Tap:       fn.Tap,
		GuestIP:   fn.GuestIP,
		TapIP:     fn.TapIP,
		PrefixLen: fn.Prefix.Bits(),
		MAC:       fn.MAC,
		Ports:     fn.Ports,
	}, nil
}

func (f functionNetwork) Teardown(ctx context.Context, id string) error {
	return f.m.TeardownFunction(ctx, id)
}

func (f functionNetwork) Reconcile(ctx context.Context, owned []string) error {
	return f.m.ReconcileKind(ctx, workload.KindFunction, owned)
}

// podRuntime also drops the port mappings of pods the node no longer owns
// when it recovers (the pod runtime only knows the pods it finds).
type podRuntime struct {
	*pod.Runtime
	m *sdn.Manager
}

func (p podRuntime) Recover(ctx context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	st, err := p.Runtime.Recover(ctx, owned)
	ids := make([]string, len(owned))
	for i, inst := range owned {
		ids[i] = inst.ID
	}
	return st, errors.Join(err, p.m.ReconcileKind(ctx, workload.KindPod, ids))
}

// checkCgroupParent accepts a relative cgroup path such as "rik/pods".
func checkCgroupParent(p string) error {
	if p == "" {
		return nil // the runtime's default
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("--cgroup-parent %q: want a relative path like rik/pods", p)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("--cgroup-parent %q: %q is not allowed", p, r)
			}
		}
	}
	return nil
}
