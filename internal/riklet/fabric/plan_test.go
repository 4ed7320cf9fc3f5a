package fabric

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func TestBuildPlan(t *testing.T) {
	self := Self{Name: "n1", Addr: addr("192.168.1.1"), Subnet: pfx("10.63.1.0/24"),
		Nets: []netip.Prefix{pfx("192.168.1.0/24")}, Mode: ModeAuto}
	sameL2 := Peer{Name: "n2", Addr: addr("192.168.1.2"), Subnet: pfx("10.63.2.0/24")}
	remote := Peer{Name: "n3", Addr: addr("192.168.9.3"), Subnet: pfx("10.63.3.0/24")}
	direct2 := Route{Dst: pfx("10.63.2.0/24"), Via: addr("192.168.1.2")}
	vx2 := Route{Dst: pfx("10.63.2.0/24"), Via: addr("10.63.2.0"), VXLAN: true}
	vx3 := Route{Dst: pfx("10.63.3.0/24"), Via: addr("10.63.3.0"), VXLAN: true}
	tun2 := Tunnel{VTEP: addr("10.63.2.0"), MAC: VTEPMAC("n2"), Underlay: addr("192.168.1.2")}
	tun3 := Tunnel{VTEP: addr("10.63.3.0"), MAC: VTEPMAC("n3"), Underlay: addr("192.168.9.3")}
	withVTEP := func(p Plan) Plan { p.VTEP, p.VTEPMAC = addr("10.63.1.0"), VTEPMAC("n1"); return p }
	vxlanSelf := self
	vxlanSelf.Mode = ModeVXLAN
	noSubnet := self
	noSubnet.Subnet = netip.Prefix{}

	tests := []struct {
		name    string
		self    Self
		peers   []Peer
		want    Plan
		skipped int
	}{
		{"no peers", self, nil, Plan{}, 0},
		{"same segment: direct", self, []Peer{sameL2}, Plan{Routes: []Route{direct2}}, 0},
		{"other segment: vxlan", self, []Peer{remote}, withVTEP(Plan{Routes: []Route{vx3}, Tunnels: []Tunnel{tun3}}), 0},
		{"mixed, sorted by subnet", self, []Peer{remote, sameL2},
			withVTEP(Plan{Routes: []Route{direct2, vx3}, Tunnels: []Tunnel{tun3}}), 0},
		{"vxlan mode: every peer tunnelled", vxlanSelf, []Peer{sameL2, remote},
			withVTEP(Plan{Routes: []Route{vx2, vx3}, Tunnels: []Tunnel{tun2, tun3}}), 0},
		{"itself skipped", self, []Peer{{Name: "n1", Addr: addr("192.168.1.9"), Subnet: pfx("10.63.9.0/24")}}, Plan{}, 1},
		{"own address skipped", self, []Peer{{Name: "x", Addr: addr("192.168.1.1"), Subnet: pfx("10.63.9.0/24")}}, Plan{}, 1},
		{"loopback address skipped", self, []Peer{{Name: "x", Addr: addr("127.0.0.1"), Subnet: pfx("10.63.9.0/24")}}, Plan{}, 1},
		{"no address skipped", self, []Peer{{Name: "x", Subnet: pfx("10.63.9.0/24")}}, Plan{}, 1},
		{"no subnet skipped", self, []Peer{{Name: "x", Addr: addr("192.168.1.7")}}, Plan{}, 1},
		{"subnet overlapping own skipped", self, []Peer{{Name: "x", Addr: addr("192.168.1.7"), Subnet: pfx("10.63.0.0/16")}}, Plan{}, 1},
		{"second peer with the same subnet skipped", self,
			[]Peer{sameL2, {Name: "y", Addr: addr("192.168.1.8"), Subnet: pfx("10.63.2.0/24")}}, Plan{Routes: []Route{direct2}}, 1},
		{"no own subnet: direct kept, vxlan waits", noSubnet, []Peer{sameL2, remote}, Plan{Routes: []Route{direct2}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, skipped := BuildPlan(tt.self, tt.peers)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if len(skipped) != tt.skipped {
				t.Errorf("skipped %q, want %d", skipped, tt.skipped)
			}
		})
	}
}

func TestVTEPMAC(t *testing.T) {
	a, b := VTEPMAC("node1"), VTEPMAC("node2")
	if a == b || a != VTEPMAC("node1") {
		t.Fatalf("VTEPMAC not stable and distinct: %s %s", a, b)
	}
	if a[:3] != "02:" {
		t.Errorf("VTEPMAC %s: want a locally administered unicast MAC", a)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "vxlan": ModeVXLAN} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("host-gw"); err == nil {
		t.Error("ParseMode(host-gw): no error")
	}
}
