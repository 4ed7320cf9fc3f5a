package bridgenet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

var guestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// podNS makes what podnet makes for a pod: a namespace whose eth0 (a veth
// to host's hostDev, 10.99.0.1/24) has 10.99.0.5/24, a default route and
// one more route.
func podNS(t *testing.T) (host, pod *netns.NS) {
	host, pod = netns.New(t), netns.New(t)
	netns.Veth(t, host, "hostveth", "10.99.0.1/24", pod, VethDev, "10.99.0.5/24")
	pod.Run(t, "ip", "route", "add", "default", "via", "10.99.0.1")
	pod.Run(t, "ip", "route", "add", "10.200.0.0/16", "via", "10.99.0.1")
	return host, pod
}

func TestPlumbIsIdempotent(t *testing.T) {
	_, pod := podNS(t)
	want := Addressing{IP: netip.MustParsePrefix("10.99.0.5/24"), Gateway: netip.MustParseAddr("10.99.0.1"),
		Routes: []Route{{Dst: netip.MustParsePrefix("10.200.0.0/16"), Via: netip.MustParseAddr("10.99.0.1")}}}
	for run := range 2 {
		got, err := Plumb(pod.Path)
		if err != nil {
			t.Fatalf("Plumb (run %d): %v", run, err)
		}
		if got.IP != want.IP || got.Gateway != want.Gateway || !slices.Equal(got.Routes, want.Routes) {
			t.Fatalf("Plumb (run %d) = %+v, want %+v", run, got, want)
		}
		checkPlumbed(t, pod)
	}
}

func checkPlumbed(t *testing.T, pod *netns.NS) {
	t.Helper()
	h, err := nsenter.Netlink(pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, err := h.LinkByName(BridgeDev)
	if err != nil {
		t.Fatalf("no bridge: %v", err)
	}
	for _, name := range []string{VethDev, TapDev} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("no %s: %v", name, err)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("%s not enslaved to %s", name, BridgeDev)
		}
		if name == TapDev && l.Type() != "tuntap" {
			t.Errorf("%s is a %s, want tuntap", name, l.Type())
		}
		if name == VethDev {
			if addrs, _ := h.AddrList(l, netlink.FAMILY_V4); len(addrs) != 0 {
				t.Errorf("%s still has %v", VethDev, addrs)
			}
		}
	}
}

// client runs a DHCP client on dev in ns with mac; it returns the lease or
// an error when none came within a few seconds.
func client(t *testing.T, ns *netns.NS, dev string, mac net.HardwareAddr) (*nclient4.Lease, error) {
	t.Helper()
	ns.Run(t, "ip", "link", "set", dev, "address", mac.String())
	var c *nclient4.Client
	if err := ns.Do(func() error {
		var err error
		c, err = nclient4.New(dev, nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
		return err
	}); err != nil {
		t.Fatalf("dhcp client on %s: %v", dev, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Request(ctx)
}

// sniff collects the DHCP messages (to UDP port 68 or 67) seen on dev in ns
// until stop is called.
func sniff(t *testing.T, ns *netns.NS, dev string) (stop func() []string) {
	t.Helper()
	var conns []net.PacketConn
	for _, port := range []int{67, 68} {
		if err := ns.Do(func() error {
			c, err := nclient4.NewRawUDPConn(dev, port)
			conns = append(conns, c)
			return err
		}); err != nil {
			t.Fatalf("sniffing %s: %v", dev, err)
		}
	}
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				if m, err := dhcpv4.FromBytes(buf[:n]); err == nil {
					mu.Lock()
					seen = append(seen, m.MessageType().String()+" for "+m.ClientHWAddr.String())
					mu.Unlock()
				}
			}
		})
	}
	return func() []string {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
		return seen
	}
}

