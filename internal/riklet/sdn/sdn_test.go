package sdn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/rik-org/rik/internal/workload"
)

func TestTapName(t *testing.T) {
	ids := []string{"3f0c6f5e-8a3b-4a51-9d0f-5f2b7c1e2d44", "a", "b", strings.Repeat("x", 128)}
	seen := map[string]string{}
	for _, id := range ids {
		name := TapName(id)
		if len(name) > 15 {
			t.Errorf("TapName(%q) = %q: longer than 15", id, name)
		}
		if !IsTapName(name) {
			t.Errorf("IsTapName(TapName(%q)) = false", id)
		}
		if TapName(id) != name {
			t.Errorf("TapName(%q) not deterministic", id)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("ids %q and %q share tap %s", id, other, name)
		}
		seen[name] = id
	}
	for _, name := range []string{"rik0", "rik", "eth0", "rik0123456789a", "rikABCDEF0123", "xrik0123456789"} {
		if IsTapName(name) {
			t.Errorf("IsTapName(%q) = true, want false", name)
		}
	}
}

func TestGuestMAC(t *testing.T) {
	seen := map[string]bool{}
	for i := range 1000 {
		id := fmt.Sprintf("instance-%d", i)
		mac := GuestMAC(id)
		if len(mac) != 6 {
			t.Fatalf("GuestMAC(%q) = %s: want 6 bytes", id, mac)
		}
		if mac[0]&0x02 == 0 {
			t.Errorf("GuestMAC(%q) = %s: not locally administered", id, mac)
		}
		if mac[0]&0x01 != 0 {
			t.Errorf("GuestMAC(%q) = %s: multicast", id, mac)
		}
		if GuestMAC(id).String() != mac.String() {
			t.Errorf("GuestMAC(%q) not deterministic", id)
		}
		if seen[mac.String()] {
			t.Errorf("GuestMAC(%q) = %s: duplicate", id, mac)
		}
		seen[mac.String()] = true
	}
}

func TestNormalizePorts(t *testing.T) {
	tests := []struct {
		name    string
		in      []workload.PortMapping
		want    []workload.PortMapping
		wantErr error
	}{
		{name: "empty", in: nil, want: []workload.PortMapping{}},
		{
			name: "defaults and order",
			in:   []workload.PortMapping{{Port: 9000, TargetPort: 80}, {Port: 53, Protocol: "udp"}, {Port: 443}},
			want: []workload.PortMapping{
				{Port: 443, TargetPort: 443, Protocol: "TCP"},
				{Port: 9000, TargetPort: 80, Protocol: "TCP"},
				{Port: 53, TargetPort: 53, Protocol: "UDP"},
			},
		},
		{name: "not exposed dropped", in: []workload.PortMapping{{Port: 0, TargetPort: 80}}, want: []workload.PortMapping{}},
		{name: "same port tcp and udp", in: []workload.PortMapping{{Port: 53}, {Port: 53, Protocol: "UDP"}},
			want: []workload.PortMapping{{Port: 53, TargetPort: 53, Protocol: "TCP"}, {Port: 53, TargetPort: 53, Protocol: "UDP"}}},
		{name: "port too big", in: []workload.PortMapping{{Port: 70000}}, wantErr: ErrInvalid},
		{name: "negative port", in: []workload.PortMapping{{Port: -1}}, wantErr: ErrInvalid},
		{name: "target too big", in: []workload.PortMapping{{Port: 80, TargetPort: 65536}}, wantErr: ErrInvalid},
		{name: "bad protocol", in: []workload.PortMapping{{Port: 80, Protocol: "sctp"}}, wantErr: ErrInvalid},
		{name: "twice", in: []workload.PortMapping{{Port: 80, TargetPort: 1}, {Port: 80, TargetPort: 2}}, wantErr: ErrPortConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalizePorts(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); tt.wantErr == nil && diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConflict(t *testing.T) {
	st := state{
		"fn-a":  {Kind: workload.KindFunction, IP: netip.MustParseAddr("10.62.0.1"), Ports: []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}}},
		"pod-b": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.5"), Ports: []workload.PortMapping{{Port: 53, TargetPort: 53, Protocol: "UDP"}}},
	}
	tests := []struct {
		id    string
		ports []workload.PortMapping
		owner string // "" = no conflict
	}{
		{"fn-c", []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}}, "fn-a"},
		{"fn-c", []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "UDP"}}, ""},
		{"fn-c", []workload.PortMapping{{Port: 53, TargetPort: 53, Protocol: "UDP"}}, "pod-b"},
		{"fn-a", []workload.PortMapping{{Port: 8080, TargetPort: 81, Protocol: "TCP"}}, ""}, // its own port
		{"fn-c", []workload.PortMapping{{Port: 8081, TargetPort: 80, Protocol: "TCP"}}, ""},
	}
	for _, tt := range tests {
		err := st.conflict(tt.id, tt.ports)
		if tt.owner == "" {
			if err != nil {
				t.Errorf("conflict(%s, %v) = %v, want nil", tt.id, tt.ports, err)
			}
			continue
		}
		if !errors.Is(err, ErrPortConflict) || !strings.Contains(err.Error(), tt.owner) ||
			!strings.Contains(err.Error(), fmt.Sprint(tt.ports[0].Port)) {
			t.Errorf("conflict(%s, %v) = %v, want ErrPortConflict naming port and %s", tt.id, tt.ports, err, tt.owner)
		}
	}
}

