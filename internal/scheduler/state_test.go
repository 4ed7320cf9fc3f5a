package scheduler

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestState(t *testing.T, nodeTimeout, recovery time.Duration) (*state, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return newState(testLogger(t), placement.Spread, nodeTimeout, recovery, c.now), c
}

func createOrder(id string) *controllerpb.WorkloadScheduling {
	return &controllerpb.WorkloadScheduling{InstanceId: id, WorkloadId: "w", Action: commonpb.WorkloadRequestKind_CREATE}
}

// A subscriber that does not read is never dropped: past coalesceAfter
// statuses it holds the latest status of each instance, in sequence order,
// and another subscriber is not held back by it.
func TestSlowSubscriberCoalesced(t *testing.T) {
	st, _ := newTestState(t, time.Second, 0)
	st.coalesceAfter = 2
	slow, _, _ := st.subscribe("", 0)
	fast, _, _ := st.subscribe("", 0)
	req := placement.Request{Kind: "pod"}
	for _, id := range []string{"a", "b", "c"} {
		st.create(createOrder(id), req) // no nodes: PENDING each
		if m := fast.next().GetInstance(); m.GetInstanceId() != id {
			t.Fatalf("fast subscriber got %v, want %s", m, id)
		}
	}
	st.create(createOrder("a"), req) // a duplicate: a's status again, newer
	if fast.next().GetInstance().GetInstanceId() != "a" {
		t.Fatal("fast subscriber did not get a's repeated status")
	}
	if n := slow.queued(); n != 3 {
		t.Fatalf("slow subscriber holds %d statuses, want 3 (one per instance)", n)
	}
	var got []string
	var last uint64
	for ws := slow.next(); ws != nil; ws = slow.next() {
		if ws.GetSeq() <= last {
			t.Errorf("seq %d after %d: not in order", ws.GetSeq(), last)
		}
		last = ws.GetSeq()
		got = append(got, ws.GetInstance().GetInstanceId())
	}
	if want := []string{"b", "c", "a"}; !slices.Equal(got, want) {
		t.Errorf("slow subscriber got %v, want %v (a's latest last)", got, want)
	}
	if len(st.subs) != 2 {
		t.Errorf("%d subscribers, want 2", len(st.subs))
	}
}

