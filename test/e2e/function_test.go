package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/fabric"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// defaultKernelDir is where test/kernel/fetch.sh is told to unpack the
// kernel in CI and on dev machines; RIK_TEST_KERNEL_DIR overrides it.
const defaultKernelDir = "/var/cache/rik-test/kernel"

// testKernel returns the guest kernel and its modules directory.
func testKernel(t testing.TB) (kernel, modules string) {
	t.Helper()
	dir := os.Getenv("RIK_TEST_KERNEL_DIR")
	if dir == "" {
		dir = defaultKernelDir
	}
	ks, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	ms, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(ks) != 1 || len(ms) != 1 {
		testutil.Unavailable(t, fmt.Sprintf("no guest kernel in %s (want one boot/vmlinuz-* and one lib/modules/*): run test/kernel/fetch.sh DIR and export RIK_TEST_KERNEL_DIR=DIR", dir))
	}
	return ks[0], ms[0]
}

// guestRootfs returns a tar.gz root filesystem: static busybox and an
// /sbin/init serving page with httpd on :80.
func guestRootfs(t testing.TB, page string) []byte {
	t.Helper()
	return guestRootfsWith(t, page, nil)
}

// guestRootfsWith is guestRootfs with extra executable files (path in the
// guest without its leading slash -> content).
func guestRootfsWith(t testing.TB, page string, extra map[string]string) []byte {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testutil.Unavailable(t, "busybox (busybox-static) not found")
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(hdr *tar.Header, body []byte) {
		hdr.Size = int64(len(body))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "sbin", "etc", "tmp", "www", "proc", "sys", "dev"} {
		add(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bin)
	for _, a := range []string{"sh", "httpd", "echo", "sleep", "cat", "mount"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(&tar.Header{Name: "sbin/init", Typeflag: tar.TypeReg, Mode: 0o755},
		[]byte("#!/bin/sh\necho guest: serving\nexec /bin/httpd -f -p 80 -h /www\n"))
	add(&tar.Header{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(page))
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		add(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755}, []byte(extra[name]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// guestPage is what the guest's httpd serves.
const guestPage = "hello from a rik function\n"

// functionCluster starts a cluster with one function node (QEMU) and
// serves the guest rootfs at c.rootfsURL.
func functionCluster(t testing.TB, flags ...func(*cluster) []string) (*cluster, *node) {
	t.Helper()
	requireHost(t, "qemu-system-x86_64")
	kernel, modules := testKernel(t)
	c := newCluster(t, clusterOptions{})
	rootfs := guestRootfs(t, guestPage)
	srv := c.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/rootfs.tar.gz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		io.Copy(w, bytes.NewReader(rootfs))
	}))
	c.rootfsURL = "http://" + srv + "/rootfs.tar.gz"
	// The node's fetch policy as shipped: the rootfs server is another
	// host of the test's network (the ctl namespace), neither loopback nor
	// one of the node's own addresses, so no private fetch is needed.
	args := []string{"--pods=false", "--vmm", "qemu", "--allow-private-fetch=false",
		"--kernel-path", kernel, "--kernel-modules", modules, "--init-binary", c.bins.rikInit}
	for _, f := range flags {
		args = append(args, f(c)...)
	}
	n := c.addNode(args...)
	c.waitNodesReady("function", 60*time.Second, n.name)
	return c, n
}

// functionDef is a Function workload booting rootfs, exposing the guest's
// port 80 on hostPort.
func functionDef(name, rootfs string, hostPort int) string {
	return fmt.Sprintf(`{
  "apiVersion": "v1",
  "kind": "Function",
  "name": %q,
  "restartPolicy": "Always",
  "spec": {"function": {
    "execution": {"rootfs": %q, "vcpus": 1, "memory": 128},
    "exposure": [{"port": %d, "targetPort": 80}]
  }}
}`, name, rootfs, hostPort)
}

// TestFunctionLifecycle is issue 4: a Function whose rootfs the test serves
// over HTTP boots as a microVM under QEMU on a riklet in its namespace, is
// reachable on the node's host port from another namespace and from the
// node, and leaves no rule, TAP, lease, process or file once deleted.
func TestFunctionLifecycle(t *testing.T) {
	c, n := functionCluster(t)
	ev := c.watchEvents()

	const hostPort = 8081
	def := c.writeFile("function.json", functionDef("fn", c.rootfsURL, hostPort))
	c.mustRikctl("create", "workload", "-f", def)
	created := time.Now()
	c.mustRikctl("create", "instance", "--workload-id", "fn", "--name", "fn-0")

	inst := c.waitStatus("fn-0", workload.StatusRunning, 3*time.Minute)
	toRunning := time.Since(created)
	id := inst.ID
	if inst.Value.Node != n.name {
		t.Errorf("instance on node %q, want %q", inst.Value.Node, n.name)
	}
	t.Logf("function %s (%s) running on %s, ip %q", inst.Name, id, inst.Value.Node, inst.Value.IP)

	// Under TCG the guest may still be booting when RUNNING is reported.
	nodeURL := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	c.waitPage(c.client, nodeURL, guestPage, 3*time.Minute)
	t.Logf("timings: create→RUNNING %s, create→page on host port %s", toRunning.Round(10*time.Millisecond), time.Since(created).Round(10*time.Millisecond))
	c.waitPage(n.ns, nodeURL, guestPage, 30*time.Second)
	c.waitPage(n.ns, fmt.Sprintf("http://127.0.0.1:%d/", hostPort), guestPage, 30*time.Second)
	// The riklet's metrics show the start and the rootfs fetch.
	c.waitPage(n.ns, rikletMetrics+"/metrics", `rik_riklet_start_duration_seconds_count{kind="function"} 1`, 10*time.Second)
	c.waitPage(n.ns, rikletMetrics+"/metrics", "rik_riklet_rootfs_fetch_duration_seconds_count 1\n", 10*time.Second)

	tr, err := functionTraces(n, id)
	requireTraces(t, tr, err, "dnat", "link", "lease", "qemu", "file")
	for _, pid := range tr["qemu"] {
		b, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		args := strings.Split(string(b), "\x00")
		if i := slices.Index(args, "-accel"); i >= 0 && i+1 < len(args) {
			t.Logf("VMM: %s -accel %s", args[0], args[i+1])
		}
	}

	// Crash the riklet: the new one adopts the VM (same QEMU process) and
	// keeps its port exposed.
	c.crashRiklet(n)
	after, err := functionTraces(n, id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(after["qemu"], tr["qemu"]) {
		t.Errorf("QEMU processes changed across the riklet restart: %v, then %v", tr["qemu"], after["qemu"])
	}
	if it, _, _ := c.instance("fn-0"); it.Value.Status != workload.StatusRunning || it.Value.Restarts != 0 {
		t.Errorf("after riklet restart: %s, restarts %d; want RUNNING, 0", it.Value.Status, it.Value.Restarts)
	}
	c.waitPage(c.client, nodeURL, guestPage, 30*time.Second)

	c.mustRikctl("delete", "instance", "fn-0")
	c.waitGone("fn-0", 2*time.Minute)
	c.eventually(10*time.Second, "TERMINATED event", func() error {
		if !ev.saw(id, workload.StatusTerminated) {
			return fmt.Errorf("events for %s: %v", id, ev.statuses(id))
		}
		return nil
	})

	c.eventually(30*time.Second, "function leftovers removed", func() error { return noTraces(functionTraces(n, id)) })
	if body, err := c.get(c.client, nodeURL); err == nil {
		t.Errorf("host port still answers after delete: %q", body)
	}
}

// functionTraces lists, by kind, what the node holds for function id: nat
// rules, links other than lo/eth0/rik0/rikvx (the TAP), its lease, QEMU
// processes of the node, processes and files naming the instance.
func functionTraces(n *node, id string) (map[string][]string, error) {
	tr := map[string][]string{}
	rules, err := natRules(n)
	if err != nil {
		return nil, err
	}
	for _, r := range strings.Split(rules, "\n") {
		if strings.Contains(r, "-j DNAT") || strings.Contains(r, id) {
			tr["dnat"] = append(tr["dnat"], r)
		}
	}
	ls, err := links(n)
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if l != "lo" && l != "eth0" && l != "rik0" && l != fabric.Device { // the node's, not the instance's
			tr["link"] = append(tr["link"], l)
		}
	}
	leases, err := os.ReadFile(filepath.Join(n.stateDir, "sdn", "leases.json"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if bytes.Contains(leases, []byte(id)) {
		tr["lease"] = append(tr["lease"], string(leases))
	}
	for _, pid := range processesMatching("qemu-system") {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(b, []byte(n.stateDir)) {
			tr["qemu"] = append(tr["qemu"], strconv.Itoa(pid))
		}
	}
	for _, pid := range processesMatching(id) {
		tr["process"] = append(tr["process"], strconv.Itoa(pid))
	}
	tr["file"] = pathsContaining(n.stateDir, id)
	return tr, nil
}
