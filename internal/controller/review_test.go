package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// A client that goes away while instances.create sends its orders must not
// leave stored instances that the scheduler never got and that nothing will
// ever send again (no "scheduler unreachable" mark for the resync).
func TestCreateOrdersSurviveClientGoingAway(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("gone"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	e.sched.mu.Lock()
	e.sched.onSchedule = func(o *controllerpb.WorkloadScheduling) {
		if o.GetAction() == commonpb.WorkloadRequestKind_CREATE {
			once.Do(cancel) // the client hangs up after the first order
		}
	}
	e.sched.mu.Unlock()

	body := `{"workload_id":"` + wl.ID + `","replicas":3}`
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v0/instances.create", strings.NewReader(body))
	e.s.Handler().ServeHTTP(httptest.NewRecorder(), e.auth(req))

	insts, err := e.s.instancesOf(context.Background(), wl.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 3 {
		t.Fatalf("stored %d instances, want 3", len(insts))
	}
	for _, in := range insts {
		sent := len(e.sched.ordersFor(in.ID)) > 0
		if !sent && in.Value.Message != MessageSchedulerDown {
			t.Errorf("instance %s: CREATE never sent and not marked for resend (%+v)", in.Name, in.Value)
		}
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
	e.s.link.resubscribe()
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

// The id indexes of the repo must not keep deleted records: one entry per
// workload or instance ever created (here, or by another controller sharing
// the store) is unbounded growth.
func TestRepoIndexesForgetDeletedRecords(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		wl := e.createWorkload(podDef(fmt.Sprintf("idx%d", i)))
		e.must(http.StatusNoContent, "POST", "/api/v0/workloads.delete", map[string]string{"id": wl.ID})
	}
	e.s.repo.mu.Lock()
	n := len(e.s.repo.wlByID)
	e.s.repo.mu.Unlock()
	if n != 0 {
		t.Errorf("workload index holds %d deleted workloads", n)
	}

	// Instances removed behind this controller's back (another controller).
	wl := e.createWorkload(podDef("idx"))
	ins := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 3})
	for _, in := range ins {
		if err := e.st.Delete(context.Background(), instanceKey(in.Value.Kind, in.Name), store.Any); err != nil {
			t.Fatal(err)
		}
	}
	e.must(http.StatusOK, "GET", "/api/v0/instances.list", nil)
	e.s.repo.mu.Lock()
	n = len(e.s.repo.byID)
	e.s.repo.mu.Unlock()
	if n != 0 {
		t.Errorf("instance index holds %d deleted instances after a full listing", n)
	}
}

// hookStore calls onPut (when set) before every Put, and onDelete after
// every Delete.
type hookStore struct {
	store.Store
	mu       sync.Mutex
	onPut    func(key string)
	onDelete func(key string)
}

func (h *hookStore) Delete(ctx context.Context, key string, rev int64) error {
	err := h.Store.Delete(ctx, key, rev)
	h.mu.Lock()
	fn := h.onDelete
	h.mu.Unlock()
	if fn != nil {
		fn(key)
	}
	return err
}

func (h *hookStore) Put(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	h.mu.Lock()
	fn := h.onPut
	h.mu.Unlock()
	if fn != nil {
		fn(key)
	}
	return h.Store.Put(ctx, key, value, rev)
}

// A client that goes away during workloads.delete must not leave the
// workload half deleted: still listed, some of its instances being
// destroyed and the others left running.
func TestDeleteWorkloadCompletesWhenClientGoesAway(t *testing.T) {
	hs := &hookStore{}
	e := newEnv(t, func(c *Config) {
		hs.Store = c.Store
		c.Store = hs
	})
	wl := e.createWorkload(podDef("half"))
	e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 3})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs.mu.Lock()
	puts := 0
	hs.onPut = func(key string) {
		if strings.HasPrefix(key, instancePrefix) {
			if puts++; puts == 2 {
				cancel() // the client hangs up once the first instance is marked
			}
		}
	}
	hs.mu.Unlock()
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v0/workloads.delete", strings.NewReader(`{"id":"`+wl.ID+`"}`))
	e.s.Handler().ServeHTTP(httptest.NewRecorder(), e.auth(req))
	hs.mu.Lock()
	hs.onPut = nil
	hs.mu.Unlock()

	_, _, werr := e.s.repo.findWorkload(context.Background(), wl.ID)
	insts, err := e.s.instancesOf(context.Background(), wl.ID)
	if err != nil {
		t.Fatal(err)
	}
	marked := 0
	for _, in := range insts {
		if in.Value.DeleteRequested {
			marked++
		}
	}
	gone := errors.Is(werr, ErrNotFound)
	if !(gone && marked == len(insts)) && !(!gone && marked == 0) {
		t.Errorf("half-deleted workload: workload gone=%v, %d of %d instances marked for deletion", gone, marked, len(insts))
	}
}

