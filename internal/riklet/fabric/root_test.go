package fabric

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// testNode is a node namespace with a "pod" address (10.63.N.1 on a dummy
// device named like rik's, so not one of the node's networks).
type testNode struct {
	name   string
	ns     *netns.NS
	addr   netip.Addr
	subnet netip.Prefix
	dir    string
}

func newTestNode(t *testing.T, i int, addr string) *testNode {
	n := &testNode{name: fmt.Sprintf("n%d", i), ns: netns.New(t), addr: netip.MustParseAddr(addr),
		subnet: netip.MustParsePrefix(fmt.Sprintf("10.63.%d.0/24", i)), dir: t.TempDir()}
	n.ns.Run(t, "ip", "link", "add", "rikpod0", "type", "bridge")
	n.ns.Run(t, "ip", "addr", "add", n.podIP().String()+"/24", "dev", "rikpod0")
	n.ns.Run(t, "ip", "link", "set", "rikpod0", "up")
	// Answer with the caller's address: the peer must see the pod's own.
	n.ns.Serve(t, net.JoinHostPort(n.podIP().String(), "7000"), func(c net.Conn) string {
		return c.RemoteAddr().(*net.TCPAddr).IP.String()
	})
	return n
}

func (n *testNode) podIP() netip.Addr { return n.subnet.Addr().Next() }

func (n *testNode) peer() Peer { return Peer{Name: n.name, Addr: n.addr, Subnet: n.subnet} }

// fabric is a new Fabric of n (a riklet start), over netlink in its netns.
func (n *testNode) fabric(t *testing.T, mode Mode) *Fabric {
	t.Helper()
	h, err := NewNetlinkHost(n.ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	f, err := New(Config{StateDir: n.dir, Name: n.name, Addr: func() netip.Addr { return n.addr }, Mode: mode, Host: h})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// fetch connects from n's pod address to to's, and returns what to saw as
// the caller's address.
func (n *testNode) fetch(to *testNode) (string, error) {
	var out string
	err := n.ns.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: n.podIP().AsSlice()}}
		c, err := d.Dial("tcp", net.JoinHostPort(to.podIP().String(), "7000"))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	return out, err
}

func apply(t *testing.T, f *Fabric, n *testNode, peers ...*testNode) {
	t.Helper()
	m := Map{Subnet: n.subnet, Cluster: netip.MustParsePrefix("10.63.0.0/16")}
	for _, p := range peers {
		m.Peers = append(m.Peers, p.peer())
	}
	if err := f.Apply(context.Background(), m); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
}

func requireFabricHost(t *testing.T) {
	testutil.SkipShort(t)
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip")
}

// TestRootDirectRoutes: nodes on one segment reach each other's pods by
// direct routes; a peer that goes away has its route removed; a restarted
// fabric finds its routes and changes nothing.
func TestRootDirectRoutes(t *testing.T) {
	requireFabricHost(t)
	n1, n2 := newTestNode(t, 1, "192.168.50.1"), newTestNode(t, 2, "192.168.50.2")
	netns.Veth(t, n1.ns, "eth0", "192.168.50.1/24", n2.ns, "eth0", "192.168.50.2/24")
	f1, f2 := n1.fabric(t, ModeAuto), n2.fabric(t, ModeAuto)
	apply(t, f1, n1, n2)
	apply(t, f2, n2, n1)

	if got := n1.ns.Run(t, "ip", "route", "show", "proto", "77"); !strings.Contains(got, "10.63.2.0/24 via 192.168.50.2") {
		t.Fatalf("n1's rik routes: %q", got)
	}
	if links := n1.ns.Links(t); contains(links, Device) {
		t.Errorf("n1 has %s with only a direct peer: %v", Device, links)
	}
	if from, err := n1.fetch(n2); err != nil || from != n1.podIP().String() {
		t.Fatalf("pod n1 -> pod n2: %q, %v; want to be seen as %s", from, err, n1.podIP())
	}

	// A restarted riklet: same map, same routes, no error.
	apply(t, n1.fabric(t, ModeAuto), n1, n2)
	if got := n1.ns.Run(t, "ip", "route", "show", "proto", "77"); strings.Count(got, "10.63.2.0/24") != 1 {
		t.Fatalf("after restart: %q", got)
	}

	// n2 goes away.
	apply(t, f1, n1)
	if got := n1.ns.Run(t, "ip", "route", "show", "proto", "77"); got != "" {
		t.Fatalf("route left after the peer went away: %q", got)
	}
}