// A subscriber resuming at a cursor of the current run is replayed only
// the instances whose status changed after it; one of another run (or none)
// every instance.
func TestSubscribeResumes(t *testing.T) {
	st, _ := newTestState(t, time.Second, 0)
	req := placement.Request{Kind: "pod"}
	for _, id := range []string{"a", "b", "c"} {
		st.create(createOrder(id), req)
	}
	cursor := st.insts["b"].lastSeq
	st.create(createOrder("a"), req) // a changes after the cursor
	ids := func(sub *subscriber) []string {
		var out []string
		for ws := sub.next(); ws != nil; ws = sub.next() {
			out = append(out, ws.GetInstance().GetInstanceId())
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		epoch string
		after uint64
		want  []string
	}{
		{"no cursor", "", 0, []string{"b", "c", "a"}},
		{"same run", st.epoch, cursor, []string{"c", "a"}},
		{"same run, up to date", st.epoch, st.statusSeq, nil},
		{"another run", "other", cursor, []string{"b", "c", "a"}},
		{"from the future", st.epoch, st.statusSeq + 10, []string{"b", "c", "a"}},
	} {
		sub, epoch, head := st.subscribe(tc.epoch, tc.after)
		if epoch != st.epoch || head != st.statusSeq {
			t.Errorf("%s: epoch %q head %d, want %q %d", tc.name, epoch, head, st.epoch, st.statusSeq)
		}
		if got := ids(sub); !slices.Equal(got, tc.want) {
			t.Errorf("%s: replayed %v, want %v", tc.name, got, tc.want)
		}
		st.unsubscribe(sub)
	}
}

func TestNodeLostAfterTimeout(t *testing.T) {
	st, clk := newTestState(t, 15*time.Second, 0)
	sub, _, _ := st.subscribe("", 0)
	st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
	st.create(createOrder("a"), placement.Request{CPUMillis: 100, Kind: "pod"})
	sub.next() // PENDING on n1

	clk.t = clk.t.Add(14 * time.Second)
	st.heartbeat("n1", "", &commonpb.WorkerMetric{})
	clk.t = clk.t.Add(14 * time.Second)
	st.check()
	if !st.nodes["n1"].ready {
		t.Fatal("node lost although it heartbeat 14s ago")
	}
	clk.t = clk.t.Add(2 * time.Second)
	st.check()
	if st.nodes["n1"].ready {
		t.Fatal("node still ready 16s after its last heartbeat")
	}
	m := sub.next().GetInstance()
	if m.GetStatus() != commonpb.ResourceStatus_FAILED || m.GetReason() != api.ReasonNodeLost || m.GetNode() != "n1" ||
		m.GetMessage() != "no heartbeat from n1 for 16s" {
		t.Errorf("lost status = %v", m)
	}
	if _, ok := st.tombstones["a"].nodes["n1"]; len(st.insts) != 0 || !ok || st.nodes["n1"].allocCPU != 0 {
		t.Errorf("after loss: insts %v, tombstones %v, alloc %d", st.insts, st.tombstones, st.nodes["n1"].allocCPU)
	}
	// A heartbeat alone does not make it Ready: it must re-register.
	st.heartbeat("n1", "", &commonpb.WorkerMetric{})
	if st.nodes["n1"].ready {
		t.Error("heartbeat made a lost node Ready")
	}
	// Tombstones are forgotten after a day.
	clk.t = clk.t.Add(tombstoneTTL + time.Second)
	st.check()
	if len(st.tombstones) != 0 {
		t.Errorf("tombstones %v kept after their TTL", st.tombstones)
	}
}

// Issue 8 (2): an instance being destroyed when its node is lost may still
// run there. It is not TERMINATED until the node confirms (its new
// registration does not list it, or it reports it stopped), or is declared
// gone for good.
func TestDestroyOnLostNodeWaitsForItsNode(t *testing.T) {
	for _, back := range []string{"without it", "with it", "never"} {
		t.Run(back, func(t *testing.T) {
			st, clk := newTestState(t, time.Second, 0)
			sub, _, _ := st.subscribe("", 0)
			st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
			st.create(createOrder("a"), placement.Request{Kind: "pod"})
			sub.next()
			st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", Action: commonpb.WorkloadRequestKind_DESTROY})
			clk.t = clk.t.Add(2 * time.Second)
			st.check()
			m := sub.next().GetInstance()
			if m.GetStatus() != commonpb.ResourceStatus_DESTROYING || m.GetReason() != api.ReasonNodeLost || m.GetNode() != "n1" {
				t.Fatalf("instance being destroyed on a lost node reported %v, want DESTROYING %q", m, api.ReasonNodeLost)
			}
			// The controller's periodic DESTROY changes nothing.
			st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", Action: commonpb.WorkloadRequestKind_DESTROY, Node: "n1"})
			if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_DESTROYING {
				t.Fatalf("after a second DESTROY: %v, want DESTROYING", m)
			}
			switch back {
			case "without it":
				st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
			case "with it":
				c, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: []*commonpb.InstanceMetric{
					{InstanceId: "a", Status: commonpb.ResourceStatus_RUNNING}}}, "")
				if o := c.out.drain(); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
					t.Fatalf("orders to the node back = %v, want DESTROY a", o)
				}
				if m := sub.next(); m != nil {
					t.Fatalf("status %v before the node stopped it", m)
				}
				st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed})
			case "never":
				clk.t = clk.t.Add(st.goneAfter - 10*time.Second)
				st.check()
				if m := sub.next(); m != nil {
					t.Fatalf("status %v before the node is lost for good", m)
				}
				clk.t = clk.t.Add(2 * time.Minute)
				st.check()
			}
			m = sub.next().GetInstance()
			wantReason := api.ReasonDestroyed
			if back == "never" {
				wantReason = api.ReasonNodeLost
			}
			if m.GetStatus() != commonpb.ResourceStatus_TERMINATED || m.GetReason() != wantReason || m.GetNode() != "n1" {
				t.Errorf("node back %s: %v, want TERMINATED %q on n1", back, m, wantReason)
			}
		})
	}
}

