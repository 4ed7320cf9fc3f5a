package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/workload"
)

// TestInsecureClusterSpeaksRIK runs every component with --insecure and
// talks to the scheduler as RIK's own clients do, in plaintext with no
// certificate: a worker (Register + SendStatusUpdates) runs an instance
// created through the API, and a controller client (GetStatusUpdates +
// ScheduleInstance) sees its status and destroys it.
func TestInsecureClusterSpeaksRIK(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{insecure: true})
	n := c.addNode("--pods=false") // a real riklet, in plaintext too
	c.waitNodesReady("", 60*time.Second, n.name)
	ns := c.attach("rik-worker", "172.31.0.70")

	w, err := registerWorker(t, c.dialFrom(ns, workersAddr, plaintext()), "rik-worker", "pod")
	if err != nil {
		t.Fatalf("RIK worker registering: %v", err)
	}
	c.mustRikctl("create", "workload", "-f", c.writeFile("web.json", bigPod("web")))
	c.mustRikctl("create", "instance", "--workload-id", "web", "--name", "web-0")
	order := w.expectOrder(commonpb.WorkloadRequestKind_CREATE)
	if err := w.report("", order.GetInstanceId(), commonpb.ResourceStatus_RUNNING); err != nil {
		t.Fatal(err)
	}
	if it := c.waitStatus("web-0", workload.StatusRunning, 30*time.Second); it.Value.Node != "rik-worker" {
		t.Fatalf("web-0 on %q, want rik-worker", it.Value.Node)
	}

	// RIK's controller side: subscribe, see the instance, destroy it.
	ctrl := controllerpb.NewControllerClient(c.dialFrom(c.client, ctrlAddr, plaintext()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := ctrl.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ws, err := stream.Recv()
		if err != nil {
			t.Fatalf("status stream: %v", err)
		}
		if m := ws.GetInstance(); m.GetInstanceId() == order.GetInstanceId() && m.GetStatus() == commonpb.ResourceStatus_RUNNING {
			if ws.GetIdentifier() != "rik-worker" {
				t.Errorf("status identifier %q, want rik-worker", ws.GetIdentifier())
			}
			break
		}
	}
	_, err = ctrl.ScheduleInstance(ctx, &controllerpb.WorkloadScheduling{
		WorkloadId: order.GetWorkloadId(), InstanceId: order.GetInstanceId(), Definition: order.GetDefinition(),
		Action: commonpb.WorkloadRequestKind_DESTROY,
	})
	if err != nil {
		t.Fatalf("ScheduleInstance DESTROY: %v", err)
	}
	if got := w.expectOrder(commonpb.WorkloadRequestKind_DESTROY); got.GetInstanceId() != order.GetInstanceId() {
		t.Fatalf("DESTROY for %s, want %s", got.GetInstanceId(), order.GetInstanceId())
	}
}
