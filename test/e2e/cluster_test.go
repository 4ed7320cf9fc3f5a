package e2e

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// TestControlPlane is issue 2 across hosts: three riklets in their own
// namespaces; a 3-instance workload spreads over them; a crashed riklet's
// instances go FAILED "node lost" within the node timeout (restartPolicy
// Never stays FAILED, Always is rescheduled elsewhere), and the restarted
// riklet is told to destroy them without touching the rescheduled copy; a
// restarted scheduler, then controller, recover nodes and instances;
// deleting the workloads terminates and removes every instance.
func TestControlPlane(t *testing.T) {
	requireHost(t)
	const nodeTimeout = 3 * time.Second
	c := newCluster(t, clusterOptions{nodeTimeout: nodeTimeout})
	reg := podRegistry(c)
	c.registry = reg
	for range 3 {
		c.addNode("--insecure-registry", reg)
	}
	c.waitNodesReady("pod", 60*time.Second, "node1", "node2", "node3")
	ev := c.watchEvents()

	def := c.writeFile("spread.json", httpdPod("spread", reg+"/busybox:latest", "e2e-spread", "Never", 0))
	c.mustRikctl("create", "workload", "-f", def)
	out := c.mustRikctl("create", "instance", "--workload-id", "spread", "--replicas", "3")
	if got := strings.Count(out, "created"); got != 3 {
		t.Fatalf("rikctl create instance --replicas 3 created %d: %q", got, out)
	}

	// All three RUNNING, one per node.
	var running []instanceItem
	c.eventually(90*time.Second, "3 instances RUNNING", func() error {
		items, err := c.workloadInstances("spread")
		if err != nil {
			return err
		}
		running = running[:0]
		for _, it := range items {
			if it.Value.Status.Terminal() {
				t.Fatalf("instance %s is %s (%s: %s)", it.Name, it.Value.Status, it.Value.Reason, it.Value.Message)
			}
			if it.Value.Status == workload.StatusRunning {
				running = append(running, it)
			}
		}
		if len(items) != 3 || len(running) != 3 {
			return fmt.Errorf("%d instances, %d running", len(items), len(running))
		}
		return nil
	})
	byNode := map[string]instanceItem{}
	for _, it := range running {
		byNode[it.Value.Node] = it
	}
	if len(byNode) != 3 {
		t.Fatalf("3 instances on %d nodes, want one per node: %v", len(byNode), nodesOf(running))
	}
	t.Logf("placement: %v", nodesOf(running))

	// One more workload, restartPolicy Always: rescheduled when its node
	// is lost.
	def = c.writeFile("resched.json", httpdPod("resched", reg+"/busybox:latest", "e2e-resched", "Always", 0))
	c.mustRikctl("create", "workload", "-f", def)
	c.mustRikctl("create", "instance", "--workload-id", "resched", "--name", "resched-0")
	resched := c.waitStatus("resched-0", workload.StatusRunning, 60*time.Second)

	// Crash the riklet of resched-0's node: the "spread" instance there
	// (Never) is declared lost within the node timeout (plus slack for
	// heartbeats, relaying and polling); resched-0 (Always) runs again
	// elsewhere.
	lostNode := c.nodeNamed(resched.Value.Node)
	lost := byNode[lostNode.name]
	lostNode.riklet.kill(syscall.SIGKILL)
	killed := time.Now()
	c.waitStatus(lost.Name, workload.StatusFailed, nodeTimeout+20*time.Second)
	t.Logf("instance %s FAILED %s after the riklet was killed (node timeout %s)", lost.Name, time.Since(killed).Round(100*time.Millisecond), nodeTimeout)
	if it, _, _ := c.instance(lost.Name); it.Value.Reason != api.ReasonNodeLost {
		t.Errorf("lost instance reason %q, want %q", it.Value.Reason, api.ReasonNodeLost)
	}
	c.eventually(10*time.Second, lostNode.name+" NotReady", func() error {
		items, err := c.nodesList()
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Name == lostNode.name && it.Value.Status == "Ready" {
				return fmt.Errorf("%s still Ready", it.Name)
			}
		}
		return nil
	})
	for _, it := range running {
		if it.Name == lost.Name {
			continue
		}
		if got, _, _ := c.instance(it.Name); got.Value.Status != workload.StatusRunning {
			t.Errorf("instance %s on a live node is %s", it.Name, got.Value.Status)
		}
	}
	c.eventually(60*time.Second, "resched-0 rescheduled", func() error {
		it, ok, err := c.instance("resched-0")
		if err != nil || !ok {
			return fmt.Errorf("resched-0: listed %v, %v", ok, err)
		}
		if it.Value.Status != workload.StatusRunning || it.Value.Node == lostNode.name {
			return fmt.Errorf("resched-0 %s on %q (reason %q)", it.Value.Status, it.Value.Node, it.Value.Reason)
		}
		if it.Value.Restarts != 1 {
			t.Errorf("rescheduled resched-0 has restarts %d, want 1", it.Value.Restarts)
		}
		resched = it
		return nil
	})
	t.Logf("resched-0 rescheduled from %s to %s", lostNode.name, resched.Value.Node)
	reschedPid := containerPid(t, c.nodeNamed(resched.Value.Node), resched.ID)

	// The riklet comes back: the scheduler has declared its instances lost
	// and has them destroyed; restartPolicy Never keeps spread's FAILED.
	if cs, err := runcList(lostNode); err != nil || len(cs) == 0 {
		t.Fatalf("the crashed node's containers should still run until its riklet is back: %v %v", cs, err)
	}
	lostNode.riklet.start(t)
	c.waitNodesReady("pod", 30*time.Second, lostNode.name)
	c.eventually(60*time.Second, "lost instances' containers destroyed on their node", func() error {
		cs, err := runcList(lostNode)
		if err != nil {
			return err
		}
		if len(cs) > 0 {
			return fmt.Errorf("runc containers: %+v", cs)
		}
		return nil
	})
	if it, _, _ := c.instance(lost.Name); it.Value.Status != workload.StatusFailed {
		t.Errorf("lost instance with restartPolicy Never is %s after its node came back, want FAILED", it.Value.Status)
	}

	// Restart the scheduler (crash): nodes re-register, state recovers.
	c.scheduler.kill(syscall.SIGKILL)
	c.scheduler.start(t)
	c.waitNodesReady("pod", 60*time.Second, "node1", "node2", "node3")
	for _, it := range running {
		if it.Name == lost.Name {
			continue
		}
		got := c.waitStatus(it.Name, workload.StatusRunning, 30*time.Second)
		if got.Value.Node != it.Value.Node || got.Value.IP != it.Value.IP || got.Value.Restarts != 0 {
			t.Errorf("instance %s after scheduler restart: node %s ip %s restarts %d, want %s %s 0",
				it.Name, got.Value.Node, got.Value.IP, got.Value.Restarts, it.Value.Node, it.Value.IP)
		}
	}
	if got := c.waitStatus("resched-0", workload.StatusRunning, 30*time.Second); got.Value.Node != resched.Value.Node {
		t.Errorf("resched-0 moved from %s to %s across the scheduler restart", resched.Value.Node, got.Value.Node)
	}

	// Restart the controller: its store keeps the state.
	conns := ev.connections()
	c.controller.kill(syscall.SIGTERM)
	c.controller.start(t)
	c.eventually(30*time.Second, "controller back, events followed again", func() error {
		if _, err := c.get(c.client, c.apiURL()+"/healthz"); err != nil {
			return err
		}
		if ev.connections() == conns {
			return errors.New("event stream not reconnected yet")
		}
		return nil
	})
	for _, it := range running {
		if it.Name != lost.Name {
			c.waitStatus(it.Name, workload.StatusRunning, 30*time.Second)
		}
	}

	c.mustRikctl("create", "instance", "--workload-id", "spread", "--name", "spread-new")
	fresh := c.waitStatus("spread-new", workload.StatusRunning, 60*time.Second)
	t.Logf("new instance after scheduler restart on %s", fresh.Value.Node)
	c.waitPage(c.nodeNamed(fresh.Value.Node).ns, "http://"+fresh.Value.IP+":80/", "hello from rik", 30*time.Second)

	// Nothing since the rescheduling (destroying the lost copy on its
	// node, restarts) has touched resched-0's container on its new node.
	if pid := containerPid(t, c.nodeNamed(resched.Value.Node), resched.ID); pid != reschedPid {
		t.Errorf("resched-0's container on %s was restarted (pid %d, then %d)", resched.Value.Node, reschedPid, pid)
	}

	// Delete the workload: every instance TERMINATED, then gone.
	live := []string{fresh.ID, resched.ID}
	for _, it := range running {
		if it.Name != lost.Name {
			live = append(live, it.ID)
		}
	}
	c.mustRikctl("delete", "workload", "spread", "resched")
	c.eventually(60*time.Second, "workload's instances gone", func() error {
		items, err := c.instances()
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Value.WorkloadName == "spread" || it.Value.WorkloadName == "resched" || strings.HasPrefix(it.Name, "spread-") || strings.HasPrefix(it.Name, "resched-") {
				return fmt.Errorf("instance %s still listed (%s)", it.Name, it.Value.Status)
			}
		}
		return nil
	})
	c.eventually(10*time.Second, "TERMINATED events", func() error {
		for _, id := range live {
			if !ev.saw(id, workload.StatusTerminated) {
				return fmt.Errorf("no TERMINATED event for %s: %v", id, ev.statuses(id))
			}
		}
		return nil
	})
	out = c.mustRikctl("get", "workloads", "-o", "json")
	if strings.Contains(out, `"spread"`) || strings.Contains(out, `"resched"`) {
		t.Errorf("workload still listed: %s", out)
	}
	c.eventually(30*time.Second, "no container left on any node", func() error {
		for _, n := range c.nodes {
			cs, err := runcList(n)
			if err != nil {
				return err
			}
			if len(cs) > 0 {
				return fmt.Errorf("%s: runc containers %+v", n.name, cs)
			}
		}
		return nil
	})
}

// workloadInstances lists the instances of a workload with rikctl.
func (c *cluster) workloadInstances(wl string) ([]instanceItem, error) {
	items, err := c.instances()
	if err != nil {
		return nil, err
	}
	var out []instanceItem
	for _, it := range items {
		if it.Value.WorkloadName == wl || it.Value.WorkloadID == wl {
			out = append(out, it)
		}
	}
	return out, nil
}

func (c *cluster) nodeNamed(name string) *node {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

func nodesOf(items []instanceItem) []string {
	var s []string
	for _, it := range items {
		s = append(s, it.Name+"@"+it.Value.Node)
	}
	sort.Strings(s)
	return s
}

// containerPid is the PID of instance id's container on node n.
func containerPid(t *testing.T, n *node, id string) int {
	t.Helper()
	cs, err := runcList(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range cs {
		if strings.HasPrefix(ctr.ID, id) && ctr.Status == "running" {
			return ctr.Pid
		}
	}
	t.Fatalf("no running container of %s on %s: %+v", id, n.name, cs)
	return 0
}
