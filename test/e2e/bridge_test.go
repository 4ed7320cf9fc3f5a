package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// bridgeFunctionDef is functionDef with spec.function.network bridge.
func bridgeFunctionDef(name, rootfs string, hostPort int) string {
	return strings.Replace(functionDef(name, rootfs, hostPort),
		`"exposure"`, `"network": "bridge", "exposure"`, 1)
}

// guestFetch is a guest entrypoint fetching / from the address given as
// fetch_ip= on the kernel command line, once a second, onto the console.
const guestFetch = `#!/bin/sh
ip=$(busybox sed -n 's/.*fetch_ip=\([0-9.]*\).*/\1/p' /proc/cmdline)
while true; do printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 2 "$ip" 80; sleep 1; done
`

// fetchFunctionDef is a bridge-mode Function whose guest fetches the page
// of ip (guestFetch).
func fetchFunctionDef(name, rootfs, ip string) string {
	return fmt.Sprintf(`{
  "apiVersion": "v1",
  "kind": "Function",
  "name": %q,
  "spec": {"function": {
    "network": "bridge",
    "execution": {"rootfs": %q, "vcpus": 1, "memory": 128, "entrypoint": "/bin/fetch.sh", "kernelArgs": "fetch_ip=%s"}
  }}
}`, name, rootfs, ip)
}

// fetchPod is a pod that fetches / from ip:80 once a second and prints
// the answer (with busybox nc: the image's busybox wget crashes).
func fetchPod(name, image, ip string) string {
	return fmt.Sprintf(`{
  "apiVersion": "v1",
  "kind": "Pod",
  "name": %q,
  "spec": {"containers": [{
    "name": "fetch",
    "image": %q,
    "command": ["/bin/sh", "-c"],
    "args": ["while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 %s 80; sleep 1; done"]
  }]}
}`, name, image, ip)
}

