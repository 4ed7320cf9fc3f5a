package sdn

// Root tests: real nftables (netlink), iptables (both flavours), netlink
// devices and sysctls, each in throwaway network namespaces. Nothing here
// touches the host namespace.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
	"github.com/vishvananda/netlink"
)

// forEachFlavour runs fn once with iptables-nft and once with
// iptables-legacy.
func forEachFlavour(t *testing.T, fn func(t *testing.T, ipt *execIptables)) {
	for _, flavour := range []string{"nft", "legacy"} {
		t.Run(flavour, func(t *testing.T) { fn(t, requireIptables(t, flavour)) })
	}
}

func requireIptables(t *testing.T, flavour string) *execIptables {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "iptables-"+flavour, "iptables-"+flavour+"-restore", "iptables-"+flavour+"-save")
	ipt, err := newExecIptables(flavour)
	if err != nil {
		t.Fatal(err)
	}
	return ipt
}

// requireNftables needs a kernel that takes rik's table (probed in a
// throwaway namespace).
func requireNftables(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := netns.New(t)
	if err := ns.Do(func() error { return probeNftables(context.Background()) }); err != nil {
		testutil.Unavailable(t, "nftables: "+err.Error())
	}
}

// realBackend is a firewall backend on a test node, with the iptables
// flavour the node's own rules are in.
type realBackend struct {
	name string
	ipt  *execIptables // the node's iptables
	nft  bool          // rik's rules in nftables, else in ipt
}

func (rb realBackend) firewall() firewall {
	if rb.nft {
		return &nftFirewall{nft: netlinkNft{}, ipt: rb.ipt, log: discard}
	}
	return &iptFirewall{ipt: rb.ipt, nft: netlinkNft{}, log: discard}
}

// forEachBackend runs fn with rik's rules in iptables (each flavour) and
// in nftables next to the node's rules in each iptables flavour: the same
// cases, whatever programs them.
func forEachRealBackend(t *testing.T, fn func(t *testing.T, rb realBackend)) {
	for _, c := range []struct {
		name, flavour string
		nft           bool
	}{
		{"iptables-nft", "nft", false},
		{"iptables-legacy", "legacy", false},
		{"nftables", "nft", true},
		{"nftables-next-to-legacy", "legacy", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rb := realBackend{name: c.name, ipt: requireIptables(t, c.flavour), nft: c.nft}
			if c.nft {
				requireNftables(t)
			}
			fn(t, rb)
		})
	}
}

// testNode is a node namespace (eth0 10.99.0.1/24, FORWARD policy DROP in
// its iptables so that only rik's rules let traffic through) and a client
// namespace on the same link (eth0 10.99.0.2/24).
type testNode struct {
	node, client *netns.NS
	rb           realBackend
}

const nodeAddr = "10.99.0.1"

func newTestNode(t *testing.T, rb realBackend) *testNode {
	n := &testNode{node: netns.New(t), client: netns.New(t), rb: rb}
	netns.Veth(t, n.node, "eth0", nodeAddr+"/24", n.client, "eth0", "10.99.0.2/24")
	n.node.Run(t, rb.ipt.IptablesBin, "-t", "filter", "-P", "FORWARD", "DROP")
	return n
}

// pod returns a pod namespace (10.63.0.5) behind the node's podbr0
// (Config.PodBridge, here one end of a veth, 10.63.0.1).
func (n *testNode) pod(t *testing.T) *netns.NS {
	pod := netns.New(t)
	netns.Veth(t, n.node, "podbr0", "10.63.0.1/24", pod, "eth0", "10.63.0.5/24")
	pod.Run(t, "ip", "route", "add", "default", "via", "10.63.0.1")
	return pod
}

// save returns iptables-save of the node.
func (n *testNode) save(t *testing.T) string {
	t.Helper()
	return n.node.Run(t, n.rb.ipt.IptablesBin+"-save")
}

// dump is the node's whole ruleset, for failure messages.
func (n *testNode) dump(t *testing.T) string {
	t.Helper()
	out := "iptables-save:\n" + n.save(t)
	if _, err := exec.LookPath("nft"); err == nil {
		out += "nft list ruleset:\n" + n.node.Run(t, "nft", "list", "ruleset")
	}
	return out
}

