package controller

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/scheduler/schedtest"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestStatusIngestion(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]

	// unknown ids are ignored, and the stream keeps working
	e.sched.push(&commonpb.InstanceMetric{InstanceId: "no-such-id", Status: commonpb.ResourceStatus_RUNNING})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_CREATING, Node: "n1",
		Message: "pulling nginx", TimingsMs: map[string]int64{"pull": 120}})
	got := e.waitInstance(in.ID, "creating", func(i workload.Instance) bool { return i.Status == workload.StatusCreating })
	if got.Node != "n1" || got.Message != "pulling nginx" || got.Timings["pull"] != 120 {
		t.Errorf("creating: %+v", got)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1",
		Ip: "10.62.0.2", Ports: []*commonpb.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}},
		TimingsMs: map[string]int64{"start": 30}})
	got = e.waitInstance(in.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	if got.IP != "10.62.0.2" || len(got.Ports) != 1 || got.Ports[0].Port != 8080 || got.Ports[0].TargetPort != 80 ||
		got.Timings["pull"] != 120 || got.Timings["start"] != 30 || got.Message != "" || !got.UpdatedAt.After(got.CreatedAt) {
		t.Errorf("running: %+v", got)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_FAILED, Node: "n1",
		HasExitCode: true, ExitCode: 137, Reason: api.ReasonOOMKilled, Restarts: 2})
	got = e.waitInstance(in.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if got.ExitCode == nil || *got.ExitCode != 137 || got.Reason != api.ReasonOOMKilled || got.Restarts != 2 {
		t.Errorf("failed: %+v", got)
	}
	// an exit code of 0 is kept as a value, not dropped
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1",
		HasExitCode: true, ExitCode: 0, Reason: api.ReasonCompleted})
	got = e.waitInstance(in.ID, "terminated", func(i workload.Instance) bool { return i.Status == workload.StatusTerminated })
	if got.ExitCode == nil || *got.ExitCode != 0 {
		t.Errorf("terminated exit code %v", got.ExitCode)
	}
	// deleting a TERMINATED instance removes it at once
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.ID})
	if _, code := e.getInstance(in.ID); code != 404 {
		t.Errorf("terminated instance still there after delete: %d", code)
	}
}