var testRuleConfig = ruleConfig{
	FunctionPool:   netip.MustParsePrefix("10.62.0.0/16"),
	PodCIDR:        netip.MustParsePrefix("10.63.0.0/16"),
	PodBridge:      "cni0",
	ProtectedPorts: []int{2379, 4995, 5000},
}

func TestRender(t *testing.T) {
	base := func(dnat string) string {
		return "*nat\n" +
			":RIKLET - [0:0]\n:RIKLET-POSTROUTING - [0:0]\n" + dnat +
			"-A RIKLET-POSTROUTING -s 10.62.0.0/16 ! -d 10.62.0.0/16 -j MASQUERADE\n" +
			"-A RIKLET-POSTROUTING -s 10.63.0.0/16 ! -d 10.63.0.0/16 -j MASQUERADE\n" +
			"-A RIKLET-POSTROUTING -s 10.62.0.0/16 -d 10.62.0.0/16 -m conntrack --ctstate DNAT -j MASQUERADE\n" +
			"-A RIKLET-POSTROUTING -s 10.63.0.0/16 -d 10.63.0.0/16 -m conntrack --ctstate DNAT -j MASQUERADE\n" +
			"-A RIKLET-POSTROUTING -s 127.0.0.0/8 -o rik+ -j MASQUERADE\n" +
			"-A RIKLET-POSTROUTING -s 127.0.0.0/8 -o cni0 -j MASQUERADE\n" +
			"COMMIT\n" +
			"*filter\n" +
			":RIKLET-FORWARD - [0:0]\n:RIKLET-INPUT - [0:0]\n" +
			"-A RIKLET-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
			"-A RIKLET-FORWARD -i rik+ -j ACCEPT\n-A RIKLET-FORWARD -o rik+ -j ACCEPT\n" +
			"-A RIKLET-FORWARD -i cni0 -j ACCEPT\n-A RIKLET-FORWARD -o cni0 -j ACCEPT\n" +
			"-A RIKLET-INPUT -i rik+ -d 127.0.0.0/8 -m conntrack --ctstate NEW,INVALID -j DROP\n" +
			"-A RIKLET-INPUT -i cni0 -d 127.0.0.0/8 -m conntrack --ctstate NEW,INVALID -j DROP\n" +
			"-A RIKLET-INPUT -i rik+ -p tcp -m multiport --dports 2379,4995,5000 -j REJECT --reject-with tcp-reset\n" +
			"-A RIKLET-INPUT -i rik+ -p udp -m multiport --dports 2379,4995,5000 -j REJECT --reject-with icmp-port-unreachable\n" +
			"-A RIKLET-INPUT -i cni0 -p tcp -m multiport --dports 2379,4995,5000 -j REJECT --reject-with tcp-reset\n" +
			"-A RIKLET-INPUT -i cni0 -p udp -m multiport --dports 2379,4995,5000 -j REJECT --reject-with icmp-port-unreachable\n" +
			"COMMIT\n"
	}
	tests := []struct {
		name string
		st   state
		want string
	}{
		{name: "empty", st: state{}, want: base("")},
		{
			name: "function and pod, sorted by protocol and port",
			st: state{
				"fn-a": {Kind: workload.KindFunction, IP: netip.MustParseAddr("10.62.0.1"), Ports: []workload.PortMapping{
					{Port: 8080, TargetPort: 80, Protocol: "TCP"}, {Port: 5353, TargetPort: 53, Protocol: "UDP"}}},
				"pod-b": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.5"), Ports: []workload.PortMapping{
					{Port: 443, TargetPort: 8443, Protocol: "TCP"}}},
				"pod-c": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.6")}, // nothing exposed
			},
			want: base(
				"-A RIKLET -p tcp -m tcp --dport 443 -m comment --comment \"rik:pod-b\" -j DNAT --to-destination 10.63.0.5:8443\n" +
					"-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment \"rik:fn-a\" -j DNAT --to-destination 10.62.0.1:80\n" +
					"-A RIKLET -p udp -m udp --dport 5353 -m comment --comment \"rik:fn-a\" -j DNAT --to-destination 10.62.0.1:53\n"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(render(testRuleConfig, tt.st))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			for range 20 { // map order must not leak into the text
				if again := string(render(testRuleConfig, tt.st.clone())); again != got {
					t.Fatalf("render is not deterministic")
				}
			}
		})
	}
}

