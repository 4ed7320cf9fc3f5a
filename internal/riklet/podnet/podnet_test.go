package podnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil/netns"
)

// serveHi answers "hi" to every connection to addr inside ns.
func serveHi(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	ns.Serve(t, addr, func(net.Conn) string { return "hi" })
}

// fetch connects to addr from inside ns and returns what it reads.
func fetch(ns *netns.NS, addr string) (string, error) { return ns.Fetch(addr, 3*time.Second) }

func TestSetupReachableAndTeardown(t *testing.T) {
	host := netns.New(t)
	ctx := context.Background()
	m, err := New(Config{StateDir: t.TempDir(), HostNetns: host.Path, CIDR: netip.MustParsePrefix("10.99.0.0/24"), Bridge: "riktest0"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Setup(ctx, "pod-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-a") })
	b, err := m.Setup(ctx, "pod-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-b") })
	if a.IP == b.IP || !netip.MustParsePrefix("10.99.0.0/24").Contains(a.IP) || a.IP == m.Gateway() {
		t.Fatalf("addresses a=%s b=%s gateway=%s", a.IP, b.IP, m.Gateway())
	}
	if a.Gateway != netip.MustParseAddr("10.99.0.1") {
		t.Errorf("gateway = %s", a.Gateway)
	}
	if got := strings.TrimSpace(host.Run(t, "cat", "/proc/sys/net/ipv6/conf/riktest0/disable_ipv6")); got != "1" {
		t.Errorf("IPv6 on the bridge: disable_ipv6 = %s, want 1", got)
	}
	again, err := m.Setup(ctx, "pod-a")
	if err != nil || again != a {
		t.Errorf("second Setup = %+v, %v; want %+v", again, err, a)
	}

	podA := &netns.NS{Name: "pod-a", Path: a.NetnsPath}
	podB := &netns.NS{Name: "pod-b", Path: b.NetnsPath}
	serveHi(t, podA, net.JoinHostPort(a.IP.String(), "8080"))
	if got, err := fetch(host, net.JoinHostPort(a.IP.String(), "8080")); err != nil || got != "hi" {
		t.Errorf("host -> pod a: %q, %v", got, err)
	}
	if got, err := fetch(podB, net.JoinHostPort(a.IP.String(), "8080")); err != nil || got != "hi" {
		t.Errorf("pod b -> pod a: %q, %v", got, err)
	}
	// Pods reach the gateway (default route through the bridge).
	serveHi(t, host, net.JoinHostPort(a.Gateway.String(), "9090"))
	if got, err := fetch(podA, net.JoinHostPort(a.Gateway.String(), "9090")); err != nil || got != "hi" {
		t.Errorf("pod a -> gateway: %q, %v", got, err)
	}

	owners, err := m.Owners()
	if err != nil || !slices.Equal(owners, []string{"pod-a", "pod-b"}) {
		t.Errorf("Owners = %v, %v", owners, err)
	}

	if err := m.Teardown(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx, "pod-a"); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if slices.Contains(host.Links(t), a.HostVeth) {
		t.Errorf("veth %s left behind", a.HostVeth)
	}
	if _, err := os.Lstat(a.NetnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s left behind: %v", a.NetnsPath, err)
	}
	if _, ok := m.addr.ipam.Lookup("pod-a"); ok {
		t.Error("lease of pod-a left behind")
	}
	if owners, _ := m.Owners(); !slices.Equal(owners, []string{"pod-b"}) {
		t.Errorf("Owners after teardown = %v", owners)
	}
	// The freed address is handed out again.
	c, err := m.Setup(ctx, "pod-c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-c") })
	if c.IP != a.IP {
		t.Errorf("pod-c got %s, want reused %s", c.IP, a.IP)
	}
}

func TestOwnersFindsLabelledVethAfterRestart(t *testing.T) {
	host := netns.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{StateDir: dir, HostNetns: host.Path, Bridge: "riktest0"}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := m.Setup(ctx, "pod-x")
	if err != nil {
		t.Fatal(err)
	}
	// A new manager on the same state sees the pod and can remove it.
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := m2.Get("pod-x"); !ok || got != n {
		t.Errorf("Get after restart = %+v %v, want %+v", got, ok, n)
	}
	if owners, _ := m2.Owners(); !slices.Equal(owners, []string{"pod-x"}) {
		t.Errorf("Owners = %v", owners)
	}
	if err := m2.Teardown(ctx, "pod-x"); err != nil {
		t.Fatal(err)
	}
	if owners, _ := m2.Owners(); len(owners) != 0 {
		t.Errorf("Owners after teardown = %v", owners)
	}
}

