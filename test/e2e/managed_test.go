package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// fastUpdate is a rolling update of maxSurge 1, maxUnavailable 0 and a
// short progress deadline.
const fastUpdate = "{maxSurge: 1, maxUnavailable: 0, progressDeadlineSeconds: 20}"

// managedPod is a managed pod workload: busybox httpd under image, with
// replicas and update.
func managedPod(image string, replicas int, update string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
name: web
replicas: %d
restartPolicy: Never
update: %s
spec:
  containers:
  - name: web
    image: %q
    command: ["/bin/sh", "-c"]
    args: ["exec httpd -f -v -p 80 -h /www"]
`, replicas, update, image)
}

// liveOf lists the live instances of workload wl (not deleted, not ended).
func (c *cluster) liveOf(wl string) ([]instanceItem, error) {
	items, err := c.workloadInstances(wl)
	if err != nil {
		return nil, err
	}
	var live []instanceItem
	for _, it := range items {
		if !it.Value.DeleteRequested && !it.Value.Status.Terminal() {
			live = append(live, it)
		}
	}
	return live, nil
}

// waitLive waits until wl has n live instances, all RUNNING, with check
// (if any) holding for each, and its rollout counting n ready.
func (c *cluster) waitLive(wl string, n int, timeout time.Duration, check func(instanceItem) error) []instanceItem {
	c.t.Helper()
	var live []instanceItem
	c.eventually(timeout, fmt.Sprintf("%d instances of %s RUNNING and ready", n, wl), func() error {
		var err error
		if live, err = c.liveOf(wl); err != nil {
			return err
		}
		if len(live) != n {
			return fmt.Errorf("%d live: %v", len(live), nodesOf(live))
		}
		if ready, _, err := c.rolloutCounts(wl); err != nil || ready != n {
			return fmt.Errorf("%d ready (%v)", ready, err)
		}
		for _, it := range live {
			if it.Value.Status != workload.StatusRunning {
				return fmt.Errorf("%s %s (%s: %s)", it.Name, it.Value.Status, it.Value.Reason, it.Value.Message)
			}
			if check != nil {
				if err := check(it); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return live
}

// rolloutCounts reads the ready and live instances of the managed
// workload wl from rollout status (ready as the controller counts it: the
// node says so, or RUNNING without a readiness probe).
func (c *cluster) rolloutCounts(wl string) (ready, live int, err error) {
	out, err := c.rikctl("rollout", "status", wl, "-o", "json")
	if err != nil {
		return 0, 0, err
	}
	var r struct {
		Ready     int `json:"ready"`
		Instances int `json:"instances"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, 0, fmt.Errorf("rollout status %q: %w", out, err)
	}
	return r.Ready, r.Instances, nil
}

// watchCounts watches the instances of wl until stop is called, and
// returns the fewest ready and the most live it saw.
func (c *cluster) watchCounts(wl string) (stop func() (leastReady, mostLive int)) {
	var mu sync.Mutex
	leastReady, mostLive := -1, 0
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			ready, live, err := c.rolloutCounts(wl)
			if err != nil {
				continue
			}
			mu.Lock()
			if leastReady < 0 || ready < leastReady {
				leastReady = ready
			}
			mostLive = max(mostLive, live)
			mu.Unlock()
		}
	})
	return func() (int, int) {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return leastReady, mostLive
	}
}

