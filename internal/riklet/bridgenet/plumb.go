package bridgenet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/riklet/podnet"
)

// Device names inside a Function's network namespace (its own: no clash).
const (
	VethDev   = "eth0" // the pod side of the veth (podnet names it so)
	TapDev    = "tap0" // handed to the VMM as a file descriptor
	BridgeDev = "br0"  // joins the two
)

// ServerAddr is the DHCP server's address on br0: link-local, and never
// seen outside the namespace (DHCP across the veth is dropped, guard.go).
var ServerAddr = netip.MustParsePrefix("169.254.254.1/32")

// Route is a route the guest gets besides its default route.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	Via netip.Addr   `json:"via"`
}

// Addressing is what the veth carried before plumbing: the address the
// guest gets by DHCP, its gateway and other routes.
type Addressing struct {
	IP      netip.Prefix `json:"ip"`
	Gateway netip.Addr   `json:"gw,omitempty"`
	Routes  []Route      `json:"routes,omitempty"`
}

// Plumb follows runnc's steps in the namespace at nsPath: it reads the
// veth's address and routes, creates a TAP, creates a bridge, enslaves
// veth and TAP, then removes the address from the veth. Removing the
// address comes last: until then a re-run reads it again; after it, a
// re-run finds the plumbing done and reads what was saved as br0's alias
// (it lives and dies with the namespace). It is idempotent.
func Plumb(nsPath string) (Addressing, error) {
	h, err := nsenter.Netlink(nsPath)
	if err != nil {
		return Addressing{}, err
	}
	defer h.Close()
	veth, err := h.LinkByName(VethDev)
	if err != nil {
		return Addressing{}, fmt.Errorf("finding %s: %w", VethDev, err)
	}
	a, found, err := readAddressing(h, veth)
	if err != nil {
		return Addressing{}, err
	}
	if !found {
		return plumbed(h)
	}
	if err := nsenter.Do(nsPath, addTap); err != nil {
		return Addressing{}, err
	}
	br, err := ensureBridge(h, a)
	if err != nil {
		return Addressing{}, err
	}
	for _, name := range []string{VethDev, TapDev} {
		l, err := h.LinkByName(name)
		if err != nil {
			return Addressing{}, fmt.Errorf("finding %s: %w", name, err)
		}
		if err := h.LinkSetMaster(l, br); err != nil {
			return Addressing{}, fmt.Errorf("enslaving %s to %s: %w", name, BridgeDev, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return Addressing{}, fmt.Errorf("bringing up %s: %w", name, err)
		}
	}
	addrs, err := h.AddrList(veth, unix.AF_INET)
	if err != nil {
		return Addressing{}, fmt.Errorf("listing addresses of %s: %w", VethDev, err)
	}
	for _, ad := range addrs {
		if err := h.AddrDel(veth, &ad); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return Addressing{}, fmt.Errorf("removing %s from %s: %w", ad.IPNet, VethDev, err)
		}
	}
	return a, nil
}

// readAddressing reads the veth's IPv4 address and the routes through it;
// found is false when it has no address (plumbing done).
func readAddressing(h *netlink.Handle, veth netlink.Link) (Addressing, bool, error) {
	addrs, err := h.AddrList(veth, unix.AF_INET)
	if err != nil {
		return Addressing{}, false, fmt.Errorf("listing addresses of %s: %w", VethDev, err)
	}
	if len(addrs) == 0 {
		return Addressing{}, false, nil
	}
	ip, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	bits, _ := addrs[0].Mask.Size()
	a := Addressing{IP: netip.PrefixFrom(ip, bits)}
	routes, err := h.RouteList(veth, unix.AF_INET)
	if err != nil {
		return Addressing{}, false, fmt.Errorf("listing routes of %s: %w", VethDev, err)
	}
	a.Gateway, a.Routes = gatewayAndRoutes(routes)
	return a, true, nil
}

// gatewayAndRoutes splits routes into the default gateway and the other
// routes through a gateway (those on-link come from the prefix).
func gatewayAndRoutes(routes []netlink.Route) (netip.Addr, []Route) {
	var gw netip.Addr
	var out []Route
	for _, r := range routes {
		via, ok := netip.AddrFromSlice(r.Gw.To4())
		if !ok || r.Gw == nil {
			continue
		}
		if r.Dst == nil || isDefault(r.Dst) {
			gw = via
			continue
		}
		d, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		b, _ := r.Dst.Mask.Size()
		out = append(out, Route{Dst: netip.PrefixFrom(d, b), Via: via})
	}
	return gw, out
}

func isDefault(n *net.IPNet) bool {
	b, _ := n.Mask.Size()
	return b == 0
}

// addTap creates TapDev, persistent, in the calling thread's namespace.
func addTap() error {
	_, err := netlink.LinkByName(TapDev)
	if err == nil {
		return nil
	}
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: TapDev},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE | netlink.TUNTAP_VNET_HDR,
	}
	if err := netlink.LinkAdd(tap); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("creating tap %s: %w", TapDev, err)
	}
	return nil
}