// Deleting an instance that ended on its own (a completed pod) removes it at
// once and still sends DESTROY to its node, which keeps it until told.
func TestDeleteTerminatedInstanceDestroysItOnItsNode(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podNever("job"))
	ins := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	for _, in := range ins {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1",
			HasExitCode: true, Reason: api.ReasonCompleted})
		e.waitInstance(in.ID, "terminated", func(i workload.Instance) bool { return i.Status == workload.StatusTerminated })
	}

	e.must(http.StatusNoContent, "POST", "/api/v0/instances.delete", map[string]string{"id": ins[0].ID})
	if _, code := e.getInstance(ins[0].ID); code != http.StatusNotFound {
		t.Errorf("terminated instance still there after delete: %d", code)
	}
	e.must(http.StatusNoContent, "POST", "/api/v0/workloads.delete", map[string]string{"id": wl.ID})
	if _, code := e.getInstance(ins[1].ID); code != http.StatusNotFound {
		t.Errorf("terminated instance still there after its workload was deleted: %d", code)
	}
	for _, in := range ins {
		var destroys []*controllerpb.WorkloadScheduling
		for _, o := range e.sched.ordersFor(in.ID) {
			if o.GetAction() == commonpb.WorkloadRequestKind_DESTROY {
				destroys = append(destroys, o)
			}
		}
		if len(destroys) != 1 || destroys[0].GetNode() != "n1" {
			t.Errorf("%s: DESTROY orders %v, want one for node n1", in.Name, destroys)
		}
	}
}

// A client that goes away once instances.delete removed a terminated
// instance must not keep its DESTROY from being sent: nothing re-sends it.
func TestDeleteTerminatedSendsDestroyWhenClientGoesAway(t *testing.T) {
	hs := &hookStore{}
	e := newEnv(t, func(c *Config) {
		hs.Store = c.Store
		c.Store = hs
	})
	wl := e.createWorkload(podNever("job"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1"})
	e.waitInstance(in.ID, "terminated", func(i workload.Instance) bool { return i.Status == workload.StatusTerminated })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs.mu.Lock()
	hs.onDelete = func(key string) {
		if strings.HasPrefix(key, instancePrefix) {
			cancel() // the client hangs up once the record is removed
		}
	}
	hs.mu.Unlock()
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v0/instances.delete", strings.NewReader(`{"id":"`+in.ID+`"}`))
	e.s.Handler().ServeHTTP(httptest.NewRecorder(), e.auth(req))
	hs.mu.Lock()
	hs.onDelete = nil
	hs.mu.Unlock()

	if _, code := e.getInstance(in.ID); code != http.StatusNotFound {
		t.Fatalf("instance not removed: %d", code)
	}
	var destroys int
	for _, o := range e.sched.ordersFor(in.ID) {
		if o.GetAction() == commonpb.WorkloadRequestKind_DESTROY && o.GetNode() == "n1" {
			destroys++
		}
	}
	if destroys != 1 {
		t.Errorf("%d DESTROY orders for n1, want 1", destroys)
	}
}
