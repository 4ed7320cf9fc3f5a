package controller

import (
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/controller/lease"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/scheduler/schedtest"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The link dials a scheduler serving TLS with the controller's
// certificate: orders go through and statuses come back. Without a
// certificate it never subscribes.
func TestLinkOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	_, controllers := schedtest.Start(t, scheduler.Config{CADir: dir, Logger: testLogger(t)})
	cert, key, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "ctrl"})
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := pki.ClientTLS(pki.Pair{CertPEM: cert, KeyPEM: key}, ca.CertPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	anonymous, _ := pki.ClientTLS(pki.Pair{}, ca.CertPEM, "")
	start := func(tlsCfg *tls.Config) *env {
		st, err := bolt.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		s, err := NewServer(Config{Store: st, SchedulerAddr: controllers, Logger: testLogger(t), SchedulerTLS: tlsCfg, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		return &env{t: t, s: s, st: st, http: serveTest(t, s)}
	}
	e := start(withCert)
	eventually(t, "subscribed over TLS", e.s.link.Connected)
	eventually(t, "lease taken", e.s.lease.Held)
	wlRec := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wlRec.ID})[0]
	// No node: the scheduler answers PENDING with its reason.
	e.waitInstance(in.ID, "scheduler's reason", func(i workload.Instance) bool {
		return i.Status == workload.StatusPending && strings.Contains(i.Reason, "no node")
	})

	anon := start(anonymous)
	err = anon.s.link.Schedule(t.Context(), service.Order{InstanceID: "x", Action: service.Destroy})
	if err == nil {
		t.Fatal("a controller without certificate sent an order")
	}
	if anon.s.link.Connected() {
		t.Fatal("a controller without certificate subscribed")
	}
}