// ensureBridge creates br0 (up, with the DHCP server's address) and saves
// a as its alias.
func ensureBridge(h *netlink.Handle, a Addressing) (netlink.Link, error) {
	err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeDev}})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("creating bridge %s: %w", BridgeDev, err)
	}
	br, err := h.LinkByName(BridgeDev)
	if err != nil {
		return nil, fmt.Errorf("finding bridge %s: %w", BridgeDev, err)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encoding addressing: %w", err)
	}
	if err := h.LinkSetAlias(br, string(b)); err != nil {
		return nil, fmt.Errorf("labelling bridge %s: %w", BridgeDev, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ServerAddr.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := h.AddrReplace(br, addr); err != nil {
		return nil, fmt.Errorf("adding %s to %s: %w", ServerAddr, BridgeDev, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", BridgeDev, err)
	}
	return br, nil
}

// plumbed returns the addressing saved on a plumbed namespace's bridge.
func plumbed(h *netlink.Handle) (Addressing, error) {
	br, err := h.LinkByName(BridgeDev)
	if err != nil {
		return Addressing{}, fmt.Errorf("%s has no address and no bridge %s: %w", VethDev, BridgeDev, err)
	}
	var a Addressing
	if err := json.Unmarshal([]byte(br.Attrs().Alias), &a); err != nil || !a.IP.IsValid() {
		return Addressing{}, fmt.Errorf("%s has no address and bridge %s no saved addressing", VethDev, BridgeDev)
	}
	return a, nil
}

// WithAddress runs f with the veth of the plumbed namespace at nsPath
// carrying a again, with its routes, as its CNI plugins left it: their
// CHECK looks for the address and routes on the container interface, and
// Plumb moved them to the guest. br0 first stops answering ARP for
// addresses it does not hold, so the guest keeps its address meanwhile.
// The address goes again afterwards, and its routes with it, whatever f
// returned; a riklet killed in between leaves an address that the next
// WithAddress, Unplumb or Plumb handles.
func WithAddress(nsPath string, a Addressing, f func() error) (err error) {
	h, err := nsenter.Netlink(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	veth, addr, err := restore(h, nsPath, a)
	if addr != nil {
		defer func() {
			if derr := h.AddrDel(veth, addr); derr != nil && !errors.Is(derr, unix.EADDRNOTAVAIL) && err == nil {
				err = fmt.Errorf("removing %s from %s: %w", a.IP, VethDev, derr)
			}
		}()
	}
	if err != nil {
		return err
	}
	return f()
}

// Unplumb gives the veth of the plumbed namespace at nsPath its address
// and routes back for good, before CNI's DEL: the bridge plugin finds the
// rules it made for the address (ipMasq) by reading it from the
// interface. No namespace, or one not plumbed, is left as it is.
func Unplumb(nsPath string) error {
	if !podnet.IsNetns(nsPath) {
		return nil
	}
	h, err := nsenter.Netlink(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	veth, err := h.LinkByName(VethDev)
	if err != nil {
		return nil // no veth: nothing to give back
	}
	if _, found, err := readAddressing(h, veth); err != nil || found {
		return err
	}
	a, err := plumbed(h)
	if err != nil {
		return nil // never plumbed
	}
	_, _, err = restore(h, nsPath, a)
	return err
}

// restore puts a back on the veth (br0 answering no ARP for it).
func restore(h *netlink.Handle, nsPath string, a Addressing) (netlink.Link, *netlink.Addr, error) {
	veth, err := h.LinkByName(VethDev)
	if err != nil {
		return nil, nil, fmt.Errorf("finding %s: %w", VethDev, err)
	}
	err = nsenter.Do(nsPath, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/"+BridgeDev+"/arp_ignore", []byte("1"), 0o644)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("setting arp_ignore on %s: %w", BridgeDev, err)
	}
	addr := &netlink.Addr{IPNet: prefixNet(a.IP)}
	if err := h.AddrReplace(veth, addr); err != nil {
		return nil, nil, fmt.Errorf("adding %s to %s: %w", a.IP, VethDev, err)
	}
	for _, r := range routesOf(a) {
		r.LinkIndex = veth.Attrs().Index
		if err := h.RouteReplace(&r); err != nil {
			return veth, addr, fmt.Errorf("adding route %s via %s: %w", r.Dst, r.Gw, err)
		}
	}
	return veth, addr, nil
}

// routesOf are the routes of a through a gateway, the default one first.
func routesOf(a Addressing) []netlink.Route {
	var out []netlink.Route
	if a.Gateway.IsValid() {
		out = append(out, netlink.Route{Gw: a.Gateway.AsSlice()})
	}
	for _, r := range a.Routes {
		out = append(out, netlink.Route{Dst: prefixNet(r.Dst.Masked()), Gw: r.Via.AsSlice()})
	}
	return out
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
