package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/fabric"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

// The fleet network (issue 11): riklets with --pod-cidr auto take the pod
// subnet the controller allocates them and route to each other's, directly
// when on one segment, over VXLAN otherwise.

const (
	routerIP0 = "172.31.0.254" // the router on the cluster's bridge
	routerIP1 = "172.31.1.254" // and on the second segment's
)

// fleet is a cluster of two pod nodes with --pod-cidr auto.
type fleet struct {
	c      *cluster
	n1, n2 *node
}

// fleetCluster starts two nodes on the cluster's bridge, or (routed) the
// second one on another segment behind a router; their riklets get
// nodeArgs too.
func fleetCluster(t testing.TB, routed bool, nodeArgs ...string) fleet {
	t.Helper()
	requireHost(t)
	return fleetClusterOn(newCluster(t, clusterOptions{nodeTimeout: 3 * time.Second}), // a stopped node is soon lost
		routed, nodeArgs, nil)
}

// fleetClusterOn is fleetCluster on cluster c, node 2's riklet also given
// n2Args.
func fleetClusterOn(c *cluster, routed bool, nodeArgs, n2Args []string) fleet {
	t := c.t
	t.Helper()
	c.registry = podRegistry(c)
	args := append([]string{"--insecure-registry", c.registry, "--pod-cidr", "auto"}, nodeArgs...)
	f := fleet{c: c, n1: c.addNode(args...)}
	args2 := append(slices.Clone(args), n2Args...)
	if !routed {
		f.n2 = c.addNode(args2...)
	} else {
		attach := c.segment()
		f.n1.ns.Run(t, "ip", "route", "add", "172.31.1.0/24", "via", routerIP0)
		f.n2 = c.addNodeAt(fmt.Sprintf("172.31.1.%d", nodeIPBase+2), attach, args2...)
	}
	c.waitNodesReady("pod", 60*time.Second, f.n1.name, f.n2.name)
	return f
}

// segment makes a second segment (bridge br1 in the bridge namespace,
// 172.31.1.0/24) routed to the cluster's by a router namespace, and
// returns how to attach a namespace to it.
func (c *cluster) segment() func(role, addr string) *netns.NS {
	c.t.Helper()
	c.net.Run(c.t, "ip", "link", "add", "br1", "type", "bridge")
	c.net.Run(c.t, "ip", "link", "set", "br1", "up")
	router := netns.New(c.t)
	netns.Veth(c.t, router, "r0", routerIP0+subnetBits, c.net, "rtr0", "")
	netns.Veth(c.t, router, "r1", routerIP1+subnetBits, c.net, "rtr1", "")
	c.net.Run(c.t, "ip", "link", "set", "rtr0", "master", "br0")
	c.net.Run(c.t, "ip", "link", "set", "rtr1", "master", "br1")
	router.Run(c.t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for _, ns := range []*netns.NS{c.ctl, c.client} {
		ns.Run(c.t, "ip", "route", "add", "172.31.1.0/24", "via", routerIP0)
	}
	return func(role, addr string) *netns.NS {
		ns := netns.New(c.t)
		port := "p" + strings.TrimPrefix(ns.Name, "rikt-")
		netns.Veth(c.t, ns, "eth0", addr+subnetBits, c.net, port, "")
		c.net.Run(c.t, "ip", "link", "set", port, "master", "br1")
		ns.Run(c.t, "ip", "route", "add", "default", "via", routerIP1)
		c.t.Logf("namespace %s: %s (%s, behind the router)", role, ns.Name, addr)
		return ns
	}
}

// subnets waits until both nodes list a pod subnet, and returns them.
func (f fleet) subnets() (s1, s2 netip.Prefix) {
	c := f.c
	c.eventually(30*time.Second, "pod subnets allocated", func() error {
		items, err := c.nodesList()
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, it := range items {
			got[it.Name] = it.Value.PodSubnet
		}
		var err1, err2 error
		s1, err1 = netip.ParsePrefix(got[f.n1.name])
		s2, err2 = netip.ParsePrefix(got[f.n2.name])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("nodes' pod subnets: %v", got)
		}
		return nil
	})
	if s1.Overlaps(s2) || s1.Bits() != 24 {
		c.t.Fatalf("pod subnets %s and %s: want two distinct /24", s1, s2)
	}
	return s1, s2
}

