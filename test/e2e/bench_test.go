package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// post sends a JSON request to the controller from the client namespace
// and decodes a 2xx answer into out (if not nil).
func (c *cluster) post(path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	resp, err := c.apiClient(c.client, 30*time.Second).Post(c.apiURL()+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// waitEvent waits until an event showed instance id in status s.
func (e *events) waitEvent(id string, s workload.Status, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !e.saw(id, s) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s event for %s within %s (saw %v)", s, id, timeout, e.statuses(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// createOne creates one instance of wl over the REST API and returns its id.
func (c *cluster) createOne(wl string) (string, error) {
	var items []instanceItem
	if err := c.post("/api/v0/instances.create", map[string]any{"workload_id": wl}, &items); err != nil {
		return "", err
	}
	if len(items) != 1 {
		return "", fmt.Errorf("instances.create returned %d items", len(items))
	}
	return items[0].ID, nil
}

// deleteAndWait deletes instance id and waits for its TERMINATED event.
func (c *cluster) deleteAndWait(ev *events, id string) error {
	if err := c.post("/api/v0/instances.delete", map[string]string{"id": id}, nil); err != nil {
		return err
	}
	return ev.waitEvent(id, workload.StatusTerminated, time.Minute)
}

// BenchmarkPodCreateToRunning measures, through the whole stack (REST,
// scheduler, riklet, runc, pod network), the time from instances.create to
// the RUNNING event of a pod whose image is cached. Deleting is not timed.
//
//	go test -run '^$' -bench PodCreateToRunning -benchtime 20x ./test/e2e/
func BenchmarkPodCreateToRunning(b *testing.B) {
	c, _ := podCluster(b)
	ev := c.watchEvents()
	def := httpdPod("bench", c.registry+"/busybox:latest", "bench", "Always", 0)
	if err := c.post("/api/v0/workloads.create", json.RawMessage(def), nil); err != nil {
		b.Fatal(err)
	}
	warm, err := c.createOne("bench") // pulls the image
	if err != nil {
		b.Fatal(err)
	}
	if err := ev.waitEvent(warm, workload.StatusRunning, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	if err := c.deleteAndWait(ev, warm); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		id, err := c.createOne("bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := ev.waitEvent(id, workload.StatusRunning, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.deleteAndWait(ev, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkFunctionCreateToReachable measures, through the whole stack,
// the time from instances.create to the guest's page answering on the
// node's host port (from the client namespace), rootfs cached. The VM runs
// under QEMU (TCG without usable KVM). Deleting is not timed.
//
// Sub-benchmarks nat and bridge run the Function in each network mode;
// bridge-cni in bridge mode on a --network cni node (bridge + host-local).
//
//	go test -run '^$' -bench FunctionCreateToReachable -benchtime 5x ./test/e2e/
func BenchmarkFunctionCreateToReachable(b *testing.B) {
	b.Run("nat", func(b *testing.B) { benchFunctionCreateToReachable(b, functionDef) })
	b.Run("bridge", func(b *testing.B) { benchFunctionCreateToReachable(b, bridgeFunctionDef) })
	b.Run("bridge-cni", func(b *testing.B) {
		requireCNIPlugins(b)
		benchFunctionCreateToReachable(b, bridgeFunctionDef, func(c *cluster) []string {
			flags, _ := c.cniNetwork()
			return flags
		})
	})
}

// benchFunctionCreateToReachable is BenchmarkFunctionCreateToReachable
// with the workload def makes, on a node with the riklet flags flags give.
func benchFunctionCreateToReachable(b *testing.B, def func(name, rootfs string, hostPort int) string, flags ...func(*cluster) []string) {
	c, n := functionCluster(b, flags...)
	ev := c.watchEvents()
	const hostPort = 8082
	if err := c.post("/api/v0/workloads.create", json.RawMessage(def("bench", c.rootfsURL, hostPort)), nil); err != nil {
		b.Fatal(err)
	}
	url := fmt.Sprintf("http://%s:%d/", n.ip, hostPort)
	client := nsClient(c.client, 2*time.Second)
	reachable := func() error {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			resp, err := client.Get(url)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && string(body) == guestPage {
					return nil
				}
				err = fmt.Errorf("%s: %q", resp.Status, body)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("GET %s: %w", url, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	run := func() string {
		id, err := c.createOne("bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := reachable(); err != nil {
			b.Fatal(err)
		}
		return id
	}
	warm := run() // fetches and converts the rootfs
	if err := c.deleteAndWait(ev, warm); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		id := run()
		b.StopTimer()
		if err := c.deleteAndWait(ev, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
