package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/rik-org/rik/internal/workload"
)

// bootConfig is what rik-init reads from the kernel command line.
type bootConfig struct {
	IP       netip.Prefix      // rik.ip=10.62.0.1/30: eth0's address; invalid = no network
	GW       netip.Addr        // rik.gw=10.62.0.2: default route
	DNS      []netip.Addr      // rik.dns=1.1.1.1,8.8.8.8
	Root     string            // rik.root=/dev/vda
	FSType   string            // rik.rootfstype=ext4
	Init     string            // rik.init=/sbin/init
	Args     []string          // rik.args=a,b (comma separated)
	Hostname string            // rik.hostname=name
	Reboot   bool              // rik.halt=reboot: end the VM with a reboot (Firecracker), not a power off
	Env      []workload.EnvVar // the entrypoint's environment (from execConfigPath, not the command line)
}

// parseCmdline parses the rik.* parameters of a kernel command line; other
// parameters are ignored.
func parseCmdline(s string) (bootConfig, error) {
	c := bootConfig{Root: "/dev/vda", FSType: "ext4", Init: "/sbin/init"}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(k, "rik.") {
			continue
		}
		switch k {
		case "rik.ip":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() {
				return c, fmt.Errorf("rik.ip: invalid address %q", v)
			}
			c.IP = p
		case "rik.gw":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return c, fmt.Errorf("rik.gw: invalid address %q", v)
			}
			c.GW = a
		case "rik.dns":
			c.DNS = nil
			for _, d := range strings.Split(v, ",") {
				a, err := netip.ParseAddr(d)
				if err != nil {
					return c, fmt.Errorf("rik.dns: invalid address %q", d)
				}
				c.DNS = append(c.DNS, a)
			}
		case "rik.root":
			if !strings.HasPrefix(v, "/dev/") {
				return c, fmt.Errorf("rik.root: must be a /dev path, got %q", v)
			}
			c.Root = v
		case "rik.rootfstype":
			if v == "" {
				return c, fmt.Errorf("rik.rootfstype: empty")
			}
			c.FSType = v
		case "rik.init":
			if !strings.HasPrefix(v, "/") {
				return c, fmt.Errorf("rik.init: must be an absolute path, got %q", v)
			}
			c.Init = v
		case "rik.args":
			c.Args = nil
			if v != "" {
				c.Args = strings.Split(v, ",")
			}
		case "rik.hostname":
			c.Hostname = v
		case "rik.halt":
			switch v {
			case "poweroff":
				c.Reboot = false
			case "reboot":
				c.Reboot = true
			default:
				return c, fmt.Errorf("rik.halt: must be poweroff or reboot, got %q", v)
			}
		}
	}
	if c.GW.IsValid() && !c.IP.IsValid() {
		return c, fmt.Errorf("rik.gw: set without rik.ip")
	}
	if c.GW.IsValid() && !c.IP.Contains(c.GW) {
		return c, fmt.Errorf("rik.gw: %s is not in %s", c.GW, c.IP)
	}
	return c, nil
}

// exitCode maps a wait status (exited code, or signal) to a shell-style code.
func exitCode(exited bool, code int, signaled bool, sig int) int {
	switch {
	case exited:
		return code
	case signaled:
		return 128 + sig
	}
	return 255
}