// podPair runs two instances of an httpd pod exposing hostPort (so one on
// each node) and returns them by node.
func (f fleet) podPair(name string, hostPort int) (on1, on2 instanceItem) {
	c := f.c
	def := c.writeFile(name+".json", httpdPod(name, c.registry+"/busybox:latest", "fleet", "Always", hostPort))
	c.mustRikctl("create", "workload", "-f", def)
	for i := range 2 {
		c.mustRikctl("create", "instance", "--workload-id", name, "--name", fmt.Sprintf("%s-%d", name, i))
	}
	for i := range 2 {
		it := c.waitStatus(fmt.Sprintf("%s-%d", name, i), workload.StatusRunning, 90*time.Second)
		switch it.Value.Node {
		case f.n1.name:
			on1 = it
		case f.n2.name:
			on2 = it
		}
	}
	if on1.ID == "" || on2.ID == "" {
		c.t.Fatalf("instances of %s not one on each node: %+v %+v", name, on1, on2)
	}
	return on1, on2
}

// podNS is the network namespace of pod instance it on node n.
func podNS(n *node, it instanceItem) *netns.NS {
	return &netns.NS{Name: it.Name, Path: filepath.Join(n.stateDir, "pods", "net", "netns", it.ID)}
}

// seenFrom serves on pod b's address and has pod a connect to it: it
// returns the address b saw the connection come from.
func seenFrom(t testing.TB, nsA, nsB *netns.NS, ipB string, port int) (string, error) {
	addr := net.JoinHostPort(ipB, fmt.Sprint(port))
	nsB.Serve(t, addr, func(c net.Conn) string { return c.RemoteAddr().(*net.TCPAddr).IP.String() })
	return nsA.Fetch(addr, 5*time.Second)
}

// rikRoutes is node n's fabric routes.
func rikRoutes(n *node) (string, error) {
	return n.ns.Exec(context.Background(), "ip", "route", "show", "proto", fmt.Sprint(int(fabric.RouteProtocol)))
}

func TestFleetNetwork(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routed bool
	}{{"host-gw", false}, {"vxlan", true}} {
		t.Run(tc.name, func(t *testing.T) { testFleetNetwork(t, tc.routed) })
	}
}

// testFleetNetwork: each node gets its own subnet; a pod on node 1 reaches
// a pod on node 2 by IP, seen with its own address (no NAT), directly or
// over VXLAN; a node that goes away has its route removed on the other,
// and comes back with the same subnet.
func testFleetNetwork(t *testing.T, routed bool) {
	f := fleetCluster(t, routed)
	c := f.c
	s1, s2 := f.subnets()
	a, b := f.podPair("web", 8080)
	ipA, ipB := netip.MustParseAddr(a.Value.IP), netip.MustParseAddr(b.Value.IP)
	if !s1.Contains(ipA) || !s2.Contains(ipB) {
		t.Fatalf("pod IPs %s, %s not in their nodes' subnets %s, %s", ipA, ipB, s1, s2)
	}
	nsA, nsB := podNS(f.n1, a), podNS(f.n2, b)

	via := "via " + f.n2.ip
	if routed {
		via = "dev " + fabric.Device
	}
	c.eventually(30*time.Second, "route to node 2's pods on node 1", func() error {
		out, err := rikRoutes(f.n1)
		if err != nil || !strings.Contains(out, s2.String()+" ") || !strings.Contains(out, via) {
			return fmt.Errorf("node 1's routes %q (%v): want %s %s", out, err, s2, via)
		}
		return nil
	})
	c.waitPage(nsA, "http://"+b.Value.IP+":80/", "hello from rik", 30*time.Second)
	c.waitPage(nsB, "http://"+a.Value.IP+":80/", "hello from rik", 30*time.Second)
	if from, err := seenFrom(t, nsA, nsB, b.Value.IP, 7000); err != nil || from != a.Value.IP {
		t.Fatalf("pod on node 1 -> pod on node 2: seen from %q (%v), want %s (no NAT)", from, err, a.Value.IP)
	}

	// Node 2's riklet goes away: once the scheduler declares the node lost,
	// node 1 drops its route. Its pods keep running; it comes back with the
	// same subnet and the route returns.
	f.n2.riklet.kill(syscall.SIGTERM)
	c.eventually(60*time.Second, "route to the lost node removed", func() error {
		out, err := rikRoutes(f.n1)
		if err != nil || out != "" {
			return fmt.Errorf("node 1's routes %q (%v)", out, err)
		}
		if links, err := links(f.n1); err != nil || contains(links, fabric.Device) {
			return fmt.Errorf("node 1's links %v (%v)", links, err)
		}
		return nil
	})
	f.n2.riklet.start(t)
	c.waitNodesReady("pod", 60*time.Second, f.n2.name)
	if _, again := f.subnets(); again != s2 {
		t.Fatalf("node 2 came back with subnet %s, had %s", again, s2)
	}
	c.waitPage(nsA, "http://"+b.Value.IP+":80/", "hello from rik", 30*time.Second)
}