// TestManagedWorkload is issue 10 with the real binaries and three nodes:
// apply keeps 3 replicas spread over the nodes; an instance deleted by
// hand, or lost with its node, is replaced; a new image rolls out one at a
// time without ever fewer than 3 ready; a broken image stops at its
// progress deadline with the old instances serving, and rollout undo
// brings the previous revision back; scale 3 -> 10 -> 0.
func TestManagedWorkload(t *testing.T) {
	requireHost(t)
	const nodeTimeout = 3 * time.Second
	c := newCluster(t, clusterOptions{nodeTimeout: nodeTimeout})
	reg := podRegistry(c, "v2")
	c.registry = reg
	for range 3 {
		c.addNode("--insecure-registry", reg)
	}
	c.waitNodesReady("pod", 60*time.Second, "node1", "node2", "node3")
	apply := func(image string, replicas int, args ...string) (string, error) {
		f := c.writeFile("web.yaml", managedPod(image, replicas, fastUpdate))
		return c.rikctlFor(3*time.Minute, append([]string{"apply", "-f", f}, args...)...)
	}

	// apply 3 replicas: 3 RUNNING, one per node.
	out, err := apply(reg+"/busybox:latest", 3, "--wait", "--timeout", "2m")
	if err != nil || !strings.Contains(out, "workload/web created (revision 1)") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	live := c.waitLive("web", 3, 30*time.Second, nil)
	byNode := map[string]bool{}
	for _, it := range live {
		byNode[it.Value.Node] = true
		if it.Value.Revision != 1 || !strings.HasPrefix(it.Name, "web-") {
			t.Errorf("instance %s revision %d", it.Name, it.Value.Revision)
		}
	}
	if len(byNode) != 3 {
		t.Fatalf("3 replicas on %d nodes: %v", len(byNode), nodesOf(live))
	}
	if out, err := apply(reg+"/busybox:latest", 3); err != nil || !strings.Contains(out, "unchanged (revision 1)") {
		t.Fatalf("apply again: %v\n%s", err, out)
	}

	// Deleted by hand: replaced.
	c.mustRikctl("delete", "instance", live[0].Name)
	c.waitLive("web", 3, 60*time.Second, func(it instanceItem) error {
		if it.Name == live[0].Name {
			return fmt.Errorf("%s still live", it.Name)
		}
		return nil
	})

	// A new image: rolled one at a time, never fewer than 3 ready.
	counts := c.watchCounts("web")
	out, err = apply(reg+"/busybox:v2", 3, "--wait", "--timeout", "2m")
	least, most := counts()
	if err != nil || !strings.Contains(out, "configured (revision 2)") {
		t.Fatalf("apply v2: %v\n%s", err, out)
	}
	if least < 3 {
		t.Fatalf("during the rollout only %d instances were ready, want >= 3 (maxUnavailable 0)", least)
	}
	if most > 4 {
		t.Fatalf("during the rollout %d instances were live, want <= 4 (maxSurge 1)", most)
	}
	t.Logf("rollout of revision 2: at least %d ready, at most %d live throughout", least, most)
	v2 := c.waitLive("web", 3, 30*time.Second, func(it instanceItem) error {
		if it.Value.Revision != 2 {
			return fmt.Errorf("%s at revision %d", it.Name, it.Value.Revision)
		}
		return nil
	})

	// A broken image: the rollout stops at its deadline, the old ones serve.
	out, err = apply(reg+"/busybox:no-such-tag", 3, "--wait", "--timeout", "2m")
	if err == nil || !strings.Contains(err.Error(), "rollout of revision 3 failed: ProgressDeadlineExceeded") {
		t.Fatalf("apply of a broken image: %v\n%s", err, out)
	}
	t.Logf("broken rollout: %v", err)
	status := c.mustRikctl("rollout", "status", "web")
	if !strings.Contains(status, "Failed") || !strings.Contains(status, "3/3 ready") {
		t.Fatalf("rollout status after the broken rollout: %s", status)
	}
	for _, old := range v2 {
		if it, ok, _ := c.instance(old.Name); !ok || it.Value.Status != workload.StatusRunning || it.Value.DeleteRequested {
			t.Fatalf("old instance %s no longer serving: %+v", old.Name, it.Value)
		}
	}

	// rollout undo: back to busybox:v2 (revision 4); the broken ones go.
	out = c.mustRikctl("rollout", "undo", "web")
	if !strings.Contains(out, "rolled back (revision 4)") {
		t.Fatalf("rollout undo: %s", out)
	}
	c.waitLive("web", 3, 60*time.Second, func(it instanceItem) error {
		if it.Value.Revision != 2 {
			return fmt.Errorf("%s at revision %d", it.Name, it.Value.Revision)
		}
		return nil
	})
	hist := c.mustRikctl("rollout", "history", "web")
	if !strings.Contains(hist, "undo to revision 2") || strings.Count(hist, "\n") != 5 {
		t.Fatalf("rollout history:\n%s", hist)
	}

	// A node lost: its replica (restartPolicy Never: FAILED node lost) is
	// replaced on another node.
	lost := c.nodeNamed(v2[0].Value.Node)
	lost.riklet.kill(syscall.SIGKILL)
	killed := time.Now()
	c.waitLive("web", 3, nodeTimeout+20*time.Second, func(it instanceItem) error {
		if it.Value.Node == lost.name {
			return fmt.Errorf("%s still on %s", it.Name, lost.name)
		}
		return nil
	})
	t.Logf("replica of %s replaced %s after its riklet was killed (node timeout %s)", lost.name, time.Since(killed).Round(100*time.Millisecond), nodeTimeout)

	// Scale 3 -> 10 -> 0.
	if out, err := c.rikctlFor(3*time.Minute, "scale", "workload", "web", "--replicas", "10", "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("scale to 10: %v\n%s", err, out)
	}
	c.waitLive("web", 10, 30*time.Second, nil)
	get := c.mustRikctl("get", "workloads")
	if !strings.Contains(get, "10/10") || !strings.Contains(get, "yes") {
		t.Errorf("get workloads:\n%s", get)
	}
	if out, err := c.rikctlFor(3*time.Minute, "scale", "workload", "web", "--replicas", "0", "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("scale to 0: %v\n%s", err, out)
	}
	c.eventually(60*time.Second, "no live instance of web", func() error {
		live, err := c.liveOf("web")
		if err != nil {
			return err
		}
		if len(live) > 0 {
			return fmt.Errorf("%d live", len(live))
		}
		return nil
	})
	c.mustRikctl("delete", "workload", "web")
}

