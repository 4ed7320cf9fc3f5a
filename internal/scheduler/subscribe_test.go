package scheduler

import (
	"testing"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// A controller that subscribes learns the last status of every instance at
// once, even those it never ordered (adopted from a node after its store
// was reset): it can then destroy what it does not own.
func TestSubscribeReplaysLastStatuses(t *testing.T) {
	h := startScheduler(t, Config{})
	n1 := h.register("n1", 0, 0, &commonpb.InstanceMetric{InstanceId: "adopted", Status: commonpb.ResourceStatus_RUNNING, WorkloadId: "w0"})
	h.create("placed", pod(0, 0, 0))
	n1.expectOrder("placed", create)
	n1.report("placed", commonpb.ResourceStatus_CREATING)
	n1.sync(h)

	c := h.subscribe()
	first, second := c.next(), c.next()
	if first.GetInstanceId() != "adopted" || first.GetStatus() != commonpb.ResourceStatus_RUNNING || first.GetNode() != "n1" || first.GetWorkloadId() != "w0" {
		t.Errorf("first replayed status = %v, want adopted RUNNING on n1", first)
	}
	if second.GetInstanceId() != "placed" || second.GetStatus() != commonpb.ResourceStatus_CREATING {
		t.Errorf("second replayed status = %v, want placed CREATING", second)
	}
	// Then live statuses.
	n1.report("placed", commonpb.ResourceStatus_RUNNING)
	if m := c.next(); m.GetInstanceId() != "placed" || m.GetStatus() != commonpb.ResourceStatus_RUNNING {
		t.Errorf("live status = %v, want placed RUNNING", m)
	}
	// Forgotten instances are not replayed.
	n1.report("adopted", commonpb.ResourceStatus_TERMINATED)
	c.expect("adopted", commonpb.ResourceStatus_TERMINATED)
	n1.sync(h)
	c2 := h.subscribe()
	if m := c2.next(); m.GetInstanceId() != "placed" {
		t.Errorf("replay after adopted ended = %v, want only placed", m)
	}
	n1.report("placed", commonpb.ResourceStatus_FAILED)
	if m := c2.next(); m.GetStatus() != commonpb.ResourceStatus_FAILED {
		t.Errorf("after the replay: %v, want the live FAILED", m)
	}
}
