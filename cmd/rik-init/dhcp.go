//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dhcpTimeout bounds the whole DHCP exchange (under TCG a guest is slow).
const dhcpTimeout = 60 * time.Second

// dhcpLease is what rik-init takes from a DHCP ack.
type dhcpLease struct {
	IP       netip.Prefix
	Routes   []dhcpRoute // the default route has Dst 0.0.0.0/0
	DNS      []netip.Addr
	Hostname string
	Server   netip.Addr
}

type dhcpRoute struct {
	Dst netip.Prefix
	Via netip.Addr
}

// parseAck reads a DHCP ack (no I/O). Classless static routes, when
// given, replace the router option (RFC 3442).
func parseAck(ack *dhcpv4.DHCPv4) (dhcpLease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return dhcpLease{}, errors.New("dhcp ack without an address")
	}
	bits, size := ack.SubnetMask().Size()
	if size != 32 {
		return dhcpLease{}, errors.New("dhcp ack without a valid subnet mask")
	}
	l := dhcpLease{IP: netip.PrefixFrom(ip, bits), Hostname: ack.HostName()}
	l.Server, _ = netip.AddrFromSlice(ack.ServerIdentifier().To4())
	if rs := ack.ClasslessStaticRoute(); len(rs) > 0 {
		for _, r := range rs {
			d, ok1 := netip.AddrFromSlice(r.Dest.IP.To4())
			via, ok2 := netip.AddrFromSlice(r.Router.To4())
			b, _ := r.Dest.Mask.Size()
			if ok1 && ok2 {
				l.Routes = append(l.Routes, dhcpRoute{Dst: netip.PrefixFrom(d, b), Via: via})
			}
		}
	} else if gws := ack.Router(); len(gws) > 0 {
		if via, ok := netip.AddrFromSlice(gws[0].To4()); ok {
			l.Routes = []dhcpRoute{{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: via}}
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	return l, nil
}

// dhcpNetwork configures eth0 by DHCP, when there is no rik.ip=: address,
// routes, and (unless the command line set them) DNS and hostname. Without
// an eth0 the VM has no network and that is fine.
func dhcpNetwork(cfg *bootConfig) error {
	var eth netlink.Link
	var err error
	// virtio-net probes as its module loads; give a late NIC a moment.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if eth, err = netlink.LinkByName("eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil // no NIC: no network
		}
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing up eth0: %w", err)
	}
	c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(30))
	if err != nil {
		return fmt.Errorf("dhcp client on eth0: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	lease, err := c.Request(ctx)
	c.Close()
	if err != nil {
		return fmt.Errorf("getting eth0's address by DHCP: %w", err)
	}
	l, err := parseAck(lease.ACK)
	if err != nil {
		return err
	}
	if err := applyLease(eth, l); err != nil {
		return err
	}
	if len(cfg.DNS) == 0 {
		cfg.DNS = l.DNS
	}
	if cfg.Hostname == "" && l.Hostname != "" {
		cfg.Hostname = l.Hostname
		if err := unix.Sethostname([]byte(l.Hostname)); err != nil {
			logf("setting hostname: %v", err)
		}
	}
	logf("eth0 %s by DHCP from %s (routes %v, dns %v, hostname %q)", l.IP, l.Server, l.Routes, l.DNS, l.Hostname)
	return nil
}

func applyLease(eth netlink.Link, l dhcpLease) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: l.IP.Addr().AsSlice(), Mask: net.CIDRMask(l.IP.Bits(), 32)}}
	if err := netlink.AddrAdd(eth, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding %s to eth0: %w", l.IP, err)
	}
	for _, r := range l.Routes {
		rt := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: r.Via.AsSlice()}
		if r.Dst.Bits() > 0 {
			rt.Dst = &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}
		}
		if err := netlink.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding route %s via %s: %w", r.Dst, r.Via, err)
		}
	}
	return nil
}
