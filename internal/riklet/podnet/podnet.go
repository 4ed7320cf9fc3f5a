// Package podnet gives each Pod its network: a network namespace bound
// under the state directory, a veth pair whose host side joins a node
// bridge (rik0) and whose pod side is eth0 with an address from a
// persisted allocator, a default route via the bridge, and loopback up.
//
// iptables (masquerade, forwarding, port exposure) belong to the sdn
// package; podnet does none.
package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/riklet/sdn/ipam"
	"github.com/rik-org/rik/internal/workload"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultCIDR is the default node pod range.
var DefaultCIDR = netip.MustParsePrefix("10.63.0.0/16")

// DefaultBridge is the default node bridge name.
const DefaultBridge = "rik0"

// Allocator leases one address per pod, persisted (ipam.Pool).
type Allocator interface {
	Allocate(owner string) (netip.Prefix, error)
	Release(owner string) error
	Lookup(owner string) (netip.Prefix, bool)
	Owners() []string
}

// Config configures a Manager.
type Config struct {
	StateDir  string       // netns files under <StateDir>/netns, leases in <StateDir>/ipam.json
	CIDR      netip.Prefix // node pod range; default 10.63.0.0/16
	Bridge    string       // default rik0
	HostNetns string       // netns holding the bridge (tests); "" = the riklet's own
	IPAM      Allocator    // default: an ipam.Pool in StateDir
	// VethPrefix starts the host-side veth names (4 characters, default
	// "rikp"): a second Manager (bridge-mode Functions) uses its own, so
	// that neither lists the other's veths among its owners.
	VethPrefix string
	Logger     *slog.Logger
	// Subnet, when set, gives the node's pod range instead of CIDR: the
	// subnet the control plane allocated the node (fabric.Fabric.Subnet).
	// It blocks until known; Setup waits for it, the rest of the Manager
	// sees no pod network until then.
	Subnet func(ctx context.Context) (netip.Prefix, error)
}

// Net is a pod's network.
type Net struct {
	NetnsPath string
	IP        netip.Addr
	Gateway   netip.Addr
	HostVeth  string
}

// Manager sets up and tears down pod networks. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // bridge creation

	amu  sync.Mutex
	addr *addressing // nil until the node's range is known (Config.Subnet)
}

// addressing is the node's pod range, its gateway and its leases.
type addressing struct {
	cidr    netip.Prefix
	gateway netip.Addr
	ipam    Allocator
}

// errNoSubnet: the node's pod range is not known yet.
var errNoSubnet = errors.New("pod network: the node has no pod subnet yet")

// New returns a Manager, opening the default allocator if cfg.IPAM is nil.
// It does not touch the host until the first Setup.
func New(cfg Config) (*Manager, error) {
	if !cfg.CIDR.IsValid() {
		cfg.CIDR = DefaultCIDR
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q: longer than 15 characters", cfg.Bridge)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("pod network: state dir required")
	}
	if cfg.VethPrefix == "" {
		cfg.VethPrefix = vethPrefix
	}
	if len(cfg.VethPrefix) != len(vethPrefix) {
		return nil, fmt.Errorf("veth prefix %q: want %d characters", cfg.VethPrefix, len(vethPrefix))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "netns"), 0o700); err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger}
	if cfg.Subnet == nil {
		a, err := newAddressing(cfg, cfg.CIDR)
		if err != nil {
			return nil, err
		}
		m.addr = a
	}
	return m, nil
}

// newAddressing opens the leases of range cidr (cfg.IPAM if set).
func newAddressing(cfg Config, cidr netip.Prefix) (*addressing, error) {
	cidr = cidr.Masked()
	if !cidr.Addr().Is4() || cidr.Bits() > 29 {
		return nil, fmt.Errorf("pod network %s: want an IPv4 range of /29 or larger", cidr)
	}
	gw := cidr.Addr().Next()
	alloc := cfg.IPAM
	if alloc == nil {
		pool, err := OpenPool(cfg.StateDir, cidr)
		if err != nil {
			return nil, err
		}
		alloc = pool
	}
	return &addressing{cidr: cidr, gateway: gw, ipam: alloc}, nil
}

// OpenPool opens the address pool of cidr kept in stateDir (ipam.json),
// one address per pod, never the network, gateway or broadcast address.
func OpenPool(stateDir string, cidr netip.Prefix) (*ipam.Pool, error) {
	cidr = cidr.Masked()
	gw := cidr.Addr().Next()
	pool, err := ipam.Open(filepath.Join(stateDir, "ipam.json"), cidr, 32,
		netip.PrefixFrom(cidr.Addr(), 32), netip.PrefixFrom(gw, 32), netip.PrefixFrom(lastAddr(cidr), 32))
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	return pool, nil
}

