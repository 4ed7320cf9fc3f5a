package sdn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// TestRootProtectedPorts: a guest (behind a TAP) and a pod (behind the pod
// bridge) cannot open a connection to a protected port on any address of
// their node (its own eth0 address, the TAP's, the bridge's, loopback
// through a hostile route, IPv6 through the TAP) but reach an unprotected
// port; another host still reaches the protected ones.
func TestRootProtectedPorts(t *testing.T) {
	forEachRealBackend(t, func(t *testing.T, rb realBackend) {
		ctx := context.Background()
		n := newTestNode(t, rb)
		guest, pod := netns.New(t), n.pod(t)

		cfg := Config{StateDir: t.TempDir(), Netns: n.node.Path, PodBridge: "podbr0", ProtectedPorts: []int{6060}}
		m, err := newManager(ctx, cfg, rb.firewall(), vethHost{guest: guest})
		if err != nil {
			t.Fatal(err)
		}
		fn, err := m.SetupFunction(ctx, "fn-p", nil)
		if err != nil {
			t.Fatal(err)
		}
		// 127.0.0.2: the guest's own 127.0.0.1 cannot be routed away.
		const loopback = "127.0.0.2"
		addrs := []string{nodeAddr, fn.TapIP.String(), "10.63.0.1", loopback}
		for _, a := range addrs {
			for _, port := range []string{"2379", "4995", "5000", "6060", "7070"} {
				serve(t, n.node, net.JoinHostPort(a, port), "node "+port)
			}
		}
		// Hostile guest and pod: the node's loopback routed to it.
		for _, c := range []struct {
			ns  *netns.NS
			gw  string
			dev string
		}{{guest, fn.TapIP.String(), "eth0"}, {pod, "10.63.0.1", "eth0"}} {
			c.ns.Run(t, "sysctl", "-w", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf."+c.dev+".route_localnet=1")
			c.ns.Run(t, "ip", "route", "del", "127.0.0.0/8", "table", "local")
			c.ns.Run(t, "ip", "route", "add", loopback+"/32", "via", c.gw)
		}
		fetch := func(from *netns.NS, addr string) (string, error) { return from.Fetch(addr, time.Second) }
		for _, from := range []*netns.NS{guest, pod} {
			for _, a := range addrs {
				ports := []string{"2379", "4995", "5000", "6060"}
				if a == loopback {
					ports = ports[2:3] // each costs a timeout
				}
				for _, port := range ports {
					got, err := fetch(from, net.JoinHostPort(a, port))
					if err == nil {
						t.Errorf("from %s: %s:%s answered %q", from.Name, a, port, got)
					} else if a == loopback && !isTimeout(err) {
						t.Errorf("from %s: %s:%s: %v, want a timeout (dropped at the node)", from.Name, a, port, err)
					} else if a != loopback && !errors.Is(err, syscall.ECONNREFUSED) {
						t.Errorf("from %s: %s:%s: %v, want connection refused", from.Name, a, port, err)
					}
				}
				if a == loopback {
					continue // the node's loopback stays closed to guests, every port
				}
				if got, err := fetch(from, net.JoinHostPort(a, "7070")); err != nil || got != "node 7070" {
					t.Errorf("from %s: unprotected %s:7070 = %q, %v", from.Name, a, got, err)
				}
			}
		}
		if got, err := fetch(n.client, nodeAddr+":5000"); err != nil || got != "node 5000" {
			t.Errorf("another host cannot reach %s:5000: %q, %v", nodeAddr, got, err)
		}
		if t.Failed() {
			t.Log(n.dump(t))
		}
	})
}

// TestRootGuestIPv6Closed: IPv6 is off on a guest's TAP, so a guest that
// sends IPv6 to a node address (which rik's IPv4 rules do not cover)
// reaches nothing; with IPv6 on, the same packets would.
func TestRootGuestIPv6Closed(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "sysctl")
	requireNftables(t)
	ctx := context.Background()
	ipt, err := detectIptables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	{
		rb := realBackend{ipt: ipt, nft: true}
		n := newTestNode(t, rb)
		guest := netns.New(t)
		m, err := newManager(ctx, Config{StateDir: t.TempDir(), Netns: n.node.Path}, rb.firewall(), vethHost{guest: guest})
		if err != nil {
			t.Fatal(err)
		}
		fn, err := m.SetupFunction(ctx, "fn-6", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := sysctlIn(t, n.node, "net/ipv6/conf/"+fn.Tap+"/disable_ipv6"); got != "1" {
			t.Fatalf("disable_ipv6 on %s = %s, want 1", fn.Tap, got)
		}
		n.node.Run(t, "ip", "addr", "add", "fd99::1/64", "dev", "eth0", "nodad")
		serve(t, n.node, "[fd99::1]:5000", "node over ipv6")
		mac := strings.TrimSpace(n.node.Run(t, "cat", "/sys/class/net/"+fn.Tap+"/address"))
		// The guest sends to the node's address through the TAP's MAC.
		guest.Run(t, "ip", "addr", "add", "fd98::2/64", "dev", "eth0", "nodad")
		guest.Run(t, "ip", "route", "add", "fd99::/64", "dev", "eth0")
		guest.Run(t, "ip", "neigh", "add", "fd99::1", "lladdr", mac, "dev", "eth0", "nud", "permanent")
		if got, err := guest.Fetch("[fd99::1]:5000", time.Second); err == nil {
			t.Errorf("guest reached the node over IPv6: %q", got)
		}
		// The same with IPv6 on the TAP: the node answers (the test's route
		// back included), so the failure above is the TAP's doing.
		n.node.Run(t, "sysctl", "-w", fmt.Sprintf("net.ipv6.conf.%s.disable_ipv6=0", fn.Tap))
		n.node.Run(t, "ip", "route", "add", "fd98::/64", "dev", fn.Tap)
		testEventuallyFetch(t, guest, "[fd99::1]:5000", "node over ipv6")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// testEventuallyFetch fetches addr from ns until it answers want (IPv6
// addresses may take a moment to be usable).
func testEventuallyFetch(t *testing.T, ns *netns.NS, addr, want string) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, err = ns.Fetch(addr, time.Second); err == nil && got == want {
			return
		}
	}
	t.Errorf("%s from %s = %q, %v; want %q", addr, ns.Name, got, err, want)
}
