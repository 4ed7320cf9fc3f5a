package fabric

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/riklet/podnet"
)

// Names and numbers of what the fabric owns on a node.
const (
	// Device is the VXLAN device.
	Device = "rikvx"
	// VNI and Port of rik's VXLAN (the IANA port).
	VNI  = 1
	Port = 4789
	// RouteProtocol marks rik's routes (ip route ... proto 77): the only
	// ones the fabric lists, changes and removes.
	RouteProtocol = netlink.RouteProtocol(77)
	// vxlanOverhead is what VXLAN adds to a packet (IPv4 underlay).
	vxlanOverhead = 50
)

// NetlinkHost programs a network namespace over netlink.
type NetlinkHost struct {
	h *netlink.Handle
}

// NewNetlinkHost opens netlink in the namespace at path ("" = the
// riklet's own). Close releases it.
func NewNetlinkHost(path string) (*NetlinkHost, error) {
	h, err := podnet.OpenNetlink(path)
	if err != nil {
		return nil, err
	}
	return &NetlinkHost{h: h}, nil
}

// Close releases the netlink handle.
func (n *NetlinkHost) Close() { n.h.Close() }

// Nets lists the IPv4 networks of the interfaces that are not rik's
// (rik0, rikvx, veths, TAPs: names starting with "rik") nor loopback.
func (n *NetlinkHost) Nets() ([]netip.Prefix, error) {
	links, err := n.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []netip.Prefix
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, "rik") || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := n.h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if p, ok := prefixOf(ad.IPNet); ok && p.Bits() < 32 {
				out = append(out, p.Masked())
			}
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits), true
}

// vxlanIndex is the device's index, 0 when there is none.
func (n *NetlinkHost) vxlanIndex() (int, error) {
	l, err := n.h.LinkByName(Device)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("finding %s: %w", Device, err)
	}
	if _, ok := l.(*netlink.Vxlan); !ok {
		return 0, fmt.Errorf("%s is a %s, not rik's VXLAN device: left alone", Device, l.Type())
	}
	return l.Attrs().Index, nil
}

// Routes lists rik's routes of the main table.
func (n *NetlinkHost) Routes() ([]Route, error) {
	vx, err := n.vxlanIndex()
	if err != nil {
		return nil, err
	}
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		dst, ok := prefixOf(r.Dst)
		via, ok2 := netip.AddrFromSlice(r.Gw.To4())
		if !ok || !ok2 {
			continue
		}
		out = append(out, Route{Dst: dst, Via: via, VXLAN: vx != 0 && r.LinkIndex == vx})
	}
	return out, nil
}

func (n *NetlinkHost) route(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Gw:       r.Via.AsSlice(),
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
	if r.VXLAN {
		vx, err := n.vxlanIndex()
		if err != nil {
			return nil, err
		}
		if vx == 0 {
			return nil, fmt.Errorf("route to %s: no %s device", r.Dst, Device)
		}
		nr.LinkIndex, nr.Flags = vx, int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

// AddRoute adds r; a route to the same destination that is not rik's is
// an error, never replaced.
func (n *NetlinkHost) AddRoute(r Route) error {
	nr, err := n.route(r)
	if err == nil {
		err = n.h.RouteAdd(nr)
	}
	if err != nil {
		return fmt.Errorf("adding route to %s via %s: %w", r.Dst, r.Via, err)
	}
	return nil
}

// DelRoute removes r; a missing route is fine.
func (n *NetlinkHost) DelRoute(r Route) error {
	nr, err := n.route(r)
	if err != nil && r.VXLAN { // the device is gone, and its routes with it
		return nil
	}
	if err == nil {
		err = n.h.RouteDel(nr)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("deleting route to %s via %s: %w", r.Dst, r.Via, err)
	}
	return nil
}

// EnsureVXLAN creates the device, or recreates one whose settings differ.
func (n *NetlinkHost) EnsureVXLAN(local, vtep netip.Addr, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("%s: MAC %q: %w", Device, mac, err)
	}
	parent, err := n.linkWith(local)
	if err != nil {
		return err
	}
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: Device, HardwareAddr: hw, MTU: parent.Attrs().MTU - vxlanOverhead},
		VxlanId:   VNI, VtepDevIndex: parent.Attrs().Index, SrcAddr: local.AsSlice(), Port: Port,
	}
	cur, err := n.h.LinkByName(Device)
	switch {
	case errors.As(err, new(netlink.LinkNotFoundError)):
	case err != nil:
		return fmt.Errorf("finding %s: %w", Device, err)
	default:
		v, ok := cur.(*netlink.Vxlan)
		if !ok {
			return fmt.Errorf("%s is a %s, not rik's VXLAN device: left alone", Device, cur.Type())
		}
		if !sameVXLAN(v, want) {
			if err := n.h.LinkDel(v); err != nil {
				return fmt.Errorf("recreating %s: %w", Device, err)
			}
			cur = nil
		}
	}
	if cur == nil {
		if err := n.h.LinkAdd(want); err != nil {
			return fmt.Errorf("creating %s: %w", Device, err)
		}
	}
	l, err := n.h.LinkByName(Device)
	if err != nil {
		return fmt.Errorf("finding %s: %w", Device, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: vtep.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := n.h.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", vtep, Device, err)
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing up %s: %w", Device, err)
	}
	return nil
}