func TestRescheduleOnNodeLost(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("always"))
	e.createWorkload(podNever("never"))
	a := e.createInstances(map[string]any{"workload_id": "always"})[0]
	n := e.createInstances(map[string]any{"workload_id": "never"})[0]
	d := e.createInstances(map[string]any{"workload_id": "always"})[0]
	for _, in := range []instanceRecord{a, n, d} {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1", Ip: "10.0.0.1"})
		e.waitInstance(in.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	}
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": d.ID})
	e.waitOrders(d.ID, 2)

	lost := func(id string) *commonpb.InstanceMetric {
		return &commonpb.InstanceMetric{InstanceId: id, Status: commonpb.ResourceStatus_FAILED, Node: "n1", Reason: api.ReasonNodeLost}
	}
	e.sched.push(lost(a.ID))
	e.sched.push(lost(a.ID)) // duplicate delivery must not reschedule twice
	e.sched.push(lost(n.ID))
	e.sched.push(lost(d.ID))

	got := e.waitInstance(a.ID, "rescheduled", func(i workload.Instance) bool { return i.Status == workload.StatusPending })
	if got.Restarts != 1 || got.Node != "" || got.IP != "" || got.Reason != api.ReasonNodeLost {
		t.Errorf("rescheduled: %+v", got)
	}
	orders := e.waitOrders(a.ID, 2)
	if o := orders[1]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetNode() != "" {
		t.Errorf("reschedule order %v", o)
	}
	gotN := e.waitInstance(n.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if gotN.Reason != api.ReasonNodeLost || gotN.Restarts != 0 {
		t.Errorf("Never policy: %+v", gotN)
	}
	// A deleted instance lost with its node is not gone until its node
	// says it stopped it (issue 8).
	gotD := e.waitInstance(d.ID, "destroying, node lost", func(i workload.Instance) bool { return i.Reason == api.ReasonNodeLost })
	if gotD.Status != workload.StatusDestroying {
		t.Errorf("deleted instance of a lost node: %+v, want DESTROYING", gotD)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: d.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1", Reason: api.ReasonDestroyed})
	e.waitGone(d.ID)

	// the new node takes it
	e.sched.push(&commonpb.InstanceMetric{InstanceId: a.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n2"})
	got = e.waitInstance(a.ID, "running on n2", func(i workload.Instance) bool { return i.Node == "n2" })
	if got.Restarts != 1 || got.Status != workload.StatusRunning {
		t.Errorf("after reschedule: %+v", got)
	}
	// a late "node lost" from n1 does not touch it
	e.sched.push(lost(a.ID))
	e.sched.push(lost(n.ID))
	e.barrier(wl.ID)
	if got, _ := e.getInstance(a.ID); got.Value.Node != "n2" || got.Value.Restarts != 1 {
		t.Errorf("late node lost changed it: %+v", got.Value)
	}
	if o := e.sched.ordersFor(a.ID); len(o) != 2 {
		t.Errorf("%d orders for a, want 2 (create, one reschedule)", len(o))
	}
	if o := e.sched.ordersFor(n.ID); len(o) != 1 {
		t.Errorf("%d orders for the Never instance, want 1", len(o))
	}
}

func TestDestroyInstanceUnknownToStore(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))

	// Not alive: nothing to destroy.
	for _, st := range []commonpb.ResourceStatus{commonpb.ResourceStatus_UNKNOWN, commonpb.ResourceStatus_FAILED,
		commonpb.ResourceStatus_TERMINATED, commonpb.ResourceStatus_DESTROYING} {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: "dead-" + st.String(), Status: st, Node: "n1"})
	}
	// Alive and unknown: one DESTROY per id, however many statuses come.
	for range 3 {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: "orphan-1", WorkloadId: "w1", Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
		e.sched.push(&commonpb.InstanceMetric{InstanceId: "orphan-2", Status: commonpb.ResourceStatus_PENDING})
	}
	e.barrier(wl.ID)

	o := e.waitOrders("orphan-1", 1)
	if len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY || o[0].GetNode() != "n1" || o[0].GetWorkloadId() != "w1" {
		t.Errorf("orders for orphan-1 = %v, want one DESTROY on n1", o)
	}
	if o := e.sched.ordersFor("orphan-2"); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("orders for orphan-2 = %v, want one DESTROY", o)
	}
	for _, st := range []string{"UNKNOWN", "FAILED", "TERMINATED", "DESTROYING"} {
		if o := e.sched.ordersFor("dead-" + st); len(o) != 0 {
			t.Errorf("%s status of an unknown instance: orders %v, want none", st, o)
		}
	}

	// A known instance gets no DESTROY from its statuses.
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	e.barrier(wl.ID)
	for _, o := range e.sched.ordersFor(in.ID) {
		if o.GetAction() == commonpb.WorkloadRequestKind_DESTROY {
			t.Errorf("known instance got %v", o)
		}
	}
}

// The brief's case, with the real scheduler: a node runs an instance the
// controller's (fresh) store does not know; the scheduler adopts it, replays
// its status when the controller subscribes, and the controller destroys it.
func TestOrphanOnNodeDestroyedWithRealScheduler(t *testing.T) {
	workers, controllers := schedtest.Start(t, scheduler.Config{Logger: testLogger(t), Insecure: true})
	ctx := t.Context()

	// A node that runs "left-behind".
	cc, err := grpc.NewClient(workers, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	reg, err := workerpb.NewWorkerClient(cc).Register(ctx, &commonpb.WorkerRegistration{
		Hostname: "n1", Kinds: []string{"pod"},
		Instances: []*commonpb.InstanceMetric{{InstanceId: "left-behind", Status: commonpb.ResourceStatus_RUNNING}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Header(); err != nil {
		t.Fatal(err)
	}
	orders := make(chan *workerpb.InstanceScheduling, 10)
	go func() {
		for {
			o, err := reg.Recv()
			if err != nil {
				return
			}
			orders <- o
		}
	}()

	// A controller with an empty store.
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(t.Context())
	cdone := make(chan error, 1)
	go func() {
		cdone <- Run(cctx, Config{Listener: hl, Store: st, SchedulerAddr: controllers, Logger: testLogger(t), Insecure: true})
	}()
	defer func() {
		ccancel()
		if err := <-cdone; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()

	select {
	case o := <-orders:
		if o.GetInstanceId() != "left-behind" || o.GetAction() != commonpb.WorkloadRequestKind_DESTROY {
			t.Errorf("node got %v, want DESTROY left-behind", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the instance nobody owns was not destroyed")
	}
}