// addressing returns the node's range, waiting for Config.Subnet until ctx
// is done (a done ctx: errNoSubnet at once when it is not known).
func (m *Manager) addressing(ctx context.Context) (*addressing, error) {
	m.amu.Lock()
	a := m.addr
	m.amu.Unlock()
	if a != nil {
		return a, nil
	}
	if ctx.Err() != nil {
		ctx = doneCtx // peek: no wait
	}
	cidr, err := m.cfg.Subnet(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoSubnet, err)
	}
	m.amu.Lock()
	defer m.amu.Unlock()
	if m.addr == nil {
		if m.addr, err = newAddressing(m.cfg, cidr); err != nil {
			return nil, err
		}
		m.log.Info("pod network range", "cidr", m.addr.cidr, "gateway", m.addr.gateway)
	}
	return m.addr, nil
}

// known returns the node's range if it is known, without waiting.
func (m *Manager) known() (*addressing, bool) {
	a, err := m.addressing(doneCtx)
	return a, err == nil
}

var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// Gateway is the bridge address, the pods' default gateway (invalid while
// the node's range is not known).
func (m *Manager) Gateway() netip.Addr {
	a, _ := m.known()
	if a == nil {
		return netip.Addr{}
	}
	return a.gateway
}

const vethPrefix = "rikp"

// VethName is the host-side veth of pod id: "rikp" + 10 hex digits.
func VethName(id string) string { return vethPrefix + hash(id) }

// vethName is the host-side veth of id with this Manager's prefix.
func (m *Manager) vethName(id string) string { return m.cfg.VethPrefix + hash(id) }

func peerName(id string) string { return "rikc" + hash(id) }

func hash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:5])
}

// NetnsPath is where pod id's network namespace is bound.
func (m *Manager) NetnsPath(id string) string {
	return filepath.Join(m.cfg.StateDir, "netns", id)
}

func validID(id string) error {
	if err := workload.ValidInstanceID(id); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	return nil
}

// Setup creates pod id's network and returns it. On error everything it
// created is removed again. Setting up a pod that has a network returns it.
func (m *Manager) Setup(ctx context.Context, id string) (n Net, err error) {
	if err := validID(id); err != nil {
		return Net{}, err
	}
	if n, ok := m.Get(id); ok {
		return n, nil
	}
	defer func() {
		if err != nil {
			if terr := m.Teardown(context.WithoutCancel(ctx), id); terr != nil {
				m.log.Warn("rolling back pod network", "id", id, "err", terr)
			}
		}
	}()
	a, err := m.addressing(ctx)
	if err != nil {
		return Net{}, fmt.Errorf("setting up pod %s network: %w", id, err)
	}
	pfx, err := a.ipam.Allocate(id)
	if err != nil {
		return Net{}, fmt.Errorf("allocating address for pod %s: %w", id, err)
	}
	ip := pfx.Addr()
	if err := m.removeNet(id); err != nil { // leftovers of a half-torn-down pod
		return Net{}, err
	}
	host, err := m.hostHandle()
	if err != nil {
		return Net{}, err
	}
	defer host.Close()
	br, err := m.ensureBridge(host, a)
	if err != nil {
		return Net{}, err
	}
	path := m.NetnsPath(id)
	if err := newNetns(path); err != nil {
		return Net{}, fmt.Errorf("creating netns %s: %w", path, err)
	}
	podns, err := netns.GetFromPath(path)
	if err != nil {
		return Net{}, fmt.Errorf("opening netns %s: %w", path, err)
	}
	defer podns.Close()

	vname, pname := m.vethName(id), peerName(id)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: vname, MasterIndex: br.Attrs().Index, MTU: br.Attrs().MTU},
		PeerName:      pname,
		PeerNamespace: netlink.NsFd(int(podns)),
	}
	if err := host.LinkAdd(veth); err != nil {
		return Net{}, fmt.Errorf("creating veth %s: %w", vname, err)
	}
	hl, err := host.LinkByName(vname)
	if err != nil {
		return Net{}, fmt.Errorf("finding veth %s: %w", vname, err)
	}
	if err := host.LinkSetAlias(hl, id); err != nil {
		return Net{}, fmt.Errorf("labelling veth %s: %w", vname, err)
	}
	if err := host.LinkSetUp(hl); err != nil {
		return Net{}, fmt.Errorf("bringing up veth %s: %w", vname, err)
	}
	if err := m.configurePod(podns, pname, ip, a); err != nil {
		return Net{}, fmt.Errorf("configuring pod %s network: %w", id, err)
	}
	m.log.Info("pod network up", "id", id, "ip", ip, "veth", vname)
	return Net{NetnsPath: path, IP: ip, Gateway: a.gateway, HostVeth: vname}, nil
}