func TestProtectedPorts(t *testing.T) {
	tests := []struct {
		extra []int
		want  []int
		err   bool
	}{
		{nil, []int{2379, 2380, 4995, 4996, 5000}, false},
		{[]int{22, 5000, 8443, 22}, []int{22, 2379, 2380, 4995, 4996, 5000, 8443}, false},
		{[]int{0}, nil, true},
		{[]int{65536}, nil, true},
	}
	for _, tt := range tests {
		got, err := protectedPorts(tt.extra)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("protectedPorts(%v) = %v, %v; want %v (error %v)", tt.extra, got, err, tt.want, tt.err)
		}
		if tt.err && !errors.Is(err, ErrInvalid) {
			t.Errorf("protectedPorts(%v) error %v does not wrap ErrInvalid", tt.extra, err)
		}
	}
	if DefaultProtectedPorts[0] != 2379 || len(DefaultProtectedPorts) != 5 {
		t.Errorf("protectedPorts changed the defaults: %v", DefaultProtectedPorts)
	}
}

// More ports than one multiport match takes are split over rules.
func TestRenderManyProtectedPorts(t *testing.T) {
	cfg := testRuleConfig
	cfg.PodBridge = "rik0"
	cfg.ProtectedPorts = nil
	for p := 1; p <= 17; p++ {
		cfg.ProtectedPorts = append(cfg.ProtectedPorts, 1000+p)
	}
	got := string(render(cfg, state{}))
	for _, want := range []string{
		"-A RIKLET-INPUT -i rik+ -p tcp -m multiport --dports 1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014,1015 -j REJECT --reject-with tcp-reset\n",
		"-A RIKLET-INPUT -i rik+ -p tcp -m multiport --dports 1016,1017 -j REJECT --reject-with tcp-reset\n",
		"-A RIKLET-INPUT -i rik+ -p udp -m multiport --dports 1016,1017 -j REJECT --reject-with icmp-port-unreachable\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rules lack %q:\n%s", want, got)
		}
	}
}

func TestRenderBridgeCoveredByTapPattern(t *testing.T) {
	cfg := testRuleConfig
	cfg.PodBridge = "rik0"
	got := string(render(cfg, state{}))
	if strings.Contains(got, "rik0") {
		t.Errorf("rules name rik0 although rik+ covers it:\n%s", got)
	}
}

// newTestManager returns a Manager over fakes with backend b, in a fresh
// state dir.
func newTestManager(t *testing.T, b *testBackend) (*Manager, *fakeHost, Config) {
	t.Helper()
	cfg := Config{StateDir: t.TempDir()}
	host := newFakeHost()
	m, err := newManager(context.Background(), cfg, b.fw, host)
	if err != nil {
		t.Fatalf("newManager: %v", err)
	}
	return m, host, cfg
}

func TestNewEnsuresChainsAndJumpsOnce(t *testing.T) {
	b := newTestBackend(FirewallIptables)
	_, host, cfg := newTestManager(t, b)
	for range 2 { // a second start changes nothing
		if _, err := newManager(context.Background(), cfg, b.fw, host); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]string{
		"nat/PREROUTING":     {"-m addrtype --dst-type LOCAL -m comment --comment rik -j RIKLET", "-m addrtype --dst-type LOCAL -j DOCKER"},
		"nat/OUTPUT":         {"-m addrtype --dst-type LOCAL -m comment --comment rik -j RIKLET"},
		"nat/POSTROUTING":    {"-m comment --comment rik -j RIKLET-POSTROUTING", "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"},
		"nat/DOCKER":         {"-i docker0 -j RETURN"},
		"filter/FORWARD":     {"-m comment --comment rik -j RIKLET-FORWARD", "-j DOCKER-USER"},
		"filter/INPUT":       {"-m comment --comment rik -j RIKLET-INPUT", "-j ACCEPT"},
		"filter/DOCKER-USER": {"-j RETURN"},
	}
	for tc, rules := range want {
		table, chain, _ := strings.Cut(tc, "/")
		if diff := cmp.Diff(rules, b.ipt.chain(table, chain)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc, diff)
		}
	}
	if n := len(b.ipt.chain("nat", chainPost)); n != 5 {
		t.Errorf("%s has %d rules, want 5", chainPost, n)
	}
	if got := host.sysctl("net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward = %q, want 1", got)
	}
}