// mappings lists the port mappings programmed on the node by either
// backend, like "tcp 8080 -> 10.62.0.1:80 fn-a", sorted.
func (n *testNode) mappings(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(n.node.Run(t, n.rb.ipt.IptablesBin+"-save", "-t", "nat"), "\n") {
		r, ok := strings.CutPrefix(l, "-A "+chainDNAT+" ")
		if !ok {
			continue
		}
		m := dnatRule.FindStringSubmatch(r)
		if m == nil {
			out = append(out, "unknown iptables rule: "+r)
			continue
		}
		out = append(out, fmt.Sprintf("%s %s -> %s %s", m[1], m[2], m[4], m[3]))
	}
	var ds []dnat
	err := n.node.Do(func() error {
		var err error
		ds, err = netlinkNft{}.Mappings(context.Background())
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s %d -> %s %s", strings.ToLower(d.Port.Protocol), d.Port.Port,
			netip.AddrPortFrom(d.IP, uint16(d.Port.TargetPort)), d.ID))
	}
	sort.Strings(out)
	return out
}

func (n *testNode) manager(t *testing.T, stateDir string, host netHost) *Manager {
	t.Helper()
	cfg := Config{StateDir: stateDir, Netns: n.node.Path, PodBridge: "podbr0"}
	m, err := newManager(context.Background(), cfg, n.rb.firewall(), host)
	if err != nil {
		t.Fatalf("newManager: %v", err)
	}
	return m
}

// vethHost stands in for netlinkHost where a test needs a guest behind the
// "TAP": a TAP has no peer without a VM, so the device named like the TAP
// is a veth whose other end is eth0 of the guest namespace, holding the
// guest address with a default route through the TAP address.
type vethHost struct {
	netlinkHost
	guest *netns.NS
}

func (h vethHost) AddTap(ctx context.Context, name string, addr netip.Prefix) (bool, error) {
	if _, err := netlink.LinkByName(name); err == nil {
		return false, nil
	}
	guest := netip.PrefixFrom(addr.Addr().Prev(), addr.Bits())
	for _, args := range [][]string{
		{"link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", h.guest.Name},
		{"addr", "add", addr.String(), "dev", name},
		{"link", "set", name, "up"},
		{"-n", h.guest.Name, "addr", "add", guest.String(), "dev", "eth0"},
		{"-n", h.guest.Name, "link", "set", "eth0", "up"},
		{"-n", h.guest.Name, "route", "add", "default", "via", addr.Addr().String()},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return false, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return true, nil
}

func (h vethHost) Taps(ctx context.Context) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if IsTapName(l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// serve answers every TCP connection to addr inside ns with reply.
func serve(t *testing.T, ns *netns.NS, addr, reply string) {
	t.Helper()
	ns.Serve(t, addr, func(net.Conn) string { return reply })
}

// fetch connects to addr from inside ns and returns what it reads.
func fetch(ns *netns.NS, addr string) (string, error) { return ns.Fetch(addr, 2*time.Second) }

func sysctlIn(t *testing.T, ns *netns.NS, key string) string {
	t.Helper()
	return strings.TrimSpace(ns.Run(t, "cat", "/proc/sys/"+key))
}

func TestRootChainsAndJumps(t *testing.T) {
	forEachFlavour(t, func(t *testing.T, ipt *execIptables) {
		n := newTestNode(t, realBackend{ipt: ipt})
		// Rules rik does not own must survive everything rik does.
		n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "1", "-j", "RETURN")
		n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-N", "FOREIGN")
		n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-A", "FOREIGN", "-j", "RETURN")
		n.node.Run(t, ipt.IptablesBin, "-t", "filter", "-A", "FORWARD", "-i", "eth9", "-j", "DROP")

		dir := t.TempDir()
		m := n.manager(t, dir, netlinkHost{})
		if err := m.Expose(context.Background(), "pod-a", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 8080, TargetPort: 80}}); err != nil {
			t.Fatal(err)
		}
		n.manager(t, dir, netlinkHost{}) // a restart must not duplicate anything
		saved := n.save(t)

		for _, want := range []string{
			":RIKLET - [0:0]", ":RIKLET-POSTROUTING - [0:0]", ":RIKLET-FORWARD - [0:0]", ":RIKLET-INPUT - [0:0]",
			"-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment \"rik:pod-a\" -j DNAT --to-destination 10.63.0.5:80",
			"-A PREROUTING -p tcp -m tcp --dport 1 -j RETURN",
			"-A FOREIGN -j RETURN",
			"-A FORWARD -i eth9 -j DROP",
		} {
			if strings.Count(saved, want+"\n") != 1 {
				t.Errorf("iptables-save has %q %d times, want once", want, strings.Count(saved, want+"\n"))
			}
		}
		for _, j := range jumps {
			rule := fmt.Sprintf("-A %s %s", j.Chain, strings.Join(j.Rule, " "))
			if got := strings.Count(saved, rule+"\n"); got != 1 {
				t.Errorf("jump %q present %d times, want 1", rule, got)
			}
		}
		if got := sysctlIn(t, n.node, "net/ipv4/ip_forward"); got != "1" {
			t.Errorf("ip_forward in node = %s, want 1", got)
		}
		if t.Failed() {
			t.Logf("iptables-save:\n%s", saved)
		}
	})
}