func TestFailedFreesAndRunningReallocates(t *testing.T) {
	st, _ := newTestState(t, time.Second, 0)
	st.register(&commonpb.WorkerRegistration{Hostname: "n1", Capacity: &commonpb.Resources{CpuMillis: 1000}}, "")
	st.create(createOrder("a"), placement.Request{CPUMillis: 600, Kind: "pod", HostPorts: []placement.Port{{Number: 80, Protocol: "TCP"}}})
	n := st.nodes["n1"]
	for _, step := range []struct {
		status commonpb.ResourceStatus
		cpu    int64
		ports  int
	}{
		{commonpb.ResourceStatus_RUNNING, 600, 1},
		{commonpb.ResourceStatus_FAILED, 0, 0},
		{commonpb.ResourceStatus_FAILED, 0, 0},
		{commonpb.ResourceStatus_RUNNING, 600, 1}, // restarted by the node
		{commonpb.ResourceStatus_RUNNING, 600, 1},
		{commonpb.ResourceStatus_TERMINATED, 0, 0},
	} {
		st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: step.status})
		if n.allocCPU != step.cpu || len(n.ports) != step.ports {
			t.Errorf("after %s: allocated %dm, %d ports; want %dm, %d", step.status, n.allocCPU, len(n.ports), step.cpu, step.ports)
		}
	}
	if len(st.insts) != 0 || len(n.insts) != 0 {
		t.Error("TERMINATED instance not forgotten")
	}
}

// Issue 8 (1): a node lost for a moment (a riklet restart slower than the
// node timeout on a busy host) comes back with its instances before the
// controller reschedules them. They are adopted back, not destroyed: the
// controller still wants them. Its CREATE, when it comes, finds them
// placed; nothing is destroyed nor placed twice.
func TestLostInstanceAdoptedBackNotDestroyed(t *testing.T) {
	st, clk := newTestState(t, time.Second, 0)
	sub, _, _ := st.subscribe("", 0)
	running := []*commonpb.InstanceMetric{{InstanceId: "a", WorkloadId: "w", Status: commonpb.ResourceStatus_RUNNING}}
	// Adopted after a scheduler restart, before the controller re-sent it.
	st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: running}, "")
	sub.next()
	clk.t = clk.t.Add(2 * time.Second)
	st.check() // lost
	if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_FAILED || m.GetReason() != api.ReasonNodeLost {
		t.Fatalf("lost: %v", m)
	}
	c, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: running}, "")
	if o := c.out.drain(); len(o) != 0 {
		t.Fatalf("orders to the node back = %v, want none (it runs what the controller wants)", o)
	}
	if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_RUNNING || m.GetNode() != "n1" {
		t.Fatalf("adopted back: %v, want RUNNING on n1", m)
	}
	// The controller's rescheduling CREATE arrives late: already placed.
	st.create(createOrder("a"), placement.Request{Kind: "pod"})
	if o := c.out.drain(); len(o) != 0 {
		t.Errorf("orders after the late CREATE = %v, want none", o)
	}
	if inst := st.insts["a"]; inst == nil || inst.node != "n1" || !inst.known {
		t.Errorf("instance after the late CREATE: %+v", inst)
	}
	// The node restarts again (registers anew): still nothing destroyed.
	c, _ = st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: running}, "")
	if o := c.out.drain(); len(o) != 0 {
		t.Errorf("orders after a second registration = %v, want none", o)
	}
	// Once the controller destroyed it, a CREATE racing behind the DESTROY
	// does not bring it back, and a node listing it again is told to
	// destroy it.
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", Action: commonpb.WorkloadRequestKind_DESTROY, Node: "n1"})
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED})
	c.out.drain()
	st.create(createOrder("a"), placement.Request{Kind: "pod"})
	if o := c.out.drain(); len(o) != 0 || st.insts["a"] != nil {
		t.Errorf("CREATE after DESTROY placed it again: orders %v", o)
	}
	c, _ = st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: running}, "")
	if o := c.out.drain(); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("orders to a node listing a destroyed instance = %v, want DESTROY", o)
	}
}

