// Package sdn is the riklet's software-defined network: it gives each
// Function a /30 and a TAP device, and exposes Function and Pod ports on
// the node's addresses with DNAT, in rik's own nftables table or iptables
// chains (the firewall backends, Config.Firewall).
//
// The desired state (instance id -> address, ports) is kept in a file
// under <StateDir>/sdn/. At start and on reconcile the backend rebuilds
// rik's rules from it; a change is then applied as a difference: with
// nftables one map element per mapping in one netlink batch, with
// iptables one iptables-restore --noflush batch of rik's chains.
package sdn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/riklet/sdn/ipam"
	"github.com/rik-org/rik/internal/workload"
)

// Defaults of Config.
var (
	DefaultFunctionPool = netip.MustParsePrefix("10.62.0.0/16")
	DefaultPodCIDR      = netip.MustParsePrefix("10.63.0.0/16")
)

// DefaultPodBridge is the default name of the pod bridge.
const DefaultPodBridge = "rik0"

// functionBlockBits is the size of a Function's block: a /30 holds the
// network address, the guest, the TAP and the broadcast address.
const functionBlockBits = 30

// Config configures the Manager.
type Config struct {
	FunctionPool netip.Prefix // default 10.62.0.0/16
	PodCIDR      netip.Prefix // default 10.63.0.0/16: masquerade egress + forward accept for the pod bridge
	PodBridge    string       // default "rik0"
	StateDir     string       // files live under <StateDir>/sdn/
	Logger       *slog.Logger
	// ReservedPorts are host ports never mapped, besides those below
	// workload.MinHostPort and workload.RikPorts (nil:
	// workload.DefaultReservedPorts). A port with a socket listening on it
	// is not mapped either.
	ReservedPorts []int
	// ProtectedPorts are node ports pods and guests may not reach, on any
	// address of the node, besides DefaultProtectedPorts.
	ProtectedPorts []int
	// Netns, when set, is the path of the network namespace to program
	// (e.g. /var/run/netns/node) instead of the riklet's own. For tests and
	// nodes-in-namespaces end-to-end runs.
	Netns string
	// Firewall is the backend: FirewallAuto (the default: nftables when
	// the kernel can, else iptables), FirewallNftables or FirewallIptables.
	Firewall string
}

// FunctionNet is the network of one Function.
type FunctionNet struct {
	Tap     string           // TAP device on the node
	GuestIP netip.Addr       // first host address of Prefix
	TapIP   netip.Addr       // second host address: the guest's gateway
	Prefix  netip.Prefix     // the /30
	MAC     net.HardwareAddr // guest NIC
	Ports   []workload.PortMapping
}

// Manager programs the node's network for rik's instances. It is safe for
// concurrent use.
type Manager struct {
	cfg       Config
	protected []int // DefaultProtectedPorts and Config.ProtectedPorts
	log       *slog.Logger
	fw        firewall
	host      netHost
	pool      *ipam.Pool
	statePath string

	mu sync.Mutex
	st state // what is programmed (and persisted)
}

// New returns a Manager for the node and ensures rik's rules (rebuilt from
// the persisted state, with the backend Config.Firewall picks) and
// ip_forward. It is idempotent.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var fw firewall
	err := (&Manager{cfg: cfg}).inNetns(func() error {
		var err error
		fw, err = newFirewall(ctx, cfg.Firewall, log)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("starting sdn: %w", err)
	}
	log.Info("firewall backend", "backend", fw.Name())
	return newManager(ctx, cfg, fw, netlinkHost{})
}