// cmpNet lets cmp compare netip values.
var cmpNet = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestSetupFunction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, _ := newTestManager(t, b)
		ctx := context.Background()
		ports := []workload.PortMapping{{Port: 8080, TargetPort: 80}}
		n, err := m.SetupFunction(ctx, "fn-a", ports)
		if err != nil {
			t.Fatal(err)
		}
		want := FunctionNet{
			Tap:     TapName("fn-a"),
			GuestIP: netip.MustParseAddr("10.62.0.1"),
			TapIP:   netip.MustParseAddr("10.62.0.2"),
			Prefix:  netip.MustParsePrefix("10.62.0.0/30"),
			MAC:     GuestMAC("fn-a"),
			Ports:   []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}},
		}
		if diff := cmp.Diff(want, n, cmpNet); diff != "" {
			t.Errorf("FunctionNet (-want +got):\n%s", diff)
		}
		l, ok := host.link(n.Tap)
		if !ok || !l.tap || !l.up || l.addr != netip.MustParsePrefix("10.62.0.2/30") {
			t.Errorf("tap %s = %+v, %v; want an up tap with 10.62.0.2/30", n.Tap, l, ok)
		}
		if got := host.sysctl("net/ipv6/conf/" + n.Tap + "/disable_ipv6"); got != "1" {
			t.Errorf("disable_ipv6 on tap = %q, want 1", got)
		}
		if got := host.sysctl("net/ipv4/conf/" + n.Tap + "/route_localnet"); got != "1" {
			t.Errorf("route_localnet on tap = %q, want 1", got)
		}
		if diff := cmp.Diff([]string{"tcp 8080 -> 10.62.0.1:80 fn-a"}, b.mappings(t)); diff != "" {
			t.Errorf("mappings (-want +got):\n%s", diff)
		}

		// Idempotent: same answer, nothing reprogrammed.
		applies := b.applies()
		again, err := m.SetupFunction(ctx, "fn-a", ports)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(n, again, cmpNet); diff != "" {
			t.Errorf("second SetupFunction (-first +second):\n%s", diff)
		}
		if b.applies() != applies {
			t.Errorf("second SetupFunction reprogrammed the firewall")
		}
		if got, ok := m.Lookup("fn-a"); !ok || !cmp.Equal(got, n, cmpNet) {
			t.Errorf("Lookup = %+v, %v", got, ok)
		}

		// A second function gets the next /30.
		n2, err := m.SetupFunction(ctx, "fn-b", nil)
		if err != nil {
			t.Fatal(err)
		}
		if n2.Prefix != netip.MustParsePrefix("10.62.0.4/30") || n2.GuestIP != netip.MustParseAddr("10.62.0.5") {
			t.Errorf("second function got %s guest %s", n2.Prefix, n2.GuestIP)
		}
	})
}

func TestSetupFunctionRejectsBadInput(t *testing.T) {
	m, host, _ := newTestManager(t, newTestBackend(FirewallNftables))
	ctx := context.Background()
	for _, tc := range []struct {
		id    string
		ports []workload.PortMapping
	}{
		{"", nil},
		{"a b", nil},
		{`x"; -j ACCEPT`, nil},
		{"fn", []workload.PortMapping{{Port: 99999}}},
	} {
		if _, err := m.SetupFunction(ctx, tc.id, tc.ports); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetupFunction(%q, %v) = %v, want ErrInvalid", tc.id, tc.ports, err)
		}
	}
	if taps, _ := host.Taps(ctx); len(taps) != 0 {
		t.Errorf("rejected setups left taps %v", taps)
	}
	if o := m.pool.Owners(); len(o) != 0 {
		t.Errorf("rejected setups left leases %v", o)
	}
}

func TestPortConflicts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, _ := newTestManager(t, b)
		ctx := context.Background()
		if _, err := m.SetupFunction(ctx, "fn-a", []workload.PortMapping{{Port: 8080, TargetPort: 80}}); err != nil {
			t.Fatal(err)
		}
		before := b.mappings(t)

		_, err := m.SetupFunction(ctx, "fn-b", []workload.PortMapping{{Port: 8080, TargetPort: 80}})
		if !errors.Is(err, ErrPortConflict) || !strings.Contains(err.Error(), "8080") || !strings.Contains(err.Error(), "fn-a") {
			t.Errorf("function on a taken port: err = %v, want ErrPortConflict naming 8080 and fn-a", err)
		}
		if _, ok := host.link(TapName("fn-b")); ok {
			t.Errorf("refused function left its tap")
		}
		if _, ok := m.pool.Lookup("fn-b"); ok {
			t.Errorf("refused function left its lease")
		}

		err = m.Expose(ctx, "pod-c", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 9000}, {Port: 8080}})
		if !errors.Is(err, ErrPortConflict) || !strings.Contains(err.Error(), "fn-a") {
			t.Errorf("pod on a taken port: err = %v, want ErrPortConflict naming fn-a", err)
		}
		if diff := cmp.Diff(before, b.mappings(t)); diff != "" {
			t.Errorf("refused requests changed the mappings (-before +after):\n%s", diff)
		}

		// UDP 8080 is another port.
		if err := m.Expose(ctx, "pod-c", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 8080, Protocol: "UDP"}}); err != nil {
			t.Errorf("udp 8080 next to tcp 8080: %v", err)
		}
		// Once fn-a is gone its port is free.
		if err := m.TeardownFunction(ctx, "fn-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.SetupFunction(ctx, "fn-b", []workload.PortMapping{{Port: 8080, TargetPort: 80}}); err != nil {
			t.Errorf("port freed by teardown: %v", err)
		}
		want := []string{"tcp 8080 -> 10.62.0.1:80 fn-b", "udp 8080 -> 10.63.0.5:8080 pod-c"}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings (-want +got):\n%s", diff)
		}
	})
}

func TestSetupFunctionRollsBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, cfg := newTestManager(t, b)
		ctx := context.Background()
		if _, err := m.SetupFunction(ctx, "fn-a", []workload.PortMapping{{Port: 8080}}); err != nil {
			t.Fatal(err)
		}
		before := b.mappings(t)

		b.failApplies(errors.New("firewall: boom"))
		if _, err := m.SetupFunction(ctx, "fn-b", []workload.PortMapping{{Port: 9090}}); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("SetupFunction with a failing firewall = %v, want its error", err)
		}
		b.failApplies(nil)
		if _, ok := host.link(TapName("fn-b")); ok {
			t.Errorf("failed setup left its tap")
		}
		if _, ok := m.pool.Lookup("fn-b"); ok {
			t.Errorf("failed setup left its lease")
		}
		if diff := cmp.Diff(before, b.mappings(t)); diff != "" {
			t.Errorf("failed setup changed the mappings (-before +after):\n%s", diff)
		}

		host.failAdd = errors.New("netlink: boom")
		if _, err := m.SetupFunction(ctx, "fn-c", nil); err == nil {
			t.Fatal("SetupFunction with a failing netlink: want error")
		}
		host.failAdd = nil
		if _, ok := m.pool.Lookup("fn-c"); ok {
			t.Errorf("failed setup left its lease")
		}

		// The persisted state did not keep the failed setups either.
		m2, err := newManager(ctx, cfg, b.reboot().fw, host)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m2.st["fn-b"]; ok {
			t.Errorf("failed setup persisted")
		}
		if _, ok := m2.st["fn-a"]; !ok {
			t.Errorf("fn-a lost from the persisted state")
		}
		// A retry after the failure gets a fresh, working network.
		n, err := m.SetupFunction(ctx, "fn-b", []workload.PortMapping{{Port: 9090}})
		if err != nil {
			t.Fatal(err)
		}
		if n.Prefix != netip.MustParsePrefix("10.62.0.4/30") {
			t.Errorf("retry got %s, want the block the failure released", n.Prefix)
		}
	})
}

func TestTeardownRemovesExactlyTheInstance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, _ := newTestManager(t, b)
		ctx := context.Background()
		if _, err := m.SetupFunction(ctx, "fn-a", []workload.PortMapping{{Port: 8080, TargetPort: 80}, {Port: 8081, TargetPort: 81}}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.SetupFunction(ctx, "fn-b", []workload.PortMapping{{Port: 9090, TargetPort: 90}}); err != nil {
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "pod-c", netip.MustParseAddr("10.63.0.7"), []workload.PortMapping{{Port: 7070}}); err != nil {
			t.Fatal(err)
		}
		// A pod id given to TeardownFunction removes nothing of the pod.
		if err := m.TeardownFunction(ctx, "pod-c"); err != nil {
			t.Fatal(err)
		}
		if err := m.TeardownFunction(ctx, "fn-a"); err != nil {
			t.Fatal(err)
		}
		want := []string{"tcp 7070 -> 10.63.0.7:7070 pod-c", "tcp 9090 -> 10.62.0.5:90 fn-b"}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings after teardown (-want +got):\n%s", diff)
		}
		if _, ok := host.link(TapName("fn-a")); ok {
			t.Errorf("tap of fn-a still there")
		}
		if _, ok := host.link(TapName("fn-b")); !ok {
			t.Errorf("tap of fn-b removed")
		}
		if diff := cmp.Diff([]string{"fn-b"}, m.pool.Owners()); diff != "" {
			t.Errorf("leases (-want +got):\n%s", diff)
		}
		if err := m.TeardownFunction(ctx, "fn-a"); err != nil {
			t.Errorf("second teardown: %v", err)
		}
		if err := m.TeardownFunction(ctx, "never-seen"); err != nil {
			t.Errorf("teardown of an unknown id: %v", err)
		}

		if err := m.Unexpose(ctx, "fn-b"); err != nil { // a function id: nothing to do
			t.Fatal(err)
		}
		if err := m.Unexpose(ctx, "pod-c"); err != nil {
			t.Fatal(err)
		}
		if err := m.Unexpose(ctx, "pod-c"); err != nil {
			t.Errorf("second Unexpose: %v", err)
		}
		if diff := cmp.Diff(want[1:], b.mappings(t)); diff != "" {
			t.Errorf("mappings after unexpose (-want +got):\n%s", diff)
		}
	})
}