// leaderPort is the port of the controller holding the lease among ports.
func (c *cluster) leaderPort(ports ...int) int {
	c.t.Helper()
	var leader int
	c.eventually(30*time.Second, "one leader", func() error {
		var leaders []int
		for _, port := range ports {
			body, err := c.get(c.client, c.controllerURL(port)+"/healthz")
			if err != nil {
				return err
			}
			var h struct {
				Leader bool `json:"leader"`
			}
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				return fmt.Errorf("healthz %q: %w", body, err)
			}
			if h.Leader {
				leaders = append(leaders, port)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders: %v", leaders)
		}
		leader = leaders[0]
		return nil
	})
	return leader
}

// TestManagedWorkloadFailover: two controllers on etcd, the workload
// applied through the one without the lease; the one holding it is
// killed in the middle of a rollout; the other takes over and finishes
// it, with no replica extra or missing.
func TestManagedWorkloadFailover(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{etcd: true})
	reg := podRegistry(c, "v2")
	c.registry = reg
	const portB = apiPort + 1
	c.addController(portB)
	for range 3 {
		c.addNode("--insecure-registry", reg)
	}
	c.waitNodesReady("pod", 60*time.Second, "node1", "node2", "node3")
	leader := c.leaderPort(apiPort, portB)
	other := apiPort + portB - leader
	// Every request goes to the controller that survives: it is not the
	// one reconciling until the other dies.
	c.server = c.controllerURL(other)
	// minReadySeconds makes the rollout long enough to be cut in two.
	const update = "{maxSurge: 1, maxUnavailable: 0, minReadySeconds: 4, progressDeadlineSeconds: 120}"
	f := c.writeFile("web.yaml", managedPod(reg+"/busybox:latest", 3, update))
	if out, err := c.rikctlFor(3*time.Minute, "apply", "-f", f, "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	c.waitLive("web", 3, 30*time.Second, nil)

	counts := c.watchCounts("web")
	f = c.writeFile("web.yaml", managedPod(reg+"/busybox:v2", 3, update))
	c.mustRikctl("apply", "-f", f)
	c.eventually(60*time.Second, "the rollout under way", func() error {
		live, err := c.liveOf("web")
		if err != nil {
			return err
		}
		for _, it := range live {
			if it.Value.Revision == 2 && it.Value.Status == workload.StatusRunning {
				return nil
			}
		}
		return fmt.Errorf("no instance of revision 2 running yet: %v", nodesOf(live))
	})
	for _, p := range c.procs {
		if p.name == fmt.Sprintf("controller-%d", leader) {
			p.kill(syscall.SIGKILL)
		}
	}
	killed := time.Now()
	if out, err := c.rikctlFor(4*time.Minute, "rollout", "status", "web", "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("rollout after the failover: %v\n%s", err, out)
	}
	t.Logf("rollout finished %s after the lease holder was killed", time.Since(killed).Round(100*time.Millisecond))
	live := c.waitLive("web", 3, 30*time.Second, func(it instanceItem) error {
		if it.Value.Revision != 2 {
			return fmt.Errorf("%s at revision %d", it.Name, it.Value.Revision)
		}
		return nil
	})
	least, most := counts()
	if most > 4 {
		t.Errorf("%d instances live at once, want <= 4 (maxSurge 1)", most)
	}
	if least < 3 {
		t.Errorf("only %d ready at some point, want >= 3 (maxUnavailable 0)", least)
	}
	t.Logf("across the failover: at least %d ready, at most %d live; final %v", least, most, nodesOf(live))
}