// An order larger than the scheduler takes fails its instance instead of
// being retried forever.
func TestOrderTooLargeFailsInstance(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	e.sched.mu.Lock()
	e.sched.reject = status.Error(codes.ResourceExhausted, "grpc: received message larger than max")
	e.sched.mu.Unlock()
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	got := e.waitInstance(in.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if got.Reason != api.ReasonRejected || !strings.Contains(got.Message, "larger than max") {
		t.Errorf("instance %+v", got)
	}
}

func TestSchedulerRejection(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	e.sched.mu.Lock()
	e.sched.reject = status.Error(codes.InvalidArgument, "spec.containers[0].image: unsupported")
	e.sched.mu.Unlock()
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	got := e.waitInstance(in.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if got.Reason != api.ReasonRejected || !strings.Contains(got.Message, "unsupported") {
		t.Errorf("rejected instance %+v", got)
	}
	// a duplicate the scheduler already has is not an error
	e.sched.mu.Lock()
	e.sched.reject = status.Error(codes.AlreadyExists, "known")
	e.sched.mu.Unlock()
	dup := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.waitOrders(dup.ID, 1)
	e.barrier(wl.ID)
	if got, _ := e.getInstance(dup.ID); got.Value.Status != workload.StatusPending || got.Value.Message != "" {
		t.Errorf("AlreadyExists changed the instance: %+v", got.Value)
	}
}

// After (re)subscribing, the controller re-sends an order for every live
// instance, and the scheduler answers each with a status on the stream it
// just opened. It must read that stream while re-sending: otherwise, past a
// few hundred instances, the scheduler drops it as too slow, and every
// resubscribe re-sends everything and is dropped again.
func TestResendReadsStatusesMeanwhile(t *testing.T) {
	e := newEnv(t, withoutQuotas)
	wl := e.createWorkload(podDef("many"))
	// More answers than a subscriber may lag behind: a controller that only
	// reads once it has re-sent everything is dropped.
	const n = schedSubscriberBuffer + 200
	for left := n; left > 0; left -= 600 {
		e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": min(left, 600)})
	}

	e.sched.mu.Lock()
	e.sched.answerPad = 2048 // the stream's flow-control window holds few of them
	e.sched.orders = nil
	e.sched.mu.Unlock()
	e.s.link.Resubscribe()
	e.sched.waitSubscribed(t)
	eventually(t, "every CREATE re-sent", func() bool {
		e.sched.mu.Lock()
		defer e.sched.mu.Unlock()
		return len(e.sched.orders) >= n
	})
	e.sched.mu.Lock()
	defer e.sched.mu.Unlock()
	if e.sched.dropped > 0 {
		t.Errorf("the controller was dropped %d times as a slow subscriber while re-sending", e.sched.dropped)
	}
}

func TestResubscribeAfterSchedulerRestart(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	placed := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	gone := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: placed.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: gone.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	// Statuses of different instances are stored in parallel: wait for both.
	e.waitInstance(placed.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	e.waitInstance(gone.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })

	addr := e.sched.addr
	e.sched.stop()
	eventually(t, "healthz disconnected", func() bool {
		var h map[string]any
		e.must(200, "GET", "/healthz", nil).decode(t, &h)
		return h["scheduler"] == "disconnected"
	})
	// while the scheduler is down: create still answers 201, delete 204
	late := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	if late.Value.Message != service.MessageSchedulerDown {
		t.Errorf("create answer while the scheduler is down: %+v", late.Value)
	}
	got := e.waitInstance(late.ID, "marked unscheduled", func(i workload.Instance) bool { return i.Message == service.MessageSchedulerDown })
	if got.Status != workload.StatusPending {
		t.Errorf("unscheduled instance %+v", got)
	}
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": gone.ID})

	e.sched = startFakeScheduler(t, addr)
	e.sched.waitSubscribed(t)
	if o := e.waitOrders(placed.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetNode() != "n1" {
		t.Errorf("re-sent order for placed: %v", o)
	}
	if o := e.waitOrders(late.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetNode() != "" {
		t.Errorf("re-sent order for late: %v", o)
	}
	if o := e.waitOrders(gone.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("re-sent order for deleted: %v", o)
	}
	eventually(t, "healthz connected", func() bool {
		var h map[string]any
		e.must(200, "GET", "/healthz", nil).decode(t, &h)
		return h["scheduler"] == "connected"
	})
	// statuses flow again on the new stream
	e.sched.push(&commonpb.InstanceMetric{InstanceId: late.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n2"})
	e.waitInstance(late.ID, "late running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning && i.Message == "" })
}

// After a (re)subscribe the desired state is re-sent only once the
// scheduler has subscribed the controller (its headers say so): the
// statuses answering the orders would be lost otherwise.
func TestResendWaitsForSubscription(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.waitOrders(in.ID, 1)

	addr := e.sched.addr
	e.sched.stop()
	e.sched = startFakeSchedulerWith(t, addr, func(f *fakeScheduler) { f.subscribeDelay = 300 * time.Millisecond })
	e.sched.waitSubscribed(t)
	if o := e.waitOrders(in.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE {
		t.Errorf("re-sent order %v", o)
	}
	e.sched.mu.Lock()
	defer e.sched.mu.Unlock()
	if e.sched.unsubscribed != 0 {
		t.Errorf("%d orders re-sent before the controller was subscribed", e.sched.unsubscribed)
	}
}

// A controller that takes the lease after subscribing subscribes again, so
// that it ingests the scheduler's replay of every instance (and destroys
// those it does not own) as the holder.
func TestLeaseGainedResubscribes(t *testing.T) {
	st := openShared(t)
	other, _ := json.Marshal(lease.Value{Holder: "other", RenewedAt: time.Now().UTC()})
	if _, err := st.Put(t.Context(), lease.Key, other, store.Any); err != nil {
		t.Fatal(err)
	}
	e := newEnvTuned(t, tuning{leaseRenew: 20 * time.Millisecond, leaseTTL: time.Second}, func(c *Config) { c.Store = st })
	if e.s.lease.Held() {
		t.Fatal("lease taken before the other holder's expired")
	}
	e.sched.mu.Lock()
	e.sched.replay = []*commonpb.InstanceMetric{{InstanceId: "ghost", Status: commonpb.ResourceStatus_RUNNING, Node: "n1"}}
	e.sched.mu.Unlock()

	eventually(t, "lease taken", e.s.lease.Held)
	o := e.waitOrders("ghost", 1)
	if o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("order for ghost = %v, want DESTROY", o[0])
	}
}