// TestFunctionBridge is issue 11's bridge mode with the real binaries: a
// Function with spec.function.network bridge boots under QEMU on a node
// that also runs pods; its guest gets the pod address by DHCP (its console
// says so), a pod and another Function fetch its page at that address, its host port answers
// from the client namespace, a SIGKILLed riklet adopts it, and delete
// leaves no namespace, veth, DNAT rule, lease, process or file.
func TestFunctionBridge(t *testing.T) {
	requireHost(t, "qemu-system-x86_64")
	kernel, modules := testKernel(t)
	c := newCluster(t, clusterOptions{})
	c.registry = podRegistry(c)
	rootfs := guestRootfsWith(t, guestPage, map[string]string{"bin/fetch.sh": guestFetch})
	srv := c.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, bytes.NewReader(rootfs))
	}))
	n := c.addNode("--insecure-registry", c.registry, "--vmm", "qemu", "--allow-private-fetch=false",
		"--kernel-path", kernel, "--kernel-modules", modules, "--init-binary", c.bins.rikInit)
	c.waitNodesReady("function", 60*time.Second, n.name)

	const hostPort = 8083
	def := c.writeFile("fn.json", bridgeFunctionDef("bfn", "http://"+srv+"/rootfs.tar.gz", hostPort))
	c.mustRikctl("create", "workload", "-f", def)
	created := time.Now()
	c.mustRikctl("create", "instance", "--workload-id", "bfn", "--name", "bfn-0")
	inst := c.waitStatus("bfn-0", workload.StatusRunning, 3*time.Minute)
	id := inst.ID
	if !strings.HasPrefix(inst.Value.IP, "10.63.1.") {
		t.Fatalf("bridge-mode function at %q, want a pod address of 10.63.1.0/24", inst.Value.IP)
	}
	nodeURL := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	c.waitPage(c.client, nodeURL, guestPage, 3*time.Minute)
	t.Logf("bridge-mode function %s at %s: create→page on host port %s", id, inst.Value.IP, time.Since(created).Round(10*time.Millisecond))
	c.waitPage(n.ns, "http://"+inst.Value.IP+"/", guestPage, 30*time.Second)

	c.waitLogs("bfn-0", "eth0 "+inst.Value.IP+"/24 by DHCP", 30*time.Second)

	pod := c.writeFile("fetch.json", fetchPod("fetch", c.registry+"/busybox:latest", inst.Value.IP))
	c.mustRikctl("create", "workload", "-f", pod)
	c.mustRikctl("create", "instance", "--workload-id", "fetch", "--name", "fetch-0")
	c.waitStatus("fetch-0", workload.StatusRunning, 90*time.Second)
	c.waitLogs("fetch-0", strings.TrimSpace(guestPage), 60*time.Second) // a pod fetched the page
	c.mustRikctl("delete", "instance", "fetch-0")
	c.waitGone("fetch-0", 60*time.Second)

	// Another bridge-mode Function reaches it at its pod address too.
	client := c.writeFile("client.json", fetchFunctionDef("bclient", "http://"+srv+"/rootfs.tar.gz", inst.Value.IP))
	c.mustRikctl("create", "workload", "-f", client)
	c.mustRikctl("create", "instance", "--workload-id", "bclient", "--name", "bclient-0")
	c.waitStatus("bclient-0", workload.StatusRunning, 3*time.Minute)
	c.waitLogs("bclient-0", strings.TrimSpace(guestPage), 2*time.Minute) // a Function fetched the page
	c.mustRikctl("delete", "instance", "bclient-0")
	c.waitGone("bclient-0", 2*time.Minute)

	tr, err := bridgeTraces(n, id)
	requireTraces(t, tr, err, "netns", "link", "dnat", "pod lease", "qemu", "file")

	c.crashRiklet(n)
	if after, err := bridgeTraces(n, id); err != nil || strings.Join(after["qemu"], ",") != strings.Join(tr["qemu"], ",") {
		t.Errorf("QEMU processes across the riklet restart: %v, then %v (%v)", tr["qemu"], after["qemu"], err)
	}
	if it, _, _ := c.instance("bfn-0"); it.Value.Status != workload.StatusRunning || it.Value.Restarts != 0 {
		t.Errorf("after riklet restart: %s, restarts %d; want RUNNING, 0", it.Value.Status, it.Value.Restarts)
	}
	c.waitPage(c.client, nodeURL, guestPage, 30*time.Second)

	c.mustRikctl("delete", "instance", "bfn-0")
	c.waitGone("bfn-0", 2*time.Minute)
	c.eventually(30*time.Second, "bridge-mode function leftovers removed", func() error { return noTraces(bridgeTraces(n, id)) })
	if body, err := c.get(c.client, nodeURL); err == nil {
		t.Errorf("host port still answers after delete: %q", body)
	}
}

// bridgeTraces is functionTraces (DNAT rules, links, QEMU processes,
// files) and the Function's network namespace and its lease in the pod
// pool.
func bridgeTraces(n *node, id string) (map[string][]string, error) {
	tr, err := functionTraces(n, id)
	if err != nil {
		return nil, err
	}
	ents, _ := os.ReadDir(filepath.Join(n.stateDir, "functions", "bridgenet", "netns"))
	for _, e := range ents {
		tr["netns"] = append(tr["netns"], e.Name())
	}
	leases, err := os.ReadFile(filepath.Join(n.stateDir, "pods", "net", "ipam.json"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if bytes.Contains(leases, []byte(id)) {
		tr["pod lease"] = append(tr["pod lease"], string(leases))
	}
	return tr, nil
}

// waitLogs waits until `rikctl logs name` shows want.
func (c *cluster) waitLogs(name, want string, timeout time.Duration) {
	c.t.Helper()
	c.eventually(timeout, name+"'s logs show "+want, func() error {
		out, err := c.rikctl("logs", name)
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("logs of %s lack %q:\n%s", name, want, out)
		}
		return nil
	})
}

// TestFunctionBridgeFleet is bridge mode on the fleet network: two nodes
// with --pod-cidr auto, on one segment (direct routes) or on two (VXLAN),
// a bridge-mode Function on node 2 (the only one running Functions) takes
// its address from node 2's subnet by DHCP; a pod on node 1 fetches its
// page at that address, also after node 2's riklet was SIGKILLed and
// adopted it, and a bridge-mode Function on node 2 fetches the pod's page,
// seen from its own pod address (no NAT); delete leaves nothing.
func TestFunctionBridgeFleet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routed bool
	}{{"host-gw", false}, {"vxlan", true}} {
		t.Run(tc.name, func(t *testing.T) { testFunctionBridgeFleet(t, tc.routed) })
	}
}