// TestDHCPServerAnswersOnlyTheGuest plumbs a pod namespace, guards it and
// serves a lease for guestMAC. Stand-ins for the guest (ports on br0 in
// namespaces of their own) ask for an address: the guest's MAC gets the
// lease, another MAC nothing; a client on the pod network side (behind
// the veth) gets nothing either, and no DHCP ever shows on the veth.
func TestDHCPServerAnswersOnlyTheGuest(t *testing.T) {
	host, pod := podNS(t)
	a, err := Plumb(pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Guard(pod.Path); err != nil {
		t.Fatal(err)
	}
	lease := Lease{MAC: guestMAC, Addressing: a, DNS: []netip.Addr{netip.MustParseAddr("10.99.0.53")}, Hostname: "fn-one"}
	srv, err := Serve(pod.Path, lease, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	guest, other := netns.New(t), netns.New(t)
	netns.Veth(t, pod, "gport", "", guest, "eth0", "")
	netns.Veth(t, pod, "oport", "", other, "eth0", "")
	pod.Run(t, "ip", "link", "set", "gport", "master", BridgeDev)
	pod.Run(t, "ip", "link", "set", "oport", "master", BridgeDev)
	leak := sniff(t, host, "hostveth")
	flood := sniff(t, other, "eth0") // control: br0 floods the server's broadcasts to its ports

	l, err := client(t, guest, "eth0", guestMAC)
	if err != nil {
		t.Fatalf("guest got no lease: %v", err)
	}
	ack := l.ACK
	if !ack.YourIPAddr.Equal(net.ParseIP("10.99.0.5")) || ack.SubnetMask().String() != "ffffff00" ||
		!slices.ContainsFunc(ack.ClasslessStaticRoute(), func(r *dhcpv4.Route) bool { return r.Dest.String() == "10.200.0.0/16" }) ||
		len(ack.Router()) != 1 || !ack.Router()[0].Equal(net.ParseIP("10.99.0.1")) ||
		len(ack.DNS()) != 1 || !ack.DNS()[0].Equal(net.ParseIP("10.99.0.53")) || ack.HostName() != "fn-one" {
		t.Errorf("lease = %s", ack.Summary())
	}
	if _, err := client(t, other, "eth0", net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9}); err == nil {
		t.Error("another MAC on the bridge got a lease")
	}
	if _, err := client(t, host, "hostveth", guestMAC); err == nil {
		t.Error("a client behind the veth got a lease")
	}
	if seen := flood(); !slices.Contains(seen, "OFFER for "+guestMAC.String()) {
		t.Errorf("a port of br0 saw %q, want the guest's OFFER (the sniffer works)", seen)
	}
	if seen := leak(); len(seen) != 0 {
		t.Errorf("DHCP came through the veth: %q, want none", seen)
	}
}

// fakePorts is a stateful Ports: id -> ip and ports; fail makes
// ExposeFunction fail.
type fakePorts struct {
	mu   sync.Mutex
	m    map[string]netip.Addr
	fail bool
}

func (f *fakePorts) ExposeFunction(_ context.Context, id string, ip netip.Addr, _ []workload.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("port refused")
	}
	f.m[id] = ip
	return nil
}

func (f *fakePorts) UnexposeFunction(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, id)
	return nil
}

