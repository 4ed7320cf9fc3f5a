package controller

import (
	"path/filepath"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/store/etcd"
	"github.com/rik-org/rik/internal/store/etcd/etcdtest"
	"github.com/rik-org/rik/internal/workload"
)

// sharedStore hides bolt's Exclusive, standing in for a store several
// controllers share (etcd).
type sharedStore struct{ store.Store }

func openShared(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return sharedStore{st}
}

// Two controllers sharing one store and one scheduler (as on etcd): both get
// every status; the change is applied once, events reach both controllers'
// subscribers, and a lost node reschedules an instance only once.
func TestTwoControllersShareStore(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	testTwoControllers(t, sharedStore{st}, sharedStore{st}) // as if on etcd
}

// The same with etcd, each controller with its own client.
func TestTwoControllersOnEtcd(t *testing.T) {
	open := etcdStores(t)
	testTwoControllers(t, open(), open())
}

// etcdStores starts an etcd server and returns a function opening a new
// client store on it (closed when the test ends).
func etcdStores(t *testing.T) func() store.Store {
	endpoint := etcdtest.Start(t)
	return func() store.Store {
		st, err := etcd.Open(t.Context(), []string{endpoint})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
}

func testTwoControllers(t *testing.T, stA, stB store.Store) {
	a := newEnv(t, func(c *Config) { c.Store = stA })
	a.st = stA
	s2, err := NewServer(Config{Store: stB, SchedulerAddr: a.sched.addr, Logger: testLogger(t), AdminTokenFile: filepath.Join(t.TempDir(), "admin.token")})
	if err != nil {
		t.Fatal(err)
	}
	hs := serveTest(t, s2)
	a.sched.waitSubscribed(t)
	b := &env{t: t, s: s2, st: stB, sched: a.sched, http: hs, token: a.token} // tokens are shared through the store
	var h map[string]any
	b.must(200, "GET", "/healthz", nil).decode(t, &h)
	if h["leader"] != false || !a.s.lease.Held() || s2.lease.Held() {
		t.Fatalf("second controller healthz %v; first holds the lease: %v", h, a.s.lease.Held())
	}

	events := subscribeEvents(t, t.Context(), hs, b.token)
	eventually(t, "b follows the store", func() bool { return b.metric("rik_controller_store_watches_total") == "1" })

	wl := a.createWorkload(podDef("web"))
	in := a.createInstances(map[string]any{"workload_id": wl.ID})[0]
	if ev := nextInstanceEvent(t, events, in.ID); ev.Value.Status != workload.StatusPending {
		t.Errorf("b saw %+v for an instance created on a", ev.Value)
	}
	a.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	if ev := nextInstanceEvent(t, events, in.ID); ev.Value.Status != workload.StatusRunning {
		t.Errorf("b event %+v", ev.Value)
	}
	b.waitInstance(in.ID, "running via b", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })

	// Count the CREATEs the node loss causes: before it, the leader may
	// legitimately have re-sent its orders (after gaining the lease).
	createsBefore := countCreates(a.sched, in.ID)
	if createsBefore < 1 {
		t.Fatalf("no CREATE sent for %s", in.ID)
	}
	a.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_FAILED, Node: "n1", Reason: api.ReasonNodeLost})
	a.waitInstance(in.ID, "rescheduled", func(i workload.Instance) bool { return i.Status == workload.StatusPending })
	a.barrier(wl.ID) // both controllers handled the node loss
	b.barrier(wl.ID)
	got, _ := a.getInstance(in.ID)
	if got.Value.Restarts != 1 {
		t.Errorf("restarts = %d after one node loss seen by two controllers", got.Value.Restarts)
	}
	if n := countCreates(a.sched, in.ID) - createsBefore; n != 1 {
		t.Errorf("%d CREATE orders after one node loss seen by two controllers, want 1", n)
	}
}

func countCreates(sched *fakeScheduler, id string) int {
	n := 0
	for _, o := range sched.ordersFor(id) {
		if o.GetAction() == commonpb.WorkloadRequestKind_CREATE {
			n++
		}
	}
	return n
}

// Names are unique across controllers, and a workload deleted on one is
// deleted for both.
func TestTwoControllersNamesAndDelete(t *testing.T) {
	open := etcdStores(t)
	a := newEnv(t, func(c *Config) { c.Store = open() })
	b := newEnv(t, func(c *Config) { c.Store = open() })
	a.createWorkload(podDef("web"))
	if r := b.do("POST", "/api/v0/workloads.create", podDef("web")); r.code != 409 {
		t.Errorf("same workload name on the other controller: %d", r.code)
	}
	a.createInstances(map[string]any{"workload_id": "web", "name": "web-one"})
	if r := b.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": "web", "name": "web-one"}); r.code != 409 {
		t.Errorf("same instance name on the other controller: %d", r.code)
	}
	b.must(204, "POST", "/api/v0/workloads.delete", map[string]string{"id": "web"})
	a.must(404, "GET", "/api/v0/workloads.instances/web", nil)
	got, _ := a.getInstance("web-one")
	if !got.Value.DeleteRequested {
		t.Errorf("instance after delete on the other controller: %+v", got.Value)
	}
}
