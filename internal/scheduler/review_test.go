package scheduler

import (
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// An instance that ended on its own (a completed pod: TERMINATED without a
// DESTROY) is forgotten by the scheduler but kept by its node until it is
// destroyed. The DESTROY the controller sends when it is deleted names that
// node: it must reach it, or the node keeps it for ever.
func TestDestroyOfEndedInstanceReachesItsNode(t *testing.T) {
	st, _ := newTestState(t, time.Second, 0)
	c, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
	st.create(createOrder("a"), placement.Request{Kind: "pod"})
	if o := c.out.drain(); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_CREATE {
		t.Fatalf("orders = %v, want CREATE a", o)
	}
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonCompleted})
	if st.insts["a"] != nil {
		t.Fatal("TERMINATED instance not forgotten")
	}
	sub, _, _ := st.subscribe("", 0)
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", WorkloadId: "w", Action: commonpb.WorkloadRequestKind_DESTROY, Node: "n1"})
	o := c.out.drain()
	if len(o) != 1 || o[0].GetInstanceId() != "a" || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("orders to n1 = %v, want DESTROY a", o)
	}
	// DESTROYING until the node confirms: its pod keeps its address and
	// network until then.
	if m := sub.next().GetInstance(); m.GetInstanceId() != "a" || m.GetStatus() != commonpb.ResourceStatus_DESTROYING || m.GetNode() != "n1" {
		t.Errorf("status = %v, want DESTROYING a on n1", m)
	}
	// Its TERMINATED answer is the confirmation, forwarded once.
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED})
	if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_TERMINATED || m.GetReason() != api.ReasonDestroyed {
		t.Errorf("status = %v, want TERMINATED %s", m, api.ReasonDestroyed)
	}
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED})
	if m := sub.next(); m != nil {
		t.Errorf("unexpected status %v", m)
	}

	// A DESTROY naming no node, or an unknown one, orders nothing.
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "b", Action: commonpb.WorkloadRequestKind_DESTROY})
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "c", Action: commonpb.WorkloadRequestKind_DESTROY, Node: "nope"})
	if o := c.out.drain(); len(o) != 0 {
		t.Errorf("orders to n1 = %v, want none", o)
	}
}

// Nodes come and go (autoscaling, renamed hosts): a node lost long ago must
// not stay in the node table (listed and scanned by every placement) for
// ever. One still heard from, or that still has instances, stays.
func TestLongLostNodeForgotten(t *testing.T) {
	st, clk := newTestState(t, 15*time.Second, 0)
	st.register(&commonpb.WorkerRegistration{Hostname: "gone"}, "")
	st.register(&commonpb.WorkerRegistration{Hostname: "alive"}, "")
	for range 3 {
		clk.t = clk.t.Add(10 * time.Second)
		st.heartbeat("alive", "", &commonpb.WorkerMetric{})
		st.check()
	}
	if st.nodes["gone"] == nil || st.nodes["gone"].ready {
		t.Fatal("node gone: want it listed NotReady right after it was lost")
	}
	clk.t = clk.t.Add(forgetNodeAfter - 40*time.Second) // 10s short of it
	st.heartbeat("alive", "", &commonpb.WorkerMetric{})
	st.check()
	if st.nodes["gone"] == nil {
		t.Fatal("node gone forgotten too early")
	}
	clk.t = clk.t.Add(time.Minute)
	st.heartbeat("alive", "", &commonpb.WorkerMetric{})
	st.check()
	if st.nodes["gone"] != nil {
		t.Error("node lost more than a day ago still listed")
	}
	if st.nodes["alive"] == nil || !st.nodes["alive"].ready {
		t.Error("live node forgotten")
	}
	if got := len(st.listNodes().GetNodes()); got != 1 {
		t.Errorf("%d nodes listed, want 1", got)
	}
	// It registers again as a new node.
	st.register(&commonpb.WorkerRegistration{Hostname: "gone"}, "")
	if n := st.nodes["gone"]; n == nil || !n.ready {
		t.Error("forgotten node cannot register again")
	}
}