func newManager(ctx context.Context, cfg Config, fw firewall, host netHost) (*Manager, error) {
	if !cfg.FunctionPool.IsValid() {
		cfg.FunctionPool = DefaultFunctionPool
	}
	if !cfg.PodCIDR.IsValid() {
		cfg.PodCIDR = DefaultPodCIDR
	}
	if cfg.PodBridge == "" {
		cfg.PodBridge = DefaultPodBridge
	}
	if cfg.ReservedPorts == nil {
		cfg.ReservedPorts = workload.DefaultReservedPorts
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("starting sdn: StateDir is required")
	}
	if !cfg.FunctionPool.Addr().Is4() || !cfg.PodCIDR.Addr().Is4() {
		return nil, errors.New("starting sdn: FunctionPool and PodCIDR must be IPv4")
	}
	if cfg.FunctionPool.Overlaps(cfg.PodCIDR) {
		return nil, fmt.Errorf("starting sdn: FunctionPool %s overlaps PodCIDR %s", cfg.FunctionPool, cfg.PodCIDR)
	}
	protected, err := protectedPorts(cfg.ProtectedPorts)
	if err != nil {
		return nil, fmt.Errorf("starting sdn: %w", err)
	}
	dir := filepath.Join(cfg.StateDir, "sdn")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("starting sdn: %w", err)
	}
	pool, err := ipam.Open(filepath.Join(dir, "leases.json"), cfg.FunctionPool, functionBlockBits)
	if err != nil {
		return nil, fmt.Errorf("starting sdn: %w", err)
	}
	statePath := filepath.Join(dir, "state.json")
	st, err := loadState(statePath)
	if err != nil {
		return nil, fmt.Errorf("starting sdn: %w", err)
	}
	m := &Manager{
		cfg:       cfg,
		protected: protected,
		log:       cfg.Logger,
		fw:        fw,
		host:      host,
		pool:      pool,
		statePath: statePath,
		st:        st,
	}
	if err := m.ensureBase(ctx); err != nil {
		return nil, fmt.Errorf("starting sdn: %w", err)
	}
	return m, nil
}

