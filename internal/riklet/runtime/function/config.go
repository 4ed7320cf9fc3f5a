package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rik-org/rik/internal/riklet/bridgenet"
	"github.com/rik-org/rik/internal/riklet/rootfs"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/riklet/vmm/firecracker"
	"github.com/rik-org/rik/internal/riklet/vmm/qemu"
	"github.com/rik-org/rik/internal/workload"
)

// Config configures the Function runtime.
type Config struct {
	StateDir          string // functions/<id>/, rootfs cache, boot files go here
	VMM               string // auto (default) | qemu | firecracker
	QEMUBinary        string // default qemu-system-x86_64
	FirecrackerBinary string // default firecracker
	KernelPath        string // guest kernel (bzImage or vmlinux); required
	KernelModulesDir  string // lib/modules/<ver> of a distro kernel; "" = kernel has virtio built in
	InitBinary        string // static rik-init; "" = next to the riklet executable, then PATH
	Network           Network
	BridgeNetwork     BridgeNetwork      // network mode bridge (bridge.go); nil: not offered
	NetworkMode       string             // the node's default mode: workload.NetworkNAT (default) or NetworkBridge
	MaxRootfsBytes    int64              // default 2 GiB
	Fetch             rootfs.FetchPolicy // where rootfs may come from (zero: rootfs's defaults)
	StopGrace         time.Duration      // default 10s
	Logger            *slog.Logger

	// Additions.
	QEMUAccel       string        // "", "kvm" or "tcg" ("" = kvm when usable)
	ConsoleMaxBytes int64         // console.log is rotated past this size; default 4 MiB
	BootTimeout     time.Duration // how long Start waits for the guest's init; default 2 min
	DNS             []netip.Addr  // nameservers written to the guest's /etc/resolv.conf

	// Sandbox of the VMM processes. Each VM gets a cgroup under CgroupDir
	// (default rik/functions) sized from its vCPUs and memory, and (QEMU)
	// its own uid and gid, the lowest free of VMUIDFirst..+VMUIDCount
	// (default 2000000000, 65536 of them): no passwd entry needed, no two
	// VMs alike, so one escaped VMM cannot touch another.
	CgroupDir  string
	VMUIDFirst uint32
	VMUIDCount uint32
}

// Defaults of the VM sandbox.
const (
	DefaultVMUIDFirst = 2000000000
	DefaultVMUIDCount = 65536
	DefaultCgroupDir  = "rik/functions"
)

// NetConfig is what the network gives a Function: a TAP on the host side
// and the guest's address.
type NetConfig struct {
	Tap       string
	GuestIP   netip.Addr
	TapIP     netip.Addr // the guest's gateway
	PrefixLen int
	MAC       net.HardwareAddr
	Ports     []workload.PortMapping
	Netns     string // optional: path of the network namespace holding the TAP (tests; bridge mode)
	Mode      string // workload.NetworkBridge, or "" for NAT
	// Bridge is the bridge-mode network (persisted in vm.json, so that a
	// restarted riklet starts its DHCP server again).
	Bridge *bridgenet.Net `json:",omitempty"`
}

// Network sets up and tears down the network of Functions (the SDN).
type Network interface {
	Setup(ctx context.Context, id string, ports []workload.PortMapping) (NetConfig, error)
	Teardown(ctx context.Context, id string) error
	Reconcile(ctx context.Context, owned []string) error
}

// ErrNotConfigured: this node cannot run Functions (no kernel or no VMM).
var ErrNotConfigured = errors.New("functions not configured on this node")

func (c *Config) setDefaults() {
	if c.VMM == "" {
		c.VMM = "auto"
	}
	if c.QEMUBinary == "" {
		c.QEMUBinary = "qemu-system-x86_64"
	}
	if c.FirecrackerBinary == "" {
		c.FirecrackerBinary = "firecracker"
	}
	if c.MaxRootfsBytes <= 0 {
		c.MaxRootfsBytes = 2 << 30
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	if c.ConsoleMaxBytes <= 0 {
		c.ConsoleMaxBytes = 4 << 20
	}
	if c.BootTimeout <= 0 {
		c.BootTimeout = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.CgroupDir = strings.Trim(c.CgroupDir, "/"); c.CgroupDir == "" {
		c.CgroupDir = DefaultCgroupDir
	}
	if c.VMUIDFirst == 0 {
		c.VMUIDFirst = DefaultVMUIDFirst
	}
	if c.VMUIDCount == 0 {
		c.VMUIDCount = DefaultVMUIDCount
	}
}

// pickDriver chooses the VMM driver: firecracker needs /dev/kvm.
func pickDriver(c Config, kvm bool, lookPath func(string) (string, error)) (vmm.Driver, error) {
	fc, fcErr := lookPath(c.FirecrackerBinary)
	qm, qmErr := lookPath(c.QEMUBinary)
	switch c.VMM {
	case "firecracker":
		if fcErr != nil {
			return nil, fmt.Errorf("%w: firecracker binary: %w", ErrNotConfigured, fcErr)
		}
		if !kvm {
			return nil, fmt.Errorf("%w: firecracker needs /dev/kvm", ErrNotConfigured)
		}
		return &firecracker.Driver{Binary: fc}, nil
	case "qemu":
		if qmErr != nil {
			return nil, fmt.Errorf("%w: qemu binary: %w", ErrNotConfigured, qmErr)
		}
		return &qemu.Driver{Binary: qm, Accel: c.QEMUAccel}, nil
	case "auto":
		if kvm && fcErr == nil {
			return &firecracker.Driver{Binary: fc}, nil
		}
		if qmErr == nil {
			return &qemu.Driver{Binary: qm, Accel: c.QEMUAccel}, nil
		}
		return nil, fmt.Errorf("%w: no VMM found (%s, %s)", ErrNotConfigured, c.QEMUBinary, c.FirecrackerBinary)
	}
	return nil, fmt.Errorf("%w: unknown vmm %q (auto, qemu, firecracker)", ErrNotConfigured, c.VMM)
}

// findInit locates the rik-init binary.
func findInit(configured string) (string, error) {
	if configured != "" {
		if _, err := os.Stat(configured); err != nil {
			return "", fmt.Errorf("%w: rik-init: %w", ErrNotConfigured, err)
		}
		return configured, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "rik-init")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("rik-init")
	if err != nil {
		return "", fmt.Errorf("%w: rik-init not found next to the riklet nor in PATH", ErrNotConfigured)
	}
	return p, nil
}
