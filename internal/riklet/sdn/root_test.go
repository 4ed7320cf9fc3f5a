package sdn

// Root tests: real iptables (both flavours), netlink and sysctls, each in
// throwaway network namespaces. Nothing here touches the host namespace.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
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
		t.Run(flavour, func(t *testing.T) {
			testutil.RequireRoot(t)
			testutil.RequireTool(t, "ip", "iptables-"+flavour, "iptables-"+flavour+"-restore", "iptables-"+flavour+"-save")
			ipt, err := newExecIptables(flavour)
			if err != nil {
				t.Fatal(err)
			}
			fn(t, ipt)
		})
	}
}

// testNode is a node namespace (eth0 10.99.0.1/24, FORWARD policy DROP so
// that only rik's filter rules let traffic through) and a client namespace
// on the same link (eth0 10.99.0.2/24).
type testNode struct {
	node, client *netns.NS
	ipt          *execIptables
}

const nodeAddr = "10.99.0.1"

func newTestNode(t *testing.T, ipt *execIptables) *testNode {
	n := &testNode{node: netns.New(t), client: netns.New(t), ipt: ipt}
	netns.Veth(t, n.node, "eth0", nodeAddr+"/24", n.client, "eth0", "10.99.0.2/24")
	n.node.Run(t, ipt.IptablesBin, "-t", "filter", "-P", "FORWARD", "DROP")
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
	return n.node.Run(t, n.ipt.IptablesBin+"-save")
}

func (n *testNode) manager(t *testing.T, stateDir string, host netHost) *Manager {
	t.Helper()
	cfg := Config{StateDir: stateDir, Netns: n.node.Path, PodBridge: "podbr0"}
	m, err := newManager(context.Background(), cfg, n.ipt, host)
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
		n := newTestNode(t, ipt)
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
	n := newTestNode(t, ipt)
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
	if saved := n.save(t); strings.Contains(saved, "rik:fn-tap") {
		t.Errorf("rules of fn-tap left after teardown:\n%s", saved)
	}
}

func TestRootDNATReachability(t *testing.T) {
	forEachFlavour(t, func(t *testing.T, ipt *execIptables) {
		ctx := context.Background()
		n := newTestNode(t, ipt)
		guest, pod := netns.New(t), n.pod(t)
		serve(t, pod, "10.63.0.5:80", "pod")

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
		saved := n.save(t)
		if strings.Contains(saved, "rik:fn-1") || !strings.Contains(saved, "rik:pod-1") {
			t.Errorf("after teardown of fn-1, want only pod-1's rules:\n%s", saved)
		}
		if got, err := fetch(n.client, nodeAddr+":8080"); err == nil {
			t.Errorf("port 8080 still answers %q after teardown", got)
		}
		check(n.client, nodeAddr+":9090", "pod")
		if t.Failed() {
			t.Logf("iptables-save:\n%s", saved)
		}
	})
}

func TestRootReconcile(t *testing.T) {
	forEachFlavour(t, func(t *testing.T, ipt *execIptables) {
		ctx := context.Background()
		n := newTestNode(t, ipt)
		n.node.Run(t, "ip", "link", "add", "rik0", "type", "bridge") // rik's pod bridge: not a TAP
		n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
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
		// A stray rule in rik's chain, as a crashed riklet could leave.
		n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-A", "RIKLET", "-p", "tcp", "--dport", "6000", "-j", "DNAT", "--to-destination", "10.62.9.9:1")

		m2 := n.manager(t, dir, netlinkHost{}) // the riklet restarts
		if err := m2.Reconcile(ctx, []string{"fn-keep", "pod-keep"}); err != nil {
			t.Fatal(err)
		}
		saved := n.save(t)
		for _, want := range []string{"rik:fn-keep", "rik:pod-keep", "-A POSTROUTING -o eth9 -j MASQUERADE"} {
			if !strings.Contains(saved, want) {
				t.Errorf("missing %q after reconcile", want)
			}
		}
		for _, gone := range []string{"rik:fn-gone", "rik:pod-gone", "--dport 6000"} {
			if strings.Contains(saved, gone) {
				t.Errorf("%q still there after reconcile", gone)
			}
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
			t.Logf("iptables-save:\n%s", saved)
		}
	})
}