func TestRootFunctionTap(t *testing.T) {
	testutil.RequireRoot(t)
	ipt, err := detectIptables(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := newTestNode(t, realBackend{ipt: ipt, nft: true})
	ctx := context.Background()
	m, err := New(ctx, Config{StateDir: t.TempDir(), Netns: n.node.Path, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := m.SetupFunction(ctx, "fn-tap", []workload.PortMapping{{Port: 8080, TargetPort: 80}})
	if err != nil {
		t.Fatal(err)
	}
	link := n.node.Run(t, "ip", "-d", "link", "show", fn.Tap)
	if !strings.Contains(link, "tun type tap") || !strings.Contains(link, ",UP") {
		t.Errorf("tap %s is not an up tap:\n%s", fn.Tap, link)
	}
	if addr := n.node.Run(t, "ip", "addr", "show", fn.Tap); !strings.Contains(addr, "inet "+fn.TapIP.String()+"/30") {
		t.Errorf("tap %s lacks %s/30:\n%s", fn.Tap, fn.TapIP, addr)
	}
	if got := sysctlIn(t, n.node, "net/ipv4/conf/"+fn.Tap+"/route_localnet"); got != "1" {
		t.Errorf("route_localnet on %s = %s, want 1", fn.Tap, got)
	}
	if _, err := netlink.LinkByName(fn.Tap); err == nil {
		t.Fatalf("tap %s appeared in the test's own namespace", fn.Tap)
	}
	if got, want := n.mappings(t), []string{"tcp 8080 -> " + fn.GuestIP.String() + ":80 fn-tap"}; strings.Join(got, ",") != want[0] {
		t.Errorf("mappings = %q, want %q", got, want)
	}
	again, err := m.SetupFunction(ctx, "fn-tap", []workload.PortMapping{{Port: 8080, TargetPort: 80}})
	if err != nil || again.Tap != fn.Tap || again.GuestIP != fn.GuestIP {
		t.Errorf("second setup = %+v, %v", again, err)
	}

	if err := m.TeardownFunction(ctx, "fn-tap"); err != nil {
		t.Fatal(err)
	}
	if out, err := n.node.Exec(ctx, "ip", "link", "show", fn.Tap); err == nil {
		t.Errorf("tap %s still there after teardown:\n%s", fn.Tap, out)
	}
	if got := n.mappings(t); len(got) != 0 {
		t.Errorf("mappings left after teardown: %q", got)
	}
}

// New picks the backend --firewall names; auto is nftables on a kernel
// that takes rik's table.
func TestRootNewPicksBackend(t *testing.T) {
	testutil.RequireTool(t, "iptables")
	requireNftables(t)
	ctx := context.Background()
	for choice, want := range map[string]string{"": "nftables", "auto": "nftables", "nftables": "nftables", "iptables": "iptables"} {
		ns := netns.New(t)
		m, err := New(ctx, Config{StateDir: t.TempDir(), Netns: ns.Path, Firewall: choice})
		if err != nil {
			t.Fatalf("New(Firewall %q): %v", choice, err)
		}
		if got := m.fw.Name(); got != want {
			t.Errorf("New(Firewall %q) uses %s, want %s", choice, got, want)
		}
	}
	if _, err := New(ctx, Config{StateDir: t.TempDir(), Netns: netns.New(t).Path, Firewall: "pf"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New(Firewall pf) = %v, want ErrInvalid", err)
	}
}

// TestRootDNATReachability is the table of cases every backend must pass
// alike: a mapping answers from another host, from the node's address and
// from its 127.0.0.1; hairpin (a guest or pod reaching a mapping through
// the node's address, its own included); egress masquerade; the guard on
// the node's loopback; and a teardown that closes exactly its ports.
func TestRootDNATReachability(t *testing.T) {
	forEachRealBackend(t, func(t *testing.T, rb realBackend) {
		ctx := context.Background()
		n := newTestNode(t, rb)
		guest, pod := netns.New(t), n.pod(t)
		serve(t, pod, "10.63.0.5:80", "pod")
		// The node's own NAT rules for the same traffic: rik's come first.
		for _, args := range [][]string{
			{"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9090", "-j", "DNAT", "--to-destination", "10.99.0.1:1"},
			{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9090", "-j", "DNAT", "--to-destination", "10.99.0.1:1"},
			{"-t", "nat", "-A", "POSTROUTING", "-s", "10.62.0.0/15", "-j", "SNAT", "--to-source", "10.99.0.77"},
		} {
			n.node.Run(t, rb.ipt.IptablesBin, args...)
		}

		m := n.manager(t, t.TempDir(), vethHost{guest: guest})
		fn, err := m.SetupFunction(ctx, "fn-1", []workload.PortMapping{{Port: 8080, TargetPort: 80}})
		if err != nil {
			t.Fatal(err)
		}
		serve(t, guest, netip.AddrPortFrom(fn.GuestIP, 80).String(), "guest")
		if err := m.Expose(ctx, "pod-1", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 9090, TargetPort: 80}}); err != nil {
			t.Fatal(err)
		}

		check := func(from *netns.NS, addr, want string) {
			t.Helper()
			got, err := fetch(from, addr)
			if err != nil || got != want {
				t.Errorf("from %s to %s: got %q, %v; want %q", from.Name, addr, got, err, want)
			}
		}
		for _, c := range []struct{ port, want string }{{"8080", "guest"}, {"9090", "pod"}} {
			check(n.client, nodeAddr+":"+c.port, c.want) // another host
			check(n.node, nodeAddr+":"+c.port, c.want)   // the node's own address
			check(n.node, "127.0.0.1:"+c.port, c.want)   // the node's loopback
			check(guest, nodeAddr+":"+c.port, c.want)    // hairpin from the guest
			check(pod, nodeAddr+":"+c.port, c.want)      // hairpin from the pod
		}

		// Egress of guests and pods leaves with the node's address.
		n.client.Serve(t, "10.99.0.2:7777", func(c net.Conn) string {
			return netip.MustParseAddrPort(c.RemoteAddr().String()).Addr().String()
		})
		check(guest, "10.99.0.2:7777", nodeAddr)
		check(pod, "10.99.0.2:7777", nodeAddr)

		// route_localnet on the TAP must not open the node's loopback to guests.
		serve(t, n.node, "127.0.0.2:5555", "node loopback")
		// A hostile guest: loopback routed to the node, 127/8 replies accepted.
		guest.Run(t, "sysctl", "-w", "net.ipv4.conf.eth0.route_localnet=1", "net.ipv4.conf.all.route_localnet=1")
		guest.Run(t, "ip", "route", "del", "127.0.0.0/8", "table", "local")
		guest.Run(t, "ip", "route", "add", "127.0.0.2/32", "via", fn.TapIP.String())
		if got, err := fetch(guest, "127.0.0.2:5555"); err == nil {
			t.Errorf("guest reached the node's loopback: %q", got)
		}

		if err := m.TeardownFunction(ctx, "fn-1"); err != nil {
			t.Fatal(err)
		}
		if got, want := n.mappings(t), []string{"tcp 9090 -> 10.63.0.5:80 pod-1"}; strings.Join(got, ",") != want[0] {
			t.Errorf("after teardown of fn-1, mappings = %q, want %q", got, want)
		}
		if got, err := fetch(n.client, nodeAddr+":8080"); err == nil {
			t.Errorf("port 8080 still answers %q after teardown", got)
		}
		check(n.client, nodeAddr+":9090", "pod")
		if t.Failed() {
			t.Log(n.dump(t))
		}
	})
}

// With nftables on a node whose iptables forwards everything, rik writes
// nothing in iptables, and its mappings answer.
func TestRootNftablesLeavesIptablesAlone(t *testing.T) {
	ipt := requireIptables(t, "nft")
	requireNftables(t)
	ctx := context.Background()
	n := &testNode{node: netns.New(t), client: netns.New(t), rb: realBackend{ipt: ipt, nft: true}}
	netns.Veth(t, n.node, "eth0", nodeAddr+"/24", n.client, "eth0", "10.99.0.2/24")
	n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
	before := n.save(t)
	pod := n.pod(t)
	serve(t, pod, "10.63.0.5:80", "pod")
	m := n.manager(t, t.TempDir(), netlinkHost{})
	if err := m.Expose(ctx, "pod-1", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 9090, TargetPort: 80}}); err != nil {
		t.Fatal(err)
	}
	if got, err := fetch(n.client, nodeAddr+":9090"); err != nil || got != "pod" {
		t.Errorf("from another host: %q, %v", got, err)
	}
	if after := n.save(t); saveNoise.ReplaceAllString(after, "") != saveNoise.ReplaceAllString(before, "") {
		t.Errorf("iptables changed:\n%s\nwant:\n%s", after, before)
	}
}

// TestRootReconcile: a riklet that restarts after a crash keeps exactly
// what the instances it still owns need: their mappings (restored if the
// crash lost them), TAPs and leases; everything else goes, a mapping
// nobody owns included.
func TestRootReconcile(t *testing.T) {
	forEachRealBackend(t, func(t *testing.T, rb realBackend) {
		ctx := context.Background()
		n := newTestNode(t, rb)
		n.node.Run(t, "ip", "link", "add", "rik0", "type", "bridge") // rik's pod bridge: not a TAP
		n.node.Run(t, rb.ipt.IptablesBin, "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
		dir := t.TempDir()
		m := n.manager(t, dir, netlinkHost{})
		for i, id := range []string{"fn-keep", "fn-gone"} {
			if _, err := m.SetupFunction(ctx, id, []workload.PortMapping{{Port: 8000 + i}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Expose(ctx, "pod-keep", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 7000}}); err != nil {
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "pod-gone", netip.MustParseAddr("10.63.0.6"), []workload.PortMapping{{Port: 7001}}); err != nil {
			t.Fatal(err)
		}
		// The crash: a mapping nobody owns was programmed, and the
		// mapping of pod-keep was lost.
		stray := dnat{ID: "stray", IP: netip.MustParseAddr("10.62.9.9"), Port: workload.PortMapping{Protocol: "TCP", Port: 6000, TargetPort: 1}}
		lost := dnat{ID: "pod-keep", IP: netip.MustParseAddr("10.63.0.5"), Port: workload.PortMapping{Protocol: "TCP", Port: 7000, TargetPort: 7000}}
		if rb.nft {
			if err := n.node.Do(func() error { return netlinkNft{}.Update(ctx, []dnat{lost}, []dnat{stray}) }); err != nil {
				t.Fatal(err)
			}
		} else {
			n.node.Run(t, rb.ipt.IptablesBin, "-t", "nat", "-A", "RIKLET", "-p", "tcp", "-m", "tcp", "--dport", "6000",
				"-m", "comment", "--comment", "rik:stray", "-j", "DNAT", "--to-destination", "10.62.9.9:1")
			n.node.Run(t, rb.ipt.IptablesBin, "-t", "nat", "-D", "RIKLET", "-p", "tcp", "-m", "tcp", "--dport", "7000",
				"-m", "comment", "--comment", "rik:pod-keep", "-j", "DNAT", "--to-destination", "10.63.0.5:7000")
		}
		if got := strings.Join(n.mappings(t), ","); !strings.Contains(got, "stray") || strings.Contains(got, "7000") {
			t.Fatalf("test broken: the crash did not happen: %s", got)
		}

		m2 := n.manager(t, dir, netlinkHost{}) // the riklet restarts
		if err := m2.Reconcile(ctx, []string{"fn-keep", "pod-keep"}); err != nil {
			t.Fatal(err)
		}
		want := []string{"tcp 7000 -> 10.63.0.5:7000 pod-keep", "tcp 8000 -> 10.62.0.1:8000 fn-keep"}
		if got := n.mappings(t); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("mappings after reconcile = %q, want %q", got, want)
		}
		if saved := n.save(t); !strings.Contains(saved, "-A POSTROUTING -o eth9 -j MASQUERADE") {
			t.Errorf("reconcile removed a rule not rik's:\n%s", saved)
		}
		links := n.node.Run(t, "ip", "-o", "link", "show")
		if !strings.Contains(links, TapName("fn-keep")) || !strings.Contains(links, ": rik0:") {
			t.Errorf("reconcile removed an owned tap or the bridge:\n%s", links)
		}
		if strings.Contains(links, TapName("fn-gone")) {
			t.Errorf("tap of fn-gone survived reconcile:\n%s", links)
		}
		if o := m2.pool.Owners(); len(o) != 1 || o[0] != "fn-keep" {
			t.Errorf("leases after reconcile = %v, want [fn-keep]", o)
		}
		if t.Failed() {
			t.Log(n.dump(t))
		}
	})
}

var nftElements = regexp.MustCompile(`elements = \{([^}]*)\}`)

// normalElements puts each element list of nft's output on one line,
// sorted: nft lists them in the kernel's order and wraps them by width.
func normalElements(s string) string {
	return nftElements.ReplaceAllStringFunc(s, func(m string) string {
		list := strings.Split(nftElements.FindStringSubmatch(m)[1], ",")
		for i := range list {
			list[i] = strings.TrimSpace(list[i])
		}
		sort.Strings(list)
		return "elements = { " + strings.Join(list, ", ") + " }"
	})
}

// TestRootNftTable: rik's table is exactly what nft_rules.go describes,
// a restart rebuilds it without duplicates, and nothing else of the
// node's nftables ruleset changes.
func TestRootNftTable(t *testing.T) {
	testutil.RequireTool(t, "nft")
	requireNftables(t)
	ctx := context.Background()
	ns := netns.New(t)
	foreign := "table inet other {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\n"
	f := fmt.Sprintf("%s/other.nft", t.TempDir())
	if err := os.WriteFile(f, []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "nft", "-f", f)

	cfg := Config{StateDir: t.TempDir(), Netns: ns.Path, PodBridge: "cni0", ProtectedPorts: []int{6060}}
	for range 2 { // a restart leaves the same table
		m, err := newManager(ctx, cfg, &nftFirewall{nft: netlinkNft{}, log: discard}, netlinkHost{})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "pod-b", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 5353, TargetPort: 53, Protocol: "UDP"}, {Port: 8443, TargetPort: 443}}); err != nil {
			t.Fatal(err)
		}
	}
	want := `table ip rik {
	map ports {
		type inet_proto . inet_service : ipv4_addr . inet_service
		elements = { tcp . 8443 comment "pod-b" : 10.63.0.5 . 443, udp . 5353 comment "pod-b" : 10.63.0.5 . 53 }
	}

	set protected {
		type inet_service
		elements = { 2379, 2380, 4995, 4996, 5000, 6060 }
	}

	chain prerouting {
		type nat hook prerouting priority dstnat - 1; policy accept;
		fib daddr type local dnat ip to meta l4proto . th dport map @ports
	}

	chain output {
		type nat hook output priority -101; policy accept;
		fib daddr type local dnat ip to meta l4proto . th dport map @ports
	}

	chain postrouting {
		type nat hook postrouting priority srcnat - 1; policy accept;
		ip saddr 10.62.0.0/16 ip daddr != 10.62.0.0/16 masquerade
		ip saddr 10.63.0.0/16 ip daddr != 10.63.0.0/16 masquerade
		ct status dnat ip saddr 10.62.0.0/16 ip daddr 10.62.0.0/16 masquerade
		ct status dnat ip saddr 10.63.0.0/16 ip daddr 10.63.0.0/16 masquerade
		ip saddr 127.0.0.0/8 oifname "rik*" masquerade
		ip saddr 127.0.0.0/8 oifname "cni0" masquerade
	}

	chain input {
		type filter hook input priority filter - 1; policy accept;
		iifname "rik*" ip daddr 127.0.0.0/8 ct state invalid,new drop
		iifname "cni0" ip daddr 127.0.0.0/8 ct state invalid,new drop
		iifname "rik*" tcp dport @protected reject with tcp reset
		iifname "rik*" udp dport @protected reject
		iifname "cni0" tcp dport @protected reject with tcp reset
		iifname "cni0" udp dport @protected reject
	}
}
`
	got := normalElements(ns.Run(t, "nft", "list", "table", "ip", "rik"))
	if got != want {
		t.Errorf("nft list table ip rik:\n%s\nwant:\n%s", got, want)
	}
	if other := ns.Run(t, "nft", "list", "table", "inet", "other"); other != foreign {
		t.Errorf("the other table changed:\n%s\nwant:\n%s", other, foreign)
	}
	tables := ns.Run(t, "nft", "list", "tables")
	if tables != "table inet other\ntable ip rik\n" {
		t.Errorf("tables:\n%s", tables)
	}
}
