package controlplane

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store/etcd"
	"github.com/rik-org/rik/internal/store/etcd/etcdtest"
	"github.com/rik-org/rik/internal/workload"
)

// benchNodes riklets share the replicas.
const benchNodes = 10

// benchReplicas is the size of the managed workload BenchmarkApplyToRunning
// applies: the most a workload may have, and the default cap of PENDING
// instances.
const benchReplicas = workload.MaxReplicas

// BenchmarkApplyToRunning applies one managed workload of 1,000 replicas and
// measures the time until all of them are RUNNING and ready: the real
// controller (workloads.apply, the reconciler), scheduler and riklets, the
// riklets running a fake runtime. One op is one apply; the workload is
// scaled to 0 and deleted, every instance gone, between ops (not timed).
func BenchmarkApplyToRunning(b *testing.B) {
	for _, backend := range []string{"bolt", "etcd"} {
		b.Run(backend, func(b *testing.B) {
			var c *cluster
			nodes := make([]string, benchNodes)
			for i := range nodes {
				nodes[i] = fmt.Sprintf("node-%02d", i)
			}
			if backend == "etcd" {
				st, err := etcd.Open(b.Context(), []string{etcdtest.Start(b)})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { st.Close() })
				c = newClusterOn(b, st, nodes...)
			} else {
				c = newCluster(b, nodes...)
			}
			var created, running time.Duration
			b.ResetTimer()
			for i := range b.N {
				cr, ru := c.applyToRunning(b, fmt.Sprintf("bench-%d", i), benchReplicas)
				created += cr
				running += ru
			}
			b.ReportMetric(created.Seconds()/float64(b.N), "s-to-created/op")
			b.ReportMetric(running.Seconds()/float64(b.N), "s-to-running/op")
			b.ReportMetric(float64(b.N*benchReplicas)/running.Seconds(), "running/s")
		})
	}
}

// applyToRunning applies a workload of n replicas named name, and returns
// how long it took until n instances existed and until n were ready. It
// then checks every instance is RUNNING and ready, scales it to 0, waits
// until its instances are gone and deletes it, with b's timer stopped.
func (c *cluster) applyToRunning(b *testing.B, name string, n int) (created, running time.Duration) {
	ctx := context.Background()
	// 1 millicore each: 1,000 fit on nodes reporting this machine's cores.
	def := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","name":%q,"replicas":%d,"restartPolicy":"Always",
 "spec":{"containers":[{"name":"c","image":"example/web:1","resources":{"cpu":1,"memory":1}}]}}`, name, n)
	start := time.Now()
	applied, err := c.api.Apply(ctx, []byte(def))
	if err != nil {
		b.Fatalf("applying %s: %v", name, err)
	}
	id := applied.Workload.ID
	var shown time.Time // statuses listed in the error at most every 5 s
	c.eventually(3*time.Minute, fmt.Sprintf("%d replicas of %s ready", n, name), func() error {
		r, err := c.api.Rollout(ctx, id)
		if err != nil {
			return err
		}
		if created == 0 && r.Instances >= n {
			created = time.Since(start)
		}
		if r.Ready != n {
			err := fmt.Errorf("%d instances, %d ready, want %d", r.Instances, r.Ready, n)
			if time.Since(shown) > 5*time.Second {
				shown = time.Now()
				err = fmt.Errorf("%w; by status: %v", err, c.statusCounts(id))
			}
			return err
		}
		return nil
	})
	running = time.Since(start)
	b.StopTimer()
	defer b.StartTimer()
	c.waitAll(id, n, 10*time.Second, "every replica RUNNING and ready", func(in workload.Instance) bool {
		return in.Status == workload.StatusRunning && in.Ready
	})
	// Scaled to 0 first: the reconciler deletes the instances in the
	// background (workloads.delete of 1,000 instances on etcd takes longer
	// than the client's 10 s timeout on this loaded machine).
	if _, err := c.api.Scale(ctx, id, 0); err != nil {
		b.Fatalf("scaling %s to 0: %v", name, err)
	}
	c.eventually(10*time.Minute, "instances of "+name+" gone", func() error {
		kvs, err := c.st.List(ctx, "/instance/")
		if err != nil {
			return err
		}
		if len(kvs) != 0 {
			return fmt.Errorf("%d instance records left", len(kvs))
		}
		return nil
	})
	if err := c.api.DeleteWorkload(ctx, id); err != nil {
		b.Fatalf("deleting %s: %v", name, err)
	}
	return created, running
}

// statusCounts counts the instances of a workload by status and reason.
func (c *cluster) statusCounts(workloadID string) map[string]int {
	out := map[string]int{}
	for _, in := range c.instances(workloadID) {
		out[fmt.Sprintf("%s %s %s %s", in.Status, in.Node, in.Reason, in.Message)]++
	}
	return out
}