// Issue 8 (4): the registration header tells the node the heartbeat its
// node timeout needs; any status from a node counts as a sign of life.
func TestHeartbeatDerivedFromNodeTimeout(t *testing.T) {
	h := startScheduler(t, Config{NodeTimeout: 6 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.worker.Register(ctx, &commonpb.WorkerRegistration{Hostname: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	md, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := md.Get(grpcutil.HeartbeatHeader); len(got) != 1 || got[0] != "2s" {
		t.Errorf("heartbeat header = %v, want [2s]", got)
	}

	st, clk := newTestState(t, 5*time.Second, 0)
	st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
	st.create(createOrder("a"), placement.Request{Kind: "pod"})
	clk.t = clk.t.Add(4 * time.Second)
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_RUNNING})
	clk.t = clk.t.Add(4 * time.Second)
	st.check()
	if !st.nodes["n1"].ready {
		t.Error("node lost 4s after a status, with a 5s node timeout")
	}
}

// Found by the chaos suite: a copy destroyed on a node because the instance
// was placed elsewhere, then the instance placed back on that node. The
// DESTROYING and TERMINATED of the old copy's destroy are not the
// instance's: it was never asked to go, it must not end.
func TestDestroyedCopyStatusesNotTheInstances(t *testing.T) {
	st, _ := newTestState(t, time.Second, 0)
	sub, _, _ := st.subscribe("", 0)
	c1, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
	st.create(createOrder("a"), placement.Request{Kind: "pod"})
	sub.next()
	// n1 also lists a stale copy elsewhere... here it is the same node:
	// the node destroys an old copy, then runs the new CREATE.
	c1.out.drain()
	for _, m := range []*commonpb.InstanceMetric{
		{InstanceId: "a", Status: commonpb.ResourceStatus_DESTROYING},
		{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed},
		{InstanceId: "a", Status: commonpb.ResourceStatus_CREATING},
	} {
		st.instanceStatus("n1", "", m)
	}
	if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_CREATING {
		t.Errorf("forwarded %v, want only CREATING", m)
	}
	if st.insts["a"] == nil {
		t.Error("instance forgotten after its old copy's TERMINATED")
	}
}

// Found by the chaos suite: after a scheduler restart an instance waited for
// its node, which did not come back in the recovery window: it was placed
// elsewhere while its first node may still run it. Deleted then, it is
// TERMINATED only once both nodes confirm.
func TestDestroyWaitsForEveryCopy(t *testing.T) {
	st, clk := newTestState(t, time.Second, time.Second)
	sub, _, _ := st.subscribe("", 0)
	ws := createOrder("a")
	ws.Node = "n1" // the controller's hint after the scheduler restarted
	st.create(ws, placement.Request{Kind: "pod"})
	c2, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n2"}, "")
	clk.t = clk.t.Add(2 * time.Second)
	st.heartbeat("n2", "", &commonpb.WorkerMetric{})
	st.check() // window over: placed on n2
	if inst := st.insts["a"]; inst == nil || inst.node != "n2" {
		t.Fatalf("instance %+v, want placed on n2", inst)
	}
	c2.out.drain()
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", Action: commonpb.WorkloadRequestKind_DESTROY, Node: "n2"})
	st.instanceStatus("n2", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed})
	var last *commonpb.InstanceMetric
	for sub.queued() > 0 {
		last = sub.next().GetInstance()
		if last.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			t.Fatalf("TERMINATED %v while n1 may still run a copy", last)
		}
	}
	// n1 comes back with its copy: destroyed, then TERMINATED.
	c1, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: []*commonpb.InstanceMetric{{InstanceId: "a", Status: commonpb.ResourceStatus_RUNNING}}}, "")
	if o := c1.out.drain(); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Fatalf("orders to n1 = %v, want DESTROY", o)
	}
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed})
	for sub.queued() > 0 {
		last = sub.next().GetInstance()
	}
	if last.GetStatus() != commonpb.ResourceStatus_TERMINATED || last.GetNode() != "n1" {
		t.Errorf("last status %v, want TERMINATED confirmed by n1", last)
	}
}