// TestRootVXLAN: nodes on two segments behind a router reach each other's
// pods over VXLAN, without NAT; removing the peer removes route, FDB,
// neighbour and device; a restarted fabric rebuilds what is missing.
func TestRootVXLAN(t *testing.T) {
	requireFabricHost(t)
	n1, n2 := newTestNode(t, 1, "192.168.51.2"), newTestNode(t, 2, "192.168.52.2")
	router := netns.New(t)
	netns.Veth(t, n1.ns, "eth0", "192.168.51.2/24", router, "r1", "192.168.51.1/24")
	netns.Veth(t, n2.ns, "eth0", "192.168.52.2/24", router, "r2", "192.168.52.1/24")
	router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	n1.ns.Run(t, "ip", "route", "add", "default", "via", "192.168.51.1")
	n2.ns.Run(t, "ip", "route", "add", "default", "via", "192.168.52.1")

	f1, f2 := n1.fabric(t, ModeAuto), n2.fabric(t, ModeAuto)
	apply(t, f1, n1, n2)
	apply(t, f2, n2, n1)
	route := n1.ns.Run(t, "ip", "route", "show", "proto", "77")
	if !strings.Contains(route, "10.63.2.0/24 via 10.63.2.0 dev "+Device+" onlink") {
		t.Fatalf("n1's rik routes: %q", route)
	}
	fdb := n1.ns.Run(t, "bridge", "fdb", "show", "dev", Device)
	if !strings.Contains(fdb, VTEPMAC("n2")+" dst 192.168.52.2") {
		t.Fatalf("n1's FDB: %q", fdb)
	}
	if from, err := n1.fetch(n2); err != nil || from != n1.podIP().String() {
		t.Fatalf("pod n1 -> pod n2 over VXLAN: %q, %v; want to be seen as %s", from, err, n1.podIP())
	}

	// Someone deletes n1's neighbour entry; a restarted riklet puts it back.
	n1.ns.Run(t, "ip", "neigh", "del", "10.63.2.0", "dev", Device)
	apply(t, n1.fabric(t, ModeAuto), n1, n2)
	if from, err := n1.fetch(n2); err != nil || from != n1.podIP().String() {
		t.Fatalf("after restart: %q, %v", from, err)
	}

	// n2 goes away: everything of the tunnel goes.
	apply(t, f1, n1)
	if got := n1.ns.Run(t, "ip", "route", "show", "proto", "77"); got != "" {
		t.Fatalf("route left: %q", got)
	}
	if links := n1.ns.Links(t); contains(links, Device) {
		t.Fatalf("%s left: %v", Device, links)
	}
	// And it comes back.
	apply(t, f1, n1, n2)
	if from, err := n1.fetch(n2); err != nil || from != n1.podIP().String() {
		t.Fatalf("after the peer came back: %q, %v", from, err)
	}
	if err := f1.Remove(); err != nil {
		t.Fatal(err)
	}
	if links := n1.ns.Links(t); contains(links, Device) {
		t.Fatalf("%s left after Remove: %v", Device, links)
	}
	// riklet --uninstall, without the fabric's state.
	apply(t, f1, n1, n2)
	h, err := NewNetlinkHost(n1.ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := Uninstall(h); err != nil {
		t.Fatal(err)
	}
	if got := n1.ns.Run(t, "ip", "route", "show", "proto", "77"); got != "" || contains(n1.ns.Links(t), Device) {
		t.Fatalf("left after Uninstall: routes %q, links %v", got, n1.ns.Links(t))
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
