package e2e

import (
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/ociimage"
	"github.com/rik-org/rik/internal/workload"
)

// podRegistry serves the busybox image from the ctl namespace (as
// busybox:latest and busybox:TAG for each of tags) and returns the
// registry's host:port there. The image is pushed through a second
// listener on the host's 127.0.0.1 sharing the same registry state.
func podRegistry(c *cluster, tags ...string) string {
	c.t.Helper()
	testutil.RequireFile(c.t, ociimage.BusyboxPath)
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	push := httptest.NewServer(h)
	c.t.Cleanup(push.Close)
	img, err := ociimage.Busybox()
	if err != nil {
		c.t.Fatal(err)
	}
	pr := &ociimage.Registry{Host: strings.TrimPrefix(push.URL, "http://")}
	for _, tag := range append([]string{"latest"}, tags...) {
		pr.Push(c.t, "busybox:"+tag, img)
	}
	return c.serve(h)
}

// podCluster starts a cluster with one pod node (its riklet given
// nodeArgs too) and a registry (c.registry).
func podCluster(t testing.TB, nodeArgs ...string) (*cluster, *node) {
	t.Helper()
	requireHost(t)
	c := newCluster(t, clusterOptions{})
	c.registry = podRegistry(c)
	n := c.addNode(append([]string{"--insecure-registry", c.registry}, nodeArgs...)...)
	c.waitNodesReady("pod", 60*time.Second, n.name)
	return c, n
}

// crashRiklet SIGKILLs the node's riklet, starts it again and waits until
// the scheduler hears from the new one.
func (c *cluster) crashRiklet(n *node) {
	c.t.Helper()
	n.riklet.kill(syscall.SIGKILL)
	restarted := time.Now()
	n.riklet.start(c.t)
	c.eventually(60*time.Second, "restarted riklet heartbeats", func() error {
		items, err := c.nodesList()
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Name != n.name {
				continue
			}
			hb, err := time.Parse(time.RFC3339, it.Value.LastHeartbeat)
			if err != nil {
				return fmt.Errorf("lastHeartbeat %q: %w", it.Value.LastHeartbeat, err)
			}
			if it.Value.Status != "Ready" || !hb.After(restarted) {
				return fmt.Errorf("node %s %s, last heartbeat %s (restart at %s)", n.name, it.Value.Status, hb, restarted)
			}
			return nil
		}
		return fmt.Errorf("node %s not listed", n.name)
	})
}

