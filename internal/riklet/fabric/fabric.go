package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/rik-org/rik/internal/atomicfile"
)

// Host programs the node's routes and VXLAN device. Routes and Tunnels
// list only rik's own entries.
type Host interface {
	// Nets lists the networks of the node's interfaces (rik's own devices
	// excepted): peers in them are reached directly.
	Nets() ([]netip.Prefix, error)
	Routes() ([]Route, error)
	AddRoute(Route) error
	DelRoute(Route) error
	// EnsureVXLAN creates the VXLAN device (or fixes it): packets leave
	// from local, the device has address vtep/32 and MAC mac, and is up.
	EnsureVXLAN(local, vtep netip.Addr, mac string) error
	// DelVXLAN removes the device, and with it its FDB and neighbours.
	DelVXLAN() error
	// Tunnels lists the neighbour and FDB entries of the device (none
	// without one). An entry missing a half has an invalid field.
	Tunnels() ([]Tunnel, error)
	AddTunnel(Tunnel) error
	DelTunnel(Tunnel) error
}

// Map is the control plane's view: this node's subnet and its peers.
type Map struct {
	Subnet  netip.Prefix // invalid: not allocated yet
	Cluster netip.Prefix
	Peers   []Peer
}

// Config configures a Fabric.
type Config struct {
	StateDir string            // the node's subnet is kept in <StateDir>/fabric.json
	Name     string            // node name
	Addr     func() netip.Addr // the node's address, as registered (its peers reach it there)
	Mode     Mode
	Host     Host // required (NewNetlinkHost in production)
	Logger   *slog.Logger
}

// persisted is what survives a restart: the node's subnet, so that its
// pods keep their addresses while the scheduler is unreachable.
type persisted struct {
	Subnet  string `json:"subnet"`
	Cluster string `json:"cluster,omitempty"`
}

// Fabric keeps the node's routes to its peers.
type Fabric struct {
	cfg  Config
	log  *slog.Logger
	path string

	mu     sync.Mutex // one Apply at a time; guards subnet
	subnet netip.Prefix
	known  chan struct{} // closed once subnet is known
}

// New returns the node's fabric, with the subnet it kept, if any. It does
// not touch the host.
func New(cfg Config) (*Fabric, error) {
	if cfg.Host == nil || cfg.Addr == nil || cfg.Name == "" || cfg.StateDir == "" {
		return nil, errors.New("fabric: Host, Addr, Name and StateDir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fabric{cfg: cfg, log: cfg.Logger, path: cfg.StateDir + "/fabric.json", known: make(chan struct{})}
	b, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("fabric: %w", err)
	default:
		var p persisted
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("fabric: reading %s: %w", f.path, err)
		}
		if f.subnet, err = netip.ParsePrefix(p.Subnet); err != nil {
			return nil, fmt.Errorf("fabric: reading %s: subnet: %w", f.path, err)
		}
		close(f.known)
	}
	return f, nil
}

// Subnet returns the node's pod subnet, waiting until the control plane
// gave it or ctx is done.
func (f *Fabric) Subnet(ctx context.Context) (netip.Prefix, error) {
	select {
	case <-f.known:
	default:
		select {
		case <-f.known:
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("waiting for the node's pod subnet from the control plane: %w", ctx.Err())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subnet, nil
}

// Apply keeps the node's subnet (the first one it is given: pods hold
// addresses in it) and reconciles the host with the routes and tunnels
// to m's peers: what is missing is added, what no peer needs any more is
// removed. It is idempotent.
func (f *Fabric) Apply(ctx context.Context, m Map) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.keepSubnet(m); err != nil {
		return err
	}
	nets, err := f.cfg.Host.Nets()
	if err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	self := Self{Name: f.cfg.Name, Addr: f.cfg.Addr(), Subnet: f.subnet, Nets: nets, Mode: f.cfg.Mode}
	plan, skipped := BuildPlan(self, m.Peers)
	for _, s := range skipped {
		f.log.Warn("peer not routed", "peer", s)
	}
	return f.reconcile(plan)
}

// keepSubnet records m's subnet the first time; a later different one is
// refused (the node's pods hold addresses in the first).
func (f *Fabric) keepSubnet(m Map) error {
	if !m.Subnet.IsValid() {
		return nil
	}
	if f.subnet.IsValid() {
		if f.subnet != m.Subnet.Masked() {
			f.log.Error("the control plane gives this node another pod subnet than the one it has: keeping its own (remove "+f.path+" and the node's pods to take the new one)",
				"kept", f.subnet, "given", m.Subnet)
		}
		return nil
	}
	b, err := json.Marshal(persisted{Subnet: m.Subnet.Masked().String(), Cluster: m.Cluster.String()})
	if err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	if err := atomicfile.Write(f.path, b, 0o600); err != nil {
		return fmt.Errorf("fabric: keeping the node's subnet: %w", err)
	}
	f.subnet = m.Subnet.Masked()
	close(f.known)
	f.log.Info("pod subnet of this node", "subnet", f.subnet)
	return nil
}

// reconcile makes the host match plan: stale routes and tunnels go first,
// then the device, tunnels and routes are added.
func (f *Fabric) reconcile(plan Plan) error {
	h := f.cfg.Host
	routes, err := h.Routes()
	if err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	var errs []error
	for _, r := range routes {
		if !slices.Contains(plan.Routes, r) {
			errs = append(errs, h.DelRoute(r))
		}
	}
	tunnels, err := h.Tunnels()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("fabric: %w", err))...)
	}
	for _, t := range tunnels {
		if !slices.Contains(plan.Tunnels, t) {
			errs = append(errs, h.DelTunnel(t))
		}
	}
	if len(plan.Tunnels) == 0 {
		errs = append(errs, h.DelVXLAN())
	} else if err := h.EnsureVXLAN(f.cfg.Addr(), plan.VTEP, plan.VTEPMAC); err != nil {
		return errors.Join(append(errs, err)...) // no tunnel nor VXLAN route without it
	}
	for _, t := range plan.Tunnels {
		if !slices.Contains(tunnels, t) {
			errs = append(errs, h.AddTunnel(t))
		}
	}
	for _, r := range plan.Routes {
		if !slices.Contains(routes, r) {
			errs = append(errs, h.AddRoute(r))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	f.log.Debug("routes to peers", "routes", describe(plan))
	return nil
}

// Remove deletes every route and the VXLAN device (uninstall). The kept
// subnet stays.
func (f *Fabric) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reconcile(Plan{})
}

// Uninstall removes every route of rik's fabric and its VXLAN device from
// the node h programs, without a Fabric (riklet --uninstall).
func Uninstall(h Host) error {
	f := &Fabric{cfg: Config{Host: h, Addr: func() netip.Addr { return netip.Addr{} }}, log: slog.New(slog.DiscardHandler)}
	return f.reconcile(Plan{})
}

func describe(p Plan) string {
	var parts []string
	for _, r := range p.Routes {
		how := "direct"
		if r.VXLAN {
			how = "vxlan"
		}
		parts = append(parts, fmt.Sprintf("%s via %s (%s)", r.Dst, r.Via, how))
	}
	return strings.Join(parts, ", ")
}
