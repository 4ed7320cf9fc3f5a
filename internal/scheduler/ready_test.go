package scheduler

import (
	"testing"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// Readiness (InstanceMetric.ready) reaches the controllers as the node
// reports it, and as it lists it when it registers again.
func TestReadinessForwarded(t *testing.T) {
	h := startScheduler(t, Config{})
	c := h.subscribe()
	n1 := h.register("n1", 4000, 4096)
	h.create("i1", pod(500, 256, 8080))
	n1.expectOrder("i1", create)
	c.expect("i1", pending)
	ready := func(r bool) {
		n1.send(&commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: &commonpb.InstanceMetric{
			InstanceId: "i1", WorkloadId: "w-i1", Status: running, Ip: "10.0.0.2", Ready: r}}})
	}
	ready(false)
	if m := c.expect("i1", running); m.GetReady() {
		t.Errorf("forwarded %v, want not ready", m)
	}
	ready(true)
	if m := c.expect("i1", running); !m.GetReady() || m.GetIp() != "10.0.0.2" {
		t.Errorf("forwarded %v, want ready", m)
	}
}