func TestExpose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, _ := newTestManager(t, b)
		ctx := context.Background()
		ip := netip.MustParseAddr("10.63.0.9")
		if err := m.Expose(ctx, "pod-a", ip, []workload.PortMapping{{Port: 8080, TargetPort: 80}}); err != nil {
			t.Fatal(err)
		}
		if got := host.sysctl("net/ipv4/conf/rik0/route_localnet"); got != "1" {
			t.Errorf("route_localnet on the pod bridge = %q, want 1", got)
		}
		applies := b.applies()
		if err := m.Expose(ctx, "pod-a", ip, []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "tcp"}}); err != nil {
			t.Fatal(err)
		}
		if b.applies() != applies {
			t.Errorf("exposing the same ports again reprogrammed the firewall")
		}
		// New ports replace the old ones.
		if err := m.Expose(ctx, "pod-a", ip, []workload.PortMapping{{Port: 8443, TargetPort: 443}}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"tcp 8443 -> 10.63.0.9:443 pod-a"}, b.mappings(t)); diff != "" {
			t.Errorf("mappings (-want +got):\n%s", diff)
		}
		// The same port to another target: replaced.
		if err := m.Expose(ctx, "pod-a", ip, []workload.PortMapping{{Port: 8443, TargetPort: 8443}}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"tcp 8443 -> 10.63.0.9:8443 pod-a"}, b.mappings(t)); diff != "" {
			t.Errorf("mappings (-want +got):\n%s", diff)
		}
		// No ports: nothing exposed.
		if err := m.Expose(ctx, "pod-a", ip, nil); err != nil {
			t.Fatal(err)
		}
		if got := b.mappings(t); len(got) != 0 {
			t.Errorf("mappings after exposing nothing: %v", got)
		}
		for _, bad := range []netip.Addr{{}, netip.MustParseAddr("fd00::1")} {
			if err := m.Expose(ctx, "pod-a", bad, []workload.PortMapping{{Port: 1}}); !errors.Is(err, ErrInvalid) {
				t.Errorf("Expose to %v: err = %v, want ErrInvalid", bad, err)
			}
		}
		if _, err := m.SetupFunction(ctx, "fn", nil); err != nil {
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "fn", ip, []workload.PortMapping{{Port: 1}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Expose of a function id: err = %v, want ErrInvalid", err)
		}
	})
}

func TestReconcile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, cfg := newTestManager(t, b)
		ctx := context.Background()
		for i, id := range []string{"fn-keep", "fn-gone"} {
			if _, err := m.SetupFunction(ctx, id, []workload.PortMapping{{Port: 8007 + i}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Expose(ctx, "pod-keep", netip.MustParseAddr("10.63.0.2"), []workload.PortMapping{{Port: 7000}}); err != nil {
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "pod-gone", netip.MustParseAddr("10.63.0.3"), []workload.PortMapping{{Port: 7001}}); err != nil {
			t.Fatal(err)
		}
		// An orphan TAP and lease from a crash before the state was written.
		host.links[TapName("crashed")] = fakeLink{tap: true}
		if _, err := m.pool.Allocate("crashed"); err != nil {
			t.Fatal(err)
		}

		// The riklet restarts: the node rebooted, so nothing is programmed.
		b = b.reboot()
		m2, err := newManager(ctx, cfg, b.fw, host)
		if err != nil {
			t.Fatal(err)
		}
		if err := m2.Reconcile(ctx, []string{"fn-keep", "pod-keep"}); err != nil {
			t.Fatal(err)
		}
		want := []string{"tcp 7000 -> 10.63.0.2:7000 pod-keep", "tcp 8007 -> 10.62.0.1:8007 fn-keep"}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings after reconcile (-want +got):\n%s", diff)
		}
		taps, _ := host.Taps(ctx)
		if diff := cmp.Diff([]string{TapName("fn-keep")}, taps); diff != "" {
			t.Errorf("taps (-want +got):\n%s", diff)
		}
		if _, ok := host.link("rik0"); !ok {
			t.Errorf("reconcile deleted the pod bridge")
		}
		if diff := cmp.Diff([]string{"fn-keep"}, m2.pool.Owners()); diff != "" {
			t.Errorf("leases (-want +got):\n%s", diff)
		}

		// Reconciling the same state again changes nothing.
		if err := m2.Reconcile(ctx, []string{"fn-keep", "pod-keep"}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings after second reconcile (-want +got):\n%s", diff)
		}
	})
}

// A riklet killed between writing its state and programming the
// firewall, or whose rules someone changed: the next start makes the
// mappings exactly the state's again, removing those nobody owns.
func TestStartRepairsMappings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, host, cfg := newTestManager(t, b)
		ctx := context.Background()
		if err := m.Expose(ctx, "pod-a", netip.MustParseAddr("10.63.0.2"), []workload.PortMapping{{Port: 7000}}); err != nil {
			t.Fatal(err)
		}
		// Crash after the state was saved, before pod-b's mapping was
		// programmed; a stray mapping of an instance nobody knows.
		st := m.st.clone()
		st["pod-b"] = entry{Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.3"), Ports: []workload.PortMapping{{Port: 7001, TargetPort: 7001, Protocol: "TCP"}}}
		if err := saveState(m.statePath, st); err != nil {
			t.Fatal(err)
		}
		stray := state{"stray": {Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.9"), Ports: []workload.PortMapping{{Port: 6000, TargetPort: 1, Protocol: "TCP"}}}}
		if err := b.fw.Update(ctx, testRuleConfig, state{}, stray); err != nil {
			t.Fatal(err)
		}
		if _, err := newManager(ctx, cfg, b.fw, host); err != nil {
			t.Fatal(err)
		}
		want := []string{"tcp 7000 -> 10.63.0.2:7000 pod-a", "tcp 7001 -> 10.63.0.3:7001 pod-b"}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings after restart (-want +got):\n%s", diff)
		}
	})
}