func TestSetupRollsBack(t *testing.T) {
	host := netns.New(t)
	host.Run(t, "ip", "link", "add", "riknotbr", "type", "veth", "peer", "name", "riknotbr1")
	dir := t.TempDir()
	m, err := New(Config{StateDir: dir, HostNetns: host.Path, Bridge: "riknotbr"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(context.Background(), "pod-y"); err == nil {
		t.Fatal("Setup with a non-bridge link as bridge succeeded")
	}
	if owners, _ := m.Owners(); len(owners) != 0 {
		t.Errorf("left behind after failed Setup: %v", owners)
	}
	if slices.Contains(host.Links(t), VethName("pod-y")) {
		t.Error("veth left behind")
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{StateDir: t.TempDir(), CIDR: netip.MustParsePrefix("10.0.0.0/30")},
		{StateDir: t.TempDir(), CIDR: netip.MustParsePrefix("fd00::/64")},
		{StateDir: t.TempDir(), Bridge: "much-too-long-bridge"},
		{},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	m, _ := New(Config{StateDir: t.TempDir()})
	if _, err := m.Setup(context.Background(), "../x"); err == nil {
		t.Error("Setup accepted id ../x")
	}
}

func TestNames(t *testing.T) {
	if v := VethName("0b4c5e3a-6b1f-4a8e-9a55-5d3c1c1f2e10"); len(v) != 14 || v[:4] != "rikp" {
		t.Errorf("VethName = %q", v)
	}
	if VethName("a") == VethName("b") {
		t.Error("names collide")
	}
	if got := lastAddr(netip.MustParsePrefix("10.63.0.0/16")); got != netip.MustParseAddr("10.63.255.255") {
		t.Errorf("lastAddr = %s", got)
	}
}

// A teardown that cannot remove the veth keeps the address: it is still on
// the bridge and must not go to another pod.
func TestTeardownFailureKeepsLease(t *testing.T) {
	host := netns.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	m, err := New(Config{StateDir: dir, HostNetns: host.Path, CIDR: netip.MustParsePrefix("10.99.1.0/24"), Bridge: "riktest1"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Setup(ctx, "pod-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-a") })
	// The pod's processes keep its netns (and so the veth pair) alive.
	hold, err := os.Open(a.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	// The same node, but its host netns cannot be reached.
	broken, err := New(Config{StateDir: dir, HostNetns: dir + "/no-such-netns", CIDR: netip.MustParsePrefix("10.99.1.0/24"), IPAM: m.addr.ipam})
	if err != nil {
		t.Fatal(err)
	}
	if err := broken.Teardown(ctx, "pod-a"); err == nil {
		t.Fatal("Teardown without the host netns succeeded")
	}
	if !slices.Contains(host.Links(t), VethName("pod-a")) {
		t.Fatal("test broken: the veth is gone")
	}
	if _, ok := m.addr.ipam.Lookup("pod-a"); !ok {
		t.Error("lease released while the veth still holds the address")
	}
	b, err := m.Setup(ctx, "pod-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-b") })
	if b.IP == a.IP {
		t.Errorf("pod-b got %s, still on pod-a's veth", b.IP)
	}
	if err := m.Teardown(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.addr.ipam.Lookup("pod-a"); ok {
		t.Error("lease kept after a successful Teardown")
	}
}

// TestSetupWaitsForSubnet: with Config.Subnet the pod range is the one
// the control plane gives, once it is known.
func TestSetupWaitsForSubnet(t *testing.T) {
	host := netns.New(t)
	given := make(chan struct{})
	subnet := netip.MustParsePrefix("10.98.3.0/24")
	m, err := New(Config{StateDir: t.TempDir(), HostNetns: host.Path, Bridge: "riktest0",
		Subnet: func(ctx context.Context) (netip.Prefix, error) {
			select {
			case <-given:
				return subnet, nil
			case <-ctx.Done():
				return netip.Prefix{}, ctx.Err()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Gateway().IsValid() {
		t.Errorf("gateway %s before the subnet is known", m.Gateway())
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.Setup(short, "pod-a"); !errors.Is(err, errNoSubnet) {
		t.Fatalf("Setup before the subnet: %v, want errNoSubnet", err)
	}
	if owners, err := m.Owners(); err != nil || len(owners) != 0 {
		t.Fatalf("Owners before the subnet: %v, %v", owners, err)
	}
	done := make(chan error, 1)
	var n Net
	go func() {
		var err error
		n, err = m.Setup(context.Background(), "pod-a")
		done <- err
	}()
	close(given)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(context.Background(), "pod-a") })
	if !subnet.Contains(n.IP) || n.Gateway != netip.MustParseAddr("10.98.3.1") || m.Gateway() != n.Gateway {
		t.Fatalf("pod network %+v, want an address in %s behind 10.98.3.1", n, subnet)
	}
	if got, ok := m.Get("pod-a"); !ok || got != n {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
}