// ensureBase enables forwarding and rebuilds rik's rules from the current
// state.
func (m *Manager) ensureBase(ctx context.Context) error {
	return m.inNetns(func() error {
		if err := m.host.SetSysctl(ctx, "net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		return m.fw.Sync(ctx, m.ruleConfig(), m.st)
	})
}

func (m *Manager) ruleConfig() ruleConfig {
	return ruleConfig{FunctionPool: m.cfg.FunctionPool, PodCIDR: m.cfg.PodCIDR, PodBridge: m.cfg.PodBridge, ProtectedPorts: m.protected}
}

// SetupFunction leases a /30 for Function id, creates its TAP (up, with the
// TAP address) and exposes its ports. It is all or nothing: on error,
// what it created is removed. Calling it again for id returns the same
// network (and applies a change of ports).
func (m *Manager) SetupFunction(ctx context.Context, id string, ports []workload.PortMapping) (FunctionNet, error) {
	if err := checkID(id); err != nil {
		return FunctionNet{}, fmt.Errorf("setting up network of %s: %w", id, err)
	}
	ports, err := normalizePorts(ports)
	if err != nil {
		return FunctionNet{}, fmt.Errorf("setting up network of %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.st[id]; ok && e.Kind != workload.KindFunction {
		return FunctionNet{}, fmt.Errorf("setting up network of %s: it is exposed as a %s: %w", id, e.Kind, ErrInvalid)
	}
	if err := m.admitPorts(ctx, id, ports); err != nil {
		return FunctionNet{}, fmt.Errorf("setting up network of %s: %w", id, err)
	}

	_, hadLease := m.pool.Lookup(id)
	block, err := m.pool.Allocate(id)
	if err != nil {
		return FunctionNet{}, fmt.Errorf("setting up network of %s: %w", id, err)
	}
	n := FunctionNet{
		Tap:     TapName(id),
		GuestIP: block.Addr().Next(),
		Prefix:  block,
		MAC:     GuestMAC(id),
		Ports:   ports,
	}
	n.TapIP = n.GuestIP.Next()

	created := false
	fail := func(err error) (FunctionNet, error) {
		if created {
			if derr := m.inNetns(func() error { return m.host.DelLink(ctx, n.Tap) }); derr != nil {
				m.log.Warn("rolling back tap", "id", id, "tap", n.Tap, "err", derr)
			}
		}
		if !hadLease {
			if rerr := m.pool.Release(id); rerr != nil {
				m.log.Warn("rolling back lease", "id", id, "err", rerr)
			}
		}
		return FunctionNet{}, fmt.Errorf("setting up network of %s: %w", id, err)
	}
	err = m.inNetns(func() error {
		var err error
		created, err = m.host.AddTap(ctx, n.Tap, netip.PrefixFrom(n.TapIP, block.Bits()))
		if err != nil {
			return err
		}
		// Lets the node reach the guest from 127.0.0.1 (DNAT in OUTPUT).
		if err := m.host.SetSysctl(ctx, "net/ipv4/conf/"+n.Tap+"/route_localnet", "1"); err != nil {
			return err
		}
		// Guests are IPv4 only: no IPv6 (link-local or other) to reach the
		// node through, where rik's IPv4 rules would not apply.
		err = m.host.SetSysctl(ctx, "net/ipv6/conf/"+n.Tap+"/disable_ipv6", "1")
		if errors.Is(err, os.ErrNotExist) { // a kernel without IPv6
			err = nil
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	if err := m.commitEntry(ctx, id, entry{Kind: workload.KindFunction, IP: n.GuestIP, Ports: ports}); err != nil {
		return fail(err)
	}
	if created {
		m.log.Info("function network set up", "id", id, "tap", n.Tap, "guest", n.GuestIP, "ports", len(ports))
	}
	return n, nil
}

// TeardownFunction removes Function id's rules, TAP and lease. Tearing
// down an unknown id is not an error.
func (m *Manager) TeardownFunction(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	if e, ok := m.st[id]; ok && e.Kind == workload.KindFunction {
		next := m.st.clone()
		delete(next, id)
		errs = append(errs, m.commit(ctx, next))
	}
	if err := m.inNetns(func() error { return m.host.DelLink(ctx, TapName(id)) }); err != nil {
		errs = append(errs, err)
	}
	if errors.Join(errs...) == nil {
		errs = append(errs, m.pool.Release(id))
	}
	// Else keep the lease: its address is still on the TAP or in a DNAT
	// rule, and must not go to another Function. A retry or Reconcile
	// releases it.
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down network of %s: %w", id, err)
	}
	return nil
}

// Expose forwards the node's ports to a pod at ip. It replaces what was
// exposed for id before; no ports means Unexpose. A port exposed by
// another instance, or with a socket listening on it, is refused with an
// error wrapping ErrPortConflict; one the node's policy refuses, with
// ErrPortRefused.
func (m *Manager) Expose(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error {
	return m.expose(ctx, workload.KindPod, id, ip, ports)
}

// ExposeFunction forwards the node's ports to a Function on the pod
// network (bridge mode) at its pod address ip, as Expose does for a pod;
// the mapping is the Function's (ReconcileKind of Functions keeps or
// drops it). TeardownFunction or UnexposeFunction removes it.
func (m *Manager) ExposeFunction(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error {
	return m.expose(ctx, workload.KindFunction, id, ip, ports)
}

// UnexposeFunction removes the port mappings of a bridge-mode Function.
// An unknown id is not an error.
func (m *Manager) UnexposeFunction(ctx context.Context, id string) error {
	return m.unexpose(ctx, workload.KindFunction, id)
}

func (m *Manager) expose(ctx context.Context, kind workload.Kind, id string, ip netip.Addr, ports []workload.PortMapping) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("exposing %s: %w", id, err)
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return fmt.Errorf("exposing %s: address %s: want IPv4: %w", id, ip, ErrInvalid)
	}
	ports, err := normalizePorts(ports)
	if err != nil {
		return fmt.Errorf("exposing %s: %w", id, err)
	}
	if len(ports) == 0 {
		return m.unexpose(ctx, kind, id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.st[id]; ok && e.Kind != kind {
		return fmt.Errorf("exposing %s: it is a %s: %w", id, e.Kind, ErrInvalid)
	}
	if err := m.admitPorts(ctx, id, ports); err != nil {
		return fmt.Errorf("exposing %s: %w", id, err)
	}
	// Lets the node reach pods from 127.0.0.1; the bridge may not exist yet.
	err = m.inNetns(func() error {
		return m.host.SetSysctl(ctx, "net/ipv4/conf/"+m.cfg.PodBridge+"/route_localnet", "1")
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("enabling route_localnet on pod bridge", "bridge", m.cfg.PodBridge, "err", err)
	}
	if err := m.commitEntry(ctx, id, entry{Kind: kind, IP: ip, Ports: ports}); err != nil {
		return fmt.Errorf("exposing %s: %w", id, err)
	}
	return nil
}

// Unexpose removes the ports of pod id. An unknown id is not an error.
func (m *Manager) Unexpose(ctx context.Context, id string) error {
	return m.unexpose(ctx, workload.KindPod, id)
}

func (m *Manager) unexpose(ctx context.Context, kind workload.Kind, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.st[id]
	if !ok || e.Kind != kind {
		return nil
	}
	next := m.st.clone()
	delete(next, id)
	if err := m.commit(ctx, next); err != nil {
		return fmt.Errorf("unexposing %s: %w", id, err)
	}
	return nil
}

// Reconcile is called at riklet start with the ids of the instances this
// node still owns. It forgets the rules and releases the leases of every
// other id, deletes rik TAPs that no owned instance needs, and rebuilds
// rik's chains and jumps from what remains.
func (m *Manager) Reconcile(ctx context.Context, owned []string) error {
	return m.reconcile(ctx, "", owned)
}

// ReconcileKind is Reconcile limited to the instances of one kind: each
// runtime recovers its own instances and knows only their ids.
func (m *Manager) ReconcileKind(ctx context.Context, kind workload.Kind, owned []string) error {
	return m.reconcile(ctx, kind, owned)
}

// reconcile forgets what no owned instance needs; kind "" means every kind.
// Leases and TAPs belong to Functions, so they are left alone for pods.
func (m *Manager) reconcile(ctx context.Context, kind workload.Kind, owned []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := make(map[string]bool, len(owned))
	taps := make(map[string]bool, len(owned))
	for _, id := range owned {
		keep[id] = true
		taps[TapName(id)] = true
	}
	var errs []error

	next := m.st.clone()
	for id, e := range next {
		if !keep[id] && (kind == "" || e.Kind == kind) {
			m.log.Info("removing rules of an instance not owned", "id", id)
			delete(next, id)
		}
	}
	if err := saveState(m.statePath, next); err != nil {
		return fmt.Errorf("reconciling network: %w", err)
	}
	m.st = next
	if kind == workload.KindPod {
		return m.ensureBase(ctx)
	}
	for _, id := range m.pool.Owners() {
		if !keep[id] {
			m.log.Info("releasing lease of an instance not owned", "id", id)
			errs = append(errs, m.pool.Release(id))
		}
	}
	errs = append(errs, m.inNetns(func() error {
		found, err := m.host.Taps(ctx)
		if err != nil {
			return err
		}
		var errs []error
		for _, tap := range found {
			if !taps[tap] {
				m.log.Info("deleting tap of an instance not owned", "tap", tap)
				errs = append(errs, m.host.DelLink(ctx, tap))
			}
		}
		return errors.Join(errs...)
	}))
	errs = append(errs, m.ensureBase(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reconciling network: %w", err)
	}
	return nil
}

// Lookup returns the network of Function id, if it is set up.
func (m *Manager) Lookup(id string) (FunctionNet, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.st[id]
	block, leased := m.pool.Lookup(id)
	if !ok || !leased || e.Kind != workload.KindFunction {
		return FunctionNet{}, false
	}
	return FunctionNet{
		Tap: TapName(id), GuestIP: e.IP, TapIP: e.IP.Next(), Prefix: block,
		MAC: GuestMAC(id), Ports: e.Ports,
	}, true
}

// commitEntry sets id's entry, unless it is already what is programmed.
// The caller holds m.mu.
func (m *Manager) commitEntry(ctx context.Context, id string, e entry) error {
	if cur, ok := m.st[id]; ok && cur.equal(e) {
		return nil
	}
	next := m.st.clone()
	next[id] = e
	return m.commit(ctx, next)
}

// commit persists next and programs the difference from the current
// state, in one batch. When that fails (the rules are not what rik
// programmed: someone flushed them), it rebuilds them all from next; when
// that fails too, the previous state is restored. The caller holds m.mu.
func (m *Manager) commit(ctx context.Context, next state) error {
	if err := saveState(m.statePath, next); err != nil {
		return err
	}
	rc := m.ruleConfig()
	err := m.inNetns(func() error { return m.fw.Update(ctx, rc, m.st, next) })
	if err != nil {
		m.log.Warn("updating rik's rules failed, rebuilding them", "backend", m.fw.Name(), "err", err)
		err = m.inNetns(func() error { return m.fw.Sync(ctx, rc, next) })
	}
	if err != nil {
		if serr := saveState(m.statePath, m.st); serr != nil {
			m.log.Error("restoring sdn state after a failed apply", "err", serr)
		}
		// Part of the rebuild may have been committed.
		if rerr := m.inNetns(func() error { return m.fw.Sync(ctx, rc, m.st) }); rerr != nil {
			m.log.Error("restoring rik's rules after a failed apply", "err", rerr)
		}
		return err
	}
	m.st = next
	return nil
}

// inNetns runs fn in the configured network namespace: on a thread of its
// own that enters the namespace and dies afterwards, so that nothing else
// ever runs there by accident. Without Config.Netns fn runs in place.
func (m *Manager) inNetns(fn func() error) error {
	if m.cfg.Netns == "" {
		return fn()
	}
	return nsenter.Do(m.cfg.Netns, fn)
}
