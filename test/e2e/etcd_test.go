package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// TestControllersShareEtcd runs two controllers on one etcd store: what one
// writes the other serves, one of them ingests statuses (the lease), and
// when that one crashes the other takes over: new instances still reach
// RUNNING and deletes still complete.
func TestControllersShareEtcd(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{etcd: true})
	c.registry = podRegistry(c)
	const portB = apiPort + 1
	c.addController(portB)
	n := c.addNode("--insecure-registry", c.registry)
	c.waitNodesReady("pod", 60*time.Second, n.name)
	urlA, urlB := c.controllerURL(apiPort), c.controllerURL(portB)

	// Written through A, read through B.
	def := c.writeFile("pod.json", httpdPod("shared", c.registry+"/busybox:latest", "e2e-shared", "Always", 0))
	c.server = urlA
	c.mustRikctl("create", "workload", "-f", def)
	c.server = urlB
	if out := c.mustRikctl("get", "workloads", "-o", "json"); !strings.Contains(out, `"shared"`) {
		t.Fatalf("workload created through A not listed by B: %s", out)
	}
	c.mustRikctl("create", "instance", "--workload-id", "shared", "--name", "shared-0")
	c.server = urlA
	c.waitStatus("shared-0", workload.StatusRunning, 90*time.Second)

	// Exactly one controller holds the ingestion lease.
	var leader, other int
	c.eventually(30*time.Second, "one leader", func() error {
		var leaders []int
		for _, port := range []int{apiPort, portB} {
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
		leader, other = leaders[0], apiPort+portB-leaders[0]
		return nil
	})
	t.Logf("controller on :%d holds the lease", leader)

	// Crash the leader: the other takes over (after the lease's TTL).
	for _, p := range c.procs {
		if p.name == fmt.Sprintf("controller-%d", leader) {
			p.kill(syscall.SIGKILL)
		}
	}
	crashed := time.Now()
	c.server = c.controllerURL(other)
	c.mustRikctl("create", "instance", "--workload-id", "shared", "--name", "shared-1")
	c.waitStatus("shared-1", workload.StatusRunning, 90*time.Second)
	t.Logf("instance RUNNING through the surviving controller %s after the leader crashed", time.Since(crashed).Round(100*time.Millisecond))
	c.waitStatus("shared-0", workload.StatusRunning, 10*time.Second)

	c.mustRikctl("delete", "workload", "shared")
	c.waitGone("shared-0", 60*time.Second)
	c.waitGone("shared-1", 60*time.Second)
	c.eventually(30*time.Second, "no container left", func() error {
		cs, err := runcList(n)
		if err != nil {
			return err
		}
		if len(cs) > 0 {
			return fmt.Errorf("runc containers: %+v", cs)
		}
		return nil
	})
}