func sameVXLAN(a, b *netlink.Vxlan) bool {
	return a.VxlanId == b.VxlanId && a.Port == b.Port && a.SrcAddr.Equal(b.SrcAddr) &&
		a.VtepDevIndex == b.VtepDevIndex && a.HardwareAddr.String() == b.HardwareAddr.String()
}

// linkWith returns the interface holding addr.
func (n *NetlinkHost) linkWith(addr netip.Addr) (netlink.Link, error) {
	addrs, err := n.h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(addr.AsSlice()) {
			l, err := n.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("finding the interface of %s: %w", addr, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("%s: no interface has the node address %s", Device, addr)
}

// DelVXLAN removes the device; none is fine.
func (n *NetlinkHost) DelVXLAN() error {
	vx, err := n.vxlanIndex()
	if err != nil || vx == 0 {
		return err
	}
	if err := n.h.LinkDel(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Index: vx}}); err != nil {
		return fmt.Errorf("deleting %s: %w", Device, err)
	}
	return nil
}

// Tunnels pairs the device's permanent neighbours (VTEP -> MAC) with its
// FDB entries (MAC -> underlay).
func (n *NetlinkHost) Tunnels() ([]Tunnel, error) {
	vx, err := n.vxlanIndex()
	if err != nil || vx == 0 {
		return nil, err
	}
	neighs, err := n.h.NeighList(vx, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of %s: %w", Device, err)
	}
	fdb, err := n.h.NeighList(vx, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("listing FDB of %s: %w", Device, err)
	}
	under := map[string]netip.Addr{}
	for _, e := range fdb {
		if ip, ok := netip.AddrFromSlice(e.IP.To4()); ok && len(e.HardwareAddr) == 6 {
			under[e.HardwareAddr.String()] = ip
		}
	}
	var out []Tunnel
	for _, e := range neighs {
		ip, ok := netip.AddrFromSlice(e.IP.To4())
		if !ok || e.State&netlink.NUD_PERMANENT == 0 || len(e.HardwareAddr) != 6 {
			continue
		}
		mac := e.HardwareAddr.String()
		out = append(out, Tunnel{VTEP: ip, MAC: mac, Underlay: under[mac]})
		delete(under, mac)
	}
	for mac, ip := range under {
		out = append(out, Tunnel{MAC: mac, Underlay: ip})
	}
	return out, nil
}

func (n *NetlinkHost) neighs(t Tunnel) (ipv4, fdb *netlink.Neigh, err error) {
	vx, err := n.vxlanIndex()
	if err != nil {
		return nil, nil, err
	}
	hw, err := net.ParseMAC(t.MAC)
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel MAC %q: %w", t.MAC, err)
	}
	if vx == 0 {
		return nil, nil, nil
	}
	if t.VTEP.IsValid() {
		ipv4 = &netlink.Neigh{LinkIndex: vx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: t.VTEP.AsSlice(), HardwareAddr: hw}
	}
	if t.Underlay.IsValid() {
		fdb = &netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: t.Underlay.AsSlice(), HardwareAddr: hw}
	}
	return ipv4, fdb, nil
}

// AddTunnel sets the neighbour and FDB entries of t.
func (n *NetlinkHost) AddTunnel(t Tunnel) error {
	ipv4, fdb, err := n.neighs(t)
	if err == nil && (ipv4 == nil || fdb == nil) {
		err = fmt.Errorf("incomplete (no %s device, VTEP or underlay address)", Device)
	}
	if err == nil {
		err = n.h.NeighSet(fdb)
	}
	if err == nil {
		err = n.h.NeighSet(ipv4)
	}
	if err != nil {
		return fmt.Errorf("adding tunnel to %s (%s at %s): %w", t.VTEP, t.MAC, t.Underlay, err)
	}
	return nil
}

// DelTunnel removes the entries of t; missing ones are fine.
func (n *NetlinkHost) DelTunnel(t Tunnel) error {
	ipv4, fdb, err := n.neighs(t)
	var errs []error
	for _, e := range []*netlink.Neigh{ipv4, fdb} {
		if e == nil || err != nil {
			continue
		}
		if derr := n.h.NeighDel(e); derr != nil && !errors.Is(derr, unix.ENOENT) {
			errs = append(errs, derr)
		}
	}
	if err = errors.Join(append(errs, err)...); err != nil {
		return fmt.Errorf("deleting tunnel to %s (%s at %s): %w", t.VTEP, t.MAC, t.Underlay, err)
	}
	return nil
}