func testFunctionBridgeFleet(t *testing.T, routed bool) {
	requireHost(t, "qemu-system-x86_64")
	kernel, modules := testKernel(t)
	c := newCluster(t, clusterOptions{}) // the default node timeout: the riklet's restart below is no loss
	rootfs := guestRootfsWith(t, guestPage, map[string]string{"bin/fetch.sh": guestFetch})
	srv := c.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, bytes.NewReader(rootfs))
	}))
	f := fleetClusterOn(c, routed, nil, []string{"--vmm", "qemu", "--allow-private-fetch=false",
		"--kernel-path", kernel, "--kernel-modules", modules, "--init-binary", c.bins.rikInit,
		"--function-network", "bridge"})
	c.waitNodesReady("function", 60*time.Second, f.n2.name)
	_, s2 := f.subnets()
	web, other := f.podPair("web", 8080) // a pod on node 1; the one on node 2 is not needed
	c.mustRikctl("delete", "instance", other.Name)
	c.waitGone(other.Name, 60*time.Second)
	nsWeb := podNS(f.n1, web)

	def := c.writeFile("fn.json", bridgeFunctionDef("bfn", "http://"+srv+"/rootfs.tar.gz", 8083))
	c.mustRikctl("create", "workload", "-f", def)
	c.mustRikctl("create", "instance", "--workload-id", "bfn", "--name", "bfn-0")
	inst := c.waitStatus("bfn-0", workload.StatusRunning, 3*time.Minute)
	if inst.Value.Node != f.n2.name {
		t.Fatalf("function on %s, want %s", inst.Value.Node, f.n2.name)
	}
	ip, err := netip.ParseAddr(inst.Value.IP)
	if err != nil || !s2.Contains(ip) {
		t.Fatalf("bridge-mode function at %q, want an address of node 2's subnet %s", inst.Value.IP, s2)
	}
	c.waitLogs("bfn-0", "eth0 "+inst.Value.IP+"/24 by DHCP", 3*time.Minute)
	c.waitPage(nsWeb, "http://"+inst.Value.IP+"/", guestPage, 60*time.Second) // pod on node 1 → Function on node 2

	// A SIGKILLed riklet on node 2 adopts it: its network is its own,
	// kept, and still reached from node 1.
	c.crashRiklet(f.n2)
	if it, _, _ := c.instance("bfn-0"); it.Value.Status != workload.StatusRunning || it.Value.Restarts != 0 {
		t.Errorf("after riklet restart: %s, restarts %d; want RUNNING, 0", it.Value.Status, it.Value.Restarts)
	}
	c.waitPage(nsWeb, "http://"+inst.Value.IP+"/", guestPage, 30*time.Second)

	deleteBridgeFunction(t, c, f.n2, inst) // frees node 2's CPU for the next one

	// A bridge-mode Function on node 2 fetches the page of the pod on node 1.
	client := c.writeFile("client.json", fetchFunctionDef("bclient", "http://"+srv+"/rootfs.tar.gz", web.Value.IP))
	c.mustRikctl("create", "workload", "-f", client)
	c.mustRikctl("create", "instance", "--workload-id", "bclient", "--name", "bclient-0")
	cl := c.waitStatus("bclient-0", workload.StatusRunning, 3*time.Minute)
	c.waitLogs("bclient-0", "hello from rik", 2*time.Minute)
	c.waitLogs(web.Name, "[::ffff:"+cl.Value.IP+"]:", 30*time.Second) // httpd -v logs the peer: the Function's own address, no NAT
	deleteBridgeFunction(t, c, f.n2, cl)
}

// deleteBridgeFunction deletes bridge-mode Function it of node n and waits
// until nothing of it is left.
func deleteBridgeFunction(t *testing.T, c *cluster, n *node, it instanceItem) {
	t.Helper()
	tr, err := bridgeTraces(n, it.ID)
	requireTraces(t, tr, err, "netns", "link", "pod lease", "qemu", "file")
	c.mustRikctl("delete", "instance", it.Name)
	c.waitGone(it.Name, 2*time.Minute)
	c.eventually(30*time.Second, it.Name+"'s leftovers removed", func() error { return noTraces(bridgeTraces(n, it.ID)) })
}
