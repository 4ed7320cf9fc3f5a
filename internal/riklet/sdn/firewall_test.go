package sdn

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/nftables"

	"github.com/rik-org/rik/internal/workload"
)

func TestParseFirewall(t *testing.T) {
	for in, want := range map[string]string{"": "auto", "auto": "auto", "nftables": "nftables", "iptables": "iptables"} {
		if got, err := ParseFirewall(in); err != nil || got != want {
			t.Errorf("ParseFirewall(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"nft", "IPTABLES", "ebtables"} {
		if _, err := ParseFirewall(bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "want auto, nftables or iptables") {
			t.Errorf("ParseFirewall(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func mapping(id, proto string, port int, ip string, target int) dnat {
	return dnat{ID: id, IP: netip.MustParseAddr(ip), Port: workload.PortMapping{Protocol: proto, Port: port, TargetPort: target}}
}

func TestDiffDNAT(t *testing.T) {
	a := mapping("a", "TCP", 8080, "10.62.0.1", 80)
	b := mapping("b", "UDP", 5353, "10.63.0.5", 53)
	tests := []struct {
		name       string
		prev, next []dnat
		del, add   []dnat
	}{
		{name: "nothing"},
		{name: "same", prev: []dnat{a, b}, next: []dnat{a, b}},
		{name: "add one", prev: []dnat{a}, next: []dnat{a, b}, add: []dnat{b}},
		{name: "remove one", prev: []dnat{a, b}, next: []dnat{b}, del: []dnat{a}},
		{name: "new target port", prev: []dnat{a}, next: []dnat{mapping("a", "TCP", 8080, "10.62.0.1", 81)},
			del: []dnat{a}, add: []dnat{mapping("a", "TCP", 8080, "10.62.0.1", 81)}},
		{name: "new owner", prev: []dnat{a}, next: []dnat{mapping("c", "TCP", 8080, "10.62.0.1", 80)},
			del: []dnat{a}, add: []dnat{mapping("c", "TCP", 8080, "10.62.0.1", 80)}},
		{name: "other protocol is another key", prev: []dnat{a}, next: []dnat{mapping("a", "UDP", 8080, "10.62.0.1", 80)},
			del: []dnat{a}, add: []dnat{mapping("a", "UDP", 8080, "10.62.0.1", 80)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			del, add := diffDNAT(tt.prev, tt.next)
			if diff := cmp.Diff(tt.del, del, cmpNet); diff != "" {
				t.Errorf("del (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.add, add, cmpNet); diff != "" {
				t.Errorf("add (-want +got):\n%s", diff)
			}
		})
	}
}

// A mapping survives the trip through a map element: what reconcile and
// uninstall read back, owner included.
func TestPortElementRoundTrip(t *testing.T) {
	in := []dnat{
		mapping("fn-a", "TCP", 8080, "10.62.0.1", 80),
		mapping(strings.Repeat("x", 128), "UDP", 65535, "10.63.255.254", 1),
	}
	elems := portElements(in)
	if got := elems[0].Key; !slices.Equal(got, []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}) {
		t.Errorf("key of tcp 8080 = % x", got)
	}
	if got := elems[0].Val; !slices.Equal(got, []byte{10, 62, 0, 1, 0, 80, 0, 0}) {
		t.Errorf("value of 10.62.0.1:80 = % x", got)
	}
	for i, e := range elems {
		got, err := parsePortElement(e)
		if err != nil || got != in[i] {
			t.Errorf("parsePortElement(%+v) = %+v, %v; want %+v", e, got, err, in[i])
		}
	}
	for _, bad := range []nftables.SetElement{
		{Key: []byte{6, 0, 0, 0, 0, 80}, Val: make([]byte, 8)},
		{Key: []byte{1, 0, 0, 0, 0, 80, 0, 0}, Val: make([]byte, 8)}, // icmp
		{Key: make([]byte, 8), Val: make([]byte, 4)},
	} {
		if _, err := parsePortElement(bad); err == nil {
			t.Errorf("parsePortElement(%+v): no error", bad)
		}
	}
}

func TestForwardMayDrop(t *testing.T) {
	own := "-A FORWARD -m comment --comment rik -j RIKLET-FORWARD"
	tests := []struct {
		lines []string
		want  bool
	}{
		{[]string{"-P FORWARD ACCEPT"}, false},
		{[]string{"-P FORWARD ACCEPT", own}, false},
		{[]string{"-P FORWARD DROP"}, true},
		{[]string{"-P FORWARD DROP", own}, true},
		{[]string{"-P FORWARD ACCEPT", "-A FORWARD -j DOCKER-USER"}, true},
		{[]string{"-P FORWARD ACCEPT", own, "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"}, true},
	}
	for _, tt := range tests {
		if got := forwardMayDrop(tt.lines); got != tt.want {
			t.Errorf("forwardMayDrop(%q) = %v, want %v", tt.lines, got, tt.want)
		}
	}
}

// The nftables backend keeps RIKLET-FORWARD (and its jump) in iptables
// exactly while the node's FORWARD chain may drop, and none of rik's
// other iptables chains.
func TestNftablesForwardShim(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(FirewallNftables)
	hasShim := func() bool {
		return slices.Contains(b.ipt.chain("filter", "FORWARD"), "-m comment --comment rik -j RIKLET-FORWARD") &&
			len(b.ipt.chain("filter", chainForward)) > 0
	}
	// The fake node's FORWARD holds Docker's jump: it may drop.
	if err := b.fw.Sync(ctx, testRuleConfig, state{}); err != nil {
		t.Fatal(err)
	}
	if !hasShim() {
		t.Errorf("FORWARD with a foreign rule: no RIKLET-FORWARD:\n%v", b.ipt.snapshot()["filter"])
	}
	wantForward := []string{"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-i rik+ -j ACCEPT", "-o rik+ -j ACCEPT", "-i cni0 -j ACCEPT", "-o cni0 -j ACCEPT"}
	if diff := cmp.Diff(wantForward, b.ipt.chain("filter", chainForward)); diff != "" {
		t.Errorf("RIKLET-FORWARD (-want +got):\n%s", diff)
	}
	snap := b.ipt.snapshot()
	for _, c := range []ipChain{{"nat", chainDNAT}, {"nat", chainPost}, {"filter", chainInput}} {
		if _, ok := snap[c.table][c.name]; ok {
			t.Errorf("nftables backend left iptables chain %s %s", c.table, c.name)
		}
	}
	// Policy ACCEPT and no foreign rule: nothing of rik's in iptables.
	if _, err := b.ipt.Delete(ctx, "filter", "FORWARD", "-j", "DOCKER-USER"); err != nil {
		t.Fatal(err)
	}
	if err := b.fw.Sync(ctx, testRuleConfig, state{}); err != nil {
		t.Fatal(err)
	}
	if snap := b.ipt.snapshot(); len(snap["filter"]["FORWARD"]) != 0 || snap["filter"][chainForward] != nil {
		t.Errorf("FORWARD that accepts everything: rik's shim kept:\n%v", snap["filter"])
	}
	// Policy DROP: the shim again.
	b.ipt.policies["filter/FORWARD"] = "DROP"
	if err := b.fw.Sync(ctx, testRuleConfig, state{}); err != nil {
		t.Fatal(err)
	}
	if !hasShim() {
		t.Errorf("FORWARD policy DROP: no RIKLET-FORWARD")
	}
}

// A node switches backends: each one, at start, removes what the other
// left, and the mappings follow the state.
func TestSwitchBackends(t *testing.T) {
	ctx := context.Background()
	ipt, nft := newFakeIptables(), &fakeNft{}
	before := ipt.snapshot()
	iptFW := &iptFirewall{ipt: ipt, nft: nft, log: discard}
	nftFW := &nftFirewall{nft: nft, ipt: ipt, log: discard}
	st := state{"pod-a": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.2"),
		Ports: []workload.PortMapping{{Port: 7000, TargetPort: 80, Protocol: "TCP"}}}}

	if err := iptFW.Sync(ctx, testRuleConfig, st); err != nil {
		t.Fatal(err)
	}
	if err := nftFW.Sync(ctx, testRuleConfig, st); err != nil {
		t.Fatal(err)
	}
	if got := ipt.chain("nat", chainDNAT); got != nil {
		t.Errorf("after switching to nftables, RIKLET = %q", got)
	}
	if nft.table == nil || len(nft.table.elems) != 1 {
		t.Fatalf("after switching to nftables, table %+v", nft.table)
	}
	if err := iptFW.Sync(ctx, testRuleConfig, st); err != nil {
		t.Fatal(err)
	}
	if nft.table != nil {
		t.Errorf("after switching back to iptables, rik's nftables table is still there")
	}
	if got := ipt.chain("nat", chainDNAT); len(got) != 1 || !strings.Contains(got[0], "rik:pod-a") {
		t.Errorf("after switching back to iptables, RIKLET = %q", got)
	}
	if err := iptFW.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, ipt.snapshot(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Remove left (-before +after):\n%s", diff)
	}
}

// A change touches the instances whose entry changed, whatever the size
// of the rest: one mapping out of 1,000 is one element to add.
func TestChangedDNATIsTheChangeOnly(t *testing.T) {
	prev := benchState(1000)
	next := prev.clone()
	next["new"] = entry{Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.9"),
		Ports: []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}}}
	before, after := changedDNAT(prev, next)
	if len(before) != 0 || len(after) != 1 || after[0].ID != "new" {
		t.Errorf("changedDNAT = %v, %v; want only new's mapping added", before, after)
	}
	// One instance changing one of its two ports: one delete, one add.
	prev = state{"p": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.2"), Ports: []workload.PortMapping{
		{Port: 7000, TargetPort: 80, Protocol: "TCP"}, {Port: 7001, TargetPort: 81, Protocol: "TCP"}}}}
	next = state{"p": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.2"), Ports: []workload.PortMapping{
		{Port: 7000, TargetPort: 80, Protocol: "TCP"}, {Port: 7002, TargetPort: 81, Protocol: "TCP"}}}}
	del, add := diffDNAT(changedDNAT(prev, next))
	if len(del) != 1 || del[0].Port.Port != 7001 || len(add) != 1 || add[0].Port.Port != 7002 {
		t.Errorf("diff = -%v +%v; want -7001 +7002", del, add)
	}
}