// writeFile writes a file into the cluster's directory and returns its path.
func (c *cluster) writeFile(name, body string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// httpdPod is a pod workload running busybox httpd on :80, printing marker
// first; hostPort > 0 exposes it on the node.
func httpdPod(name, image, marker, policy string, hostPort int) string {
	ports := ""
	if hostPort > 0 {
		ports = fmt.Sprintf(`, "ports": [{"port": %d, "targetPort": 80}]`, hostPort)
	}
	return fmt.Sprintf(`{
  "apiVersion": "v1",
  "kind": "Pod",
  "name": %q,
  "restartPolicy": %q,
  "spec": {"containers": [{
    "name": "web",
    "image": %q,
    "command": ["/bin/sh", "-c"],
    "args": ["echo %s; exec httpd -f -v -p 80 -h /www"]%s
  }]}
}`, name, policy, image, marker, ports)
}

// TestPodLifecycle is issue 3: a pod from an in-process registry runs on a
// riklet in its own namespace, is reachable at its IP and through its
// host port, logs, survives a riklet crash (adopted, not restarted) and
// leaves nothing behind once deleted. It runs with the riklet's default
// firewall backend (nftables here) and pinned to iptables.
func TestPodLifecycle(t *testing.T) {
	for _, fw := range []struct{ name, mark string }{{"auto", `comment "`}, {"iptables", "-j DNAT"}} {
		t.Run(fw.name, func(t *testing.T) { testPodLifecycle(t, fw.name, fw.mark) })
	}
}

// testPodLifecycle runs TestPodLifecycle with riklet --firewall fw; mark
// is in the node's DNAT rules only if that backend programmed them.
func testPodLifecycle(t *testing.T, fw, mark string) {
	c, n := podCluster(t, "--firewall", fw)
	reg := c.registry
	ev := c.watchEvents()

	const hostPort = 8080
	def := c.writeFile("pod.json", httpdPod("web", reg+"/busybox:latest", "e2e-pod-started", "Always", hostPort))
	out := c.mustRikctl("create", "workload", "-f", def)
	if !strings.Contains(out, "workload/web created") {
		t.Fatalf("rikctl create workload: unexpected output %q", out)
	}
	created := time.Now()
	c.mustRikctl("create", "instance", "--workload-id", "web", "--name", "web-0")

	inst := c.waitStatus("web-0", workload.StatusRunning, 90*time.Second)
	toRunning := time.Since(created)
	if inst.Value.Node != n.name {
		t.Errorf("instance on node %q, want %q", inst.Value.Node, n.name)
	}
	if inst.Value.IP == "" {
		t.Fatalf("running instance has no IP: %+v", inst.Value)
	}
	if !strings.HasPrefix(inst.Value.IP, "10.63.1.") {
		t.Errorf("pod IP %s not in the node's --pod-cidr 10.63.1.0/24", inst.Value.IP)
	}
	id := inst.ID
	t.Logf("pod %s (%s) running on %s at %s", inst.Name, id, inst.Value.Node, inst.Value.IP)

	// Reachable from its node at its IP.
	c.waitPage(n.ns, "http://"+inst.Value.IP+":80/", "hello from rik", 30*time.Second)
	t.Logf("timings: create→RUNNING %s (image pull included), create→page at pod IP %s", toRunning.Round(10*time.Millisecond), time.Since(created).Round(10*time.Millisecond))
	// Exposed on the node's host port: from another namespace, and from the
	// node itself.
	nodeURL := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	c.waitPage(c.client, nodeURL, "hello from rik", 30*time.Second)
	c.waitPage(n.ns, nodeURL, "hello from rik", 30*time.Second)
	c.checkMetrics(n)

	tr, err := podTraces(n, id)
	requireTraces(t, tr, err, "container", "netns", "veth", "dnat")
	if !strings.Contains(strings.Join(tr["dnat"], "\n"), mark) {
		t.Errorf("--firewall %s: DNAT rules %q lack %q", fw, tr["dnat"], mark)
	}

	// Logs hold the container's output.
	c.eventually(30*time.Second, "rikctl logs web-0", func() error {
		out, err := c.rikctl("logs", "web-0")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "e2e-pod-started") {
			return fmt.Errorf("logs %q lack the container's output", out)
		}
		return nil
	})

	// Crash the riklet; a new one adopts the pod without restarting it.
	before, err := runcList(n)
	if err != nil || len(before) == 0 {
		t.Fatalf("runc containers before the crash: %v %v", before, err)
	}
	c.crashRiklet(n)
	after, err := runcList(n)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("runc containers changed across the riklet restart:\nbefore %+v\nafter  %+v", before, after)
	}
	adopted, ok, err := c.instance("web-0")
	if err != nil || !ok {
		t.Fatalf("instance after riklet restart: ok=%v err=%v", ok, err)
	}
	if adopted.Value.Status != workload.StatusRunning || adopted.Value.IP != inst.Value.IP || adopted.Value.Restarts != 0 {
		t.Errorf("after riklet restart: status %s ip %s restarts %d, want RUNNING %s 0", adopted.Value.Status, adopted.Value.IP, adopted.Value.Restarts, inst.Value.IP)
	}
	c.waitPage(c.client, nodeURL, "hello from rik", 30*time.Second)

	// Delete: TERMINATED, gone, and nothing left on the node.
	c.mustRikctl("delete", "instance", "web-0")
	c.waitGone("web-0", 60*time.Second)
	c.eventually(10*time.Second, "TERMINATED event", func() error {
		if !ev.saw(id, workload.StatusTerminated) {
			return fmt.Errorf("events for %s: %v", id, ev.statuses(id))
		}
		return nil
	})
	c.eventually(30*time.Second, "pod leftovers removed", func() error { return noTraces(podTraces(n, id)) })
	if body, err := c.get(c.client, nodeURL); err == nil {
		t.Errorf("host port still answers after delete: %q", body)
	}
}

// podTraces lists, by kind, what the node holds for pod id: runc
// containers, netns files, host veths, nat rules.
func podTraces(n *node, id string) (map[string][]string, error) {
	tr := map[string][]string{}
	cs, err := runcList(n)
	if err != nil {
		return nil, err
	}
	for _, ctr := range cs {
		tr["container"] = append(tr["container"], fmt.Sprintf("%s pid %d %s", ctr.ID, ctr.Pid, ctr.Status))
	}
	ents, _ := os.ReadDir(filepath.Join(n.stateDir, "pods", "net", "netns"))
	for _, e := range ents {
		tr["netns"] = append(tr["netns"], e.Name())
	}
	ls, err := links(n)
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if strings.HasPrefix(l, "rikp") {
			tr["veth"] = append(tr["veth"], l)
		}
	}
	rules, err := natRules(n)
	if err != nil {
		return nil, err
	}
	for _, r := range strings.Split(rules, "\n") {
		if strings.Contains(r, "-j DNAT") || strings.Contains(r, id) {
			tr["dnat"] = append(tr["dnat"], r)
		}
	}
	return tr, nil
}

// requireTraces fails unless every kind of trace is there: it shows that
// the leftover checks after a delete look at the right places.
func requireTraces(t *testing.T, tr map[string][]string, err error, kinds ...string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if len(tr[k]) == 0 {
			t.Errorf("running instance: no %s found on its node (traces: %v)", k, tr)
		}
	}
}

// noTraces is nil when tr is empty.
func noTraces(tr map[string][]string, err error) error {
	if err != nil {
		return err
	}
	var problems []string
	for k, v := range tr {
		for _, x := range v {
			problems = append(problems, k+": "+x)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("left behind:\n%s", strings.Join(problems, "\n"))
	}
	return nil
}