// A change that cannot be applied as a difference (the rules are not
// what rik left) rebuilds the whole of rik's rules.
func TestChangeRebuildsWhenRulesDrifted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, _, _ := newTestManager(t, b)
		ctx := context.Background()
		if err := m.Expose(ctx, "pod-a", netip.MustParseAddr("10.63.0.2"), []workload.PortMapping{{Port: 7000}}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.nft.Delete(ctx); err != nil { // someone deleted rik's table
			t.Fatal(err)
		}
		if err := b.ipt.Restore(ctx, []byte("*nat\n:RIKLET - [0:0]\nCOMMIT\n")); err != nil { // or flushed RIKLET
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "pod-b", netip.MustParseAddr("10.63.0.3"), []workload.PortMapping{{Port: 7001}}); err != nil {
			t.Fatal(err)
		}
		want := []string{"tcp 7000 -> 10.63.0.2:7000 pod-a", "tcp 7001 -> 10.63.0.3:7001 pod-b"}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings (-want +got):\n%s", diff)
		}
	})
}

// RIK leaked a /30 per Function and ran dry after 64; rik must not.
func TestFunctionsNeverRunDry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		cfg := Config{StateDir: t.TempDir(), FunctionPool: netip.MustParsePrefix("10.62.0.0/24")} // 64 blocks
		host := newFakeHost()
		m, err := newManager(context.Background(), cfg, b.fw, host)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 200 {
			id := fmt.Sprintf("fn-%d", i)
			if _, err := m.SetupFunction(ctx, id, []workload.PortMapping{{Port: 10000 + i%5}}); err != nil {
				t.Fatalf("setup %d: %v", i, err)
			}
			if err := m.TeardownFunction(ctx, id); err != nil {
				t.Fatalf("teardown %d: %v", i, err)
			}
		}
		if taps, _ := host.Taps(ctx); len(taps) != 0 {
			t.Errorf("taps left: %v", taps)
		}
		if got := b.mappings(t); len(got) != 0 {
			t.Errorf("mappings left: %v", got)
		}
	})
}

// One change is one batch, whatever the number of mappings already there;
// with nftables, that batch changes one element.
func TestOneChangeOneBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, _, _ := newTestManager(t, b)
		ctx := context.Background()
		m.mu.Lock()
		err := m.commit(ctx, benchState(1000))
		m.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		before := b.applies()
		if _, err := m.SetupFunction(ctx, "fn", []workload.PortMapping{{Port: 8080}}); err != nil {
			t.Fatal(err)
		}
		if n := b.applies() - before; n != 1 {
			t.Errorf("adding one function with 1000 mappings present took %d batches, want 1", n)
		}
		if n := len(b.mappings(t)); n != 1001 {
			t.Errorf("%d mappings, want 1001", n)
		}
		if err := m.TeardownFunction(ctx, "fn"); err != nil {
			t.Fatal(err)
		}
		if n := b.applies() - before; n != 2 {
			t.Errorf("removing it took %d batches, want 1", n-1)
		}
		if b.name == FirewallNftables && b.nft.changed != 1 {
			t.Errorf("removing one mapping changed %d map elements, want 1", b.nft.changed)
		}
	})
}

