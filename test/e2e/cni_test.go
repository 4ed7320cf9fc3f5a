package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

const cniBinDir = "/usr/lib/cni" // Debian's containernetworking-plugins

// cniConf is a bridge + host-local + portmap chain, leases under ipamDir.
func cniConf(ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rik-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cnie2e0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.7.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`, ipamDir)
}

// requireCNIPlugins requires the plugins of cniConf.
func requireCNIPlugins(t testing.TB) {
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		testutil.RequireFile(t, filepath.Join(cniBinDir, p))
	}
}

// cniNetwork writes cniConf into the cluster's directory; it returns the
// riklet flags that use it and host-local's lease directory.
func (c *cluster) cniNetwork() (flags []string, ipamDir string) {
	c.t.Helper()
	confDir := filepath.Join(c.dir, "cni-conf")
	ipamDir = filepath.Join(c.dir, "cni-ipam")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.writeFile("cni-conf/10-rik.conflist", cniConf(ipamDir))
	return []string{"--network", "cni", "--cni-conf-dir", confDir, "--cni-bin-dir", cniBinDir}, ipamDir
}

// TestPodCNI: with --network cni a pod gets its address from host-local,
// its node port is published by portmap, a riklet killed with SIGKILL
// adopts it after a CNI CHECK, and deleting it runs DEL (lease, veth,
// netns and port all gone).
func TestPodCNI(t *testing.T) {
	requireHost(t)
	requireCNIPlugins(t)
	c := newCluster(t, clusterOptions{})
	c.registry = podRegistry(c)
	flags, ipamDir := c.cniNetwork()
	n := c.addNode(append([]string{"--insecure-registry", c.registry}, flags...)...)
	c.waitNodesReady("pod", 60*time.Second, n.name)

	const hostPort = 8080
	c.mustRikctl("create", "workload", "-f", c.writeFile("pod.json", httpdPod("web", c.registry+"/busybox:latest", "cni", "Always", hostPort)))
	c.mustRikctl("create", "instance", "--workload-id", "web", "--name", "web-0")
	inst := c.waitStatus("web-0", workload.StatusRunning, 90*time.Second)
	ip, err := netip.ParseAddr(inst.Value.IP)
	if err != nil || !netip.MustParsePrefix("10.89.7.0/24").Contains(ip) {
		t.Fatalf("pod IP %q: want one from host-local's 10.89.7.0/24", inst.Value.IP)
	}
	lease := filepath.Join(ipamDir, "rik-e2e", ip.String())
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("host-local lease: %v", err)
	}
	nodeURL := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	c.waitPage(c.client, nodeURL, "hello from rik", 30*time.Second)

	// rik's guards cover the CNI bridge: the pod cannot reach a control
	// plane port on its node, which another namespace can.
	n.ns.Serve(t, "0.0.0.0:5000", func(net.Conn) string { return "control plane" })
	if got, err := c.client.Fetch(net.JoinHostPort(n.ip, "5000"), 5*time.Second); err != nil || got != "control plane" {
		t.Fatalf("node port 5000 from the client: %q, %v", got, err)
	}
	pod := &netns.NS{Name: inst.Name, Path: filepath.Join(n.stateDir, "pods", "cni", "netns", inst.ID)}
	if got, err := pod.Fetch("10.89.7.1:5000", 5*time.Second); err == nil {
		t.Fatalf("pod reached its node's port 5000: %q", got)
	}

	// SIGKILL: the new riklet checks the pod's network and adopts it.
	c.crashRiklet(n)
	adopted := c.waitStatus("web-0", workload.StatusRunning, 30*time.Second)
	if adopted.Value.IP != inst.Value.IP || adopted.Value.Restarts != 0 {
		t.Fatalf("after the crash: ip %s restarts %d, want %s 0", adopted.Value.IP, adopted.Value.Restarts, inst.Value.IP)
	}
	c.eventually(30*time.Second, "CNI CHECK in the new riklet's log", func() error {
		b, err := os.ReadFile(n.riklet.log)
		if err != nil || !strings.Contains(string(b), "passed its CNI CHECK") {
			return fmt.Errorf("no CHECK logged (%v)", err)
		}
		return nil
	})
	c.waitPage(c.client, nodeURL, "hello from rik", 30*time.Second)

	// Delete: DEL releases the lease, the veth and the port.
	c.mustRikctl("delete", "instance", "web-0")
	c.waitGone("web-0", 60*time.Second)
	c.eventually(30*time.Second, "CNI DEL done", func() error {
		if _, err := os.Stat(lease); !os.IsNotExist(err) {
			return fmt.Errorf("lease %s still there (%v)", lease, err)
		}
		if netns := pathsContaining(filepath.Join(n.stateDir, "pods", "cni"), inst.ID); len(netns) > 0 {
			return fmt.Errorf("left in the CNI state: %v", netns)
		}
		links, err := links(n)
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l, "veth") {
				return fmt.Errorf("veth %s left (links %v)", l, links)
			}
		}
		return nil
	})
	if body, err := c.get(c.client, nodeURL); err == nil {
		t.Errorf("portmap port still answers after delete: %q", body)
	}
}