func (m *Manager) configurePod(podns netns.NsHandle, peer string, ip netip.Addr, a *addressing) error {
	h, err := netlink.NewHandleAt(podns)
	if err != nil {
		return fmt.Errorf("opening netlink in pod netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	l, err := h.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("finding %s: %w", peer, err)
	}
	if err := h.LinkSetName(l, "eth0"); err != nil {
		return fmt.Errorf("renaming %s to eth0: %w", peer, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(a.cidr.Bits(), 32)}}
	if err := h.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("adding %s to eth0: %w", addr, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing up eth0: %w", err)
	}
	route := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: a.gateway.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("adding default route via %s: %w", a.gateway, err)
	}
	return nil
}

func (m *Manager) hostHandle() (*netlink.Handle, error) { return openHost(m.cfg.HostNetns) }

// openHost opens netlink in the netns at path ("" = the riklet's own).
func openHost(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("opening netlink: %w", err)
		}
		return h, nil
	}
	return nsenter.Netlink(path)
}

// ensureBridge returns the node bridge, creating it (gateway address, up)
// if needed.
func (m *Manager) ensureBridge(h *netlink.Handle, a *addressing) (netlink.Link, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name := m.cfg.Bridge
	br, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		br, err = h.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("finding bridge %s: %w", name, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("bridge %s: exists and is a %s", name, br.Type())
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.gateway.AsSlice(), Mask: net.CIDRMask(a.cidr.Bits(), 32)}}
	if err := h.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("adding %s to bridge %s: %w", addr, name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bringing up bridge %s: %w", name, err)
	}
	if err := disableIPv6(m.cfg.HostNetns, name); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	return br, nil
}

// disableIPv6 turns IPv6 off on dev, in the netns at path ("" = the
// riklet's). Pods are IPv4 only, and must not reach the node by IPv6
// (link-local or any of its addresses), which rik's IPv4 rules do not see.
func disableIPv6(path, dev string) error {
	write := func() error {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6", []byte("1"), 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // none: a kernel without IPv6
			return fmt.Errorf("disabling IPv6: %w", err)
		}
		return nil
	}
	if path == "" {
		return write()
	}
	return nsenter.Do(path, write)
}

// Get returns pod id's network if its netns and lease exist.
func (m *Manager) Get(id string) (Net, bool) {
	a, ok := m.known()
	if !ok {
		return Net{}, false
	}
	pfx, ok := a.ipam.Lookup(id)
	if !ok {
		return Net{}, false
	}
	path := m.NetnsPath(id)
	if !isNsMount(path) {
		return Net{}, false
	}
	host, err := m.hostHandle()
	if err != nil {
		return Net{}, false
	}
	defer host.Close()
	if _, err := host.LinkByName(m.vethName(id)); err != nil {
		return Net{}, false
	}
	return Net{NetnsPath: path, IP: pfx.Addr(), Gateway: a.gateway, HostVeth: m.vethName(id)}, true
}

// Teardown removes pod id's veth, netns and lease. Missing pieces are fine.
// The lease is kept when the veth or netns could not be removed.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if err := m.removeNet(id); err != nil {
		// Keep the lease: the address may still be on a veth on the bridge,
		// and must not go to another pod. A later Teardown releases it.
		return err
	}
	a, ok := m.known()
	if !ok {
		return nil // no range: no lease either
	}
	if err := a.ipam.Release(id); err != nil {
		return fmt.Errorf("releasing address of pod %s: %w", id, err)
	}
	return nil
}

// removeNet removes pod id's veth and netns.
func (m *Manager) removeNet(id string) error {
	var errs []error
	if host, err := m.hostHandle(); err != nil {
		errs = append(errs, err)
	} else {
		if l, err := host.LinkByName(m.vethName(id)); err == nil {
			if err := host.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("deleting veth %s: %w", m.vethName(id), err))
			}
		}
		host.Close()
	}
	if err := RemoveNetns(m.NetnsPath(id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Owners returns the ids holding any pod network resource on this node: a
// netns file, a veth labelled with the id, or a lease.
func (m *Manager) Owners() ([]string, error) {
	set := map[string]bool{}
	if a, ok := m.known(); ok {
		for _, o := range a.ipam.Owners() {
			set[o] = true
		}
	}
	ents, err := os.ReadDir(filepath.Join(m.cfg.StateDir, "netns"))
	if err != nil {
		return nil, fmt.Errorf("listing pod netns: %w", err)
	}
	for _, e := range ents {
		set[e.Name()] = true
	}
	host, err := m.hostHandle()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	links, err := host.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, m.cfg.VethPrefix) && a.Alias != "" && m.vethName(a.Alias) == a.Name {
			set[a.Alias] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// newNetns creates a network namespace and bind-mounts it on path. The
// thread that made it is thrown away, so no goroutine is ever left inside.
func newNetns(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// isNsMount reports whether path is a bound network namespace.
func isNsMount(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}