func newManager(t *testing.T) (*Manager, *podnet.Manager, *netns.NS, *fakePorts) {
	host := netns.New(t)
	pods, err := podnet.New(podnet.Config{StateDir: t.TempDir(), HostNetns: host.Path,
		CIDR: netip.MustParsePrefix("10.99.2.0/24"), Bridge: "riktest2", VethPrefix: "rikf"})
	if err != nil {
		t.Fatal(err)
	}
	ports := &fakePorts{m: map[string]netip.Addr{}}
	m, err := New(Config{Pods: pods, Ports: ports, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, pods, host, ports
}

func TestManagerSetupTeardown(t *testing.T) {
	m, pods, host, ports := newManager(t)
	ctx := context.Background()
	req := Request{ID: "fn-a", Hostname: "a", MAC: guestMAC}
	n, err := m.Setup(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if n.Lease.IP != netip.MustParsePrefix("10.99.2.2/24") || n.Lease.Gateway != netip.MustParseAddr("10.99.2.1") || n.Tap != TapDev {
		t.Errorf("Setup = %+v", n)
	}
	checkPlumbed(t, &netns.NS{Path: n.Netns})
	if ports.m["fn-a"] != n.Lease.IP.Addr() {
		t.Errorf("ports mapped to %v, want %v", ports.m["fn-a"], n.Lease.IP.Addr())
	}
	if !slices.Contains(host.Links(t), "rikf"+podnetHash("fn-a")) {
		t.Errorf("no rikf veth on the host: %v", host.Links(t))
	}
	// A re-run (a retried start) rebuilds it, at the same address.
	again, err := m.Setup(ctx, req)
	if err != nil || again.Lease.IP != n.Lease.IP {
		t.Fatalf("Setup again = %+v, %v", again, err)
	}
	for range 2 {
		if err := m.Teardown(ctx, "fn-a"); err != nil {
			t.Fatal(err)
		}
	}
	checkGone(t, m, pods, host, ports, "fn-a", n.Netns)
}

func podnetHash(id string) string { return strings.TrimPrefix(podnet.VethName(id), "rikp") }

func checkGone(t *testing.T, m *Manager, pods *podnet.Manager, host *netns.NS, ports *fakePorts, id, nsPath string) {
	t.Helper()
	if _, err := os.Stat(nsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s still there: %v", nsPath, err)
	}
	if links := host.Links(t); slices.ContainsFunc(links, func(l string) bool { return strings.HasPrefix(l, "rikf") }) {
		t.Errorf("veth left on the host: %v", links)
	}
	if owners, err := pods.Owners(); err != nil || len(owners) != 0 {
		t.Errorf("pod network owners = %v, %v; want none", owners, err)
	}
	if _, ok := ports.m[id]; ok {
		t.Error("port mapping left")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.servers) != 0 {
		t.Errorf("dhcp servers left: %v", m.servers)
	}
}

func TestManagerSetupRollsBack(t *testing.T) {
	m, pods, host, ports := newManager(t)
	ports.fail = true
	_, err := m.Setup(context.Background(), Request{ID: "fn-b", MAC: guestMAC})
	if err == nil || !strings.Contains(err.Error(), "port refused") {
		t.Fatalf("Setup = %v, want the port error", err)
	}
	checkGone(t, m, pods, host, ports, "fn-b", pods.NetnsPath("fn-b"))
}

// TestManagerReconcile: after a restart (a new Manager on the same state)
// what no owned instance needs goes; an owned one is adopted and its
// server answers again.
func TestManagerReconcile(t *testing.T) {
	m, pods, host, ports := newManager(t)
	ctx := context.Background()
	keep, err := m.Setup(ctx, Request{ID: "fn-keep", MAC: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := m.Setup(ctx, Request{ID: "fn-gone", MAC: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	m.Close() // the riklet stops: servers end, networks stay
	m2, err := New(Config{Pods: pods, Ports: ports, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	t.Cleanup(func() {
		if err := m2.Teardown(ctx, "fn-keep"); err != nil {
			t.Error(err)
		}
	})
	if err := m2.Adopt("fn-keep", keep); err != nil {
		t.Fatal(err)
	}
	if err := m2.Reconcile(ctx, []string{"fn-keep"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gone.Netns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unowned netns still there: %v", err)
	}
	if _, err := os.Stat(keep.Netns); err != nil {
		t.Errorf("owned netns gone: %v", err)
	}
	// A stand-in guest on the kept bridge gets its lease from the adopted server.
	guest := netns.New(t)
	portInto(t, keep.Netns, guest)
	if _, err := client(t, guest, "eth0", guestMAC); err != nil {
		t.Errorf("adopted server did not answer: %v", err)
	}
	_ = host
}

// portInto connects guest's new eth0 to br0 in the namespace at nsPath.
func portInto(t *testing.T, nsPath string, guest *netns.NS) {
	t.Helper()
	guest.Run(t, "ip", "link", "add", "kport", "type", "veth", "peer", "name", "eth0")
	gh, err := nsenter.Netlink(guest.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	target, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	l, err := gh.LinkByName("kport")
	if err == nil {
		err = gh.LinkSetNsFd(l, int(target))
	}
	if err != nil {
		t.Fatalf("moving kport: %v", err)
	}
	h, err := nsenter.Netlink(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, err := h.LinkByName(BridgeDev)
	if err == nil {
		l, err = h.LinkByName("kport")
	}
	if err == nil {
		err = h.LinkSetMaster(l, br)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		t.Fatalf("attaching kport: %v", err)
	}
	guest.Run(t, "ip", "link", "set", "eth0", "up")
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestInterruptedSetup: a riklet killed in the middle of a Setup leaves a
// half-plumbed namespace (TAP and bridge made, the veth still addressed).
// Plumb run again finishes it; a restarted riklet that does not own the
// instance removes all of it.
func TestInterruptedSetup(t *testing.T) {
	m, pods, host, ports := newManager(t)
	ctx := context.Background()
	pn, err := pods.Setup(ctx, "fn-half")
	if err != nil {
		t.Fatal(err)
	}
	pod := &netns.NS{Path: pn.NetnsPath}
	if err := pod.Do(addTap); err != nil {
		t.Fatal(err)
	}
	h, err := nsenter.Netlink(pn.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := ensureBridge(h, Addressing{IP: netip.MustParsePrefix("10.99.2.2/24")}); err != nil {
		t.Fatal(err)
	}
	a, err := Plumb(pn.NetnsPath)
	if err != nil || a.IP != netip.MustParsePrefix("10.99.2.2/24") || a.Gateway != netip.MustParseAddr("10.99.2.1") {
		t.Fatalf("Plumb after an interrupted one = %+v, %v", a, err)
	}
	checkPlumbed(t, pod)
	m.Close()
	m2, err := New(Config{Pods: pods, Ports: ports, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	checkGone(t, m2, pods, host, ports, "fn-half", pn.NetnsPath)
}
