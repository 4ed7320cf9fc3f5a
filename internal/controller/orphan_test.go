package controller

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/scheduler/schedtest"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

func TestOrphansDue(t *testing.T) {
	var o orphans
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		id   string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", time.Second, false},
		{"b", time.Second, true},
		{"a", orphanEvery - time.Nanosecond, false},
		{"a", orphanEvery, true},
		{"b", orphanEvery, false},
		{"a", orphanEvery + time.Second, false},
		{"b", orphanEvery + time.Second, true},
	}
	for i, s := range steps {
		if got := o.due(s.id, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: due(%s, +%s) = %v, want %v", i, s.id, s.at, got, s.want)
		}
	}
	if len(o.sent) != 2 {
		t.Errorf("%d ids remembered, want 2", len(o.sent))
	}
	o.due("c", t0.Add(3*orphanEvery))
	if len(o.sent) != 1 {
		t.Errorf("old ids not forgotten: %v", o.sent)
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

// A controller that takes the lease after subscribing subscribes again, so
// that it ingests the scheduler's replay of every instance (and destroys
// those it does not own) as the holder.
func TestLeaseGainedResubscribes(t *testing.T) {
	st := openShared(t)
	other, _ := json.Marshal(leaseValue{Holder: "other", RenewedAt: time.Now().UTC()})
	if _, err := st.Put(t.Context(), LeaseKey, other, store.Any); err != nil {
		t.Fatal(err)
	}
	e := newEnvTuned(t, func(s *Server) {
		s.lease.renew, s.lease.ttl = 20*time.Millisecond, time.Second
	}, func(c *Config) { c.Store = st })
	if e.s.lease.held.Load() {
		t.Fatal("lease taken before the other holder's expired")
	}
	e.sched.mu.Lock()
	e.sched.replay = []*commonpb.InstanceMetric{{InstanceId: "ghost", Status: commonpb.ResourceStatus_RUNNING, Node: "n1"}}
	e.sched.mu.Unlock()

	eventually(t, "lease taken", e.s.lease.held.Load)
	o := e.waitOrders("ghost", 1)
	if o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("order for ghost = %v, want DESTROY", o[0])
	}
}