func TestStateFileDropsGarbage(t *testing.T) {
	b := newTestBackend(FirewallNftables)
	m, host, cfg := newTestManager(t, b)
	ctx := context.Background()
	if err := m.Expose(ctx, "pod-a", netip.MustParseAddr("10.63.0.2"), []workload.PortMapping{{Port: 7000}}); err != nil {
		t.Fatal(err)
	}
	st, err := loadState(m.statePath)
	if err != nil {
		t.Fatal(err)
	}
	st["bad id"] = entry{Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.3")}
	st["bad-port"] = entry{Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.4"), Ports: []workload.PortMapping{{Port: -5}}}
	if err := saveState(m.statePath, st); err != nil {
		t.Fatal(err)
	}
	m2, err := newManager(ctx, cfg, b.reboot().fw, host)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m2.st["pod-a"]; !ok || len(m2.st) != 1 {
		t.Errorf("state after reload = %v, want only pod-a", m2.st)
	}
}

func TestTeardownKeepsLeaseWhileTapRemains(t *testing.T) {
	m, host, _ := newTestManager(t, newTestBackend(FirewallNftables))
	ctx := context.Background()
	if _, err := m.SetupFunction(ctx, "fn-a", nil); err != nil {
		t.Fatal(err)
	}
	host.failDel = errors.New("netlink: busy")
	if err := m.TeardownFunction(ctx, "fn-a"); err == nil {
		t.Fatal("teardown with a failing link delete: want error")
	}
	if _, ok := m.pool.Lookup("fn-a"); !ok {
		t.Errorf("lease released while its address is still on the tap")
	}
	host.failDel = nil
	if err := m.TeardownFunction(ctx, "fn-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.pool.Lookup("fn-a"); ok {
		t.Errorf("lease kept after a successful teardown")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{}, // no StateDir
		{StateDir: t.TempDir(), FunctionPool: netip.MustParsePrefix("10.0.0.0/8")}, // overlaps the default PodCIDR
		{StateDir: t.TempDir(), PodCIDR: netip.MustParsePrefix("fd00::/64")},
		{StateDir: t.TempDir(), FunctionPool: netip.MustParsePrefix("10.62.0.0/31")}, // smaller than a /30
	} {
		if _, err := newManager(context.Background(), cfg, newTestBackend(FirewallNftables).fw, newFakeHost()); err == nil {
			t.Errorf("newManager(%+v): want error", cfg)
		}
	}
}

// Each runtime reconciles its own kind: the pod runtime's recovery must not
// drop the rules of Functions, nor the function runtime's those of pods.
func TestReconcileKind(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, _, _ := newTestManager(t, b)
		ctx := context.Background()
		for i, id := range []string{"fn-keep", "fn-gone"} {
			if _, err := m.SetupFunction(ctx, id, []workload.PortMapping{{Port: 8007 + i}}); err != nil {
				t.Fatal(err)
			}
		}
		for i, id := range []string{"pod-keep", "pod-gone"} {
			if err := m.Expose(ctx, id, netip.MustParseAddr("10.63.0.4"), []workload.PortMapping{{Port: 7000 + i}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.ReconcileKind(ctx, workload.KindPod, []string{"pod-keep"}); err != nil {
			t.Fatal(err)
		}
		if err := m.ReconcileKind(ctx, workload.KindFunction, []string{"fn-keep"}); err != nil {
			t.Fatal(err)
		}
		want := []string{"tcp 7000 -> 10.63.0.4:7000 pod-keep", "tcp 8007 -> 10.62.0.1:8007 fn-keep"}
		if diff := cmp.Diff(want, b.mappings(t)); diff != "" {
			t.Errorf("mappings after per-kind reconcile (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"fn-keep"}, m.pool.Owners()); diff != "" {
			t.Errorf("leases (-want +got):\n%s", diff)
		}
	})
}

// A teardown whose rules could not be removed keeps the lease: the DNAT
// rules still point at the address, which must not go to another Function.
func TestTeardownKeepsLeaseWhileRulesRemain(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		m, _, _ := newTestManager(t, b)
		ctx := context.Background()
		a, err := m.SetupFunction(ctx, "fn-a", []workload.PortMapping{{Port: 8080}})
		if err != nil {
			t.Fatal(err)
		}
		b.failApplies(errors.New("firewall: boom"))
		if err := m.TeardownFunction(ctx, "fn-a"); err == nil {
			t.Fatal("teardown with a failing firewall: want error")
		}
		b.failApplies(nil)
		if _, ok := m.pool.Lookup("fn-a"); !ok {
			t.Errorf("lease released while a DNAT rule still points at %s", a.GuestIP)
		}
		bn, err := m.SetupFunction(ctx, "fn-b", nil)
		if err != nil {
			t.Fatal(err)
		}
		if bn.Prefix.Overlaps(a.Prefix) {
			t.Errorf("fn-b got %s, still in use by fn-a's rules", bn.Prefix)
		}
		if err := m.TeardownFunction(ctx, "fn-a"); err != nil {
			t.Fatal(err)
		}
		if _, ok := m.pool.Lookup("fn-a"); ok {
			t.Errorf("lease kept after a successful teardown")
		}
		if got := b.mappings(t); len(got) != 0 {
			t.Errorf("mappings after teardown: %v", got)
		}
	})
}

func TestNewProtectsPorts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		cfg := Config{StateDir: t.TempDir(), ProtectedPorts: []int{22, 4995}}
		if _, err := newManager(context.Background(), cfg, b.fw, newFakeHost()); err != nil {
			t.Fatal(err)
		}
		want := []int{22, 2379, 2380, 4995, 4996, 5000}
		if b.name == FirewallNftables {
			if got := b.nft.table.cfg.ProtectedPorts; !slices.Equal(got, want) {
				t.Errorf("protected ports of rik's table = %v, want %v", got, want)
			}
		} else {
			rules := strings.Join(b.ipt.chain("filter", chainInput), "\n")
			for _, want := range []string{
				"-i rik+ -p tcp -m multiport --dports 22,2379,2380,4995,4996,5000 -j REJECT --reject-with tcp-reset",
				"-i rik+ -p udp -m multiport --dports 22,2379,2380,4995,4996,5000 -j REJECT --reject-with icmp-port-unreachable",
			} {
				if !strings.Contains(rules, want) {
					t.Errorf("%s lacks %q:\n%s", chainInput, want, rules)
				}
			}
		}
		cfg.ProtectedPorts = []int{70000}
		if _, err := newManager(context.Background(), cfg, b.fw, newFakeHost()); err == nil || !strings.Contains(err.Error(), "70000") {
			t.Errorf("newManager with port 70000 = %v", err)
		}
	})
}