// Found by the chaos suite: after a scheduler restart, a node registering
// first with a copy it is destroying (the instance had moved) got it
// adopted, and the live copy elsewhere destroyed; each restart flipped them.
func TestCopyBeingDestroyedNotAdopted(t *testing.T) {
	st, _ := newTestState(t, time.Second, time.Minute)
	sub, _, _ := st.subscribe("", 0)
	c1, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1", Instances: []*commonpb.InstanceMetric{
		{InstanceId: "a", Status: commonpb.ResourceStatus_DESTROYING}}}, "")
	if st.insts["a"] != nil {
		t.Fatal("a copy being destroyed was adopted")
	}
	c2, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n2", Instances: []*commonpb.InstanceMetric{
		{InstanceId: "a", Status: commonpb.ResourceStatus_RUNNING}}}, "")
	if inst := st.insts["a"]; inst == nil || inst.node != "n2" {
		t.Fatalf("live copy not adopted on n2: %+v", inst)
	}
	if o := append(c1.out.drain(), c2.out.drain()...); len(o) != 0 {
		t.Errorf("orders %v, want none", o)
	}
	if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_RUNNING || m.GetNode() != "n2" {
		t.Errorf("status %v, want RUNNING on n2", m)
	}
}

// Found by the chaos suite: a scheduler restarted forgets the copies left on
// nodes an instance moved from; the controller remembers them (former
// nodes) and its DESTROY waits for each.
func TestDestroyWaitsForFormerNodes(t *testing.T) {
	st, _ := newTestState(t, time.Second, 0)
	sub, _, _ := st.subscribe("", 0)
	c1, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n1"}, "")
	c2, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n2"}, "")
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", Action: commonpb.WorkloadRequestKind_DESTROY,
		Node: "n2", FormerNodes: []string{"n1"}})
	for _, c := range []*workerConn{c1, c2} {
		if o := c.out.drain(); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
			t.Fatalf("orders = %v, want DESTROY on each node", o)
		}
	}
	st.instanceStatus("n2", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed})
	for sub.queued() > 0 {
		if m := sub.next().GetInstance(); m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			t.Fatalf("TERMINATED %v before n1 confirmed", m)
		}
	}
	st.instanceStatus("n1", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed})
	var last *commonpb.InstanceMetric
	for sub.queued() > 0 {
		last = sub.next().GetInstance()
	}
	if last.GetStatus() != commonpb.ResourceStatus_TERMINATED {
		t.Errorf("last status %v, want TERMINATED once both confirmed", last)
	}
}

// Found by the chaos suite: a scheduler placed an instance and died before
// the controller heard where; deleted right after the restart, it was
// TERMINATED "destroyed before being placed" while its node, not yet
// re-registered, ran it. Within the recovery window the scheduler waits.
func TestDestroyAfterRestartWaitsForTheNodes(t *testing.T) {
	st, clk := newTestState(t, time.Second, 5*time.Second)
	sub, _, _ := st.subscribe("", 0)
	st.create(createOrder("a"), placement.Request{Kind: "pod"}) // re-sent, no node known
	st.destroy(&controllerpb.WorkloadScheduling{InstanceId: "a", Action: commonpb.WorkloadRequestKind_DESTROY})
	for sub.queued() > 0 {
		if m := sub.next().GetInstance(); m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			t.Fatalf("TERMINATED %v during the recovery window", m)
		}
	}
	c, _ := st.register(&commonpb.WorkerRegistration{Hostname: "n3", Instances: []*commonpb.InstanceMetric{{InstanceId: "a", Status: commonpb.ResourceStatus_RUNNING}}}, "")
	if o := c.out.drain(); len(o) != 1 || o[0].GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Fatalf("orders = %v, want DESTROY", o)
	}
	clk.t = clk.t.Add(10 * time.Second)
	st.heartbeat("n3", "", &commonpb.WorkerMetric{})
	st.check()
	for sub.queued() > 0 {
		if m := sub.next().GetInstance(); m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			t.Fatalf("TERMINATED %v before n3 stopped it", m)
		}
	}
	st.instanceStatus("n3", "", &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_TERMINATED, Reason: api.ReasonDestroyed})
	if m := sub.next().GetInstance(); m.GetStatus() != commonpb.ResourceStatus_TERMINATED {
		t.Errorf("%v, want TERMINATED once n3 stopped it", m)
	}
}
