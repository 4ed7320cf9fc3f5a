package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// TestFunctionBridgeCNI: on a --network cni node a bridge-mode Function
// gets its namespace and veth from the CNI plugins (bridge + host-local):
// its guest takes host-local's address by DHCP (its console says so), a
// pod fetches its page at that address, its host port (rik's DNAT)
// answers, a SIGKILLed riklet adopts it after a CNI CHECK, and delete runs
// DEL: no lease, namespace, veth, rule, process or file is left.
func TestFunctionBridgeCNI(t *testing.T) {
	requireHost(t, "qemu-system-x86_64")
	requireCNIPlugins(t)
	kernel, modules := testKernel(t)
	c := newCluster(t, clusterOptions{})
	c.registry = podRegistry(c)
	rootfs := guestRootfsWith(t, guestPage, nil)
	srv := c.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, bytes.NewReader(rootfs))
	}))
	flags, ipamDir := c.cniNetwork()
	n := c.addNode(append(flags, "--insecure-registry", c.registry, "--vmm", "qemu", "--allow-private-fetch=false",
		"--kernel-path", kernel, "--kernel-modules", modules, "--init-binary", c.bins.rikInit)...)
	c.waitNodesReady("function", 60*time.Second, n.name)

	const hostPort = 8084
	c.mustRikctl("create", "workload", "-f", c.writeFile("fn.json", bridgeFunctionDef("cfn", "http://"+srv+"/rootfs.tar.gz", hostPort)))
	c.mustRikctl("create", "instance", "--workload-id", "cfn", "--name", "cfn-0")
	inst := c.waitStatus("cfn-0", workload.StatusRunning, 3*time.Minute)
	id := inst.ID
	ip, err := netip.ParseAddr(inst.Value.IP)
	if err != nil || !netip.MustParsePrefix("10.89.7.0/24").Contains(ip) {
		t.Fatalf("bridge-mode function at %q: want an address of host-local's 10.89.7.0/24", inst.Value.IP)
	}
	lease := filepath.Join(ipamDir, "rik-e2e", ip.String())
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("host-local lease: %v", err)
	}
	c.waitLogs("cfn-0", "eth0 "+ip.String()+"/24 by DHCP", 3*time.Minute)
	nodeURL := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	c.waitPage(c.client, nodeURL, guestPage, 3*time.Minute)

	pod := c.writeFile("fetch.json", fetchPod("fetch", c.registry+"/busybox:latest", ip.String()))
	c.mustRikctl("create", "workload", "-f", pod)
	c.mustRikctl("create", "instance", "--workload-id", "fetch", "--name", "fetch-0")
	c.waitStatus("fetch-0", workload.StatusRunning, 90*time.Second)
	c.waitLogs("fetch-0", strings.TrimSpace(guestPage), 60*time.Second) // a CNI pod fetched the page
	c.mustRikctl("delete", "instance", "fetch-0")
	c.waitGone("fetch-0", 60*time.Second)

	tr, err := cniBridgeTraces(n, id, lease)
	requireTraces(t, tr, err, "netns", "veth", "dnat", "cni lease", "qemu", "file")

	// SIGKILL: the new riklet runs CHECK on the Function's network and adopts it.
	c.crashRiklet(n)
	if after, err := cniBridgeTraces(n, id, lease); err != nil || strings.Join(after["qemu"], ",") != strings.Join(tr["qemu"], ",") {
		t.Errorf("QEMU processes across the riklet restart: %v, then %v (%v)", tr["qemu"], after["qemu"], err)
	}
	c.eventually(30*time.Second, "CNI CHECK in the new riklet's log", func() error {
		b, err := os.ReadFile(n.riklet.log)
		if err != nil || !strings.Contains(string(b), "bridge network passed its CNI CHECK") {
			return fmt.Errorf("no CHECK logged (%v)", err)
		}
		return nil
	})
	if it, _, _ := c.instance("cfn-0"); it.Value.Status != workload.StatusRunning || it.Value.Restarts != 0 || it.Value.IP != ip.String() {
		t.Errorf("after riklet restart: %s at %s, restarts %d; want RUNNING at %s, 0", it.Value.Status, it.Value.IP, it.Value.Restarts, ip)
	}
	c.waitPage(c.client, nodeURL, guestPage, 30*time.Second)
	c.waitPage(n.ns, "http://"+ip.String()+"/", guestPage, 30*time.Second)

	c.mustRikctl("delete", "instance", "cfn-0")
	c.waitGone("cfn-0", 2*time.Minute)
	c.eventually(30*time.Second, "CNI DEL done, nothing left", func() error { return noTraces(cniBridgeTraces(n, id, lease)) })
	if body, err := c.get(c.client, nodeURL); err == nil {
		t.Errorf("host port still answers after delete: %q", body)
	}
}

// cniBridgeTraces is functionTraces with the CNI bridge (which outlives
// its pods) left out, the host-side veths, the Function's entries in
// its CNI state, and its host-local lease file.
func cniBridgeTraces(n *node, id, lease string) (map[string][]string, error) {
	tr, err := functionTraces(n, id)
	if err != nil {
		return nil, err
	}
	var veths []string
	for _, l := range tr["link"] {
		if strings.HasPrefix(l, "veth") {
			veths = append(veths, l)
		}
	}
	tr["link"] = slices.DeleteFunc(tr["link"], func(l string) bool { return l == "cnie2e0" || strings.HasPrefix(l, "veth") })
	tr["veth"] = veths
	tr["netns"] = pathsContaining(filepath.Join(n.stateDir, "functions", "cni"), id)
	if _, err := os.Stat(lease); err == nil {
		tr["cni lease"] = []string{lease}
	}
	return tr, nil
}
