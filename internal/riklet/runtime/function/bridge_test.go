package function

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

func TestNetworkMode(t *testing.T) {
	for _, tt := range []struct{ spec, node, want string }{
		{"", "", workload.NetworkNAT},
		{"", workload.NetworkBridge, workload.NetworkBridge},
		{workload.NetworkNAT, workload.NetworkBridge, workload.NetworkNAT},
		{workload.NetworkBridge, "", workload.NetworkBridge},
	} {
		r := &Runtime{cfg: Config{NetworkMode: tt.node}}
		if got := r.networkMode(&workload.Function{Network: tt.spec}); got != tt.want {
			t.Errorf("networkMode(spec %q, node %q) = %q, want %q", tt.spec, tt.node, got, tt.want)
		}
	}
}

// TestBridgeBoot: in bridge mode the guest's command line carries no
// network (rik-init asks DHCP) and the VMM gets the TAP from the
// Function's namespace without running there; in NAT mode both as before.
func TestBridgeBoot(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	nat := NetConfig{Tap: "rik0123", GuestIP: netip.MustParseAddr("10.62.0.1"), TapIP: netip.MustParseAddr("10.62.0.2"), PrefixLen: 30, Netns: "/run/netns/t"}
	bridge := NetConfig{Mode: workload.NetworkBridge, Tap: "tap0", GuestIP: netip.MustParseAddr("10.63.0.5"), TapIP: netip.MustParseAddr("10.63.0.1"), PrefixLen: 16, Netns: "/var/lib/riklet/functions/bridgenet/netns/x"}
	fn := workload.Function{Execution: workload.Execution{Rootfs: "file:///r"}}

	name, nc, d := bootNet("fn-a", bridge, dns)
	if line := kernelCmdline(name, fn, nc, d, false); strings.Contains(line, "rik.ip=") || strings.Contains(line, "rik.dns=") || strings.Contains(line, "rik.hostname=") {
		t.Errorf("bridge cmdline %q carries network settings", line)
	}
	if ns, tapNS := vmmNetns(bridge); ns != "" || tapNS != bridge.Netns {
		t.Errorf("bridge vmmNetns = %q, %q; want none, %q", ns, tapNS, bridge.Netns)
	}
	name, nc, d = bootNet("fn-a", nat, dns)
	line := kernelCmdline(name, fn, nc, d, false)
	for _, want := range []string{"rik.ip=10.62.0.1/30", "rik.gw=10.62.0.2", "rik.dns=10.0.0.53", "rik.hostname=fn-a"} {
		if !strings.Contains(line, want) {
			t.Errorf("nat cmdline %q lacks %q", line, want)
		}
	}
	if ns, tapNS := vmmNetns(nat); ns != nat.Netns || tapNS != "" {
		t.Errorf("nat vmmNetns = %q, %q; want %q, none", ns, tapNS, nat.Netns)
	}
}
