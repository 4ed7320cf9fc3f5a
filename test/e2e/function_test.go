package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// defaultKernelDir is where test/kernel/fetch.sh is told to unpack the
// kernel in CI and on dev machines; RIK_TEST_KERNEL_DIR overrides it.
const defaultKernelDir = "/var/cache/rik-test/kernel"

// testKernel returns the guest kernel and its modules directory.
func testKernel(t *testing.T) (kernel, modules string) {
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
func guestRootfs(t *testing.T, page string) []byte {
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
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFunctionLifecycle is issue 4: a Function whose rootfs the test serves
// over HTTP boots as a microVM under QEMU on a riklet in its namespace, is
// reachable on the node's host port from another namespace and from the
// node, and leaves no rule, TAP, lease, process or file once deleted.
func TestFunctionLifecycle(t *testing.T) {
	requireHost(t, "qemu-system-x86_64")
	kernel, modules := testKernel(t)
	c := newCluster(t, clusterOptions{})

	const page = "hello from a rik function\n"
	rootfs := guestRootfs(t, page)
	srv := c.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/rootfs.tar.gz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		io.Copy(w, bytes.NewReader(rootfs))
	}))
	n := c.addNode("--pods=false", "--vmm", "qemu",
		"--kernel-path", kernel, "--kernel-modules", modules, "--init-binary", c.bins.rikInit)
	c.waitNodesReady("function", 60*time.Second, n.name)
	ev := c.watchEvents()

	const hostPort = 8081
	def := c.writeFile("function.json", fmt.Sprintf(`{
  "apiVersion": "v1",
  "kind": "Function",
  "name": "fn",
  "restartPolicy": "Always",
  "spec": {"function": {
    "execution": {"rootfs": "http://%s/rootfs.tar.gz", "vcpus": 1, "memory": 128},
    "exposure": [{"port": %d, "targetPort": 80}]
  }}
}`, srv, hostPort))
	c.mustRikctl("create", "workload", "-f", def)
	c.mustRikctl("create", "instance", "--workload-id", "fn", "--name", "fn-0")

	inst := c.waitStatus("fn-0", workload.StatusRunning, 3*time.Minute)
	id := inst.ID
	if inst.Value.Node != n.name {
		t.Errorf("instance on node %q, want %q", inst.Value.Node, n.name)
	}
	t.Logf("function %s (%s) running on %s, ip %q", inst.Name, id, inst.Value.Node, inst.Value.IP)

	// Under TCG the guest may still be booting when RUNNING is reported.
	nodeURL := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	c.waitPage(c.client, nodeURL, page, 3*time.Minute)
	c.waitPage(n.ns, nodeURL, page, 30*time.Second)
	c.waitPage(n.ns, fmt.Sprintf("http://127.0.0.1:%d/", hostPort), page, 30*time.Second)

	c.mustRikctl("delete", "instance", "fn-0")
	c.waitGone("fn-0", 2*time.Minute)
	c.eventually(10*time.Second, "TERMINATED event", func() error {
		if !ev.saw(id, workload.StatusTerminated) {
			return fmt.Errorf("events for %s: %v", id, ev.statuses(id))
		}
		return nil
	})

	c.eventually(30*time.Second, "function leftovers removed", func() error {
		var problems []string
		rules, err := natRules(n)
		if err != nil {
			return err
		}
		for _, r := range strings.Split(rules, "\n") {
			if strings.Contains(r, "DNAT") || strings.Contains(r, id) {
				problems = append(problems, "nat rule: "+r)
			}
		}
		ls, err := links(n)
		if err != nil {
			return err
		}
		for _, l := range ls {
			if l != "lo" && l != "eth0" && l != "rik0" {
				problems = append(problems, "link "+l)
			}
		}
		leases, err := os.ReadFile(filepath.Join(n.stateDir, "sdn", "leases.json"))
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		if bytes.Contains(leases, []byte(id)) {
			problems = append(problems, "lease: "+string(leases))
		}
		for _, pid := range processesMatching(id) {
			problems = append(problems, fmt.Sprintf("process %d mentions the instance", pid))
		}
		for _, pid := range processesMatching("qemu-system") {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(b, []byte(n.stateDir)) {
				problems = append(problems, fmt.Sprintf("qemu process %d", pid))
			}
		}
		for _, p := range pathsContaining(n.stateDir, id) {
			problems = append(problems, "file "+p)
		}
		if len(problems) > 0 {
			return fmt.Errorf("left behind:\n%s", strings.Join(problems, "\n"))
		}
		return nil
	})
	if body, err := c.get(c.client, nodeURL); err == nil {
		t.Errorf("host port still answers after delete: %q", body)
	}
}
