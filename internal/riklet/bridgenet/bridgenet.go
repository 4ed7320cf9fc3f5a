// Package bridgenet puts Functions on the pod network (network mode
// bridge), the way Virtlet and runnc put VMs there. A Function gets a
// network namespace and a veth exactly as a pod does (package podnet: same
// address pool, same node bridge). Inside that namespace the veth's
// address and routes are read, a TAP is made, veth and TAP are joined by a
// bridge and the veth loses its address (Plumb); a DHCP server bound to
// that bridge hands the address to the guest's MAC, and only to it
// (Serve), and a bridge-family nftables table keeps DHCP from crossing the
// veth either way (Guard). The VMM gets the TAP as a file descriptor and
// never enters the namespace. Host ports map to the pod address with the
// same DNAT as pods (package sdn).
//
// Everything of a Function but its DHCP server lives in its namespace and
// goes with it; the server is a goroutine of the riklet, so it goes with
// the riklet, and Adopt starts it again for a VM still running.
package bridgenet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/workload"
)

// Pods gives a Function a pod's network namespace and veth (podnet).
type Pods interface {
	Setup(ctx context.Context, id string) (podnet.Net, error)
	Teardown(ctx context.Context, id string) error
	Owners() ([]string, error)
}

// Ports maps the node's ports to a Function at its pod address (sdn).
type Ports interface {
	ExposeFunction(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error
	UnexposeFunction(ctx context.Context, id string) error
}

// CNI is the plugin side of a Pods that runs CNI plugins (package cni).
// The plugins CHECK and DEL the namespace as their ADD left it, address on
// the veth: Adopt and Teardown give it back first (WithAddress, Unplumb).
type CNI interface {
	// Check runs CHECK for id's network.
	Check(id string) error
	// NetnsPath is where id's namespace is.
	NetnsPath(id string) string
}

// Config configures a Manager.
type Config struct {
	Pods  Pods
	Ports Ports
	// CNI is set when Pods runs CNI plugins: Adopt then runs CHECK, and
	// Teardown unplumbs the namespace before DEL.
	CNI    CNI
	DNS    []netip.Addr // handed to guests
	Logger *slog.Logger
}

// Request asks for one Function's network.
type Request struct {
	ID       string
	Hostname string
	MAC      net.HardwareAddr // the guest's: the only one the server answers
	Ports    []workload.PortMapping
}

// Net is one Function's bridge-mode network.
type Net struct {
	Netns string // holds TapDev; the VMM gets it as a file descriptor
	Tap   string
	Lease Lease
}

// Manager sets up and tears down bridge-mode networks and runs their DHCP
// servers. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	servers map[string]*Server // instance id -> its running DHCP server
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Pods == nil || cfg.Ports == nil {
		return nil, errors.New("bridge network: Pods and Ports are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: cfg.Logger, servers: map[string]*Server{}}, nil
}

// Setup builds req.ID's network from scratch (leftovers of an earlier
// attempt are removed first) and starts its DHCP server. It is all or
// nothing: on error what it made is removed.
func (m *Manager) Setup(ctx context.Context, req Request) (n Net, err error) {
	if err := workload.ValidInstanceID(req.ID); err != nil {
		return Net{}, fmt.Errorf("bridge network: %w", err)
	}
	if len(req.MAC) != 6 {
		return Net{}, fmt.Errorf("bridge network of %s: want a 6-byte guest MAC", req.ID)
	}
	if err := m.Teardown(ctx, req.ID); err != nil {
		return Net{}, fmt.Errorf("bridge network of %s: removing leftovers: %w", req.ID, err)
	}
	defer func() {
		if err != nil {
			if terr := m.Teardown(context.WithoutCancel(ctx), req.ID); terr != nil {
				m.log.Warn("rolling back bridge network", "id", req.ID, "err", terr)
			}
		}
	}()
	pn, err := m.cfg.Pods.Setup(ctx, req.ID)
	if err != nil {
		return Net{}, fmt.Errorf("bridge network of %s: %w", req.ID, err)
	}
	a, err := Plumb(pn.NetnsPath)
	if err != nil {
		return Net{}, fmt.Errorf("bridge network of %s: plumbing: %w", req.ID, err)
	}
	if err := Guard(pn.NetnsPath); err != nil {
		return Net{}, fmt.Errorf("bridge network of %s: %w", req.ID, err)
	}
	n = Net{Netns: pn.NetnsPath, Tap: TapDev,
		Lease: Lease{MAC: req.MAC, Addressing: a, DNS: m.cfg.DNS, Hostname: req.Hostname}}
	if err := m.serve(req.ID, n); err != nil {
		return Net{}, err
	}
	if err := m.cfg.Ports.ExposeFunction(ctx, req.ID, a.IP.Addr(), req.Ports); err != nil {
		return Net{}, fmt.Errorf("bridge network of %s: %w", req.ID, err)
	}
	m.log.Info("bridge network up", "id", req.ID, "ip", a.IP, "gw", a.Gateway, "netns", pn.NetnsPath)
	return n, nil
}

// Adopt starts the DHCP server of id's network n, unless it runs: after a
// riklet restart, a guest still running keeps its address, and the server
// is back for a guest that reboots. With CNI, the network is checked
// first (CHECK); a network that fails it is not adopted.
func (m *Manager) Adopt(id string, n Net) error {
	m.mu.Lock()
	running := m.servers[id] != nil
	m.mu.Unlock()
	if running || m.cfg.CNI == nil {
		return m.serve(id, n)
	}
	err := WithAddress(n.Netns, n.Lease.Addressing, func() error { return m.cfg.CNI.Check(id) })
	if err != nil {
		return fmt.Errorf("bridge network of %s: check: %w", id, err)
	}
	m.log.Info("bridge network passed its CNI CHECK", "id", id, "ip", n.Lease.IP)
	return m.serve(id, n)
}

// serve starts the DHCP server of id's network n, unless it runs.
func (m *Manager) serve(id string, n Net) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.servers[id] != nil {
		return nil
	}
	s, err := Serve(n.Netns, n.Lease, m.log.With("id", id))
	if err != nil {
		return fmt.Errorf("bridge network of %s: %w", id, err)
	}
	m.servers[id] = s
	return nil
}

// stopServer stops id's DHCP server, if one runs. Its socket holds the
// namespace: it must go before the namespace is removed.
func (m *Manager) stopServer(id string) {
	m.mu.Lock()
	s := m.servers[id]
	delete(m.servers, id)
	m.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
}

// Teardown stops id's DHCP server and removes its port mappings, its veth
// and namespace (and with the namespace its TAP, bridge and guard table)
// and its address lease. Missing pieces are fine.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	m.stopServer(id)
	var errs []error
	if err := m.cfg.Ports.UnexposeFunction(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if m.cfg.CNI != nil {
		// Best effort: DEL runs anyway, and removes what it finds.
		if err := Unplumb(m.cfg.CNI.NetnsPath(id)); err != nil {
			m.log.Warn("giving the veth its address back before CNI DEL", "id", id, "err", err)
		}
	}
	if err := m.cfg.Pods.Teardown(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down bridge network of %s: %w", id, err)
	}
	return nil
}

// Reconcile tears down the bridge networks no owned instance needs
// (found by their namespace, veth or lease) and stops their servers.
func (m *Manager) Reconcile(ctx context.Context, owned []string) error {
	keep := make(map[string]bool, len(owned))
	for _, id := range owned {
		keep[id] = true
	}
	found, err := m.cfg.Pods.Owners()
	m.mu.Lock()
	for id := range m.servers {
		found = append(found, id)
	}
	m.mu.Unlock()
	errs := []error{err}
	for _, id := range found {
		if !keep[id] {
			m.log.Info("removing bridge network of an instance not owned", "id", id)
			errs = append(errs, m.Teardown(ctx, id))
		}
	}
	return errors.Join(errs...)
}

// Close stops every DHCP server. The networks stay, for a later Adopt.
func (m *Manager) Close() {
	m.mu.Lock()
	ids := make([]string, 0, len(m.servers))
	for id := range m.servers {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.stopServer(id)
	}
}
