package sdn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
)

// netHost is what the Manager needs from the node's network stack: TAP
// devices and sysctls. The real one uses netlink and /proc; tests use a
// stateful fake.
type netHost interface {
	// AddTap creates TAP name (or reuses it), sets addr on it and brings it
	// up. created says whether the device is new.
	AddTap(ctx context.Context, name string, addr netip.Prefix) (created bool, err error)
	// DelLink deletes device name; a missing device is not an error.
	DelLink(ctx context.Context, name string) error
	// Taps lists the TAP devices named like TapName's output.
	Taps(ctx context.Context) ([]string, error)
	// SetSysctl writes value to /proc/sys/<key> (key like net/ipv4/ip_forward).
	SetSysctl(ctx context.Context, key, value string) error
	// ListeningPorts lists the ports with a listening socket, keyed like
	// portKey ("tcp port 22").
	ListeningPorts(ctx context.Context) (map[string]bool, error)
}

// netlinkHost is the real netHost. It works in the network namespace of the
// calling thread.
type netlinkHost struct{}

func (netlinkHost) AddTap(ctx context.Context, name string, addr netip.Prefix) (bool, error) {
	created := false
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE | netlink.TUNTAP_VNET_HDR,
		}
		if err := netlink.LinkAdd(tap); err != nil {
			return false, fmt.Errorf("creating tap %s: %w", name, err)
		}
		created = true
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return created, fmt.Errorf("finding tap %s: %w", name, err)
	}
	if link.Type() != "tuntap" {
		return false, fmt.Errorf("creating tap %s: a %s device has that name", name, link.Type())
	}
	ipnet := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipnet}); err != nil {
		return created, fmt.Errorf("addressing tap %s with %s: %w", name, addr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return created, fmt.Errorf("bringing tap %s up: %w", name, err)
	}
	return created, nil
}

func (netlinkHost) DelLink(ctx context.Context, name string) error {
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding link %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

func (netlinkHost) Taps(ctx context.Context) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "tuntap" && IsTapName(l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

func (netlinkHost) SetSysctl(ctx context.Context, key, value string) error {
	path := filepath.Join("/proc/sys", filepath.Clean("/"+key))
	if cur, err := os.ReadFile(path); err == nil && string(cur) == value+"\n" {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
