// Package fabric makes the pods of every node reachable from every other
// node, without NAT: each node owns a pod subnet (allocated by the
// controller, handed over by the scheduler with the list of peers), and
// the riklet routes every peer's subnet to that peer. A peer on one of the
// node's own networks (same L2 segment) is reached by a direct route via
// its address ("host-gw"); any other through a kernel VXLAN device, whose
// forwarding (FDB) and neighbour entries come from the peer list too.
//
// Plan (pure) turns the peer list into the routes and tunnel entries the
// node must have; Fabric reconciles the host with it through Host (netlink
// in production, a stateful fake in tests).
package fabric

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Mode chooses how peers are reached.
type Mode string

const (
	// ModeAuto: a direct route to a peer on a network of the node, VXLAN to
	// the others.
	ModeAuto Mode = "auto"
	// ModeVXLAN: VXLAN to every peer.
	ModeVXLAN Mode = "vxlan"
)

// ParseMode checks a --fabric value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeAuto:
		return ModeAuto, nil
	case ModeVXLAN:
		return ModeVXLAN, nil
	}
	return "", fmt.Errorf("fabric mode %q: want auto or vxlan", s)
}

// Peer is another node.
type Peer struct {
	Name   string
	Addr   netip.Addr   // its node address
	Subnet netip.Prefix // its pod subnet
}

// Self is this node, as Plan needs it.
type Self struct {
	Name   string
	Addr   netip.Addr     // its node address: the VXLAN source
	Subnet netip.Prefix   // its pod subnet (invalid: not known yet)
	Nets   []netip.Prefix // the networks of its interfaces: peers in them are on its L2 segment
	Mode   Mode
}

// Route sends a peer's pod subnet to Via: the peer's node address (direct),
// or its VTEP address on the VXLAN device.
type Route struct {
	Dst   netip.Prefix
	Via   netip.Addr
	VXLAN bool
}

// Tunnel is one peer reached over VXLAN: its VTEP address (the first
// address of its subnet) has the VTEP MAC, which lives at Underlay.
type Tunnel struct {
	VTEP     netip.Addr
	MAC      string // lower-case, colon-separated
	Underlay netip.Addr
}

// Plan is what the node must have.
type Plan struct {
	Routes  []Route  // sorted by Dst
	Tunnels []Tunnel // sorted by VTEP; empty: no VXLAN device
	// VTEP is this node's address on the VXLAN device, with VTEPMAC as its
	// MAC (meaningful when Tunnels is not empty).
	VTEP    netip.Addr
	VTEPMAC string
}

// BuildPlan computes the routes and tunnels to reach peers from self. A
// peer without a usable address or subnet, one whose subnet overlaps
// self's or an earlier peer's, or self itself, is skipped (and listed in
// skipped with the reason).
func BuildPlan(self Self, peers []Peer) (p Plan, skipped []string) {
	peers = slices.Clone(peers)
	slices.SortFunc(peers, func(a, b Peer) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	var taken []netip.Prefix
	if self.Subnet.IsValid() {
		taken = append(taken, self.Subnet.Masked())
	}
	for _, peer := range peers {
		if why := unusable(self, peer, taken); why != "" {
			skipped = append(skipped, fmt.Sprintf("%s: %s", peer.Name, why))
			continue
		}
		sub := peer.Subnet.Masked()
		taken = append(taken, sub)
		if self.Mode != ModeVXLAN && slices.ContainsFunc(self.Nets, func(n netip.Prefix) bool { return n.Contains(peer.Addr) }) {
			p.Routes = append(p.Routes, Route{Dst: sub, Via: peer.Addr})
			continue
		}
		vtep := sub.Addr()
		p.Routes = append(p.Routes, Route{Dst: sub, Via: vtep, VXLAN: true})
		p.Tunnels = append(p.Tunnels, Tunnel{VTEP: vtep, MAC: VTEPMAC(peer.Name), Underlay: peer.Addr})
	}
	if len(p.Tunnels) > 0 && self.Subnet.IsValid() {
		p.VTEP, p.VTEPMAC = self.Subnet.Masked().Addr(), VTEPMAC(self.Name)
	}
	if len(p.Tunnels) > 0 && !p.VTEP.IsValid() {
		// Without its own subnet the node has no VTEP address: nothing is
		// tunnelled yet (its pods could not answer anyway).
		for _, t := range p.Tunnels {
			skipped = append(skipped, fmt.Sprintf("%s: over VXLAN, and this node has no pod subnet yet", t.Underlay))
		}
		p.Routes = slices.DeleteFunc(p.Routes, func(r Route) bool { return r.VXLAN })
		p.Tunnels = nil
	}
	return p, skipped
}

// unusable says why peer cannot be routed to ("" when it can).
func unusable(self Self, peer Peer, taken []netip.Prefix) string {
	switch {
	case peer.Name == self.Name:
		return "this node"
	case !peer.Addr.Is4() || peer.Addr.IsLoopback() || peer.Addr.IsUnspecified():
		return fmt.Sprintf("address %s: not a usable IPv4 node address", peer.Addr)
	case peer.Addr == self.Addr:
		return fmt.Sprintf("address %s: this node's", peer.Addr)
	case !peer.Subnet.IsValid() || !peer.Subnet.Addr().Is4() || peer.Subnet.Bits() > 30:
		return fmt.Sprintf("pod subnet %s: not an IPv4 subnet", peer.Subnet)
	case slices.ContainsFunc(taken, peer.Subnet.Overlaps):
		return fmt.Sprintf("pod subnet %s: overlaps this node's or another peer's", peer.Subnet)
	}
	return ""
}

// VTEPMAC is the MAC of node name's VXLAN device: locally administered,
// unicast, from a hash of the name, so that peers know it from the name.
func VTEPMAC(name string) string {
	sum := sha256.Sum256([]byte("rik-vtep:" + name))
	mac := net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
	return mac.String()
}
